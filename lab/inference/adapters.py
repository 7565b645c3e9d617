"""LoRA adapters: the one definition of an adapter, its registration, listing, resolution and merge.

    python -m lab merge --adapter data/adapters/<name> --out data/models/<name>-merged

An adapter is a folder with peft's adapter_config.json and weights. A finished job registers its
adapter under <data>/adapters/<name>/ with adapter_meta.json (base model, job, kind, mode);
Compare (`ft:<name>`), the Arena, the Train tab and merge all find adapters through this module.

Merging writes W' = W + (lora_alpha / r) * B @ A for every adapted layer (shapes [out, in] =
[out, r] @ [r, in]), so the exported model needs neither peft nor the adapter and runs at the
base model's speed. The base is loaded in fp32 (never 4-bit: merging into quantized weights
would round the update away) and saved in the dtype of its config.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from peft import PeftConfig, PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lab.core.files import atomic_write_json, publish_dir
from lab.core.names import adapter_name, is_adapter_name
from lab.inference.models import resolve_model_path

ADAPTER_META = "adapter_meta.json"
ADAPTER_CONFIG = "adapter_config.json"
TRAIN_HINT = ("Train one in the Train tab with \"teach this document\", or run `python -m lab train` "
              "with a LoRA config; finished adapters are saved under <data>/adapters/<name>.")


@dataclass(frozen=True)
class Adapter:
    name: str
    """The folder name under <data>/adapters/, used as `ft:<name>` in Compare and in the Arena."""
    path: Path
    base_model_id: str = ""
    """The model the adapter was trained on (adapter_meta.json; empty for an adapter copied in by hand)."""
    job_id: str = ""
    created: str = ""
    kind: str = ""
    mode: str = ""
    owner: str = ""
    """Who submitted the job that trained it (empty for an adapter copied in by hand, or from before owners were
    recorded); they, and admins, may rename or delete it."""
    data: tuple[str, ...] = ()
    """The file names of the datasets it was trained on."""

    @classmethod
    def from_folder(cls, folder: Path) -> Adapter:
        meta = json.loads((folder / ADAPTER_META).read_text()) if (folder / ADAPTER_META).is_file() else {}
        return cls(name=folder.name, path=folder, base_model_id=meta.get("base_model_id", ""),
                   job_id=meta.get("job_id", ""), created=meta.get("created", ""), kind=meta.get("kind", ""),
                   mode=meta.get("mode", ""), owner=meta.get("owner") or "", data=tuple(meta.get("data") or ()))


def adapters_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "adapters"


def is_adapter(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file()


def list_adapters(data_dir: str | Path) -> list[Adapter]:
    """Every adapter under <data>/adapters, newest first (those without a creation time last, by name)."""
    root = adapters_dir(data_dir)
    # Hidden folders are adapters being registered or deleted (register_adapter, delete_adapter).
    found = [Adapter.from_folder(p) for p in root.iterdir() if is_adapter(p) and not p.name.startswith(".")] \
        if root.is_dir() else []
    return sorted(sorted(found, key=lambda a: a.name), key=lambda a: a.created, reverse=True)


def available_adapters(data_dir: str | Path) -> list[str]:
    """The names of the adapters under <data>/adapters, sorted."""
    return sorted(a.name for a in list_adapters(data_dir))


def resolve_adapter(data_dir: str | Path, ref: str) -> tuple[str, Path]:
    """(adapter name, folder) for `ft:<ref>`: a name under <data>/adapters, or a folder path."""
    ref = ref.strip()
    path = Path(ref).expanduser()
    if ("/" in ref or ref.startswith(("~", "."))) and is_adapter(path):
        # peft names adapters after module attributes: keep letters, digits, '_' and '-'.
        return re.sub(r"[^A-Za-z0-9_-]", "_", path.resolve().name)[:64] or "adapter", path
    if is_adapter_name(ref) and is_adapter(adapters_dir(data_dir) / ref):
        return ref, adapters_dir(data_dir) / ref
    known = available_adapters(data_dir)
    if known:
        raise ValueError(f"Unknown adapter '{ref}'. Available adapters: {', '.join(known)} "
                         f"(or give the path of a folder with adapter_config.json).")
    raise ValueError(f"Unknown adapter '{ref}': no LoRA adapter has been trained yet. {TRAIN_HINT}")


def training_seconds(data_dir: str | Path, ref: str) -> float | None:
    """Seconds the job that trained adapter `ref` ran (its status.json's started to finished), or None when the
    adapter names no job, the job folder is gone, or it did not finish. Read from the file, not through the
    training package: the session side of the lab never imports the trainers."""
    try:
        _, folder = resolve_adapter(data_dir, ref)
        job_id = Adapter.from_folder(folder).job_id
        status = json.loads((Path(data_dir) / "jobs" / job_id / "status.json").read_text()) if job_id else {}
        started, finished = status.get("started"), status.get("finished")
        if not (started and finished):
            return None
        return max(0.0, (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds())
    except (ValueError, OSError):
        return None


def register_adapter(output_dir: Path, name: str, base_model_id: str, job_id: str, data_dir: Path,
                     extra: dict[str, Any] | None = None) -> Path:
    """Copy a finished LoRA adapter to <data>/adapters/<name>/ with adapter_meta.json; returns that folder.

    A name already taken gets the job id appended, so an earlier adapter is never overwritten.
    """
    adapters = adapters_dir(data_dir)
    adapters.mkdir(parents=True, exist_ok=True)
    target = adapters / name
    if target.exists():
        target = adapters / f"{name}-{job_id}"
    created = datetime.now(UTC).isoformat(timespec="seconds")
    meta = {"name": target.name, "base_model_id": base_model_id, "job_id": job_id, "created": created,
            "source": str(output_dir)} | (extra or {})
    with publish_dir(target, existing="fail") as tmp:
        shutil.copytree(output_dir, tmp, dirs_exist_ok=True)
        atomic_write_json(tmp / ADAPTER_META, meta)
    return target


def check_adapter_name(name: str) -> str:
    """`name` when it can name an adapter (a folder name peft also accepts), else a ValueError saying what can."""
    return adapter_name(name)


def rename_adapter(data_dir: str | Path, name: str, new_name: str) -> Path:
    """Give the adapter `name` the name `new_name` (its folder and its meta); returns the new folder. A name in use
    is refused rather than overwritten. `ft:<old name>` no longer resolves afterwards."""
    _, folder = resolve_adapter(data_dir, check_adapter_name(name))
    target = adapters_dir(data_dir) / check_adapter_name(new_name)
    if target.exists():
        raise ValueError(f"An adapter named {new_name!r} already exists: pick another name or delete that one first.")
    meta_path = folder / ADAPTER_META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    os.rename(folder, target)  # one step on one file system: the adapter is always under one of its two names
    atomic_write_json(target / ADAPTER_META, meta | {"name": new_name})
    return target


def delete_adapter(data_dir: str | Path, name: str) -> None:
    """Remove the adapter `name`. It is first renamed to a hidden folder, so it leaves the listing at once and a
    removal cut short never leaves half an adapter listed; a model already loaded with it keeps its copy in memory
    until it is unloaded."""
    _, folder = resolve_adapter(data_dir, check_adapter_name(name))
    hidden = folder.with_name(f".{folder.name}.deleted-{os.getpid()}")
    os.rename(folder, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def adapter_base(adapter: Path) -> str:
    """The base model id an adapter was trained on: adapter_meta.json (lab) or adapter_config.json (peft)."""
    meta = adapter / ADAPTER_META
    if meta.exists():
        return json.loads(meta.read_text())["base_model_id"]
    return PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path


def merge_adapter(adapter: str | Path, out_dir: str | Path, data_dir: str | Path,
                  base_model_id: str | None = None) -> Path:
    """Write base + adapter as one model (safetensors + tokenizer) to out_dir; returns out_dir."""
    adapter, out_dir = Path(adapter), Path(out_dir)
    if not (adapter / "adapter_config.json").exists():
        raise ValueError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} exists and is not empty; choose a new folder for the merged model")
    source = resolve_model_path(base_model_id or adapter_base(adapter), Path(data_dir) / "models")
    saved_dtype = AutoConfig.from_pretrained(source).dtype  # what the base was stored in
    base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    if isinstance(saved_dtype, torch.dtype):
        merged = merged.to(saved_dtype)
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    # The trainer saved the tokenizer beside the adapter (with any pad token it set); fall back to the base's.
    tokenizer_source = adapter if (adapter / "tokenizer_config.json").exists() else Path(source)
    AutoTokenizer.from_pretrained(str(tokenizer_source)).save_pretrained(str(out_dir))
    return out_dir
