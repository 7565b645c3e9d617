"""What `bench serve` measures, apart from the code that measures it (lab.bench.serve and its siblings).

    python -m lab bench serve --help      # every ServeBenchConfig field as a flag

This module imports no torch, transformers or gradio, so the command line builds its flags without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lab.core.checks import check
from lab.inference.configs import MAX_COLUMNS

DEFAULT_NEW_TOKENS = {"chat": 64, "mixed": 12, "arena": 64}
"""New tokens per answer when --max-new-tokens is not given, by workload (arena: the --arena N measurement)."""


@dataclass(frozen=True)
class ServeBenchConfig:
    clients: int = 8
    """Concurrent client sessions."""
    requests_per_client: int = 2
    """Requests each client makes in the N-client phase (chat: the next prompts in turn; mixed: alternating
    Compare and Arena)."""
    workload: Literal["mixed", "chat"] | None = None
    """chat: short chat prompts through the Playground API, greedy. mixed: Compare (rag + base) and a 2-column
    Arena, greedy, as the lab's tabs ask them. Default: mixed, or chat with --peer."""
    max_new_tokens: int | None = None
    """New tokens per answer; by default 64 for chat and --arena, 12 for mixed (short answers keep the mix about
    serving, not decoding)."""
    arena: int = 0
    """When 2 to 4: measure only the Arena instead of the workload: one request with this many greedy columns
    (the same model) against each column sent alone. 0: run the workload."""
    adapter: str | None = None
    """With --arena N: the last column uses this LoRA adapter (a folder in <data>/adapters) and the run reports the
    base columns' tokens/s with it against without it (lab/bench/adapter_mix.py, run by the CLI)."""
    noisy_neighbour: bool = False
    """Measure only fairness instead (lab/bench/neighbour.py): with sign-in on, one user's request alone against the
    same request while another user has 30 in flight, and a RAG question alone against one during another user's
    index build (run by the CLI)."""
    startup_timeout_s: float = 300.0
    """How long to wait for the app to come up (first start converts the embedded model)."""
    request_timeout_s: float = 600.0
    """Upper bound on any single request, so the run always ends."""
    peer: bool = False
    """After the lab, serve the same model folder with `transformers serve --continuous-batching` and ask it the
    same chat prompts the same way: vs_peer is the lab's req/s over the peer's (lab/bench/peer.py, run by the CLI).
    Chat only."""

    def __post_init__(self) -> None:
        if self.workload is None:  # frozen: the resolved default is written once, here
            object.__setattr__(self, "workload", "chat" if self.peer else "mixed")
        check(isinstance(self.clients, int) and 1 <= self.clients <= 64, "clients", "must be between 1 and 64",
              self.clients)
        check(isinstance(self.requests_per_client, int) and 1 <= self.requests_per_client <= 50,
              "requests_per_client", "must be between 1 and 50", self.requests_per_client)
        check(self.workload in ("mixed", "chat"), "workload", "must be 'chat' or 'mixed'", self.workload)
        check(self.max_new_tokens is None
              or (isinstance(self.max_new_tokens, int) and 1 <= self.max_new_tokens <= 2048),
              "max_new_tokens", "must be between 1 and 2048 (the app's limit)", self.max_new_tokens)
        check(self.arena == 0 or (isinstance(self.arena, int) and 2 <= self.arena <= MAX_COLUMNS), "arena",
              f"must be 0 (off) or a column count from 2 to {MAX_COLUMNS}", self.arena)
        check(self.startup_timeout_s > 0, "startup_timeout_s", "must be > 0", self.startup_timeout_s)
        check(self.request_timeout_s > 0, "request_timeout_s", "must be > 0", self.request_timeout_s)
        check(not self.peer or (self.workload == "chat" and not self.arena), "peer",
              "compares the chat workload only (the peer has no Compare or Arena): leave out --workload and --arena",
              self.peer)

    @property
    def new_tokens(self) -> int:
        return self.max_new_tokens or DEFAULT_NEW_TOKENS["arena" if self.arena else self.workload]
