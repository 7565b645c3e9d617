"""The engine: one object per process that the tabs, the CLI and the tests all call.

    python -m lab info

It owns the settings, the device choice and the session manager; every public method is a
plain function of its arguments plus that shared state, with no UI code.
"""

from __future__ import annotations

import platform
import threading
from typing import Iterator

import torch

from lab.device import DeviceChoice, default_budget_bytes, detect_device, memory_info
from lab.generate import GenerationEvent, GenerationSettings, prompt_ids, stream_generate
from lab.models import LoadedModel, ModelLoadError, ModelSpec, load_model
from lab.session import MemoryBudgetError, SessionManager
from lab.settings import EMBEDDED_MODEL, DataDirError, LabSettings
from lab.spaces import refuse_training_on_zero_gpu
from lab.users import LOCAL_USER, check_job_owner

USER_ERRORS = (ValueError, KeyError, PermissionError, ModelLoadError, DataDirError, MemoryBudgetError)
"""Errors caused by what the user asked for: shown as a message, never a crash."""

MAX_PROMPT_CHARS = 100_000


class Engine:
    def __init__(self, settings: LabSettings | None = None, device: DeviceChoice | None = None) -> None:
        self.settings = settings or LabSettings()
        self.device = device or detect_device()
        budget = (int(self.settings.memory_budget_gb * 2**30) if self.settings.memory_budget_gb
                  else default_budget_bytes(self.device.device))
        self.sessions = SessionManager(self.device, budget, self._load)
        self._jobs = None
        self._jobs_lock = threading.Lock()

    def _load(self, spec: ModelSpec) -> LoadedModel:
        # Only the embedded model needs the data directory (it is materialised there once).
        models_dir = (self.settings.subdir("models") if spec.model_id.strip() == EMBEDDED_MODEL
                      else self.settings.data_dir / "models")
        return load_model(spec, self.device, models_dir)

    @property
    def jobs(self):
        """The process's training job runner, started on first use (it polls job folders on disk)."""
        with self._jobs_lock:
            if self._jobs is None:
                from lab.jobs import JobRunner  # training imports are heavy; only the Train tab needs them
                self._jobs = JobRunner(self.settings.subdir("jobs").parent, sessions=self.sessions)
                self._jobs.start_background()
            return self._jobs

    def submit_job(self, cfg, user: str = LOCAL_USER) -> str:
        """Queue a training job owned by `user` (refused on a ZeroGPU Space, which cannot train)."""
        refuse_training_on_zero_gpu()
        return self.jobs.submit(cfg, owner=user)

    def control_job(self, action: str, job_id: str, user: str = LOCAL_USER) -> dict:
        """Stop, kill or resume a job; only its owner may."""
        if action not in ("stop", "kill", "resume"):
            raise ValueError(f"Unknown job action {action!r}; use stop, kill or resume.")
        check_job_owner(self.jobs.status(job_id), user, action)
        return getattr(self.jobs, action)(job_id)

    def spec(self, model_id: str | None = None, load_in_4bit: bool | None = None) -> ModelSpec:
        return ModelSpec((model_id or self.settings.model_id).strip(),
                         self.settings.load_in_4bit if load_in_4bit is None else load_in_4bit)

    def check_settings(self, settings: GenerationSettings) -> None:
        if settings.max_new_tokens > self.settings.max_new_tokens_limit:
            raise ValueError(f"max_new_tokens={settings.max_new_tokens} is above this lab's limit of "
                             f"{self.settings.max_new_tokens_limit}; ask for fewer tokens.")

    def generate(self, prompt: str, settings: GenerationSettings | None = None, model_id: str | None = None,
                 system: str | None = None, caller: str | None = None) -> Iterator[GenerationEvent]:
        """Stream an answer to one prompt, queued behind other GPU work."""
        settings = settings or GenerationSettings()
        if not prompt or not prompt.strip():
            raise ValueError("The prompt is empty; type a question or instruction first.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"The prompt has {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}.")
        self.check_settings(settings)
        spec = self.spec(model_id)
        caller = caller or self.sessions.new_caller("generate")
        with self.sessions.gpu_slot(caller), self.sessions.use(spec) as loaded:
            ids = prompt_ids(loaded.tokenizer, prompt, system)
            if ids.shape[1] + settings.max_new_tokens > loaded.context_window:
                raise ValueError(f"The prompt has {ids.shape[1]} tokens; with max_new_tokens={settings.max_new_tokens} "
                                 f"it exceeds the model's window of {loaded.context_window}.")
            yield from stream_generate(loaded.model, loaded.tokenizer, ids, settings)

    def load(self, model_id: str | None = None, load_in_4bit: bool | None = None) -> LoadedModel:
        return self.sessions.model(self.spec(model_id, load_in_4bit))

    def unload(self, key: str) -> bool:
        return self.sessions.remove(key)

    def stats(self) -> dict:
        return self.sessions.stats()

    def info(self) -> dict:
        """Everything the System tab and `python -m lab info` show."""
        mem = memory_info(self.device.device)
        info = {"python": platform.python_version(), "torch": torch.__version__,
                "device": self.device.device, "dtype": str(self.device.dtype).removeprefix("torch."),
                "attn_implementation": self.device.attn_implementation,
                "gpu_name": torch.cuda.get_device_name(0) if self.device.device == "cuda" else None,
                "memory_mb": {k: round(v / 2**20) for k, v in mem.items()},
                "data_dir": str(self.settings.data_dir), "default_model": self.settings.model_id,
                "load_in_4bit": self.settings.load_in_4bit, "sign_in": bool(self.settings.auth)}
        return info | {"session": self.stats()}
