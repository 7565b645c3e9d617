"""Commands that load no model start without a model library: no torch, transformers, trl, peft,
sentence-transformers, FAISS or gradio is imported by `--help`, the bookkeeping commands or hash-password.

    .venv/bin/python -m pytest -q tests/app/test_cli_startup.py

Each command runs in a fresh interpreter (`-X importtime`) over an empty temporary data directory; a
failure names the chain of modules through which the library came in, e.g.
`torch <- lab.inference.session <- lab.engine.jobs <- lab.engine`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.explain import catalog

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "trl", "peft", "sentence_transformers", "faiss", "gradio")

RUN = """
import sys
from lab.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
sys.exit(code)
"""


def import_chains(importtime: str) -> list[str]:
    """'torch <- lab.x <- lab.y' for each heavy package in `-X importtime` output (children print before parents)."""
    entries = []
    for line in importtime.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or "cumulative" in parts[1]:
            continue
        name = parts[2].rstrip()
        entries.append(((len(name) - len(name.lstrip(" "))) // 2, name.strip()))
    chains = []
    for i, (depth, name) in enumerate(entries):
        if name in HEAVY:
            chain = [name]
            for parent_depth, parent in entries[i + 1:]:
                if parent_depth < depth:
                    chain.append(parent)
                    depth = parent_depth
            chains.append(" <- ".join(chain))
    return chains


def run_cli(args: list[str], data_dir: Path, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "LAB_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-X", "importtime", "-c", RUN, *args], cwd=REPO, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


COMMANDS = {
    "help": (["--help"], ""),
    "arena vote --help": (["arena", "vote", "--help"], ""),
    "arena vote": (["arena", "vote", "--a", "model-a", "--b", "model-b", "--winner", "a"], ""),
    "arena ratings": (["arena", "ratings", "--json"], ""),
    "history list": (["history", "list", "--json"], ""),
    "jobs list": (["jobs", "list"], ""),
    "explain NAME": (["explain", catalog.entries()[0].name], ""),
    "hash-password": (["hash-password", "alice"], "a long enough password\n"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_imports_no_model_library(name: str, tmp_path: Path) -> None:
    args, stdin = COMMANDS[name]
    result = run_cli(args, tmp_path / "data", stdin)
    assert result.returncode == 0, result.stderr[-3000:]
    chains = import_chains(result.stderr)
    assert not chains, f"`python -m lab {' '.join(args)}` imported a model library:\n" + "\n".join(chains)


def test_import_chains_reads_importtime() -> None:
    """The failure message's reader: children are printed before their parents, two spaces deeper each."""
    sample = ("import time: self [us] | cumulative | imported package\n"
              "import time:       10 |         10 |       torch._C\n"
              "import time:       20 |         30 |     torch\n"
              "import time:        5 |         35 |   lab.inference.session\n"
              "import time:        1 |         36 | lab.engine\n")
    assert import_chains(sample) == ["torch <- lab.inference.session <- lab.engine"]
