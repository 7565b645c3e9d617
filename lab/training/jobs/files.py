"""The files of one job folder, `<data>/jobs/<id>/`, and the plain helpers that read and write them.

    python -c "from lab.training.jobs.files import log_tail; print(log_tail('data/jobs/<id>'))"

A job folder holds config.yaml, status.json (lab/training/jobs/status.py is its only writer),
metrics.jsonl (one row per log step), train.log, checkpoints/ and output/. Only the main process
(rank 0) writes. Nothing here imports torch or transformers, so listing jobs stays cheap.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.core.files import append_jsonl, read_jsonl

CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
STOP_FILE = "STOP"
CHECKPOINTS_DIR = "checkpoints"
OUTPUT_DIR = "output"
EFFECTIVE_ARGS_FILE = "effective_args.json"
"""Every resolved trainer argument (library defaults filled in), the model's dtype and attention: what really ran."""

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
"""The folder name transformers' Trainer (and the PPO loop) gives a checkpoint: checkpoint-<global step>."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def is_main_process() -> bool:
    """Rank 0 of a distributed launch, or the only process (set by torchrun/accelerate before we start)."""
    return int(os.environ.get("RANK", "0")) == 0


def data_dir_of(job_dir: Path) -> Path:
    """<data>/jobs/<id> -> <data>."""
    return Path(job_dir).resolve().parent.parent


def append_metrics(job_dir: Path, row: dict[str, Any]) -> None:
    append_jsonl(Path(job_dir) / METRICS_FILE, row)


def read_metrics(job_dir: Path, since: int = 0) -> list[dict[str, Any]]:
    """Metric rows from row `since` on (pass the count you already have to fetch only new ones); a row being
    written right now is left for the next read."""
    return read_jsonl(Path(job_dir) / METRICS_FILE, since, partial_tail=True)


def log_tail(job_dir: Path, lines: int = 40) -> str:
    path = Path(job_dir) / LOG_FILE
    if not path.exists():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64 * 1024))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def stop_requested(job_dir: Path) -> bool:
    return (Path(job_dir) / STOP_FILE).exists()


def last_checkpoint(job_dir: Path) -> str | None:
    """The checkpoint with the highest step under checkpoints/ (the rule of transformers' get_last_checkpoint),
    or None when there is none yet."""
    folder = Path(job_dir) / CHECKPOINTS_DIR
    steps = {int(m.group(1)): p for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()
             } if folder.is_dir() else {}
    return str(steps[max(steps)]) if steps else None
