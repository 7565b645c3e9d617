"""How the lab writes files that other processes read: whole or not at all, one writer at a time, JSONL rows.

    python -c "from lab.core.files import atomic_write_json, read_jsonl; atomic_write_json('/tmp/x.json', [1])"

The web app, the job runner, training processes and the command line read each other's files while
they are being written. So a file is written beside its target under a hidden name and renamed over
it (`atomic_write_*`): a reader sees the old file or the new one, never half of one, and a crash or
a full disk leaves the old one whole. A folder (a model, an adapter, an index) is filled the same
way under a hidden name and renamed into place (`publish_dir`). `path_lock` serialises the writers of
one file across processes (a read-modify-write of status.json, starting queued jobs). JSONL files are
read by `iter_jsonl`, which names the file and line of a bad row.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

log = logging.getLogger(__name__)


# ---- one file ------------------------------------------------------------------------------------------------------
@contextmanager
def atomic_open(path: str | Path, binary: bool = False, private: bool = False) -> Iterator[IO]:
    """A handle on a hidden sibling of `path` that replaces `path` in one rename when the body ends without an
    error (and is deleted when it raises). `private` creates it readable by the lab's own user only (0600) from the
    first byte. The hidden name is unique per process and thread, so two writers never share a partial file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.part-{os.getpid()}-{threading.get_ident()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as handle:
            yield handle
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes, private: bool = False) -> Path:
    with atomic_open(path, binary=True, private=private) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, private: bool = False) -> Path:
    with atomic_open(path, private=private) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 1, private: bool = False) -> Path:
    """`data` as JSON (non-ASCII kept as is; dates and paths as text), written atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False, default=str), private)


# ---- one folder ----------------------------------------------------------------------------------------------------
@contextmanager
def publish_dir(target: str | Path, existing: str = "keep") -> Iterator[Path]:
    """An empty hidden sibling folder of `target` to fill; renamed to `target` in one step when the body ends
    without an error, deleted when it raises. Rename is atomic on one file system, so `target` is either absent or
    complete and a crash never leaves a half-written folder that looks finished.

    When `target` exists by then, `existing` says what happens: 'keep' it and drop this one (a cache another
    process built from the same inputs first), 'replace' it (a checkpoint saved again at the same step), or
    'fail' with the rename's OSError (a name that must not stand for two things)."""
    if existing not in ("keep", "replace", "fail"):
        raise ValueError(f"existing must be 'keep', 'replace' or 'fail', got {existing!r}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if existing == "replace":
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if existing != "keep" or not target.is_dir():
                raise
            log.info("%s was published by another process meanwhile; keeping that one", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- one writer at a time ------------------------------------------------------------------------------------------
def path_lock(path: str | Path) -> FileLock:
    """An exclusive lock across processes on the lock file `path` (created on first use, never deleted), to use as
    `with path_lock(folder / ".x.lock"):`. It waits as long as another process holds it; the operating system
    releases it when its holder dies, so a killed process never leaves it held."""
    return FileLock(str(path))


# ---- JSONL ---------------------------------------------------------------------------------------------------------
def iter_jsonl(path: str | Path, since: int = 0, partial_tail: bool = False,
               error: type[Exception] = ValueError) -> Iterator[tuple[int, Any]]:
    """(1-based line number, value) for each non-blank line of a JSONL file, from line `since` + 1 on.

    A line that is not JSON raises `error` naming the file (its name only: messages reach people who did not
    choose the folder) and the line, unless `partial_tail`: then reading stops at it, since a file another process
    appends to (metrics.jsonl) may end in the row being written right now. Text that is not UTF-8 raises `error`."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise error(f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(lines[since:], start=since + 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            if partial_tail:
                return
            raise error(f"{path.name} line {number} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        yield number, value


def read_jsonl(path: str | Path, since: int = 0, partial_tail: bool = False) -> list[Any]:
    """Every value of a JSONL file (see iter_jsonl); a missing file has none."""
    return [value for _, value in iter_jsonl(path, since, partial_tail)] if Path(path).is_file() else []


def _jsonl_line(row: Any) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def append_jsonl(path: str | Path, row: Any) -> None:
    """Add one row. One write of one line in append mode, so a reader sees whole rows (or a torn last one, which
    `partial_tail` readers leave for the next read)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(_jsonl_line(row))


def write_jsonl(path: str | Path, rows: Iterable[Any], private: bool = False) -> Path:
    """All rows, replacing the file atomically; folders above it are created."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, "".join(_jsonl_line(row) for row in rows), private)
