"""Benchmarks measured side by side in one run: bench cag, bench train, bench serve.

    python -m lab bench cag --json
    python -m lab bench train --steps 8 --json
    python -m lab bench serve --clients 8 --json
    python -m lab bench serve --peer --json      # the lab against `transformers serve --continuous-batching`

`bench cag` takes CompareConfig's generated flags (as `ask` does) and `bench serve` takes
ServeBenchConfig's; the benchmarks themselves live in lab/bench/ and are imported by the handler that
runs one. `bench train` and `bench serve` start their own processes and build no Engine here.
"""

from __future__ import annotations

import argparse
import json

from lab.bench.configs import ServeBenchConfig
from lab.cli.flags import add_flags
from lab.cli.knowledge import add_compare_flags
from lab.core.settings import BUNDLED_QA


def _print_result(result: dict, as_json: bool) -> None:
    print(json.dumps(result, indent=None if as_json else 2))


def _cmd_cag(engine, args: argparse.Namespace) -> None:
    from lab.bench.cag import bench_cag
    from lab.bench.served_cag import bench_served_cag

    cfg = args.config(args)
    doc = engine.knowledge.load_document(args.doc)
    questions = [item.question for item in engine.knowledge.load_qa(args.qa)]
    result = bench_cag(engine.runtime, doc, questions[:args.questions], questions, cfg, new_tokens=args.new_tokens)
    if args.concurrent:
        if len(questions) < args.concurrent:
            raise ValueError(f"--concurrent {args.concurrent} needs that many questions; {args.qa} has {len(questions)}.")
        result |= bench_served_cag(engine.runtime, doc, questions[:args.concurrent], cfg, new_tokens=args.new_tokens)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")


def _cmd_train(engine, args: argparse.Namespace) -> None:
    from lab.bench.train import bench_train

    _print_result(bench_train(args.model, args.steps), args.json)


def _cmd_serve(engine, args: argparse.Namespace) -> None:
    cfg = args.config(args)
    if cfg.noisy_neighbour:
        from lab.bench.neighbour import bench_neighbour

        result = bench_neighbour(cfg)
    elif cfg.arena and cfg.adapter:
        from lab.bench.adapter_mix import bench_adapter_mix

        result = bench_adapter_mix(cfg)
    elif cfg.peer:
        from lab.bench.peer import bench_peer

        result = bench_peer(cfg)
    else:
        from lab.bench.serve import bench_serve

        result = bench_serve(cfg)
    _print_result(result, args.json)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks measured side by side in one run: cag, train, serve")
    verbs = bench.add_subparsers(dest="bench", required=True)

    cag = verbs.add_parser("cag", help="CAG vs full re-prefill TTFT, crop time, greedy equality, RAG retrieval")
    cag.add_argument("--qa", default=str(BUNDLED_QA), help="questions to ask (default: the bundled set)")
    cag.add_argument("--questions", type=int, default=3, help="questions timed with full re-prefill and CAG "
                                                              "(default: %(default)s)")
    cag.add_argument("--new-tokens", type=int, default=16, help="greedy tokens compared per question "
                                                                "(default: %(default)s)")
    cag.add_argument("--concurrent", type=int, default=8, help="then ask this many questions at once: explicit "
                     "CAG (turns on one cache) vs served CAG (batching engine, prefix sharing) vs full context "
                     "without sharing; 0 skips it")
    cag.add_argument("--json", action="store_true", help="print one JSON object")
    add_compare_flags(cag)
    cag.set_defaults(fn=_cmd_cag)

    train = verbs.add_parser("train", help="lab SFT job vs plain TRL tokens/s, and packing on vs off")
    train.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the first is not timed) "
                                                            "(default: %(default)s)")
    train.add_argument("--model", default=None, help="model id (default: the preset's, the embedded model)")
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.set_defaults(fn=_cmd_train, needs_engine=False)

    serve = verbs.add_parser("serve", help="N concurrent clients against the app: latency, errors, memory")
    serve.add_argument("--json", action="store_true", help="print one JSON object")
    serve.set_defaults(fn=_cmd_serve, needs_engine=False, config=add_flags(serve, ServeBenchConfig,
                                                       rename={"requests_per_client": "requests"}))
