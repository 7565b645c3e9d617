"""Command-line sweeps and explanations, over lab.explain.sweep and lab.explain.catalog.

    python -m lab sweep assets/sweeps/lora_rank.yaml --csv lora_rank.csv
    python -m lab sweep --resume 20261121-120000-lora_rank-1a2b
    python -m lab explain lora_alpha

`add_commands(subparsers)` adds these to the lab's parser; each handler is `fn(engine, args)`.
A user error (a bad sweep file, an unknown catalog name) raises ValueError or KeyError, which
the caller prints as `error: ...` with exit code 2. `python -m lab sweep|explain ...` runs them.
"""

from __future__ import annotations

import argparse
import sys

from lab.explain import catalog


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
    from lab.training.jobs.runner import JobRunner
    from lab.explain.sweep import export_csv, finish_sweep, load_sweep_file, resume_sweep, run_sweep

    if (args.sweep is None) == (args.resume is None):
        raise ValueError("give one of: a sweep file (python -m lab sweep SWEEP.yaml) or --resume SWEEP_ID")
    data_dir = engine.settings.data_dir
    runner = JobRunner(data_dir)

    def progress(done: int, total: int, message: str) -> None:
        print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)

    if args.resume:
        for label, action in resume_sweep(args.resume, data_dir, runner).items():
            print(f"{label}: {action}", file=sys.stderr)
        report = finish_sweep(args.resume, data_dir, runner, engine, progress, args.timeout)
    else:
        report = run_sweep(load_sweep_file(args.sweep), data_dir, runner, engine, progress, args.timeout)
    print(f"sweep {report.sweep_id} ({data_dir / 'sweeps' / report.sweep_id})")
    print_table(report.rows)
    print(f"\nDecision: {report.decision.choice or 'none yet'}\n{report.decision.explanation}")
    if args.csv:
        print(f"wrote {export_csv(report.rows, args.csv)}", file=sys.stderr)


def _cmd_explain(engine, args: argparse.Namespace) -> None:
    # An unknown name raises KeyError with close matches; the caller prints it and exits with 2.
    print(catalog.render_markdown(catalog.get(args.name)))


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser("sweep", help="run a grid over one training config as jobs, then a table and a "
                                                "decision")
    sweep.add_argument("sweep", nargs="?", default=None, help="a sweep YAML, e.g. assets/sweeps/lora_rank.yaml")
    sweep.add_argument("--resume", metavar="ID", default=None,
                       help="re-attach to an earlier sweep: keep finished points, rerun the rest")
    sweep.add_argument("--csv", metavar="OUT", default=None, help="also write the results table as CSV here")
    sweep.add_argument("--timeout", type=float, default=24 * 3600, help="seconds to wait for the jobs at most")
    sweep.set_defaults(fn=_cmd_sweep)

    explain = subparsers.add_parser("explain", help="what a hyperparameter does, its symptoms, default and how "
                                                    "to tune it")
    explain.add_argument("name", help="a catalog name or alias, e.g. r, lora_alpha, learning_rate, scheduler.cosine")
    explain.set_defaults(fn=_cmd_explain)
