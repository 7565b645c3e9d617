"""Data for the preference and reward kinds: preference rows (DPO), prompt + reference rows (GRPO,
PPO), and the builders of the bundled demo sets derived from the knowledge QA set.

    python -c "from lab.training.data.rl import build_bundled_sets; build_bundled_sets()"  # rewrites the two sets

Rows come out in TRL's conversational shapes: `{"prompt": [messages], "chosen": [assistant],
"rejected": [assistant]}` for DPO and `{"prompt": [messages], "reference": text}` for GRPO and
PPO (the reference answer travels in its own column because TRL hands every column except
prompt and completion to the reward functions). Errors name the file, the line and the field.
"""

from __future__ import annotations

import random
from pathlib import Path

from lab.core.files import read_jsonl, write_jsonl
from lab.core.settings import BUNDLED_QA, REPO_ROOT
from lab.training.configs.base import DatasetSpec
from lab.training.data.datasets import DatasetFormatError, load_rows, mix_rows, read_rows

DATA_DIR = REPO_ROOT / "assets" / "data"
PREFERENCE_SET = DATA_DIR / "preference_qa.jsonl"
PROMPT_SET = DATA_DIR / "prompts_qa.jsonl"
SHORT_ANSWER_SYSTEM = "Answer the question in one short sentence."
"""The system turn of the bundled prompt set: what the format and length rewards ask for."""


# ---- reading ------------------------------------------------------------------------------------
def _turns(row: dict, key: str, role: str, where: str) -> list[dict[str, str]]:
    """A field that is either a non-empty string (one `role` turn) or a list of {role, content} messages."""
    if key not in row:
        raise DatasetFormatError(f"{where}: missing field '{key}' (found: {', '.join(row) or 'nothing'})")
    value = row[key]
    if isinstance(value, str):
        if not value.strip():
            raise DatasetFormatError(f"{where}: field '{key}' is empty")
        return [{"role": role, "content": value}]
    if (not isinstance(value, list) or not value
            or not all(isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                       and isinstance(m.get("content"), str) for m in value)):
        raise DatasetFormatError(f"{where}: field '{key}' must be a string or a list of {{role, content}} "
                                 f"messages, got {value!r:.80}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def preference_row(row: object, where: str) -> dict[str, list[dict[str, str]]]:
    """One JSONL object {prompt, chosen, rejected} -> TRL's conversational preference row (validated)."""
    if not isinstance(row, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    out = {"prompt": _turns(row, "prompt", "user", where)}
    for key in ("chosen", "rejected"):
        answer = _turns(row, key, "assistant", where)
        if [m["role"] for m in answer] != ["assistant"]:
            raise DatasetFormatError(f"{where}: field '{key}' must be one assistant message")
        out[key] = answer
    if out["chosen"][0]["content"].strip() == out["rejected"][0]["content"].strip():
        raise DatasetFormatError(f"{where}: 'chosen' and 'rejected' are the same answer; nothing to prefer")
    return out


def load_preference_rows(path: str | Path) -> list[dict]:
    """Every row of a preference JSONL file, each checked by preference_row."""
    return read_rows(path, preference_row)


def load_preference_mixture(specs: list[DatasetSpec], seed: int) -> list[dict]:
    return mix_rows([(load_preference_rows(s.resolved), s.weight) for s in specs], seed)


def load_prompt_mixture(specs: list[DatasetSpec], seed: int) -> list[dict]:
    """Prompt + reference rows from files in any chat format: the prompt turns, and the answer as reference."""
    sources = []
    for spec in specs:
        rows = load_rows(spec.resolved, spec.format)
        sources.append(([{"prompt": r["prompt"], "reference": r["completion"][0]["content"]} for r in rows],
                        spec.weight))
    return mix_rows(sources, seed)


def within_max_length(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """The rows whose chat-formatted prompt fits in max_length tokens, and how many were dropped."""
    kept = [r for r in rows
            if len(tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, return_dict=False))
            <= max_length]
    if not kept:
        raise ValueError(f"max_length: every prompt is longer than {max_length} tokens; raise max_length")
    return kept, len(rows) - len(kept)


# ---- building the bundled demo sets --------------------------------------------------------------
RAMBLE_OPENINGS = (
    "That is a really interesting question, and there are many things one could say about it.",
    "Well, it depends on a lot of factors, and people in the field have discussed this for a long time.",
    "Great question! Before answering, it helps to step back and think about the bigger picture.",
    "There is no single simple answer here, because several ideas interact in subtle ways.",
)
RAMBLE_CLOSINGS = (
    "In any case, it is worth reading more about it and experimenting to see what works best for you.",
    "Overall, the details vary from one setup to another, so the best answer really depends on context.",
)


def _has_digit(text: str) -> bool:
    return any(ch.isdigit() for ch in text)


def build_preference_set(qa_rows: list[dict[str, str]], seed: int = 0) -> list[dict[str, str]]:
    """prompt/chosen/rejected rows: chosen = the right short answer; rejected alternates between a plausible
    wrong answer (another question's answer of the same kind: a number for a number) and a rambling one
    (a long preamble, with the right answer buried in it on every other such row)."""
    rng = random.Random(seed)
    rows = []
    for i, qa in enumerate(qa_rows):
        question, answer = qa["question"], qa["answer"]
        if i % 2 == 0:
            same_kind = [r["answer"] for r in qa_rows
                         if r["answer"] != answer and _has_digit(r["answer"]) == _has_digit(answer)]
            rejected = rng.choice(same_kind or [r["answer"] for r in qa_rows if r["answer"] != answer])
        else:
            opening, closing = rng.choice(RAMBLE_OPENINGS), rng.choice(RAMBLE_CLOSINGS)
            middle = f" Some would say it is {answer}, though opinions differ." if i % 4 == 1 else ""
            rejected = f"{opening}{middle} {closing}"
        rows.append({"prompt": question, "chosen": answer, "rejected": rejected})
    return rows


def build_prompt_set(qa_rows: list[dict[str, str]]) -> list[dict]:
    """prompt_completion rows for GRPO and PPO: a system turn asking for one short sentence, the question,
    and the reference answer as the completion."""
    return [{"prompt": [{"role": "system", "content": SHORT_ANSWER_SYSTEM},
                        {"role": "user", "content": qa["question"]}],
             "completion": qa["answer"]} for qa in qa_rows]


def build_bundled_sets(qa_path: Path = BUNDLED_QA) -> tuple[Path, Path]:
    qa_rows = read_jsonl(qa_path)
    return (write_jsonl(PREFERENCE_SET, build_preference_set(qa_rows)),
            write_jsonl(PROMPT_SET, build_prompt_set(qa_rows)))
