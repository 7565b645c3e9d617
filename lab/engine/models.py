"""Models as users ask for them: load, generate, unload, and the model lists the Playground offers.

    python -c "from lab.engine import Engine; print(Engine().models.playground_models())"

The Runtime (lab/inference/runtime.py) does the work; this service first checks that the user may name the
model (Uploads.check_model_access) and may unload what the session manager holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lab.core import access
from lab.core.users import LOCAL_USER
from lab.engine.uploads import Uploads
from lab.inference.configs import GenerationSettings
from lab.inference.runtime import Runtime

if TYPE_CHECKING:
    from lab.inference.generate import GenerationEvent
    from lab.inference.models import LoadedModel


class Models:
    """One copy of each model, shared by every user through the Runtime's session manager.

    The model modules (lab.inference.models, generate, endpoints: torch and transformers) are imported inside the
    methods that use them, so an Engine built for a bookkeeping command imports none of them.
    """

    def __init__(self, runtime: Runtime, uploads: Uploads) -> None:
        self.runtime, self.settings, self.uploads = runtime, runtime.settings, uploads

    def load(self, model_id: str | None = None, load_in_4bit: bool | None = None,
             user: str = LOCAL_USER) -> LoadedModel:
        """Load a model into the shared session manager (once), after checking `user` may name it."""
        self.uploads.check_model_access(model_id, user)
        return self.runtime.load(model_id, load_in_4bit)

    def generate(self, prompt: str, settings: GenerationSettings | None = None, model_id: str | None = None,
                 system: str | None = None, caller: str | None = None,
                 user: str = LOCAL_USER) -> Iterator[GenerationEvent]:
        """Stream an answer (Runtime.generate) after checking, at once, that `user` may name the model."""
        self.uploads.check_model_access(model_id, user)
        return self.runtime.generate(prompt, settings, model_id, system, caller)

    def unload_refusal(self, user: str) -> str | None:
        """Why `user` may not unload entries (the System tab shows it beside a disabled button), or None."""
        return access.unload_refusal(self.settings, user)

    def unload(self, key: str, user: str = LOCAL_USER) -> bool:
        """Drop a model, adapter, KV cache or reservation from the session manager; True if it was held. With
        sign-in on only admins (LAB_ADMINS) may (PermissionError); nobody may drop what a request or a running job
        is using (ValueError naming the entry and why)."""
        refusal = self.unload_refusal(user)
        if refusal:
            raise PermissionError(refusal)
        return self.runtime.sessions.unload(key)

    def endpoint_models(self) -> list[str]:
        """`endpoint:<name>` for every remote OpenAI-compatible server in LAB_ENDPOINTS (vLLM, transformers serve)."""
        from lab.inference import endpoints

        return endpoints.model_ids(self.settings)

    def playground_models(self) -> list[str]:
        """What the Playground's model box offers: the default model and every configured endpoint."""
        return list(dict.fromkeys([self.settings.model_id, *self.endpoint_models()]))

    def prepare_embedded(self) -> Path:
        """Convert the embedded model into <data>/models once, so later loads are fast (`python -m lab prepare`)."""
        from lab.inference.models import materialise_embedded

        return materialise_embedded(self.settings.subdir("models"))
