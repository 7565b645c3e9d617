"""Command-line training: run a config, manage background jobs, merge adapters, preview commands.

    python -m lab train assets/presets/sft_lora_qa.yaml        # foreground, same code as a job
    python -m lab jobs submit assets/presets/sft_lora_qa.yaml --wait
    python -m lab jobs list
    python -m lab jobs stop|kill|resume|delete|show JOB_ID
    python -m lab jobs plan --inventory inventory.yaml --json CONFIG.yaml...   # placement only, runs nothing
    python -m lab merge --adapter data/adapters/<name> --out data/models/<name>-merged
    python -m lab show-command assets/presets/sft_lora_qa.yaml

`add_commands(subparsers)` adds these to the lab's parser; each handler is `fn(engine, args)` and
calls the Engine's job and adapter methods. `train` runs in this process (the same code a job's
subprocess runs); `jobs submit --wait`, `jobs resume --wait` block on the engine's job runner.
A job belongs to whoever submitted it: this command line acts as the local user.
"""

from __future__ import annotations

import argparse
import json


def _print_status(status: dict) -> None:
    keys = ("id", "state", "step", "max_steps", "eta_s", "tokens_per_s", "output_dir", "adapter_dir", "message")
    for key in keys:
        if status.get(key) is not None:
            print(f"{key:>12}: {status[key]}")


def _cmd_train(engine, args: argparse.Namespace) -> None:
    status = engine.jobs.train_here(args.config, resume=args.resume)
    _print_status(status)
    if status.get("state") == "failed":
        raise ValueError(f"job {status['id']} failed: {status.get('message')}")


def _cmd_submit(engine, args: argparse.Namespace) -> None:
    job_id = engine.jobs.submit(engine.jobs.load_config(args.config))
    _print_status(engine.jobs.wait(job_id, args.timeout) if args.wait else engine.jobs.status(job_id))


def _cmd_list(engine, args: argparse.Namespace) -> None:
    jobs = engine.jobs.all()
    if args.json:
        print(json.dumps(jobs, indent=1))
        return
    if not jobs:
        print(f"no jobs in {engine.settings.data_dir / 'jobs'}")
    for job in jobs:
        steps = f"{job.get('step', 0)}/{job.get('max_steps') or '?'}"
        queue = f" (#{job['queue_position']} in queue)" if "queue_position" in job else ""
        print(f"{job['id']:<34} {job.get('state', '?'):<10} {steps:>9}{queue}  "
              f"{str(job.get('message', '')).splitlines()[0][:80] if job.get('message') else ''}")


def _cmd_plan(engine, args: argparse.Namespace) -> None:
    plan = engine.jobs.plan(args.configs, args.inventory)
    if args.json:
        print(json.dumps(plan, indent=1))
        return
    for row in plan["placements"]:
        where = ",".join(row["devices"]) or "-"
        wave = "never" if row["wave"] is None else f"wave {row['wave']}"
        size = "?" if row["estimate_gb"] is None else f"{row['estimate_gb']} GB"
        print(f"{wave:<8} {where:<24} {size:>10}  {row['config']}  {row['reason']}")


def _cmd_show(engine, args: argparse.Namespace) -> None:
    _print_status(engine.jobs.status(args.job_id))
    print("\n" + engine.jobs.log(args.job_id, args.lines))


def _cmd_stop(engine, args: argparse.Namespace) -> None:
    _print_status(engine.jobs.control("stop", args.job_id))


def _cmd_kill(engine, args: argparse.Namespace) -> None:
    _print_status(engine.jobs.control("kill", args.job_id))


def _cmd_resume(engine, args: argparse.Namespace) -> None:
    status = engine.jobs.control("resume", args.job_id)
    _print_status(engine.jobs.wait(args.job_id, args.timeout) if args.wait else status)


def _cmd_delete(engine, args: argparse.Namespace) -> None:
    _print_status(engine.jobs.control("delete", args.job_id))


def _cmd_merge(engine, args: argparse.Namespace) -> None:
    print(f"merged model written to {engine.adapters.export_merged(args.adapter, args.out, base_model_id=args.base)}")


def _cmd_show_command(engine, args: argparse.Namespace) -> None:
    print(engine.jobs.command_preview(engine.jobs.load_config(args.config)))


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="run a training config in the foreground (same code as a job)")
    train.add_argument("config", help="a config YAML (a preset from assets/presets/ or a job's config.yaml)")
    train.add_argument("--resume", action="store_true", help="continue a job folder's config from its last checkpoint")
    train.set_defaults(fn=_cmd_train)

    jobs = subparsers.add_parser("jobs", help="background training jobs: submit, list, stop, kill, resume, delete, "
                                               "show")
    verbs = jobs.add_subparsers(dest="jobs_command", required=True)
    submit = verbs.add_parser("submit", help="queue a config as a background job (starts now if none runs)")
    submit.add_argument("config")
    submit.add_argument("--wait", action="store_true", help="wait for the job to finish")
    submit.add_argument("--timeout", type=float, default=24 * 3600, help="seconds to wait at most")
    submit.set_defaults(fn=_cmd_submit)
    listing = verbs.add_parser("list", help="every job with its state, rebuilt from the data directory")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(fn=_cmd_list)
    planning = verbs.add_parser("plan", help="where and in which wave configs would run (wave 0 = now); runs nothing")
    planning.add_argument("configs", nargs="+", metavar="CONFIG", help="job configs, queued in this order")
    planning.add_argument("--inventory", default=None, help="a YAML file `devices: [{name: cuda:0, memory_gb: 80}, "
                          "...]` to plan on (default: this machine's devices, as if no job ran)")
    planning.add_argument("--json", action="store_true")
    planning.set_defaults(fn=_cmd_plan)
    for name, fn, text in (("stop", _cmd_stop, "graceful stop: save a checkpoint after this step, then exit"),
                           ("kill", _cmd_kill, "end the job's processes now (SIGTERM, then SIGKILL)"),
                           ("resume", _cmd_resume, "queue a stopped or failed job to continue from its checkpoint"),
                           ("delete", _cmd_delete, "remove a finished job's folder (its registered adapter stays)"),
                           ("show", _cmd_show, "a job's status and the tail of its log")):
        verb = verbs.add_parser(name, help=text)
        verb.add_argument("job_id")
        if name == "resume":
            verb.add_argument("--wait", action="store_true", help="wait for the job to finish")
            verb.add_argument("--timeout", type=float, default=24 * 3600)
        if name == "show":
            verb.add_argument("--lines", type=int, default=30)
        verb.set_defaults(fn=fn)

    merge = subparsers.add_parser("merge", help="merge a LoRA adapter into its base and export safetensors")
    merge.add_argument("--adapter", required=True, help="adapter folder (data/adapters/<name> or a job's output/)")
    merge.add_argument("--out", required=True, help="new folder for the merged model")
    merge.add_argument("--base", default=None, help="base model id (default: the one recorded with the adapter)")
    merge.set_defaults(fn=_cmd_merge)

    show = subparsers.add_parser("show-command", help="print the accelerate launch command a config runs with")
    show.add_argument("config")
    show.set_defaults(fn=_cmd_show_command)
