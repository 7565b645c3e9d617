"""The command line: flags generated from config dataclasses, every command listed, user errors exit 2.

    .venv/bin/python -m pytest -q tests/app/test_cli.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from lab.bench.serve import ServeBenchConfig
from lab.cli import build_parser, leaf_commands, main
from lab.cli.flags import add_flags, flag_name
from lab.inference.generate import GenerationSettings
from lab.knowledge.compare import CompareConfig
from lab.training.data.builder import BuilderConfig

COMMANDS = ["info", "prepare", "generate", "ask", "eval", "bench cag", "bench train", "bench serve", "train",
            "jobs submit", "jobs list", "jobs plan", "jobs stop", "jobs kill", "jobs resume", "jobs delete", "jobs show",
            "merge", "show-command", "sweep", "explain", "dataset build", "hash-password", "screenshots", "arena vote",
            "arena ratings", "history list"]


@dataclass
class Inner:
    depth: int = 2
    """How deep the inner thing goes."""


@dataclass
class Toy:
    """A throwaway config: one field of each kind the generator handles."""

    steps: int = 7
    """Optimizer steps to run; 100% of them are logged."""
    rate: float = 0.5
    """Learning rate of the toy."""
    name: str | None = None
    """Optional run name."""
    fast: bool = True
    """Skip the slow path."""
    tags: list[str] = field(default_factory=lambda: ["a", "b"])
    """Labels attached to the run."""
    ids: tuple[int, ...] = ()
    """Token ids that end a run."""
    mode: Literal["lora", "full"] = "lora"
    """Which weights train."""
    inner: Inner = field(default_factory=Inner)
    """The nested part."""
    model_id: str = "embedded"
    """Model to train."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def toy_parser(**options) -> tuple[argparse.ArgumentParser, Callable]:
    parser = argparse.ArgumentParser(prog="toy")
    return parser, add_flags(parser, Toy, **options)


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_a_documented_field_gets_a_flag_with_its_help_type_and_default():
    parser, build = toy_parser()
    assert build(parser.parse_args([])) == Toy()
    text = " ".join(parser.format_help().split())  # argparse wraps lines at the terminal width
    assert "--steps STEPS" in text and "Optimizer steps to run; 100% of them are logged. (default: 7)" in text
    assert option(parser, "--rate").type is float and option(parser, "--rate").default == 0.5
    assert option(parser, "--name").help == "Optional run name."  # None: no "(default: None)"
    assert "--fast, --no-fast" in text and "Skip the slow path. (default: True)" in text
    assert "--mode {lora,full}" in text and "--depth DEPTH" in text and "How deep the inner thing goes." in text
    got = build(parser.parse_args(["--steps", "3", "--rate", "1e-3", "--name", "run1", "--no-fast", "--tags", "x",
                                   "--ids", "1", "2", "--mode", "full", "--depth", "5"]))
    assert got == Toy(steps=3, rate=1e-3, name="run1", fast=False, tags=["x"], ids=(1, 2), mode="full",
                      inner=Inner(depth=5))


def test_defaults_renames_and_skips_are_per_command():
    parser, build = toy_parser(defaults={"steps": 2, "depth": 9}, rename={"model_id": "model"}, skip=("tags",))
    assert "--model" in parser.format_help() and "--model-id" not in parser.format_help()
    assert "--tags" not in parser.format_help()
    assert build(parser.parse_args(["--model", "x"])) == Toy(steps=2, inner=Inner(depth=9), model_id="x")
    with pytest.raises(ValueError, match="no field nope"):
        toy_parser(rename={"nope": "x"})


def test_a_nested_default_set_by_the_outer_config_is_kept():
    @dataclass
    class Outer:
        inner: Inner = field(default_factory=lambda: Inner(depth=4))
        """An inner part deeper than Inner's own default."""

    parser = argparse.ArgumentParser()
    build = add_flags(parser, Outer)
    assert build(parser.parse_args([])) == Outer() and "(default: 4)" in parser.format_help()


def test_the_config_validates_what_the_user_typed():
    parser, build = toy_parser()
    with pytest.raises(ValueError, match="steps must be >= 1"):
        build(parser.parse_args(["--steps", "0"]))
    with pytest.raises(SystemExit):  # argparse: not a number, exit 2
        parser.parse_args(["--steps", "many"])


def test_a_type_without_a_flag_is_refused_when_the_parser_is_built():
    @dataclass
    class Odd:
        table: dict = field(default_factory=dict)
        """Not a command-line value."""

    with pytest.raises(TypeError, match="Odd.table"):
        add_flags(argparse.ArgumentParser(), Odd)


def command(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for word in name.split():
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def field_names(config: type) -> list[str]:
    """Every field, a nested dataclass's own fields in its place (they are flattened into one namespace)."""
    hints = typing.get_type_hints(config)
    return [name for f in dataclasses.fields(config)
            for name in (field_names(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else [f.name])]


REQUIRED = {"generate": ["--prompt", "p"], "ask": ["--question", "q"], "dataset build": ["--out", "o.jsonl"]}
RENAMED = {"model_id": "model", "requests_per_client": "requests"}  # flags whose names predate the field


@pytest.mark.parametrize("name, config", [("generate", GenerationSettings), ("ask", CompareConfig),
                                          ("eval", CompareConfig), ("bench cag", CompareConfig),
                                          ("bench serve", ServeBenchConfig), ("dataset build", BuilderConfig)])
def test_every_field_of_a_commands_config_is_a_flag(name, config):
    """A field added to one of these configs appears on its command with no code in lab/cli."""
    parser = command(build_parser(), name)
    options = {s for a in parser._actions for s in a.option_strings}
    assert not [n for n in field_names(config) if flag_name(RENAMED.get(n, n)) not in options]
    parsed = parser.parse_args(REQUIRED.get(name, []))
    assert parsed.config(parsed) == config(**({"max_new_tokens": 128} if config is GenerationSettings else {}))


def test_flags_that_existed_keep_their_names_and_defaults():
    parser = build_parser()
    ask = parser.parse_args(["ask", "--question", "q"])
    cfg = ask.config(ask)
    assert (ask.methods, cfg.max_new_tokens, cfg.rag.top_k, cfg.model_id) == ("rag,cag,full,base", 48, 3, None)
    gen = parser.parse_args(["generate", "--prompt", "p", "--temperature", "0.7", "--seed", "1", "--model", "m"])
    assert gen.config(gen) == GenerationSettings(max_new_tokens=128, temperature=0.7, seed=1) and gen.model == "m"
    serve = parser.parse_args(["bench", "serve", "--clients", "2", "--requests", "3", "--max-new-tokens", "4"])
    assert serve.config(serve) == ServeBenchConfig(clients=2, requests_per_client=3, max_new_tokens=4)
    build = parser.parse_args(["dataset", "build", "--out", "x.jsonl", "--pairs-per-chunk", "3", "--max-chunks", "1",
                               "--model", "m", "--chunk-size", "300", "--base-url", "http://h/v1",
                               "--endpoint-model", "e", "--api-key-env", "K"])
    assert build.config(build) == BuilderConfig(pairs_per_chunk=3, max_chunks=1, model_id="m", chunk_size=300,
                                                base_url="http://h/v1", endpoint_model="e", api_key_env="K")
    ev = parser.parse_args(["eval", "--qa", "q.jsonl", "--methods", "base", "--limit", "2", "--out", "o.json",
                            "--csv", "o.csv", "--top-k", "5", "--max-new-tokens", "9", "--doc", "d.md"])
    assert (ev.qa, ev.limit, ev.out, ev.csv, ev.doc, ev.config(ev).rag.top_k) == ("q.jsonl", 2, "o.json", "o.csv",
                                                                                  "d.md", 5)
    cag = parser.parse_args(["bench", "cag", "--questions", "2", "--new-tokens", "4", "--json"])
    assert (cag.questions, cag.new_tokens, cag.json) == (2, 4, True)
    assert parser.parse_args(["bench", "train", "--steps", "4", "--model", "m"]).steps == 4
    assert parser.parse_args(["train", "c.yaml", "--resume"]).resume
    submit = parser.parse_args(["jobs", "submit", "c.yaml", "--wait", "--timeout", "5"])
    assert (submit.config, submit.wait, submit.timeout) == ("c.yaml", True, 5.0)
    assert parser.parse_args(["jobs", "show", "J", "--lines", "3"]).lines == 3
    assert parser.parse_args(["jobs", "resume", "J", "--wait"]).wait
    merge = parser.parse_args(["merge", "--adapter", "a", "--out", "o", "--base", "b"])
    assert (merge.adapter, merge.out, merge.base) == ("a", "o", "b")
    sweep = parser.parse_args(["sweep", "--resume", "S", "--csv", "o.csv", "--timeout", "9"])
    assert (sweep.sweep, sweep.resume, sweep.csv, sweep.timeout) == (None, "S", "o.csv", 9.0)


def test_help_lists_every_command(capsys):
    assert [name for name, _ in leaf_commands(build_parser())] == COMMANDS
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for name in COMMANDS:
        assert f"\n  {name} " in text, name
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([*name.split(), "--help"])
        assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out


def test_explain_prints_searches_and_lists_the_catalog(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    assert main(["explain", "use_rslora"]) == 0
    assert "alpha / sqrt(r)" in capsys.readouterr().out
    assert main(["explain", "use_rsloar"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "use_rslora" in err
    assert main(["explain", "--search", "nesterov"]) == 0
    assert "muon_nesterov" in capsys.readouterr().out
    assert main(["explain"]) == 0
    assert "lora_alpha" in capsys.readouterr().out


def test_user_errors_exit_2_with_the_fields_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    assert main(["dataset", "build", "--out", str(tmp_path / "x.jsonl"), "--pairs-per-chunk", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: pairs_per_chunk must be between 1 and 10")
    assert main(["ask", "--question", "q", "--chunk-overlap", "900", "--chunk-size", "100"]) == 2
    assert "chunk_overlap" in capsys.readouterr().err
    assert main(["sweep"]) == 2
    assert "give one of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["ask"])  # a missing required flag is argparse's error, also 2
    assert exit_.value.code == 2 and "error:" in capsys.readouterr().err


def test_eval_of_another_document_without_a_qa_file_asks_for_one(tmp_path, monkeypatch, capsys):
    """It used to score the bundled guide's questions against the user's own document."""
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\n## Leave\nStaff get 25 days of leave.\n", encoding="utf-8")
    assert main(["eval", "--doc", str(notes), "--methods", "base"]) == 2
    assert "needs a QA file" in capsys.readouterr().err


def test_jobs_list_on_an_empty_data_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    assert main(["jobs", "list"]) == 0
    assert f"no jobs in {tmp_path / 'jobs'}" in capsys.readouterr().out
    assert main(["jobs", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_show_command_prints_the_launch_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    preset = Path(__file__).resolve().parents[2] / "assets/presets/sft_lora_qa.yaml"
    assert main(["show-command", str(preset)]) == 0
    assert "-m lab.training.jobs.launch" in capsys.readouterr().out
