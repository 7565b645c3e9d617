"""Running a sweep: its folder, one job per point, the results table, curves, QA scores and CSV.

    python -m lab sweep assets/sweeps/lora_rank.yaml --csv rank.csv
    python -m lab sweep --resume 20261121-120000-lora_rank-1a2b

Each point is an ordinary job (lab/training/jobs/runner.py): it queues, runs, stops and resumes
like any other, and belongs to the user who started the sweep. The sweep's folder
<data>/sweeps/<id>/ holds sweep.yaml (the config with its base inlined), owner.txt (who started
it), points.json (point -> job id) and qa.json (held-out QA scores per job); the rest is read
from the jobs' own folders, so a sweep's table is rebuilt from disk after a restart.
"""

from __future__ import annotations

import csv
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from lab.core import names
from lab.core.files import atomic_write_json
from lab.core.names import LOCAL_USER
from lab.explain.sweeps.config import SPIKE, SweepConfig, SweepPoint, _finite, _resolve, sweep_from_dict, sweep_to_dict
from lab.explain.sweeps.decide import Decision, decide
from lab.training.jobs.files import STATUS_FILE, read_metrics
from lab.training.jobs.runner import FINAL_STATES, JobRunner, job_dir, job_status, list_jobs

RESULT_FIELDS = ("point", "state", "job_id", "step", "max_steps", "final_train_loss", "best_eval_loss",
                 "final_eval_loss", "qa_f1", "qa_exact_match", "tokens_per_s", "peak_memory_mb", "trainable_params",
                 "diverged", "spiked", "message")
"""Columns of a result row after the point's knob columns (CSV order)."""

Progress = Callable[[int, int, str], None]
"""progress(done, total, message), as in lab.knowledge.evaluation."""


# ---- the sweep folder ---------------------------------------------------------------------------
def sweep_dir(data_dir: str | Path, sweep_id: str) -> Path:
    """<data>/sweeps/<id>; ids that could leave that folder are refused."""
    return Path(data_dir) / "sweeps" / names.sweep_id(sweep_id)


def _existing(data_dir: str | Path, sweep_id: str) -> Path:
    folder = sweep_dir(data_dir, sweep_id)
    if not (folder / "points.json").is_file():
        raise ValueError(f"no sweep {sweep_id!r} in {Path(data_dir) / 'sweeps'}")
    return folder


def _read_points(folder: Path) -> list[dict[str, Any]]:
    return json.loads((folder / "points.json").read_text())["points"]


def _save_points(folder: Path, points: list[dict[str, Any]]) -> None:
    atomic_write_json(folder / "points.json", {"sweep_id": folder.name, "points": points})


def load_sweep(sweep_id: str, data_dir: str | Path) -> SweepConfig:
    folder = _existing(data_dir, sweep_id)
    return sweep_from_dict(yaml.safe_load((folder / "sweep.yaml").read_text(encoding="utf-8")), sweep_id)


def list_sweeps(data_dir: str | Path) -> list[dict[str, Any]]:
    """Every sweep, oldest first: id, name, knob and how many points each job state has."""
    root = Path(data_dir) / "sweeps"
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / "points.json").is_file():
            rows = sweep_results(folder.name, data_dir)
            states: dict[str, int] = {}
            for row in rows:
                states[row["state"]] = states.get(row["state"], 0) + 1
            meta = yaml.safe_load((folder / "sweep.yaml").read_text(encoding="utf-8"))
            out.append({"id": folder.name, "name": meta["name"], "knob": next(iter(meta["grid"])),
                        "points": len(rows), "states": states, "done": all(r["state"] in FINAL_STATES for r in rows)})
    return out


def sweep_jobs(data_dir: str | Path) -> dict[str, str]:
    """job id -> the id of the sweep it is a point of, for every sweep's recorded jobs."""
    root = Path(data_dir) / "sweeps"
    found: dict[str, str] = {}
    for folder in root.iterdir() if root.is_dir() else []:
        if (folder / "points.json").is_file():
            found |= {p["job_id"]: folder.name for p in _read_points(folder) if p.get("job_id")}
    return found


def _output_name(sweep_id: str, index: int) -> str:
    return f"{sweep_id}-p{index}"


def _submit(runner: JobRunner, sweep_id: str, point: SweepPoint, owner: str) -> str:
    # replace() re-runs __post_init__, so the output name is validated like any other field.
    return runner.submit(replace(point.config, output_name=_output_name(sweep_id, point.index)), owner=owner)


def _owner(folder: Path) -> str:
    """Who started the sweep (owner.txt; sweeps from before it was written belong to the local user)."""
    path = folder / "owner.txt"
    return path.read_text().strip() if path.is_file() else LOCAL_USER


def sweep_owner(sweep_id: str, data_dir: str | Path) -> str:
    """The user who started the sweep; they (and admins) may act on it and its jobs."""
    return _owner(_existing(data_dir, sweep_id))


def start_sweep(sweep: SweepConfig, data_dir: str | Path, runner: JobRunner, owner: str = LOCAL_USER) -> str:
    """Write the sweep folder and queue every point as a job owned by `owner`; returns the sweep id without
    waiting.

    The runner starts the jobs (max_running at a time); poll with sweep_results(sweep_id, data_dir).
    """
    points = sweep.points()  # validated again before anything is written or launched
    sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{sweep.name}-{secrets.token_hex(2)}"
    folder = sweep_dir(data_dir, sweep_id)
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep_to_dict(sweep), sort_keys=False, allow_unicode=True))
    (folder / "owner.txt").write_text(owner)
    records = [{"index": p.index, "label": p.label, "values": p.values, "job_id": None, "replaced": []}
               for p in points]
    _save_points(folder, records)
    for point, record in zip(points, records):
        record["job_id"] = _submit(runner, sweep_id, point, owner)
        _save_points(folder, records)  # after each submit: a crash loses at most the job being created
    return sweep_id


def resume_sweep(sweep_id: str, data_dir: str | Path, runner: JobRunner) -> dict[str, str]:
    """Re-attach a sweep to its jobs after a restart; returns point label -> what was done.

    completed -> kept; queued or running -> attached (the runner carries on); failed before any
    training step, or no job at all -> a new job is submitted; stopped, or failed after training
    started -> the same job resumes from its last checkpoint. A point whose job id was never
    recorded is found by its adapter name, so no point ever gets a second job while one exists.
    """
    folder = _existing(data_dir, sweep_id)
    records = _read_points(folder)
    owner = _owner(folder)
    points = load_sweep(sweep_id, data_dir).points()
    by_output = {j.get("output_name"): j["id"] for j in list_jobs(data_dir) if j.get("output_name")}
    actions: dict[str, str] = {}
    for point, record in zip(points, records):
        job_id = record["job_id"] or by_output.get(_output_name(sweep_id, point.index))
        status = job_status(data_dir, job_id) if job_id and (job_dir(data_dir, job_id) / STATUS_FILE).exists() else None
        state = status["state"] if status else None
        if status is None:
            job_id, action = _submit(runner, sweep_id, point, owner), "submitted (it had no job)"
        elif state == "completed":
            action = "kept (completed)"
        elif state not in FINAL_STATES:
            action = f"attached ({state})"
        elif state == "failed" and not status.get("step"):
            record["replaced"].append(job_id)
            job_id, action = _submit(runner, sweep_id, point, owner), "resubmitted (failed before training)"
        else:
            runner.resume(job_id)
            action = f"resumed ({state} at step {status.get('step')})"
        record["job_id"] = job_id
        _save_points(folder, records)
        actions[record["label"]] = action
    return actions


def wait_sweep(sweep_id: str, data_dir: str | Path, runner: JobRunner, timeout_s: float = 24 * 3600,
               progress: Progress | None = None, after_each: Callable[[], Any] | None = None
               ) -> list[dict[str, Any]]:
    """Block until every point's job is final (TimeoutError after timeout_s); returns sweep_results.

    `after_each()` runs once each point's job has ended, while the next ones train (finish_sweep scores
    the new adapter there, so QA evaluation overlaps training instead of following it).
    """
    records = _read_points(_existing(data_dir, sweep_id))
    deadline = time.time() + timeout_s
    for done, record in enumerate(records):
        if progress:
            progress(done, len(records), f"waiting for {record['label']} (job {record['job_id']})")
        if record["job_id"]:
            runner.wait(record["job_id"], timeout_s=max(1.0, deadline - time.time()))
        if after_each:
            after_each()
    if progress:
        progress(len(records), len(records), "every point finished")
    return sweep_results(sweep_id, data_dir)


# ---- results ------------------------------------------------------------------------------------
def _row(record: dict[str, Any], status: dict[str, Any], metrics: list[dict[str, Any]],
         qa: dict[str, Any]) -> dict[str, Any]:
    losses = [r["loss"] for r in metrics if r.get("loss") is not None]
    evals = [r["eval_loss"] for r in metrics if r.get("eval_loss") is not None]
    speeds = [r["tokens_per_s"] for r in metrics if r.get("tokens_per_s")]
    # Diverged: a loss that is no longer a number, or training that ended worse than it began.
    diverged = (any(not _finite(v) for v in losses + evals)
                or (len(losses) >= 2 and losses[-1] > losses[0])) if losses else None
    # Spiked: an unstable start the loss recovered from (what warmup exists to prevent).
    finite = [v for v in losses if _finite(v)]
    spiked = (len(finite) >= 2 and max(finite) > SPIKE * finite[0]) if losses else None
    return {"point": record["label"], **record["values"], "values": record["values"], "index": record["index"],
            "state": status.get("state", "not submitted"), "job_id": record["job_id"],
            "step": status.get("step"), "max_steps": status.get("max_steps"),
            "final_train_loss": losses[-1] if losses else None,
            "best_eval_loss": min((v for v in evals if _finite(v)), default=None),
            "final_eval_loss": evals[-1] if evals else None,
            "qa_f1": qa.get("qa_f1"), "qa_exact_match": qa.get("qa_exact_match"),
            "tokens_per_s": round(sum(speeds) / len(speeds), 1) if speeds else status.get("tokens_per_s"),
            "peak_memory_mb": status.get("peak_memory_mb"), "trainable_params": status.get("trainable_params"),
            "diverged": diverged, "spiked": spiked, "message": status.get("message", ""),
            "adapter_dir": status.get("adapter_dir"), "model_id": status.get("model_id"),
            "load_in_4bit": status.get("load_in_4bit")}


def sweep_results(sweep_id: str, data_dir: str | Path) -> list[dict[str, Any]]:
    """One row per point, read from the job folders: its knob values (one column each and as `values`), state,
    final train loss, best and final eval loss, held-out QA F1 (once evaluate_sweep ran), mean tokens/s, peak
    memory (MB), trainable parameters and whether it diverged. Cheap enough to poll."""
    folder = _existing(data_dir, sweep_id)
    qa = json.loads((folder / "qa.json").read_text()) if (folder / "qa.json").is_file() else {}
    rows = []
    for record in _read_points(folder):
        job_id = record["job_id"]
        has_job = bool(job_id) and (job_dir(data_dir, job_id) / STATUS_FILE).exists()
        status = job_status(data_dir, job_id) if has_job else {}
        metrics = read_metrics(job_dir(data_dir, job_id)) if has_job else []
        rows.append(_row(record, status, metrics, qa.get(job_id or "", {})))
    return rows


def evaluate_sweep(sweep_id: str, data_dir: str | Path, runtime, progress: Progress | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Ask every finished adapter the sweep's eval_qa questions (method ft:<adapter>) and store the scores in
    qa.json; points scored before are not asked again. Returns job id -> {qa_f1, qa_exact_match, qa_n}."""
    from lab.knowledge.compare import CompareConfig, load_bundled_document  # RAG and FAISS imports: only when asked
    from lab.knowledge.evaluation import evaluate, load_qa
    sweep = load_sweep(sweep_id, data_dir)
    path = _existing(data_dir, sweep_id) / "qa.json"
    scores = json.loads(path.read_text()) if path.is_file() else {}
    if sweep.eval_qa is None:
        return scores
    items = load_qa(_resolve(sweep.eval_qa), sweep.eval_qa_limit)
    todo = [r for r in sweep_results(sweep_id, data_dir)
            if r["state"] == "completed" and r["adapter_dir"] and r["job_id"] not in scores]
    if not todo:
        return scores
    doc = load_bundled_document()  # ft: asks the question alone; evaluate() still wants a document
    for done, row in enumerate(todo):
        if progress:
            progress(done, len(todo), f"asking {len(items)} held-out questions to {row['point']}")
        method = f"ft:{row['adapter_dir']}"
        cfg = CompareConfig(model_id=row["model_id"], load_in_4bit=bool(row["load_in_4bit"]))
        summary = evaluate(runtime, doc, items, [method], cfg)["methods"][method]
        scores[row["job_id"]] = {"qa_f1": summary["f1"], "qa_exact_match": summary["exact_match"],
                                 "qa_n": summary["n"]}
        atomic_write_json(path, scores)
    return scores


def overlay_curves(sweep_id: str, data_dir: str | Path) -> list[dict[str, Any]]:
    """Rows (point, step, loss, eval_loss) of every point's metrics.jsonl, for one plot with a line per point;
    a row carries loss, eval_loss or both (None where a step logged only the other)."""
    rows = []
    for record in _read_points(_existing(data_dir, sweep_id)):
        if record["job_id"] and (job_dir(data_dir, record["job_id"]) / STATUS_FILE).exists():
            for m in read_metrics(job_dir(data_dir, record["job_id"])):
                if m.get("loss") is not None or m.get("eval_loss") is not None:
                    rows.append({"point": record["label"], "step": m["step"], "loss": m.get("loss"),
                                 "eval_loss": m.get("eval_loss")})
    return rows


def export_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """The results table as CSV: point, the knob columns, then RESULT_FIELDS."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    knobs = list(dict.fromkeys(k for row in rows for k in row.get("values", {})))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["point", *knobs, *RESULT_FIELDS[1:]], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---- the decision and the report ----------------------------------------------------------------
def sweep_decision(sweep_id: str, data_dir: str | Path, rows: list[dict[str, Any]] | None = None) -> Decision:
    """decide() with the sweep's own rule, knob, metric and tolerance."""
    sweep = load_sweep(sweep_id, data_dir)
    rows = sweep_results(sweep_id, data_dir) if rows is None else rows
    return decide(rows, sweep.rule, sweep.knob, sweep.metric, sweep.tolerance)


@dataclass(frozen=True)
class SweepReport:
    sweep_id: str
    rows: list[dict[str, Any]]
    decision: Decision


def finish_sweep(sweep_id: str, data_dir: str | Path, runner: JobRunner, runtime=None,
                 progress: Progress | None = None, timeout_s: float = 24 * 3600) -> SweepReport:
    """Wait for every point's job, score the adapters on eval_qa when a runtime is given (points scored
    before are skipped), and return the table and the decision."""
    score = (lambda: evaluate_sweep(sweep_id, data_dir, runtime, progress)) if runtime is not None else None
    wait_sweep(sweep_id, data_dir, runner, timeout_s, progress, after_each=score)
    rows = sweep_results(sweep_id, data_dir)
    return SweepReport(sweep_id, rows, sweep_decision(sweep_id, data_dir, rows))


def run_sweep(sweep: SweepConfig, data_dir: str | Path, runner: JobRunner, runtime=None,
              progress: Progress | None = None, timeout_s: float = 24 * 3600) -> SweepReport:
    """start_sweep + finish_sweep: blocks until the table is complete. A UI calls start_sweep and polls
    sweep_results instead; after a restart, resume_sweep + finish_sweep carry on."""
    sweep_id = start_sweep(sweep, data_dir, runner)
    if progress:
        progress(0, 1, f"sweep {sweep_id}: {len(sweep.points())} points queued")
    return finish_sweep(sweep_id, data_dir, runner, runtime, progress, timeout_s)
