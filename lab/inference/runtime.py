"""What every part of the lab shares in one process: settings, the device and the session manager.

    python -c "from lab.inference.runtime import Runtime; print(Runtime().stats())"

The knowledge, training and explain packages take a Runtime (never the Engine) so that the
Engine, the facade over all of them, can import them without a cycle. The Engine builds one
Runtime and hands it to its services; `engine.runtime` is what a function below takes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from lab.core.device import DeviceChoice, default_budget_bytes, detect_device
from lab.core.settings import EMBEDDED_MODEL, LabSettings

if TYPE_CHECKING:
    from lab.inference.generate import GenerationEvent, GenerationSettings
    from lab.inference.models import LoadedModel, ModelSpec
    from lab.inference.session import SessionManager

MAX_PROMPT_CHARS = 100_000


class Runtime:
    """Settings now; the device and the session manager on first use.

    Building a Runtime asks nothing of torch: the device is detected (torch.cuda) the first time `device` is
    read and the SessionManager (whose module is model work: torch, peft, the batching engine) is built the
    first time `sessions` is read, once, under a lock. So the commands that load no model (history, arena
    ratings, jobs list, --help) can build an Engine without importing torch. Making the session module itself
    torch-free would have meant the same deferral in generate, models and batching; deferring here is one
    file, and a lab that serves a model pays the same imports on its first request instead of at start.
    """

    def __init__(self, settings: LabSettings | None = None, device: DeviceChoice | None = None) -> None:
        self.settings = settings or LabSettings()
        self._device = device
        self._sessions: SessionManager | None = None
        self._lock = threading.Lock()

    @property
    def device(self) -> DeviceChoice:
        """The device given to the constructor, or the one this machine offers (detected once, on first read)."""
        if self._device is None:
            with self._lock:
                if self._device is None:
                    self._device = detect_device()
        return self._device

    @property
    def sessions(self) -> SessionManager:
        """The process's session manager, built on first read (two threads asking at once get the same one)."""
        if self._sessions is None:
            device = self.device  # outside the lock: reading it may take the lock itself
            with self._lock:
                if self._sessions is None:
                    from lab.inference.session import SessionManager

                    budget = (int(self.settings.memory_budget_gb * 2**30) if self.settings.memory_budget_gb
                              else default_budget_bytes(device.device))
                    self._sessions = SessionManager(device, budget, self._load, self.settings.max_concurrent,
                                                    self.settings.max_requests_per_user,
                                                    self.settings.max_batch_per_user)
        return self._sessions

    def _load(self, spec: ModelSpec) -> LoadedModel:
        from lab.inference.models import load_model

        # Only the embedded model needs the data directory (it is materialised there once).
        models_dir = (self.settings.subdir("models") if spec.model_id.strip() == EMBEDDED_MODEL
                      else self.settings.data_dir / "models")
        return load_model(spec, self.device, models_dir)

    def spec(self, model_id: str | None = None, load_in_4bit: bool | None = None) -> ModelSpec:
        from lab.inference.models import ModelSpec

        return ModelSpec((model_id or self.settings.model_id).strip(),
                         self.settings.load_in_4bit if load_in_4bit is None else load_in_4bit)

    def check_settings(self, settings: GenerationSettings) -> None:
        if settings.max_new_tokens > self.settings.max_new_tokens_limit:
            raise ValueError(f"max_new_tokens={settings.max_new_tokens} is above this lab's limit of "
                             f"{self.settings.max_new_tokens_limit}; ask for fewer tokens.")

    def generate(self, prompt: str, settings: GenerationSettings | None = None, model_id: str | None = None,
                 system: str | None = None, caller: str | None = None) -> Iterator[GenerationEvent]:
        """Stream an answer to one prompt: batched with other users' requests on the model's engine, or alone
        (after work queued before it) when its settings need that; see SessionManager.lend."""
        from lab.inference.endpoints import chat_messages, is_endpoint, stream_model
        from lab.inference.generate import GenerationSettings, prompt_ids

        settings = settings or GenerationSettings()
        if not prompt or not prompt.strip():
            raise ValueError("The prompt is empty; type a question or instruction first.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"The prompt has {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}.")
        self.check_settings(settings)
        spec = self.spec(model_id)
        caller = caller or self.sessions.new_caller("generate")
        if is_endpoint(spec.model_id):  # a remote server (LAB_ENDPOINTS): no local model, no GPU slot
            yield from stream_model(self.settings, spec.model_id, chat_messages(prompt, system), settings, user=caller)
            return
        with self.sessions.lend(spec, settings, caller) as (loaded, run):
            ids = prompt_ids(loaded.tokenizer, prompt, system)
            if ids.shape[1] + settings.max_new_tokens > loaded.context_window:
                raise ValueError(f"The prompt has {ids.shape[1]} tokens; with max_new_tokens={settings.max_new_tokens} "
                                 f"it exceeds the model's window of {loaded.context_window}.")
            yield from run(ids)

    def load(self, model_id: str | None = None, load_in_4bit: bool | None = None) -> LoadedModel:
        return self.sessions.model(self.spec(model_id, load_in_4bit))

    def unload(self, key: str) -> bool:
        return self.sessions.remove(key)

    def stats(self) -> dict:
        return self.sessions.stats()
