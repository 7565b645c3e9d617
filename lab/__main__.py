"""The lab's command line, over the same engine functions the tabs call.

    python -m lab info
    python -m lab generate --prompt "What is the capital of France?" --max-new-tokens 32 --json
    python -m lab prepare      # materialise the embedded model into the data directory
    python -m lab ask --question "What does CAG stand for?" --methods rag,cag,full,base --json
    python -m lab eval --qa assets/knowledge/qa.jsonl --methods base,rag,cag,full --limit 30 --out results.json
    python -m lab bench cag --json
"""

from __future__ import annotations

import argparse
import json
import sys

from lab.core.errors import USER_ERRORS
from lab.engine import Engine
from lab.inference.generate import GenerationSettings
from lab.inference.models import materialise_embedded
from lab.core.settings import BUNDLED_DOC, BUNDLED_QA


def _cmd_info(engine: Engine, args: argparse.Namespace) -> None:
    print(json.dumps(engine.info(), indent=2))


def _cmd_prepare(engine: Engine, args: argparse.Namespace) -> None:
    path = materialise_embedded(engine.settings.subdir("models"))
    print(f"embedded model ready at {path}")


def _cmd_generate(engine: Engine, args: argparse.Namespace) -> None:
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    final = None
    for event in engine.generate(args.prompt, settings, model_id=args.model):
        if not args.json:
            print(event.delta, end="", flush=True)
        final = event
    if args.json:
        print(json.dumps({"model": engine.spec(args.model).model_id, "answer": final.text,
                          "finish_reason": final.finish_reason, "timings": final.timings.as_dict()}, indent=2))
    else:
        t = final.timings
        print(f"\n\n[{t.new_tokens} tokens, ttft {t.ttft_s:.3f} s, {t.decode_tokens_per_s:.1f} tok/s, "
              f"total {t.total_s:.2f} s, prompt {t.prompt_tokens} tokens]", file=sys.stderr)


def _compare_config(args: argparse.Namespace):
    # Imported per command: `info` and `generate` should not pay for langchain and FAISS.
    from lab.knowledge.compare import CompareConfig
    from lab.knowledge.rag import RagConfig
    return CompareConfig(max_new_tokens=args.max_new_tokens, rag=RagConfig(top_k=args.top_k), model_id=args.model)


def _cmd_ask(engine: Engine, args: argparse.Namespace) -> None:
    from lab.knowledge.compare import stream_compare
    from lab.knowledge.documents import load_document
    doc = load_document(args.doc)
    finals, shown = [], {}
    for update in stream_compare(engine, doc, args.question, args.methods, _compare_config(args)):
        if not args.json:
            if update.method not in shown:
                shown[update.method] = 0
                print(f"\n== {update.method} ==", flush=True)
            print(update.text[shown[update.method]:], end="", flush=True)
            shown[update.method] = len(update.text)
        if update.done:
            finals.append(update)
            if not args.json:
                print(f"\n-> {update.answer or '(no answer)'}" if update.error is None else f"error: {update.error}")
                m = update.metrics
                if m:
                    cost = [f"ttft {m['ttft_s']:.3f} s", f"{m['decode_tokens_per_s']:.1f} tok/s", f"total {m['total_s']:.2f} s",
                            f"context {m['context_tokens']} tokens"]
                    cost += [f"retrieval {m['retrieval_ms']:.1f} ms"] if m.get("retrieval_ms") is not None else []
                    cost += [f"cache {m['cache_mb']:.1f} MB"] if m.get("cache_mb") is not None else []
                    print("   [" + ", ".join(cost) + "]", file=sys.stderr)
    if args.json:
        rows = [{"method": u.method, "answer": u.answer, "text": u.text, "error": u.error,
                 "finish_reason": u.finish_reason, "metrics": u.metrics,
                 "chunks": [{"chunk_id": c.chunk_id, "score": round(c.score, 4), "text": c.text} for c in u.chunks]}
                for u in finals]
        print(json.dumps({"question": args.question, "document": doc.name, "model": engine.spec(args.model).model_id,
                          "methods": rows}, indent=2, ensure_ascii=False))


def _cmd_eval(engine: Engine, args: argparse.Namespace) -> None:
    from lab.knowledge.documents import load_document
    from lab.knowledge.evaluation import evaluate, load_qa, write_csv, write_json
    doc = load_document(args.doc)
    items = load_qa(args.qa, args.limit)

    def progress(done: int, total: int, message: str) -> None:
        print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)

    result = evaluate(engine, doc, items, args.methods, _compare_config(args), progress)
    if args.out:
        write_json(result, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.csv:
        write_csv(result["rows"], args.csv)
        print(f"wrote {args.csv}", file=sys.stderr)
    print(json.dumps(result["methods"], indent=2))


def _cmd_bench(engine: Engine, args: argparse.Namespace) -> None:
    from lab.bench.cag import bench_cag
    from lab.knowledge.documents import load_document
    from lab.knowledge.evaluation import load_qa
    doc = load_document(args.doc)
    questions = [item.question for item in load_qa(args.qa)]
    result = bench_cag(engine, doc, questions[:args.questions], questions, _compare_config(args),
                       new_tokens=args.new_tokens)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")


def _add_compare_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--doc", default=str(BUNDLED_DOC), help="a .md, .txt or .pdf document (default: the bundled guide)")
    cmd.add_argument("--model", default=None, help="'embedded', a local folder or a Hub id (default: LAB_MODEL)")
    cmd.add_argument("--max-new-tokens", type=int, default=48)
    cmd.add_argument("--top-k", type=int, default=3, help="chunks RAG puts in the prompt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description="LLM Lab command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="device, memory, settings and what the session manager holds").set_defaults(fn=_cmd_info)
    sub.add_parser("prepare", help="materialise the embedded model once").set_defaults(fn=_cmd_prepare)
    gen = sub.add_parser("generate", help="answer one prompt with timings")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--model", default=None, help="'embedded', a local folder or a Hub id (default: LAB_MODEL)")
    gen.add_argument("--json", action="store_true", help="print one JSON object with the answer and timings")
    gen.set_defaults(fn=_cmd_generate)

    ask = sub.add_parser("ask", help="one question through several methods side by side, with costs")
    ask.add_argument("--question", required=True)
    ask.add_argument("--methods", default="rag,cag,full,base", help="comma list of base, rag, cag, full, ft:ADAPTER")
    ask.add_argument("--json", action="store_true", help="print one JSON object with every method's answer and metrics")
    _add_compare_options(ask)
    ask.set_defaults(fn=_cmd_ask)

    ev = sub.add_parser("eval", help="score a QA set through several methods (EM, F1, ROUGE-L, BLEU, latency)")
    ev.add_argument("--qa", default=str(BUNDLED_QA), help="JSONL of {\"question\", \"answer\"} (default: the bundled set)")
    ev.add_argument("--methods", default="base,rag,cag,full", help="comma list of base, rag, cag, full, ft:ADAPTER")
    ev.add_argument("--out", default=None, help="write the full result (summary + rows) as JSON here")
    ev.add_argument("--csv", default=None, help="write the rows as CSV here")
    ev.add_argument("--limit", type=int, default=None, help="only the first N questions")
    _add_compare_options(ev)
    ev.set_defaults(fn=_cmd_eval)

    bench = sub.add_parser("bench", help="benchmarks measured side by side in one run")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    cag = bench_sub.add_parser("cag", help="CAG vs full re-prefill TTFT, crop time, greedy equality, RAG retrieval")
    cag.add_argument("--qa", default=str(BUNDLED_QA), help="questions to ask (default: the bundled set)")
    cag.add_argument("--questions", type=int, default=3, help="questions timed with full re-prefill and CAG")
    cag.add_argument("--new-tokens", type=int, default=16, help="greedy tokens compared per question")
    cag.add_argument("--json", action="store_true", help="print one JSON object")
    _add_compare_options(cag)
    cag.set_defaults(fn=_cmd_bench)
    train = bench_sub.add_parser("train", help="lab SFT job vs plain TRL tokens/s, and packing on vs off")
    train.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the first is not timed)")
    train.add_argument("--model", default=None, help="model id (default: the preset's, the embedded model)")
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.set_defaults(fn=_cmd_bench_train)
    serve = bench_sub.add_parser("serve", help="N concurrent clients against the app: latency, errors, memory")
    serve.add_argument("--clients", type=int, default=8)
    serve.add_argument("--requests", type=int, default=2, help="requests per client")
    serve.add_argument("--max-new-tokens", type=int, default=12)
    serve.add_argument("--json", action="store_true", help="print one JSON object")
    serve.set_defaults(fn=_cmd_bench_serve)

    # Training, jobs, merge, sweeps, the catalog and the dataset builder bring their own commands.
    from lab.cli import dataset as cli_dataset
    from lab.cli import sweep as cli_sweep
    from lab.cli import train as cli_train
    for module in (cli_train, cli_sweep, cli_dataset):
        module.add_commands(sub)
    return parser


def _print_result(result: dict, as_json: bool) -> None:
    print(json.dumps(result, indent=None if as_json else 2))


def _cmd_bench_train(engine: Engine, args: argparse.Namespace) -> None:
    from lab.bench.train import bench_train
    _print_result(bench_train(args.model, args.steps), args.json)


def _cmd_bench_serve(engine: Engine, args: argparse.Namespace) -> None:
    from lab.bench.serve import ServeBenchConfig, bench_serve
    cfg = ServeBenchConfig(clients=args.clients, requests_per_client=args.requests, max_new_tokens=args.max_new_tokens)
    _print_result(bench_serve(cfg), args.json)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(Engine(), args)
    except USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
