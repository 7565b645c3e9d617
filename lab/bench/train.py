"""Training throughput: the lab's SFT job against a plain TRL script on the same config, and
packing on against off, measured one after another in one run.

    python -m lab bench train --json              # embedded SmolLM2, bundled QA set, LoRA
    python -m lab bench train --steps 4 --model PATH --json

Both sides are built from one config and must train the same way: each writes its effective
arguments (every SFTConfig field after TRL filled in its defaults, the model's dtype and attention
kernel; lab/training/kinds/common.py effective_arguments), and the bench stops with the list of
differences when they differ in anything but bookkeeping (output folders, checkpoint and eval
schedules, progress bars). It matters: TRL's SFTConfig turns bf16 on unless told otherwise, and a
plain script that left it so trained 12x slower on a CPU without bf16 units than the lab's job,
which sets it from the device. Every run is a separate process started the same way, its peak
resident memory (the whole process tree, sampled) is reported, and tokens/s is computed the same
way for all: TRL's running count of trained tokens (`num_tokens` in its logs) between the first
logged step and the last, over the wall time between them; the first step, with its one-time
setup, is left out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from lab.core.settings import REPO_ROOT, LabSettings
from lab.training.configs import load_config
from lab.training.configs.base import save_config
from lab.training.configs.sft import SftConfig
from lab.training.jobs.files import EFFECTIVE_ARGS_FILE

DEFAULT_PRESET = REPO_ROOT / "assets" / "presets" / "sft_lora_qa.yaml"

BOOKKEEPING = {"output_dir", "logging_dir", "run_name", "save_strategy", "save_steps", "save_total_limit",
               "eval_strategy", "eval_steps", "per_device_eval_batch_size", "load_best_model_at_end",
               "metric_for_best_model", "greater_is_better", "disable_tqdm", "report_to", "hub_token",
               "push_to_hub_token"}
"""Effective arguments allowed to differ between the two runs: where files go and what is saved or evaluated
when (neither run saves or evaluates within its few steps), never anything that changes a training step."""


def bench_config(model_id: str | None, steps: int, packing: bool) -> SftConfig:
    """The teach-this-document preset, cut to `steps` optimizer steps, no eval and no checkpoints."""
    cfg = load_config(DEFAULT_PRESET)
    return replace(cfg, model_id=model_id or cfg.model_id, max_steps=steps, packing=packing, eval_dataset=None,
                   eval_fraction=0.0, logging_steps=1, save_steps=10_000, eval_steps=10_000, output_name="")


def tokens_per_s(rows: list[dict]) -> float | None:
    """Trained tokens per second between the first and last logged step (the setup step excluded)."""
    rows = [r for r in rows if r.get("num_tokens") is not None and r.get("time") is not None]
    if len(rows) < 2 or rows[-1]["time"] <= rows[0]["time"]:
        return None
    return (rows[-1]["num_tokens"] - rows[0]["num_tokens"]) / (rows[-1]["time"] - rows[0]["time"])


def plain_trl(config_path: str, out_path: str) -> None:
    """What a user would write with TRL alone: model + LoRA + SFTTrainer, no job machinery, every training knob
    taken from the same config as the lab's job (TRL's own defaults differ: bf16 on, fused AdamW, lr 2e-5).

    The data rows come from the lab's loader so both sides train on identical examples.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from lab.core.device import detect_device
    from lab.core.settings import LabSettings
    from lab.inference.models import resolve_model_path
    from lab.training.data.datasets import load_train_eval
    from lab.training.kinds.common import effective_arguments

    cfg = load_config(config_path)
    device = detect_device()
    cuda = device.device == "cuda"
    source = resolve_model_path(cfg.model_id, LabSettings().subdir("models"))
    model = AutoModelForCausalLM.from_pretrained(source, dtype=device.dtype if cuda else torch.float32,
                                                 attn_implementation=device.attn_implementation)
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
        args = SFTConfig(output_dir=out, max_steps=cfg.max_steps, num_train_epochs=cfg.num_train_epochs,
                         per_device_train_batch_size=cfg.per_device_train_batch_size,
                         gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                         learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type,
                         lr_scheduler_kwargs=cfg.lr_scheduler_kwargs,
                         warmup_steps=cfg.warmup_ratio or cfg.warmup_steps, optim=cfg.optim,
                         weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
                         max_length=cfg.max_length, packing=cfg.packing, completion_only_loss=cfg.completion_only_loss,
                         activation_checkpointing=cfg.gradient_checkpointing,
                         bf16=cuda and torch.cuda.is_bf16_supported(), fp16=False, use_cpu=not cuda,
                         logging_steps=1, logging_first_step=True, save_strategy="no", report_to=[],
                         disable_tqdm=True, dataloader_num_workers=0, seed=cfg.seed)
        trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer, callbacks=[Log()])
        effective = effective_arguments(trainer)
        trainer.train()
    Path(out_path).write_text(json.dumps({"rows": rows, "effective": effective}))


def _run(argv: list[str], extra_env: dict[str, str] | None = None) -> float:
    """Run one side in its own process; its peak resident memory in MB (the process and its children, sampled
    every 0.2 s: a peak between two samples is missed, so this is a lower bound)."""
    env = os.environ | {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")} | (extra_env or {})
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak = [0]

        def sample() -> None:
            while proc.poll() is None:
                try:
                    root = psutil.Process(proc.pid)
                    rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                except psutil.Error:
                    rss = 0
                peak[0] = max(peak[0], rss)
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.wait()
        sampler.join()
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(argv[:4])} failed:\n{err.read()[-2000:]}")
    return round(peak[0] / 2**20, 1)


def _lab_run(cfg: SftConfig, work: Path, name: str) -> tuple[float | None, float, dict]:
    """The lab path: `python -m lab train CONFIG` in the foreground, read back from its job folder: tokens/s,
    peak RSS in MB and its effective arguments."""
    path = save_config(cfg, work / f"{name}.yaml")
    data_dir = work / f"data-{name}"
    models = LabSettings().data_dir / "models"
    data_dir.mkdir()
    if models.is_dir():  # share the materialised embedded model instead of converting it again
        (data_dir / "models").symlink_to(models.resolve())
    rss = _run([sys.executable, "-m", "lab", "train", str(path)], {"LAB_DATA_DIR": str(data_dir)})
    from lab.training.jobs.runner import job_dir, job_metrics, list_jobs
    job_id = list_jobs(data_dir)[0]["id"]
    rows = job_metrics(data_dir, job_id)
    effective = json.loads((job_dir(data_dir, job_id) / EFFECTIVE_ARGS_FILE).read_text())
    return tokens_per_s([{"num_tokens": r.get("num_tokens"), "time": r.get("timestamp")} for r in rows]), rss, effective


def differences(a: dict[str, Any], b: dict[str, Any], allowed: set[str] = BOOKKEEPING) -> dict[str, list]:
    """Effective arguments (as effective_arguments writes them) that differ between two runs: name -> [a, b].
    Arguments in `allowed` are left out; the model's dtype and attention kernel are compared too."""
    def flat(e: dict[str, Any]) -> dict[str, Any]:
        return {**e["args"], **{k: v for k, v in e.items() if k != "args"}}

    fa, fb = flat(a), flat(b)
    return {k: [fa.get(k), fb.get(k)] for k in sorted((set(fa) | set(fb)) - allowed) if fa.get(k) != fb.get(k)}


def packing_note(packed: float | None, unpacked: float | None, packed_rss: float, unpacked_rss: float,
                 effective: dict) -> str:
    """Why packing paid or did not, from the measured run and how it attended."""
    args, attn = effective["args"], effective["attn_implementation"]
    rows, length = args["per_device_train_batch_size"], args["max_length"]
    if packed and unpacked and packed >= 1.2 * unpacked and packed_rss <= 1.5 * unpacked_rss:
        return f"packing paid here: {packed / unpacked:.2f}x tokens/s at {packed_rss / unpacked_rss:.2f}x memory"
    how = (f"TRL packs rows best-fit into sequences of up to max_length {length} and trains padding-free: the "
           f"{rows} packed sequences of a step become one sequence of up to {rows * length} tokens whose examples are "
           "kept apart only by their position ids")
    if "flash" in attn:
        return how + "; flash-attention's variable-length kernel attends within each example."
    return (how + f". With {attn} attention there is no variable-length kernel: attention runs over that whole "
            "sequence under a block mask, so its cost and the attention weights kept for the backward pass grow "
            f"with the square of its length. Measured: {packed or 0:.1f} tokens/s packed against "
            f"{unpacked or 0:.1f} unpacked, peak memory {packed_rss:,.0f} MB against {unpacked_rss:,.0f} MB. "
            "Packing pays on a GPU with flash-attention 2 installed, not here.")


def bench_train(model_id: str | None = None, steps: int = 8) -> dict:
    if steps < 3:
        raise ValueError(f"steps must be >= 3 so a steady state exists after the setup step, got {steps}")
    with tempfile.TemporaryDirectory(prefix="lab-bench-train-") as tmp:
        work = Path(tmp)
        plain_cfg = save_config(bench_config(model_id, steps, False), work / "plain.yaml")
        lab, lab_rss, lab_args = _lab_run(bench_config(model_id, steps, False), work, "lab")
        trl_rss = _run([sys.executable, "-m", "lab.bench.train", "plain", str(plain_cfg), str(work / "plain.json")])
        plain = json.loads((work / "plain.json").read_text())
        differ = differences(lab_args, plain["effective"])
        if differ:  # then the ratio would measure a setting, not the lab's overhead
            raise RuntimeError("the lab's run and the plain TRL run would train differently: "
                               + "; ".join(f"{k}: lab {a!r}, trl {b!r}" for k, (a, b) in differ.items()))
        trl = tokens_per_s(plain["rows"])
        packed, packed_rss, packed_args = _lab_run(bench_config(model_id, steps, True), work, "packing")

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 1)

    return {"lab_tokens_per_s": r(lab), "trl_tokens_per_s": r(trl),
            "ratio": round(lab / trl, 3) if lab and trl else None, "args_equal": not differ,
            "packing_tokens_per_s": r(packed), "no_packing_tokens_per_s": r(lab),
            "packing_ratio": round(packed / lab, 3) if packed and lab else None,
            "peak_rss_mb": {"lab": lab_rss, "trl": trl_rss, "packing": packed_rss},
            "packing_note": packing_note(packed, lab, packed_rss, lab_rss, packed_args),
            "attn_implementation": lab_args["attn_implementation"], "model_dtype": lab_args["model_dtype"],
            "bf16": lab_args["args"].get("bf16"), "steps": steps, "model": model_id or "embedded",
            "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


if __name__ == "__main__":  # the plain-TRL side runs in its own process
    if len(sys.argv) == 4 and sys.argv[1] == "plain":
        plain_trl(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m lab.bench.train plain CONFIG.yaml OUT.json")
