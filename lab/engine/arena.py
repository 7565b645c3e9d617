"""The Engine's Arena operations: which models a column may pick, and one prompt streamed to every column."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator, Sequence

from lab.core import access
from lab.core.users import LOCAL_USER
from lab.engine.training import TrainingOps
from lab.inference import adapters, arena, endpoints
from lab.inference.arena import ArenaColumn
from lab.knowledge.compare import ADAPTER_PREFIX  # Compare's `ft:NAME`: the Arena takes it too


class ArenaOps(TrainingOps):
    """Arena columns pick the default model, its trained adapters or an endpoint."""
    MAX_ARENA_COLUMNS = arena.MAX_COLUMNS

    def arena_models(self) -> list[str]:
        """The default model, one entry per trained adapter on it and every configured endpoint, as the Arena's
        dropdowns offer them."""
        names = [a.name for a in self.list_adapters(include_sweeps=False)]  # a sweep's points are typed, not listed
        return list(dict.fromkeys([*arena.model_choices(self, sorted(names)), *self.endpoint_models()]))

    def arena_model_labels(self) -> list[tuple[str, str]]:
        """arena_models as (what the list shows, the choice): an adapter's entry says what it is (adapter_summary)."""
        summaries = {arena.choice_label(self.settings.model_id, a.name): self.adapter_summary(a)
                     for a in self.list_adapters(include_sweeps=False)}
        return [(f"{m} — {summaries[m]}" if m in summaries else m, m) for m in self.arena_models()]

    def endpoint_models(self) -> list[str]:
        """`endpoint:<name>` for every remote OpenAI-compatible server in LAB_ENDPOINTS (vLLM, transformers serve)."""
        return endpoints.model_ids(self.settings)

    def playground_models(self) -> list[str]:
        """What the Playground's model box offers: the default model and every configured endpoint."""
        return list(dict.fromkeys([self.settings.model_id, *self.endpoint_models()]))

    def arena_choice(self, choice: str) -> str:
        """A column's choice as the Arena reads it: Compare's `ft:NAME` becomes 'BASE + adapter NAME' with the base
        the adapter was trained on (the default model when it recorded none); anything else is kept."""
        ref = (choice or "").strip()
        if not ref.startswith(ADAPTER_PREFIX):
            return choice
        try:
            name, folder = adapters.resolve_adapter(self.settings.data_dir, ref[len(ADAPTER_PREFIX):])
        except ValueError as exc:
            raise ValueError(f"{exc} In the Arena a column takes a model id, 'MODEL{arena.ADAPTER_SEP}NAME' "
                             f"or {ADAPTER_PREFIX}NAME.") from exc
        base = adapters.Adapter.from_folder(folder).base_model_id or self.settings.model_id
        return arena.choice_label(base, name)

    def stream_arena(self, prompt: str, columns: Sequence[ArenaColumn], histories: Sequence[list[dict]],
              caller: str | None = None, user: str = LOCAL_USER) -> Iterator:
        """Stream one prompt to every column, each with its own settings and history. A column naming a model or
        adapter folder `user` may not read is refused here, before anything is read or streamed."""
        confined = user != LOCAL_USER
        for column in columns if confined else ():  # an `ft:` folder, before arena_choice reads it
            ref = (column.choice or "").strip()
            if ref.startswith(ADAPTER_PREFIX):
                access.allowed_adapter(self.settings, user, ref[len(ADAPTER_PREFIX):])
        columns = [replace(c, choice=self.arena_choice(c.choice)) for c in columns]
        for column in columns if confined else ():  # the model each column runs, an `ft:` adapter's base included
            model_id, adapter = arena.parse_choice(column.choice)
            self.check_model_access(model_id, user, adapter)
        return arena.stream_arena(self, prompt, columns, histories, caller=caller)

    arena_transcript_json = staticmethod(arena.transcript_json)
    arena_transcript_markdown = staticmethod(arena.transcript_markdown)
