"""Read training JSONL files, validate every line, and mix several files by weight.

    python -c "from lab.training.data.datasets import load_rows; print(load_rows('assets/knowledge/qa.jsonl', 'qa')[0])"

Every format becomes TRL's conversational prompt-completion shape,
`{"prompt": [messages...], "completion": [{"role": "assistant", ...}]}`, so one mixture can hold
rows from files of different formats, the model learns in the same chat format it is asked in at
inference, and TRL can mask the prompt out of the loss (`completion_only_loss`). Errors name the
file, the line number and the field.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset

from lab.core.files import iter_jsonl, write_jsonl
from lab.training.configs.base import DATASET_FORMATS, DatasetSpec

ROLES = ("system", "user", "assistant")


class DatasetFormatError(ValueError):
    """A dataset file is missing, unreadable or has a line in the wrong shape; the message says where."""


def _text(row: dict, key: str, where: str) -> str:
    if key not in row:
        raise DatasetFormatError(f"{where}: missing field '{key}' (found: {', '.join(row) or 'nothing'})")
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise DatasetFormatError(f"{where}: field '{key}' must be a non-empty string, got {value!r:.80}")
    return value


def _messages(value: Any, key: str, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DatasetFormatError(f"{where}: field '{key}' must be a non-empty list of {{role, content}} messages")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES or not isinstance(msg.get("content"), str):
            raise DatasetFormatError(f"{where}: {key}[{i}] must be {{\"role\": one of {'/'.join(ROLES)}, "
                                     f"\"content\": text}}, got {msg!r:.80}")
        out.append({"role": msg["role"], "content": msg["content"]})
    return out


def _user_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def to_prompt_completion(row: dict, fmt: str, where: str) -> dict[str, list[dict[str, str]]]:
    """One JSONL row in `fmt` -> {"prompt": [...], "completion": [assistant message]} (validated)."""
    if not isinstance(row, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if fmt == "qa":
        return {"prompt": _user_turn(_text(row, "question", where)),
                "completion": _assistant_turn(_text(row, "answer", where))}
    if fmt == "instruction":
        instruction = _text(row, "instruction", where)
        extra = row.get("input") or ""
        if not isinstance(extra, str):
            raise DatasetFormatError(f"{where}: field 'input' must be a string, got {extra!r:.80}")
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return {"prompt": _user_turn(prompt), "completion": _assistant_turn(_text(row, "response", where))}
    if fmt == "prompt_completion":
        for key in ("prompt", "completion"):
            if key not in row:
                raise DatasetFormatError(f"{where}: missing field '{key}' (found: {', '.join(row) or 'nothing'})")
        # Plain strings become one user turn and one assistant turn; lists are already chat messages.
        prompt = (_user_turn(_text(row, "prompt", where)) if isinstance(row["prompt"], str)
                  else _messages(row["prompt"], "prompt", where))
        completion = (_assistant_turn(_text(row, "completion", where)) if isinstance(row["completion"], str)
                      else _messages(row["completion"], "completion", where))
        if [m["role"] for m in completion] != ["assistant"]:
            raise DatasetFormatError(f"{where}: field 'completion' must be one assistant message")
        return {"prompt": prompt, "completion": completion}
    if fmt == "messages":
        if "messages" not in row:
            raise DatasetFormatError(f"{where}: missing field 'messages' (found: {', '.join(row) or 'nothing'})")
        messages = _messages(row["messages"], "messages", where)
        if messages[-1]["role"] != "assistant" or len(messages) < 2:
            raise DatasetFormatError(f"{where}: field 'messages' must end with an assistant message after at "
                                     "least one other message")
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    raise DatasetFormatError(f"unknown dataset format {fmt!r}; use one of {', '.join(DATASET_FORMATS)}")


def read_rows(path: str | Path, convert: Callable[[Any, str], dict]) -> list[dict]:
    """Every row of a JSONL file through `convert(row, where)`, where names the file and line for
    error messages; blank lines are skipped and an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"dataset file {path} does not exist")
    rows = [convert(row, f"{path} line {number}") for number, row in iter_jsonl(path, error=DatasetFormatError)]
    if not rows:
        raise DatasetFormatError(f"dataset file {path} has no rows")
    return rows


def load_rows(path: str | Path, fmt: str) -> list[dict]:
    """All rows of one JSONL file in prompt-completion shape."""
    return read_rows(path, lambda row, where: to_prompt_completion(row, fmt, where))


def mix_rows(sources: list[tuple[list[dict], float]], seed: int) -> list[dict]:
    """Mix row lists by relative weight into one shuffled list as long as all sources together.

    Source i contributes round(total * w_i / sum(w)) rows: drawn without replacement while it has
    enough, repeated whole (then topped up at random) when its weight asks for more than it holds.
    """
    rng = random.Random(seed)
    total = sum(len(rows) for rows, _ in sources)
    weight_sum = sum(weight for _, weight in sources)
    mixed: list[dict] = []
    for rows, weight in sources:
        want = max(1, round(total * weight / weight_sum))
        repeats, rest = divmod(want, len(rows))
        mixed.extend(rows * repeats + rng.sample(rows, rest))
    rng.shuffle(mixed)
    return mixed


def load_mixture(specs: list[DatasetSpec], seed: int) -> Dataset:
    """The weighted mixture of several JSONL files as one `datasets.Dataset` (prompt, completion)."""
    return Dataset.from_list(mix_rows([(load_rows(s.resolved, s.format), s.weight) for s in specs], seed))


def load_train_eval(specs: list[DatasetSpec], eval_spec: DatasetSpec | None, eval_fraction: float,
                    seed: int) -> tuple[Dataset, Dataset | None]:
    """Training mixture and held-out set: a separate file, a share of the training rows, or none."""
    train = load_mixture(specs, seed)
    if eval_spec is not None:
        return train, Dataset.from_list(load_rows(eval_spec.resolved, eval_spec.format))
    if eval_fraction > 0:
        if len(train) < 2:
            raise DatasetFormatError("eval_fraction needs at least 2 training rows to hold some out")
        split = train.train_test_split(test_size=eval_fraction, seed=seed)
        return split["train"], split["test"]
    return train, None


def convert_qa_file(src: str | Path, dst: str | Path) -> Path:
    """Write a question/answer JSONL file as chat messages JSONL (the 'messages' format)."""
    rows = load_rows(src, "qa")  # validates every line first
    return write_jsonl(dst, ({"messages": row["prompt"] + row["completion"]} for row in rows))
