"""The noisy-neighbour benchmark's pieces: the flag reaches the config, and the many-headings document is what the
report described (thousands of one-line sections) and stays under the chunk cap once merged.

    .venv/bin/python -m pytest -q tests/bench/test_bench_neighbour.py
"""

from __future__ import annotations

from lab.bench.neighbour import many_headings
from lab.core.settings import LabSettings
from lab.knowledge.documents import load_document
from lab.knowledge.rag import RagConfig, split_chunks


def test_the_flag_reaches_the_config():
    from lab.cli import build_parser
    args = build_parser().parse_args(["bench", "serve", "--noisy-neighbour", "--json"])
    assert args.config(args).noisy_neighbour is True


def test_many_headings_is_a_build_under_the_chunk_cap(tmp_path):
    path = many_headings(tmp_path / "notes.md")
    text = path.read_text()
    assert text.count("\n## ") == 5000 and len(text) > 70_000
    assert many_headings(tmp_path / "again.md").read_text() != text  # a new document, so a new build, every run
    chunks = split_chunks(load_document(path), RagConfig())
    assert 100 < len(chunks) <= LabSettings().max_chunks


def test_the_adapter_flag_reaches_the_arena_config():
    from lab.cli import build_parser
    args = build_parser().parse_args(["bench", "serve", "--arena", "3", "--adapter", "qa", "--json"])
    cfg = args.config(args)
    assert (cfg.arena, cfg.adapter) == (3, "qa")
