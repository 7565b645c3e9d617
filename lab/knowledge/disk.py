"""The knowledge caches on disk, kept under a size cap by deleting the least recently used.

    python -c "from lab.knowledge.disk import cache_entries; from lab.core.settings import LabSettings; \
print(*cache_entries(LabSettings().data_dir / 'knowledge'), sep='\\n')"

Every CAG cache (`<root>/<doc hash>/cag/<key>/`) and RAG index (`<root>/<doc hash>/rag/<key>/`) is
one entry; its folder's modification time is when it was last written or used. After an entry is
written (and when a CAG cache is read back), `enforce_cap(root, keep=that entry)` marks it as just
used and deletes the least recently used others until the whole folder fits in the cap. The entry
just written is never deleted, even when it alone is over the cap. Deleting a cache only costs the
time to rebuild it when the document is asked again; a copy already held in memory keeps working.

The cap is the Engine's LAB_KNOWLEDGE_CACHE_GB for its data directory (`set_cap`), or that variable
(default 5 GB) for code that runs without an Engine.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

from lab.core.settings import LabSettings

log = logging.getLogger(__name__)

METHODS = ("cag", "rag")
_caps: dict[Path, int] = {}
_lock = threading.Lock()  # one eviction at a time in this process


def set_cap(root: str | Path, cap_bytes: int) -> None:
    """The size cap of the caches under `root` (the Engine calls this with its settings)."""
    _caps[Path(root).resolve()] = int(cap_bytes)


def cap_of(root: str | Path) -> int:
    root = Path(root).resolve()
    if root not in _caps:
        _caps[root] = int(LabSettings().knowledge_cache_gb * 2**30)
    return _caps[root]


def _size(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def cache_entries(root: str | Path) -> list[tuple[float, int, Path]]:
    """(last used, bytes, folder) of every complete cache under `root`, least recently used first.
    Hidden folders (builds in progress) are skipped."""
    entries = []
    for folder in Path(root).glob("*/*/*"):
        if folder.parent.name in METHODS and folder.is_dir() and not folder.name.startswith("."):
            try:
                entries.append((folder.stat().st_mtime, _size(folder), folder))
            except FileNotFoundError:  # deleted meanwhile by another process
                continue
    return sorted(entries, key=lambda e: e[0])


def enforce_cap(root: str | Path, keep: str | Path | None = None, cap_bytes: int | None = None) -> list[Path]:
    """Mark `keep` as just used, then delete the least recently used other entries until `root` fits in the
    cap; returns the folders deleted."""
    cap = cap_of(root) if cap_bytes is None else cap_bytes
    keep = Path(keep).resolve() if keep is not None else None
    with _lock:
        if keep is not None and keep.is_dir():
            os.utime(keep)
        entries = cache_entries(root)
        total = sum(size for _, size, _ in entries)
        deleted = []
        for _, size, folder in entries:
            if total <= cap:
                break
            if folder.resolve() == keep:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            deleted.append(folder)
            for parent in (folder.parent, folder.parent.parent):  # <hash>/<method>, then <hash>, once empty
                try:
                    parent.rmdir()
                except OSError:
                    break
    if deleted:
        log.info("knowledge caches over %.2f GB: deleted %d least recently used (%s)", cap / 2**30, len(deleted),
                 ", ".join(str(f.relative_to(root)) for f in deleted))
    return deleted
