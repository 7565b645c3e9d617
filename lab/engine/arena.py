"""The Arena: which models a column may pick, and one prompt streamed to every column.

    python -c "from lab.engine import Engine; print(Engine().arena.choices())"

A column picks the default model, one of its trained adapters (Compare's `ft:NAME` works too) or an endpoint;
a signed-in user's columns are checked for the folders they name before anything is read or streamed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from lab.core import access
from lab.core.users import LOCAL_USER
from lab.engine.adapters import Adapters
from lab.engine.models import Models
from lab.engine.uploads import Uploads
from lab.inference.configs import MAX_COLUMNS
from lab.inference.runtime import Runtime
from lab.knowledge.configs import ADAPTER_PREFIX  # Compare's `ft:NAME`: the Arena takes it too

if TYPE_CHECKING:
    from lab.inference.arena import ArenaColumn


class Arena:
    """Side-by-side chats with several models over the shared Runtime.

    lab.inference.arena (and its adapters) imports torch, so it is imported inside the methods that use it.
    """
    MAX_COLUMNS = MAX_COLUMNS

    def __init__(self, runtime: Runtime, uploads: Uploads, adapters: Adapters, models: Models) -> None:
        self.runtime, self.settings = runtime, runtime.settings
        self.uploads, self.adapters, self.models = uploads, adapters, models

    def choices(self) -> list[str]:
        """The default model, one entry per trained adapter on it and every configured endpoint, as the Arena's
        dropdowns offer them."""
        from lab.inference import arena

        names = self.adapters.names(include_sweeps=False)  # a sweep's points are typed, not listed
        return list(dict.fromkeys([*arena.model_choices(self.runtime, names), *self.models.endpoint_models()]))

    def choice_labels(self) -> list[tuple[str, str]]:
        """choices() as (what the list shows, the choice): an adapter's entry says what it is (Adapters.summary)."""
        from lab.inference import arena

        summaries = {arena.choice_label(self.settings.model_id, a.name): self.adapters.summary(a)
                     for a in self.adapters.all(include_sweeps=False)}
        return [(f"{m} — {summaries[m]}" if m in summaries else m, m) for m in self.choices()]

    def resolve(self, choice: str) -> str:
        """A column's choice as the Arena reads it: Compare's `ft:NAME` becomes 'BASE + adapter NAME' with the base
        the adapter was trained on (the default model when it recorded none); anything else is kept."""
        ref = (choice or "").strip()
        if not ref.startswith(ADAPTER_PREFIX):
            return choice
        from lab.inference import adapters, arena

        try:
            name, folder = adapters.resolve_adapter(self.settings.data_dir, ref[len(ADAPTER_PREFIX):])
        except ValueError as exc:
            raise ValueError(f"{exc} In the Arena a column takes a model id, 'MODEL{arena.ADAPTER_SEP}NAME' "
                             f"or {ADAPTER_PREFIX}NAME.") from exc
        base = adapters.Adapter.from_folder(folder).base_model_id or self.settings.model_id
        return arena.choice_label(base, name)

    def stream(self, prompt: str, columns: Sequence[ArenaColumn], histories: Sequence[list[dict]],
               caller: str | None = None, user: str = LOCAL_USER) -> Iterator:
        """Stream one prompt to every column, each with its own settings and history. A column naming a model or
        adapter folder `user` may not read is refused here, before anything is read or streamed."""
        from lab.inference import arena

        confined = user != LOCAL_USER
        for column in columns if confined else ():  # an `ft:` folder, before resolve() reads it
            ref = (column.choice or "").strip()
            if ref.startswith(ADAPTER_PREFIX):
                access.allowed_adapter(self.settings, user, ref[len(ADAPTER_PREFIX):])
        columns = [replace(c, choice=self.resolve(c.choice)) for c in columns]
        for column in columns if confined else ():  # the model each column runs, an `ft:` adapter's base included
            model_id, adapter = arena.parse_choice(column.choice)
            self.uploads.check_model_access(model_id, user, adapter)
        return arena.stream_arena(self.runtime, prompt, columns, histories, caller=caller)

    def transcript_json(self, columns: Sequence[ArenaColumn], histories: Sequence[list[dict]]) -> str:
        from lab.inference import arena

        return arena.transcript_json(columns, histories)

    def transcript_markdown(self, columns: Sequence[ArenaColumn], histories: Sequence[list[dict]]) -> str:
        from lab.inference import arena

        return arena.transcript_markdown(columns, histories)
