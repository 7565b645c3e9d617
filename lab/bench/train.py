"""Training throughput: the lab's SFT job against a plain TRL script on the same config, and
packing on against off, measured one after another in one run.

    python -m lab bench train --json              # embedded SmolLM2, bundled QA set, LoRA
    python -m lab bench train --steps 4 --model PATH --json

Every run is a separate process started the same way (so none inherits another's warm caches),
and tokens/s is computed the same way for all: TRL's running count of trained tokens
(`num_tokens` in its logs) between the first logged step and the last, over the wall time
between them. The first step, with its one-time setup, is left out of every measurement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from lab.core.settings import REPO_ROOT, LabSettings
from lab.training.configs.sft import SftConfig
from lab.training.configs import load_config
from lab.training.configs.base import save_config

DEFAULT_PRESET = REPO_ROOT / "assets" / "presets" / "sft_lora_qa.yaml"


def bench_config(model_id: str | None, steps: int, packing: bool) -> SftConfig:
    """The teach-this-document preset, cut to `steps` optimizer steps, no eval and no checkpoints."""
    cfg = load_config(DEFAULT_PRESET)
    return replace(cfg, model_id=model_id or cfg.model_id, max_steps=steps, packing=packing, eval_dataset=None,
                   logging_steps=1, save_steps=10_000, eval_steps=10_000, output_name="")


def tokens_per_s(rows: list[dict]) -> float | None:
    """Trained tokens per second between the first and last logged step (the setup step excluded)."""
    rows = [r for r in rows if r.get("num_tokens") is not None and r.get("time") is not None]
    if len(rows) < 2 or rows[-1]["time"] <= rows[0]["time"]:
        return None
    return (rows[-1]["num_tokens"] - rows[0]["num_tokens"]) / (rows[-1]["time"] - rows[0]["time"])


def plain_trl(config_path: str, out_path: str) -> None:
    """What a user would write with TRL alone: model + LoRA + SFTTrainer, no job machinery.

    The data rows come from the lab's loader so both sides train on identical examples.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from lab.training.data.datasets import load_train_eval
    from lab.inference.models import resolve_model_path
    from lab.core.settings import LabSettings

    cfg = load_config(config_path)
    source = resolve_model_path(cfg.model_id, LabSettings().subdir("models"))
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = get_peft_model(model, LoraConfig(r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                             target_modules=cfg.lora_targets, bias=cfg.bias, task_type="CAUSAL_LM"))
    train, _ = load_train_eval(cfg.datasets, None, 0.0, cfg.seed)
    rows: list[dict] = []

    class Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                rows.append({"num_tokens": logs["num_tokens"], "time": time.time()})

    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
                         learning_rate=cfg.learning_rate, max_length=cfg.max_length, packing=cfg.packing,
                         # TRL 1.16 turns gradient checkpointing on unless told; the config says off.
                         gradient_checkpointing=cfg.gradient_checkpointing,
                         completion_only_loss=cfg.completion_only_loss, logging_steps=1, logging_first_step=True,
                         save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                         seed=cfg.seed)
        SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer, callbacks=[Log()]).train()
    Path(out_path).write_text(json.dumps(rows))


def _run(argv: list[str], extra_env: dict[str, str] | None = None) -> None:
    env = os.environ | {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")} | (extra_env or {})
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed:\n{done.stderr[-2000:]}")


def _lab_run(cfg: SftConfig, work: Path, name: str) -> float | None:
    """The lab path: `python -m lab train CONFIG` in the foreground, read back from metrics.jsonl."""
    path = save_config(cfg, work / f"{name}.yaml")
    data_dir = work / f"data-{name}"
    models = LabSettings().data_dir / "models"
    data_dir.mkdir()
    if models.is_dir():  # share the materialised embedded model instead of converting it again
        (data_dir / "models").symlink_to(models.resolve())
    _run([sys.executable, "-m", "lab", "train", str(path)], {"LAB_DATA_DIR": str(data_dir)})
    from lab.training.jobs.runner import job_metrics, list_jobs
    rows = job_metrics(data_dir, list_jobs(data_dir)[0]["id"])
    return tokens_per_s([{"num_tokens": r.get("num_tokens"), "time": r.get("timestamp")} for r in rows])


def bench_train(model_id: str | None = None, steps: int = 8) -> dict:
    if steps < 3:
        raise ValueError(f"steps must be >= 3 so a steady state exists after the setup step, got {steps}")
    with tempfile.TemporaryDirectory(prefix="lab-bench-train-") as tmp:
        work = Path(tmp)
        plain_cfg = save_config(bench_config(model_id, steps, False), work / "plain.yaml")
        lab = _lab_run(bench_config(model_id, steps, False), work, "lab")
        _run([sys.executable, "-m", "lab.bench.train", "plain", str(plain_cfg), str(work / "plain.json")])
        trl = tokens_per_s(json.loads((work / "plain.json").read_text()))
        packed = _lab_run(bench_config(model_id, steps, True), work, "packing")
    r = lambda x: None if x is None else round(x, 1)  # noqa: E731
    return {"lab_tokens_per_s": r(lab), "trl_tokens_per_s": r(trl),
            "ratio": round(lab / trl, 3) if lab and trl else None,
            "packing_tokens_per_s": r(packed), "no_packing_tokens_per_s": r(lab),
            "steps": steps, "model": model_id or "embedded"}


if __name__ == "__main__":  # the plain-TRL side runs in its own process
    if len(sys.argv) == 4 and sys.argv[1] == "plain":
        plain_trl(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m lab.bench.train plain CONFIG.yaml OUT.json")
