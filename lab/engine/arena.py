"""The Engine's Arena operations: which models a column may pick, and one prompt streamed to every column."""

from __future__ import annotations

from typing import Iterator, Sequence

from lab.engine.training import TrainingOps
from lab.inference import arena, endpoints
from lab.inference.arena import ArenaColumn


class ArenaOps(TrainingOps):
    """Arena columns pick the default model, its trained adapters or an endpoint."""
    MAX_ARENA_COLUMNS = arena.MAX_COLUMNS

    def arena_models(self) -> list[str]:
        """The default model, one entry per trained adapter on it and every configured endpoint, as the Arena's
        dropdowns offer them."""
        return list(dict.fromkeys([*arena.model_choices(self), *self.endpoint_models()]))

    def endpoint_models(self) -> list[str]:
        """`endpoint:<name>` for every remote OpenAI-compatible server in LAB_ENDPOINTS (vLLM, transformers serve)."""
        return endpoints.model_ids(self.settings)

    def playground_models(self) -> list[str]:
        """What the Playground's model box offers: the default model and every configured endpoint."""
        return list(dict.fromkeys([self.settings.model_id, *self.endpoint_models()]))

    def stream_arena(self, prompt: str, columns: Sequence[ArenaColumn], histories: Sequence[list[dict]],
              caller: str | None = None) -> Iterator:
        """Stream one prompt to every column, each with its own settings and history."""
        return arena.stream_arena(self, prompt, columns, histories, caller=caller)

    arena_transcript_json = staticmethod(arena.transcript_json)
    arena_transcript_markdown = staticmethod(arena.transcript_markdown)
