"""The lab's command line, over the same engine functions the tabs call.

    python -m lab info
    python -m lab generate --prompt "What is the capital of France?" --max-new-tokens 32 --json
    python -m lab prepare      # materialise the embedded model into the data directory
"""

from __future__ import annotations

import argparse
import json
import sys

from lab.engine import USER_ERRORS, Engine
from lab.generate import GenerationSettings
from lab.models import materialise_embedded


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
    return parser


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
