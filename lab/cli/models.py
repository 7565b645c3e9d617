"""Commands about the model and the machine: info, prepare, generate.

    python -m lab info
    python -m lab prepare      # materialise the embedded model into the data directory
    python -m lab generate --prompt "What is the capital of France?" --max-new-tokens 32 --json

`generate`'s sampling flags are generated from GenerationSettings (lab.cli.flags).
"""

from __future__ import annotations

import argparse
import json
import sys

from lab.cli.flags import add_flags
from lab.inference.configs import GenerationSettings

MODEL_HELP = "'embedded', a local folder or a Hub id (default: LAB_MODEL)"


def _cmd_info(engine, args: argparse.Namespace) -> None:
    print(json.dumps(engine.devices.info(), indent=2))


def _cmd_prepare(engine, args: argparse.Namespace) -> None:
    print(f"embedded model ready at {engine.models.prepare_embedded()}")


def _cmd_generate(engine, args: argparse.Namespace) -> None:
    settings: GenerationSettings = args.config(args)
    final = None
    for event in engine.models.generate(args.prompt, settings, model_id=args.model):
        if not args.json:
            print(event.delta, end="", flush=True)
        final = event
    if args.json:
        print(json.dumps({"model": engine.runtime.spec(args.model).model_id, "answer": final.text,
                          "finish_reason": final.finish_reason, "timings": final.timings.as_dict()}, indent=2))
    else:
        t = final.timings
        print(f"\n\n[{t.new_tokens} tokens, ttft {t.ttft_s:.3f} s, {t.decode_tokens_per_s:.1f} tok/s, "
              f"total {t.total_s:.2f} s, prompt {t.prompt_tokens} tokens]", file=sys.stderr)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser("info", help="device, memory, settings and what the session manager holds"
                          ).set_defaults(fn=_cmd_info)
    subparsers.add_parser("prepare", help="materialise the embedded model once").set_defaults(fn=_cmd_prepare)

    gen = subparsers.add_parser("generate", help="answer one prompt with timings")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--model", default=None, help=MODEL_HELP)
    gen.add_argument("--json", action="store_true", help="print one JSON object with the answer and timings")
    # A shorter default than the library's 256: a command-line answer is read, not streamed into a UI.
    gen.set_defaults(fn=_cmd_generate, config=add_flags(gen, GenerationSettings, defaults={"max_new_tokens": 128}))
