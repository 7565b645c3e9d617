"""Built-in reward functions for GRPO and PPO, and the config fields both kinds share.

    python -c "from lab.training.data.rewards import REWARDS; print(REWARDS['token_f1'](['Paris.'], reference=['paris']))"

Every function has TRL's reward-function signature (trl 1.16, `GRPOTrainer._calculate_rewards`):
it is called as `fn(prompts=..., completions=..., completion_ids=..., **columns)`, where
`completions` holds plain strings or, for chat data, lists of messages ending with the
assistant's, and every other dataset column arrives as a keyword argument with one value per
completion: the lab's prompt sets carry the reference answer in the column `reference`. It
returns one float per completion. lab/training/kinds/ppo_math.py calls the same functions with plain strings.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

RewardFn = Callable[..., list[float]]

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")

LENGTH_MIN_WORDS = 5
"""The length reward allows max(LENGTH_MIN_WORDS, 2 x the reference's words) before it penalises."""


def completion_text(completion: str | list[dict[str, str]]) -> str:
    """The answer text of a completion: the string itself, or the content of the last chat message."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def squad_tokens(text: str) -> list[str]:
    """SQuAD normalisation (lowercase, no punctuation, no articles, single spaces), split on whitespace.

    The same rules as assets/metrics/token_f1 (a test keeps the two in step); that module imports
    `evaluate` and `datasets`, which a training process should not load for a reward.
    """
    lowered = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return _ARTICLES.sub(" ", lowered).split()


def pair_f1(prediction: str, reference: str) -> float:
    pred, ref = squad_tokens(prediction), squad_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def _references(reference: list[str] | None, n: int, name: str) -> list[str]:
    if reference is None:
        raise ValueError(f"reward '{name}' needs the reference answer: a dataset column 'reference' (the lab's "
                         "prompt sets build it from the answer of each row)")
    if len(reference) != n:
        raise ValueError(f"reward '{name}': {n} completions but {len(reference)} references")
    return list(reference)


def token_f1(completions: list, reference: list[str] | None = None, **_: Any) -> list[float]:
    """SQuAD token F1 between the answer and the reference answer. Range [0, 1]: 1 = the same words
    (ignoring case, punctuation and articles), 0 = no word in common. Rewards being right and to the point:
    extra words lower precision, missing ones lower recall."""
    refs = _references(reference, len(completions), "token_f1")
    return [pair_f1(completion_text(c), r) for c, r in zip(completions, refs)]


def format_reward(completions: list, **_: Any) -> list[float]:
    """A short single-sentence answer. Range [0, 1]: 0 for an empty answer; otherwise 0.5 for staying on one
    line plus 0.5 for being at most one sentence (one run of '.', '!' or '?' and only at the end)."""
    scores = []
    for completion in completions:
        text = completion_text(completion).strip()
        if not text:
            scores.append(0.0)
            continue
        one_line = "\n" not in text
        sentences = [part for part in _SENTENCE_END.split(text) if part.strip()]
        scores.append(0.5 * one_line + 0.5 * (len(sentences) <= 1))
    return scores


def length_reward(completions: list, reference: list[str] | None = None, **_: Any) -> list[float]:
    """Penalise long answers. Range [-1, 0]: 0 up to `allowed` words, then -1/allowed per extra word, down to -1.
    allowed = max(5, 2 x the reference's words), or 5 without a reference."""
    refs = reference if reference is not None else [""] * len(completions)
    scores = []
    for completion, ref in zip(completions, refs):
        words = len(completion_text(completion).split())
        allowed = max(LENGTH_MIN_WORDS, 2 * len(ref.split()))
        scores.append(-min(1.0, max(0, words - allowed) / allowed))
    return scores


REWARDS: dict[str, RewardFn] = {"token_f1": token_f1, "format": format_reward, "length": length_reward}
"""Reward functions by the name a config uses; each one's docstring gives its range."""


def combined_reward(names: list[str], weights: list[float] | None, completions: list[str],
                    reference: list[str]) -> list[float]:
    """Weighted sum of the named rewards per completion (weights default to 1 each), as GRPO combines them."""
    weights = weights or [1.0] * len(names)
    columns = [REWARDS[name](completions=completions, reference=reference) for name in names]
    return [sum(w * col[i] for w, col in zip(weights, columns)) for i in range(len(completions))]


def load_reward_model(path: str, device: str):
    """(model, tokenizer) of a local sequence-classification model with one output, frozen, for scoring."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(f"reward_model {path!r} is not a local model folder (it has no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1).to(device).eval()
    model.config.pad_token_id = tokenizer.pad_token_id  # it scores the last token that is not padding
    return model.requires_grad_(False), tokenizer


def reward_model_scores(model, tokenizer, prompts: list[list[dict[str, str]]], completions: list[str]) -> list[float]:
    """The reward model's score of each chat (prompt turns + the answer), as TRL's GRPO computes it."""
    import torch
    texts = [tokenizer.apply_chat_template(p + [{"role": "assistant", "content": c}], tokenize=False)
             if tokenizer.chat_template else "".join(m["content"] for m in p) + c
             for p, c in zip(prompts, completions)]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right",
                       add_special_tokens=False).to(model.device)
    with torch.no_grad():
        return model(**inputs).logits[:, 0].float().tolist()

