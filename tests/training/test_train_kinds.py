"""DPO, GRPO, PPO and pretraining on tiny models: end-to-end runs, the PPO math by hand, rewards, bad input.

Each run is 2-3 optimizer steps of the 2-layer, 64-wide Llama from conftest (or an even smaller
model built from scratch), in this process except the PPO job, which goes through the real
JobRunner -> `accelerate launch` subprocess like a job from the Train tab.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lab.core.settings import REPO_ROOT
from lab.explain.calculators.architecture import pretrain_preview
from lab.training.configs import CONFIG_KINDS, load_config
from lab.training.configs.base import field_docs, save_config
from lab.training.configs.dpo import DpoConfig
from lab.training.configs.grpo import GrpoConfig
from lab.training.configs.ppo import PpoConfig
from lab.training.configs.pretrain import PretrainConfig
from lab.training.data.datasets import DatasetFormatError
from lab.training.data.rewards import REWARDS, combined_reward, format_reward, length_reward, pair_f1, token_f1
from lab.training.data.rl import build_preference_set, build_prompt_set, load_preference_rows
from lab.training.jobs.files import STOP_FILE, read_metrics
from lab.training.jobs.launch import run_config, run_job
from lab.training.jobs.runner import JobRunner, create_job
from lab.training.jobs.status import read_status
from lab.training.kinds.dpo import load_dpo_data
from lab.training.kinds.ppo_math import (
    ActorCritic,
    ValueHead,
    answer_mask,
    gae_advantages,
    kl_penalised_rewards,
    masked_whiten,
    ppo_losses,
)
from lab.training.kinds.pretrain import model_config
from support import WORDS, build_tiny_tokenizer

NUMBERS = "one two three four five six seven eight".split()


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("kinds-data")
    preference = [{"prompt": f"what is the capital of france {n} ?", "chosen": "paris .",
                   "rejected": f"the river is a city {n} and a model"} for n in NUMBERS]
    qa = [{"question": f"what is the capital of france {n} ?", "answer": "paris"} for n in NUMBERS]
    words = [w for w in WORDS if w.isalpha()]
    text = "\n\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) + " ." for i in range(120))
    paths = {"preference": folder / "pref.jsonl", "qa": folder / "qa.jsonl", "text": folder / "corpus.md"}
    paths["preference"].write_text("".join(json.dumps(r) + "\n" for r in preference))
    paths["qa"].write_text("".join(json.dumps(r) + "\n" for r in qa))
    paths["text"].write_text(text)
    return paths


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory) -> Path:
    """A tiny sequence-classification model with one output, as a reward model."""
    from transformers import LlamaConfig, LlamaForSequenceClassification
    folder = tmp_path_factory.mktemp("tiny-reward-model")
    tok = build_tiny_tokenizer()
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=3)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def common(model_dir: Path, **overrides) -> dict:
    return dict(model_id=str(model_dir), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
                max_length=64, save_steps=2, logging_steps=1) | overrides


def lora_b_changed(adapter_dir: Path) -> bool:
    """LoRA's B matrices start at zero; after training every one of them has moved."""
    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    return bool(lora_b) and all(t.abs().sum() > 0 for t in lora_b)


def close(tensor: torch.Tensor, expected: list, atol: float = 1e-5) -> None:
    torch.testing.assert_close(tensor, torch.tensor(expected), atol=atol, rtol=0)


def train_rows(folder: Path) -> list[dict]:
    return [r for r in read_metrics(folder) if "loss" in r]


# ---- end-to-end runs -----------------------------------------------------------------------------
def test_dpo_lora_trains_against_the_base_as_reference(tmp_path, tiny_model_dir, data):
    cfg = DpoConfig(datasets=[{"path": str(data["preference"]), "format": "preference"}], beta=0.1,
                    **common(tiny_model_dir, output_name="tiny-dpo"))
    folder, state = run_config(save_config(cfg, tmp_path / "dpo.yaml"), tmp_path / "data")
    status = read_status(folder)
    assert state == "completed", status.message
    rows = train_rows(folder)
    assert [r["step"] for r in rows] == [1, 2]
    # The reference is the model with adapters disabled, and B = 0 at the start: policy == reference, so the
    # first DPO loss is exactly -log sigmoid(0) = log 2 and the implicit rewards are 0.
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4) and rows[0]["rewards/margins"] == 0
    assert "rewards/accuracies" in rows[1] and status.reference == "adapters disabled"
    assert status.trainable_params < status.total_params
    assert lora_b_changed(status.adapter_dir)


def test_grpo_lora_with_builtin_rewards_and_a_reward_model(tmp_path, tiny_model_dir, data, reward_model_dir):
    cfg = GrpoConfig(datasets=[{"path": str(data["qa"]), "format": "qa"}], num_generations=4, temperature=2.0,
                     max_completion_length=6, rewards=["token_f1", "format", "length"],
                     reward_model=str(reward_model_dir), reward_weights=[1.0, 1.0, 1.0, 0.5],
                     **common(tiny_model_dir, per_device_train_batch_size=8))
    folder, state = run_config(save_config(cfg, tmp_path / "grpo.yaml"), tmp_path / "data")
    status = read_status(folder)
    assert state == "completed", status.message
    rows = train_rows(folder)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(k in rows[-1] for k in ("reward", "reward_std", "grad_norm", "completions/mean_length"))
    assert status.train_rows == len(NUMBERS) and status.prompts_dropped == 0
    assert lora_b_changed(status.adapter_dir)


def test_ppo_lora_job_runs_through_the_job_runner(tmp_path, tiny_model_dir, data):
    runner = JobRunner(tmp_path / "data")
    cfg = PpoConfig(datasets=[{"path": str(data["qa"]), "format": "qa"}], max_completion_length=6, ppo_epochs=2,
                    num_mini_batches=2, rewards=["token_f1", "format", "length"],
                    **common(tiny_model_dir, max_steps=3, output_name="tiny-ppo"))
    job_id = runner.submit(cfg)
    status = runner.wait(job_id, timeout_s=300)
    folder = tmp_path / "data" / "jobs" / job_id
    assert status["state"] == "completed", status.get("message")
    assert status["step"] == status["max_steps"] == 3 and status["world_size"] == 1
    assert "accelerate launch" in (folder / "train.log").read_text()
    rows = train_rows(folder)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("reward", "kl", "policy_loss", "value_loss", "entropy", "clipfrac", "grad_norm", "learning_rate",
                "tokens_per_s"):
        assert all(key in r and r[key] is not None and math.isfinite(r[key]) for r in rows), key
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the first rollout's policy is the reference
    assert (folder / "checkpoints" / "checkpoint-2" / "value_head.pt").is_file()
    assert Path(status["adapter_dir"]) == tmp_path / "data" / "adapters" / "tiny-ppo"
    assert lora_b_changed(status["adapter_dir"])


def test_ppo_full_with_a_reward_model_stops_and_resumes(tmp_path, tiny_model_dir, data, reward_model_dir):
    data_dir = tmp_path / "data"
    cfg = PpoConfig(datasets=[{"path": str(data["qa"]), "format": "qa"}], mode="full", max_completion_length=4,
                    ppo_epochs=1, rewards=["format"], reward_model=str(reward_model_dir),
                    **common(tiny_model_dir, max_steps=2, save_steps=100, learning_rate=1e-3))
    folder = data_dir / "jobs" / create_job(cfg, data_dir, foreground=True)
    (folder / STOP_FILE).touch()  # a stop request before the first step: it runs one step and saves it
    assert run_job(folder) == "stopped"
    assert read_status(folder).step == 1 and not (folder / STOP_FILE).exists()
    assert (folder / "checkpoints" / "checkpoint-1" / "optimizer.pt").is_file()
    assert run_job(folder, resume=True) == "completed", read_status(folder).message
    assert [r["step"] for r in train_rows(folder)] == [1, 2]
    trained = load_file(str(folder / "output" / "model.safetensors"))
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert not torch.equal(trained["model.layers.0.self_attn.q_proj.weight"],
                           base["model.layers.0.self_attn.q_proj.weight"])
    assert read_status(folder).reference == "frozen copy of the model"


def test_pretrain_from_scratch_with_a_trained_tokenizer(tmp_path, data):
    cfg = PretrainConfig(datasets=[{"path": str(data["text"]), "format": "text"}], d_model=32, n_layers=1,
                         n_heads=2, n_kv_heads=1, d_ff=64, max_seq_len=64, tokenizer_vocab_size=300,
                         eval_fraction=0.2, eval_steps=2,
                         **common("scratch", max_length=32, max_steps=3, per_device_train_batch_size=2))
    folder, state = run_config(save_config(cfg, tmp_path / "pretrain.yaml"), tmp_path / "data")
    status = read_status(folder)
    assert state == "completed", status.message
    assert status.backend == "LlamaConfig" and status.adapter_dir is None
    assert status.total_params == status.trainable_params == pretrain_preview(cfg)["params"]
    assert [r["step"] for r in train_rows(folder)] == [1, 2, 3]
    assert [r["step"] for r in read_metrics(folder) if "eval_loss" in r] == [2, 3]
    # The trained tokenizer and the model are saved together and load as a pair.
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(folder / "output")
    tokenizer = AutoTokenizer.from_pretrained(folder / "output")
    assert model.config.max_position_embeddings == 64 and model.config.num_key_value_heads == 1
    ids = tokenizer("the capital of france", return_tensors="pt")["input_ids"]
    assert tokenizer.decode(ids[0]) == "the capital of france" and model(ids).logits.shape[-1] == 300
    torch.manual_seed(cfg.seed)
    initial = AutoModelForCausalLM.from_config(model_config(cfg, 300, tokenizer))
    q_proj = [m.model.layers[0].self_attn.q_proj.weight for m in (initial, model)]
    assert not torch.equal(*q_proj)


# ---- pretraining preview ---------------------------------------------------------------------------
@pytest.mark.parametrize("norm, activation, backend", [("rmsnorm", "swiglu", "LlamaConfig"),
                                                        ("layernorm", "gelu", "Starcoder2Config")])
def test_pretrain_preview_counts_what_transformers_builds(tiny_model_dir, data, norm, activation, backend):
    from transformers import AutoModelForCausalLM
    cfg = PretrainConfig(datasets=[{"path": str(data["text"]), "format": "text"}], d_model=64, n_layers=2,
                         n_heads=4, n_kv_heads=2, d_ff=96, norm=norm, activation=activation, tied_embeddings=False,
                         tokenizer=str(tiny_model_dir), max_length=64, max_seq_len=128)
    preview = pretrain_preview(cfg)
    vocab = len(build_tiny_tokenizer())
    model = AutoModelForCausalLM.from_config(model_config(cfg, vocab))
    assert preview["backend"] == backend and preview["vocab_size"] == vocab and preview["attention"] == "GQA"
    assert preview["params"] == sum(p.numel() for p in model.parameters())
    memory = preview["memory_bytes"]
    assert memory["weights"] == memory["gradients"] == 4 * preview["params"]  # fp32, every weight trained
    assert memory["total"] == sum(v for k, v in memory.items() if k != "total")
    assert "alibi" in preview["unavailable_positional_encodings"]


# ---- the PPO math, by hand -------------------------------------------------------------------------
def test_gae_matches_a_hand_computed_example():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 1.0, 9.0]])  # 9.0 sits after the second answer's end
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.9)
    # Row 0: delta = (0.1, 0.1, 0.3); A2 = 0.3, A1 = 0.1 + 0.9 * 0.3 = 0.37, A0 = 0.1 + 0.9 * 0.37 = 0.433.
    # Row 1: the value after the last answer token counts as 0: delta1 = 2 - 1 = 1, delta0 = 1 - 1 = 0,
    # so A1 = 1 and A0 = 0 + 0.9 * 1 = 0.9; nothing after the end.
    close(advantages, [[0.433, 0.37, 0.3], [0.9, 1.0, 0.0]])
    close(returns, [[0.933, 0.97, 1.0], [1.9, 2.0, 0.0]])
    advantages, _ = gae_advantages(rewards, values, mask, gamma=0.5, lam=1.0)
    # gamma 0.5, lam 1: A is the discounted reward-to-go minus V: row 0, A0 = 0.25 * 1 - 0.5.
    close(advantages[0], [-0.25, -0.1, 0.3])


def test_kl_shaped_rewards_put_the_score_on_the_last_answer_token():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -5.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = kl_penalised_rewards(torch.tensor([1.0, 2.0]), logprobs, ref, mask, kl_coef=0.1)
    close(kl, [[0.5, 0.0, -1.0], [0.0, 2.0, 0.0]])
    close(rewards, [[-0.05, 0.0, 1.1], [0.0, 1.8, 0.0]])


def test_clipped_surrogate_and_value_loss():
    mask = torch.ones(1, 2)
    old = torch.zeros(1, 2)
    new = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)  # ratios 1.5 (outside) and 1.1
    values_old, returns = torch.zeros(1, 2), torch.ones(1, 2)
    values = torch.tensor([[1.0, 0.1]], requires_grad=True)
    # Positive advantage: the first token's ratio is clipped at 1.2 and stops pulling; the second still pulls.
    out = ppo_losses(new, old, torch.ones(1, 2), values, values_old, returns, mask, 0.2, 0.2)
    assert out["policy_loss"].item() == pytest.approx(-(1.2 + 1.1) / 2)
    assert out["clipfrac"].item() == pytest.approx(0.5)
    # Value: token 0 moved 1.0 from 0 but is clipped to 0.2: loss max(0, 0.64); token 1: max(0.81, 0.81).
    assert out["value_loss"].item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    (out["policy_loss"] + out["value_loss"]).backward()
    assert new.grad[0, 0] == 0 and new.grad[0, 1] != 0
    assert values.grad[0, 0] == 0 and values.grad[0, 1] != 0
    # Negative advantage: the pessimistic (unclipped) term wins, so a ratio of 1.5 is fully penalised.
    out = ppo_losses(new.detach(), old, -torch.ones(1, 2), values.detach(), values_old, returns, mask, 0.2, 0.2)
    assert out["policy_loss"].item() == pytest.approx((1.5 + 1.1) / 2) and out["clipfrac"].item() == 0


def test_answer_mask_and_whitening():
    assert answer_mask(torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]]), eos_token_id=2).tolist() == [[1, 1, 0, 0],
                                                                                               [1, 1, 1, 1]]
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    white = masked_whiten(torch.tensor([[1.0, 3.0, 100.0]]), mask)
    close(white, [[-1.0, 1.0, 0.0]], atol=1e-4)


def test_kl_is_zero_when_the_policy_is_the_reference(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model = ActorCritic(policy, ValueHead(64), reference=None)  # reference = adapters disabled
    ids = torch.randint(4, 40, (2, 10))
    attention = torch.ones_like(ids)
    logprobs, values, entropy = model(ids, attention, prompt_len=4, temperature=0.7)
    ref = model.reference_logprobs(ids, attention, prompt_len=4, temperature=0.7)
    assert logprobs.shape == values.shape == entropy.shape == ref.shape == (2, 6)
    _, kl = kl_penalised_rewards(torch.zeros(2), logprobs.detach(), ref, torch.ones(2, 6), kl_coef=0.1)
    assert kl.abs().max().item() < 1e-6
    # Once the adapter moves, the policy differs from the reference and the KL estimate is no longer zero.
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.fill_(0.5)
    logprobs, _, _ = model(ids, attention, prompt_len=4, temperature=0.7)
    assert (logprobs - model.reference_logprobs(ids, attention, 4, 0.7)).abs().max().item() > 1e-3


# ---- rewards ---------------------------------------------------------------------------------------
def test_token_f1_reward_by_hand():
    assert token_f1(["Paris is the capital."], reference=["the capital is Paris"]) == [1.0]
    # "paris france" vs "paris": precision 1/2, recall 1 -> F1 = 2/3.
    assert token_f1(["paris france"], reference=["paris"]) == [pytest.approx(2 / 3)]
    chat = [[{"role": "assistant", "content": "Paris"}]]  # TRL's conversational completions
    assert token_f1(chat, reference=["paris"], prompts=[[]], trainer_state=None) == [1.0]
    with pytest.raises(ValueError, match="reference"):
        token_f1(["paris"])


def test_token_f1_agrees_with_the_metric_module():
    spec = importlib.util.spec_from_file_location("token_f1_metric", REPO_ROOT / "assets/metrics/token_f1/token_f1.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pairs = [("The Eiffel Tower, in Paris!", "eiffel tower"), ("8,192 tokens", "8,192"), ("", ""), ("a an the", "x")]
    assert [pair_f1(p, r) for p, r in pairs] == [module.pair_f1(p, r) for p, r in pairs]


def test_format_and_length_rewards_by_hand():
    answers = ["Paris.", "Paris. It is big.", "line one\nline two", "", "It holds 8,192 tokens.", "Version 2.5 works"]
    assert format_reward(answers) == [1.0, 0.5, 0.5, 0.0, 1.0, 1.0]
    reference = ["Retrieval-Augmented Generation"] * 3  # 2 words: allowed = max(5, 4) = 5 words
    answers = ["It is Retrieval-Augmented Generation", "one two three four five six seven", " ".join(["w"] * 12)]
    assert length_reward(answers, reference=reference) == [0.0, pytest.approx(-0.4), -1.0]
    assert combined_reward(["format", "length"], [2.0, 1.0], ["Paris. It is big."], ["paris"]) == [1.0]


# ---- data --------------------------------------------------------------------------------------------
def test_bundled_sets_are_built_from_the_qa_set():
    qa = [json.loads(line) for line in (REPO_ROOT / "assets/knowledge/qa.jsonl").read_text().splitlines()]
    preference = load_preference_rows(REPO_ROOT / "assets/data/preference_qa.jsonl")
    assert len(preference) == len(qa)
    assert [r["chosen"][0]["content"] for r in preference] == [q["answer"] for q in qa]
    assert build_preference_set(qa) == [json.loads(line) for line in
                                        (REPO_ROOT / "assets/data/preference_qa.jsonl").read_text().splitlines()]
    assert build_prompt_set(qa) == [json.loads(line) for line in
                                    (REPO_ROOT / "assets/data/prompts_qa.jsonl").read_text().splitlines()]


def test_every_new_preset_loads_as_its_kind():
    kinds = {name: load_config(REPO_ROOT / f"assets/presets/{name}.yaml").kind
             for name in ("dpo_lora_qa", "grpo_lora_qa", "ppo_lora_qa", "pretrain_tiny")}
    assert kinds == {"dpo_lora_qa": "dpo", "grpo_lora_qa": "grpo", "ppo_lora_qa": "ppo", "pretrain_tiny": "pretrain"}


@pytest.mark.parametrize("kind", ["dpo", "grpo", "ppo", "pretrain"])
def test_every_field_of_the_new_kinds_is_documented(kind):
    cls = CONFIG_KINDS[kind]
    docs = field_docs(cls)
    assert not [f.name for f in fields(cls) if not docs.get(f.name)]


# ---- bad input ---------------------------------------------------------------------------------------
def test_preference_line_missing_rejected_names_line_and_field(tmp_path, tiny_model_dir):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "q ?", "chosen": "a", "rejected": "b"}\n\n{"prompt": "q ?", "chosen": "a"}\n')
    cfg = DpoConfig(datasets=[{"path": str(path), "format": "preference"}], model_id=str(tiny_model_dir))
    with pytest.raises(DatasetFormatError, match=r"pairs.jsonl line 3: missing field 'rejected'"):
        load_dpo_data(cfg)
    path.write_text('{"prompt": "q ?", "chosen": "same", "rejected": "same"}\n')
    with pytest.raises(DatasetFormatError, match="line 1.*same answer"):
        load_preference_rows(path)


@pytest.mark.parametrize("cls, overrides, field_name", [
    (GrpoConfig, {"rewards": ["kindness"]}, "rewards"),
    (GrpoConfig, {"num_generations": 3}, "per_device_train_batch_size"),
    (GrpoConfig, {"num_generations": 1}, "num_generations"),
    (GrpoConfig, {"reward_weights": [1.0]}, "reward_weights"),
    (GrpoConfig, {"eval_fraction": 0.2}, "eval_fraction"),
    (PpoConfig, {"num_mini_batches": 3}, "per_device_train_batch_size"),
    (PpoConfig, {"lam": 1.5}, "lam"),
    (PpoConfig, {"accelerate_config": "ddp_cpu_2proc"}, "accelerate_config"),
    (PpoConfig, {"init_lora_weights": "pissa"}, "init_lora_weights"),
    (DpoConfig, {"loss_type": "magic"}, "loss_type"),
    (DpoConfig, {"beta": 0}, "beta"),
    (DpoConfig, {"datasets": [{"path": "assets/knowledge/qa.jsonl", "format": "qa"}]}, r"datasets\[0\].format"),
])
def test_bad_rl_values_name_the_field(cls, overrides, field_name):
    dataset = ({"path": "assets/data/preference_qa.jsonl", "format": "preference"} if cls is DpoConfig
               else {"path": "assets/data/prompts_qa.jsonl", "format": "prompt_completion"})
    base = {"datasets": [dataset], "per_device_train_batch_size": 4}
    with pytest.raises(ValueError, match=field_name):
        cls(**(base | overrides))


@pytest.mark.parametrize("overrides, field_name", [
    ({"d_model": 100, "n_heads": 3}, "d_model"),
    ({"n_heads": 4, "n_kv_heads": 3}, "n_heads"),
    ({"activation": "tanh"}, "activation"),
    ({"positional_encoding": "alibi"}, "positional_encoding.*alibi"),
    ({"max_length": 512, "max_seq_len": 256}, "max_length"),
    ({"model_id": "embedded"}, "model_id"),
    ({"tokenizer_vocab_size": 100}, "tokenizer_vocab_size"),
    ({"tokenizer": "/no/such/folder"}, "tokenizer"),
    ({"datasets": [{"path": "assets/knowledge/qa.jsonl", "format": "qa"}]}, r"datasets\[0\].format"),
])
def test_invalid_architecture_names_the_field(overrides, field_name):
    base = {"datasets": [{"path": "assets/knowledge/llm_knowledge_guide.md", "format": "text"}], "max_length": 128}
    with pytest.raises(ValueError, match=field_name):
        PretrainConfig(**(base | overrides))


def test_reward_names_are_the_documented_ones():
    assert set(REWARDS) == {"token_f1", "format", "length"}
    assert all("Range" in (fn.__doc__ or "") for fn in REWARDS.values())
