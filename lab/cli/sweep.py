"""Command-line sweeps and explanations, over lab.explain.sweep and lab.explain.catalog.

    python -m lab sweep assets/sweeps/lora_rank.yaml --csv lora_rank.csv
    python -m lab sweep --resume 20261121-120000-lora_rank-1a2b
    python -m lab explain lora_alpha
    python -m lab explain --search warmup     # names of matching entries; no name lists them all

`add_commands(subparsers)` adds these to the lab's parser; each handler is `fn(engine, args)` and
calls the Engine's sweep and catalog methods. A user error (a bad sweep file, an unknown catalog
name) raises ValueError or KeyError, which lab.cli.main prints as `error: ...` with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from lab.cli.knowledge import progress


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(rows: list[dict]) -> None:
    """The results table as aligned text columns."""
    columns = [("point", "point"), ("state", "state"), ("final_train_loss", "train loss"),
               ("final_eval_loss", "eval loss"), ("qa_f1", "QA F1"), ("tokens_per_s", "tok/s"),
               ("peak_memory_mb", "peak MB"), ("trainable_params", "trainable")]
    table = [[title for _, title in columns]] + [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _cmd_sweep(engine, args: argparse.Namespace) -> None:
    if sum(x is not None for x in (args.sweep, args.resume, args.suggest)) != 1:
        raise ValueError("give one of: a sweep file (python -m lab sweep SWEEP.yaml), --suggest KNOB or --resume ID")
    if args.plan or args.suggest:
        sweep = engine.sweeps.suggest(args.suggest) if args.suggest else engine.sweeps.load_file(args.sweep)
        if args.plan:  # the points and their controlled variables, nothing run
            plan = engine.sweeps.plan(sweep)
            print(json.dumps(plan, indent=1) if args.json else "\n".join(
                f"{p['point']}: max_steps {p['max_steps']}, examples {p['examples']:g}, tokens {p['tokens']}, "
                f"lora_scale {p['lora_scale']}" for p in plan))
            return
    if args.resume:
        for label, action in engine.sweeps.resume(args.resume).items():
            print(f"{label}: {action}", file=sys.stderr)
        sweep_id = args.resume
    else:
        sweep = engine.sweeps.suggest(args.suggest) if args.suggest else engine.sweeps.load_file(args.sweep)
        sweep_id = engine.sweeps.start(sweep)
        progress(0, 1, f"sweep {sweep_id}: {len(sweep.points())} points queued")
    report = engine.sweeps.finish(sweep_id, progress, args.timeout)
    print(f"sweep {report.sweep_id} ({engine.settings.data_dir / 'sweeps' / report.sweep_id})")
    print_table(report.rows)
    print(f"\nDecision: {report.decision.choice or 'none yet'}\n{report.decision.explanation}")
    if args.csv:
        print(f"wrote {engine.sweeps.export(report.sweep_id, args.csv)}", file=sys.stderr)


def _cmd_explain(engine, args: argparse.Namespace) -> None:
    # An unknown name raises KeyError with close matches; lab.cli.main prints it and exits with 2.
    if args.search is not None:
        for entry in engine.explain.catalog_search(args.search):
            print(f"{entry.name:32} {entry.title}")
    elif args.name is None:
        for entry in engine.explain.catalog_entries():
            print(f"{entry.group:14} {entry.name:32} {entry.title}")
    else:
        print(engine.explain.markdown(args.name, args.trainer))


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser("sweep", help="run a grid over one training config as jobs, then a table and a "
                                                "decision")
    sweep.add_argument("sweep", nargs="?", default=None, help="a sweep YAML, e.g. assets/sweeps/lora_rank.yaml")
    sweep.add_argument("--resume", metavar="ID", default=None,
                       help="re-attach to an earlier sweep: keep finished points, rerun the rest")
    sweep.add_argument("--csv", metavar="OUT", default=None, help="also write the results table as CSV here")
    sweep.add_argument("--suggest", metavar="KNOB", default=None, help="the Explain tab's suggested sweep for KNOB")
    sweep.add_argument("--plan", action="store_true", help="print the planned points (overrides, max_steps, "
                                                            "examples, tokens, lora_scale) and run nothing")
    sweep.add_argument("--json", action="store_true", help="with --plan: as JSON")
    sweep.add_argument("--timeout", type=float, default=24 * 3600, help="seconds to wait for the jobs at most")
    sweep.set_defaults(fn=_cmd_sweep)

    explain = subparsers.add_parser("explain", help="what a hyperparameter does, its symptoms, default and how "
                                                    "to tune it")
    explain.add_argument("name", nargs="?", default=None,
                         help="a catalog name or alias, e.g. r, lora_alpha, learning_rate, scheduler.cosine "
                              "(none: list every entry)")
    explain.add_argument("--search", metavar="TEXT", default=None, help="list the entries whose text mentions TEXT")
    explain.add_argument("--trainer", metavar="KIND", default=None,
                         help="the trainer whose config field NAME is (sft, dpo, grpo, ppo, pretrain): 'beta' "
                              "means different knobs in dpo and grpo")
    explain.set_defaults(fn=_cmd_explain)
