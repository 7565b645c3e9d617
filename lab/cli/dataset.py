"""Command-line dataset building: a question/answer JSONL from a document, with a local model.

    python -m lab dataset build --doc assets/knowledge/llm_knowledge_guide.md --out data/qa_gen.jsonl \\
        --pairs-per-chunk 2 --max-chunks 4
    python -m lab dataset build --doc notes.pdf --out qa.jsonl --pairs-per-chunk 3 \\
        --base-url http://localhost:8000/v1 --endpoint-model Qwen/Qwen2.5-7B-Instruct

`add_commands(subparsers)` adds `dataset build` to the lab's parser; its handler is
`fn(engine, args)` and calls engine.datasets.build_qa_dataset. Every BuilderConfig field is a flag, generated
with its docstring as help (lab.cli.flags). Progress goes to stderr, the summary (or with --json one
JSON object) to stdout; the written file loads as the `qa` training format.
"""

from __future__ import annotations

import argparse
import json

from lab.cli.flags import add_flags
from lab.cli.knowledge import progress
from lab.core.settings import BUNDLED_DOC
from lab.training.data.qa_prompt import BuilderConfig


def _cmd_build(engine, args: argparse.Namespace) -> None:
    cfg: BuilderConfig = args.config(args)  # validate the options before loading anything
    doc = engine.knowledge.load_document(args.doc)
    result = engine.datasets.build_qa_dataset(doc, cfg, progress)
    if not result.pairs:
        raise ValueError(f"no pair passed validation ({len(result.rejected)} rejected); nothing written to {args.out}. "
                         "Try more --retries, a larger --chunk-size or a stronger --model.")
    path = engine.datasets.write_qa_jsonl(result.pairs, args.out)
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
    build.add_argument("--doc", default=str(BUNDLED_DOC), help="a .md, .txt or .pdf document (default: the bundled guide)")
    build.add_argument("--out", required=True, help="JSONL file to write ({question, answer, chunk_id} per line)")
    build.add_argument("--json", action="store_true", help="print one JSON object with the summary and every rejection")
    build.set_defaults(fn=_cmd_build, config=add_flags(build, BuilderConfig, rename={"model_id": "model"}))
