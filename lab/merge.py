"""Merge a LoRA adapter into its base model and export a plain safetensors folder.

    python -m lab merge --adapter data/adapters/<name> --out data/models/<name>-merged

The merged weights are W' = W + (lora_alpha / r) * B @ A for every adapted layer (shapes
[out, in] = [out, r] @ [r, in]), so the exported model needs neither peft nor the adapter and
runs at the base model's speed. The base is loaded in fp32 (never 4-bit: merging into
quantized weights would round the update away) and saved in the dtype of its config.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lab.models import resolve_model_path
from lab.train_common import ADAPTER_META


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
