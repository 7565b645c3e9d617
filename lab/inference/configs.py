"""Settings of one model request, apart from the decode loop that follows them (lab.inference.generate).

    python -m lab generate --help      # every GenerationSettings field as a flag

This module imports no torch or transformers, so the command line builds its flags, and a config
that holds these settings validates, without loading a model library.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.core.checks import MAX_TOKENS, check_finite, check_whole

MAX_COLUMNS = 4
"""The most models one Arena request answers with, side by side (lab.inference.arena)."""


@dataclass
class GenerationSettings:
    """How to pick each next token. Requests on the base model whose settings the batching engine can apply per
    request (temperature, top_k, top_p, max_new_tokens, stop tokens; see lab.inference.batching) share forward
    passes with other users' requests. A repetition penalty, or a seed with sampling, makes the request run alone
    on the model instead, after the batch is paused: slower under load, but exactly as asked."""

    max_new_tokens: int = 256
    """Upper bound on generated tokens; generation also stops at the end-of-sequence token."""
    temperature: float = 0.0
    """0 = greedy (always the most likely token, reproducible). Higher = more varied, more mistakes."""
    top_k: int = 50
    """When sampling, keep only the k most likely tokens (0 = no limit)."""
    top_p: float = 1.0
    """When sampling, keep the smallest set of tokens whose probability adds up to top_p (1 = no limit)."""
    repetition_penalty: float = 1.0
    """Divide the logits of tokens already produced by this (1 = off; 1.1-1.3 curbs loops in small models).
    Any value but 1 runs the request alone, not batched with other users' requests."""
    seed: int | None = None
    """Random seed for sampling, so a sampled answer can be reproduced. With temperature > 0 the request runs
    alone (a shared batch draws from one random stream); greedy requests ignore it and stay batched."""
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)
    """Extra token ids that end generation, on top of the model's end-of-sequence ids."""

    def __post_init__(self) -> None:
        # NaN fails every comparison below, so without this `temperature nan` would silently mean greedy.
        for name in ("temperature", "top_p", "repetition_penalty"):
            check_finite(getattr(self, name), name)
        check_whole(self.max_new_tokens, "max_new_tokens", 1, MAX_TOKENS)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
