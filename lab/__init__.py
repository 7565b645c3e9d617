"""LLM Lab's engine: plain typed Python shared by the web app, the CLI and the tests."""

import logging

# bitsandbytes announces at import that an optional CPU kernel package is missing; its own
# 4-bit CPU path works without it, so the warning is noise in every log and CLI call.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
