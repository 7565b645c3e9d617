"""Command-line dataset building: a question/answer JSONL from a document, with a local model.

    python -m lab dataset build --doc assets/knowledge/llm_knowledge_guide.md --out data/qa_gen.jsonl \\
        --pairs-per-chunk 2 --max-chunks 4
    python -m lab dataset build --doc notes.pdf --out qa.jsonl --pairs-per-chunk 3 \\
        --base-url http://localhost:8000/v1 --endpoint-model Qwen/Qwen2.5-7B-Instruct

`add_commands(subparsers)` adds `dataset build` to the lab's parser; its handler is
`fn(engine, args)` and only calls lab.training.data.builder. Progress goes to stderr, the summary (or
with --json one JSON object) to stdout; the written file loads as the `qa` training format.
"""

from __future__ import annotations

import argparse
import json
import sys

from lab.training.data.builder import BuilderConfig, build_dataset, write_jsonl
from lab.knowledge.documents import load_document
from lab.core.settings import BUNDLED_DOC


def _config(args: argparse.Namespace) -> BuilderConfig:
    return BuilderConfig(pairs_per_chunk=args.pairs_per_chunk, chunk_size=args.chunk_size,
                         chunk_overlap=args.chunk_overlap, max_chunks=args.max_chunks,
                         max_new_tokens=args.max_new_tokens, temperature=args.temperature, retries=args.retries,
                         seed=args.seed, model_id=args.model, base_url=args.base_url,
                         endpoint_model=args.endpoint_model or "", api_key_env=args.api_key_env)


def _cmd_build(engine, args: argparse.Namespace) -> None:
    cfg = _config(args)  # validate the options before loading anything
    doc = load_document(args.doc)

    def progress(done: int, total: int, message: str) -> None:
        print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)

    result = build_dataset(engine, doc, cfg, progress)
    if not result.pairs:
        raise ValueError(f"no pair passed validation ({len(result.rejected)} rejected); nothing written to {args.out}. "
                         "Try more --retries, a larger --chunk-size or a stronger --model.")
    path = write_jsonl(result.pairs, args.out)
    summary = result.summary() | {"out": str(path), "document": doc.name}
    if args.json:
        summary["rejected_items"] = [{"chunk_id": r.chunk_id, "attempt": r.attempt, "reason": r.reason, "item": r.item}
                                     for r in result.rejected]
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    reasons: dict[str, int] = {}
    for rejection in result.rejected:
        key = rejection.reason.split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    print(f"wrote {summary['pairs']} pairs to {path} ({summary['rejected']} rejected, {summary['attempts']} attempts, "
          f"valid JSON {summary['valid_json_rate']:.0%}, {summary['pairs_per_minute']} pairs/min, "
          f"{summary['seconds']} s)")
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  rejected {count:>3}: {reason}")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    dataset = subparsers.add_parser("dataset", help="build training data from a document")
    verbs = dataset.add_subparsers(dest="dataset_command", required=True)
    build = verbs.add_parser("build", help="question/answer pairs per chunk with schema-constrained decoding, "
                                           "validated and retried, written as qa-format JSONL")
    defaults = BuilderConfig()
    build.add_argument("--doc", default=str(BUNDLED_DOC), help="a .md, .txt or .pdf document (default: the bundled guide)")
    build.add_argument("--out", required=True, help="JSONL file to write ({question, answer, chunk_id} per line)")
    build.add_argument("--pairs-per-chunk", type=int, default=defaults.pairs_per_chunk)
    build.add_argument("--max-chunks", type=int, default=None, help="only the first K chunks (default: all)")
    build.add_argument("--model", default=None, help="'embedded', a local folder or a Hub id (default: LAB_MODEL)")
    build.add_argument("--chunk-size", type=int, default=defaults.chunk_size, help="characters per chunk")
    build.add_argument("--chunk-overlap", type=int, default=defaults.chunk_overlap)
    build.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, help="token budget per chunk call")
    build.add_argument("--temperature", type=float, default=defaults.temperature, help="first attempt; 0 = greedy")
    build.add_argument("--retries", type=int, default=defaults.retries, help="extra attempts for a chunk short of pairs")
    build.add_argument("--seed", type=int, default=defaults.seed)
    build.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint instead of a local model, "
                                                        "e.g. http://localhost:8000/v1")
    build.add_argument("--endpoint-model", default=None, help="model name the endpoint serves (with --base-url)")
    build.add_argument("--api-key-env", default=defaults.api_key_env, help="environment variable holding the API key")
    build.add_argument("--json", action="store_true", help="print one JSON object with the summary and every rejection")
    build.set_defaults(fn=_cmd_build)
