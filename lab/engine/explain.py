"""Explain: the hyperparameter catalog and the live calculators beside each entry.

    python -m lab explain lora_r

A catalog entry is text written once (assets/catalog.yaml); its live panel calls a calculator here, which
asks transformers, peft or TRL for the number. Calculators that read a model folder check first that the
user may name it. Sweeps, the Explain tab's other half, are lab/engine/sweeps.py.
"""

from __future__ import annotations

from typing import Any

from lab.core.device import DeviceChoice, memory_info
from lab.core.users import LOCAL_USER
from lab.engine.uploads import Uploads
from lab.explain import calculators, catalog
from lab.inference.runtime import Runtime
from lab.training.configs.pretrain import PretrainConfig


class Explain:
    """The catalog and the calculators, as the Explain and Train tabs use them."""
    CATALOG_GROUPS = catalog.GROUPS
    SCHEDULER_TYPES = calculators.SCHEDULER_TYPES
    OPTIMIZER_STATES = calculators.OPTIMIZER_STATES
    ACTIVATIONS = (*calculators.GATED_ACTIVATIONS, *calculators.PLAIN_ACTIVATIONS)
    MEMORY_ASSUMPTIONS = calculators.MEMORY_ASSUMPTIONS

    def __init__(self, runtime: Runtime, uploads: Uploads) -> None:
        self.runtime, self.settings, self.uploads = runtime, runtime.settings, uploads

    @property
    def device(self) -> DeviceChoice:
        """The Runtime's device, found on first use (the catalog and the calculators need none)."""
        return self.runtime.device

    # ---- the catalog ------------------------------------------------------------------------------------------
    def catalog_entries(self, group: str | None = None) -> list[catalog.Entry]:
        """All entries in catalog order, or those of one group."""
        return catalog.entries(group)

    def catalog_search(self, text: str) -> list[catalog.Entry]:
        """Entries containing every word of `text`, best first."""
        return catalog.search(text)

    def catalog_entry(self, name: str) -> catalog.Entry:
        """The entry called `name` or one of its aliases; KeyError with close matches."""
        return catalog.get(name)

    def markdown(self, name: str, kind: str | None = None) -> str:
        """The catalog entry for a knob, as Markdown (what `python -m lab explain NAME [--trainer KIND]` prints).
        With `kind`, the entry for that trainer's config field; a name that means different knobs per trainer
        and no kind to settle it gives the list of its meanings, each entry in full."""
        try:
            return catalog.render_markdown(catalog.lookup(name, kind))
        except catalog.AmbiguousName:
            return catalog.render_meanings(name)

    # ---- calculators that need no model -----------------------------------------------------------------------
    def batch_math(self, per_device_batch: int, grad_accum: int, devices: int, dataset_size: int, seq_len: int,
                   epochs: float = 1.0, warmup_steps: float = 0.0, max_steps: int = -1,
                   warmup_ratio: float | None = None) -> calculators.BatchMath:
        """Effective batch, optimizer steps and warmup for a Trainer run."""
        return calculators.batch_math(per_device_batch, grad_accum, devices, dataset_size, seq_len, epochs,
                                      warmup_steps, max_steps, warmup_ratio)

    def lr_curve(self, scheduler_type: str, learning_rate: float, total_steps: int,
                 warmup_steps: int = 0) -> list[tuple[int, float]]:
        """(step, learning rate) pairs from transformers' scheduler on a dummy optimizer."""
        return calculators.lr_curve(scheduler_type, learning_rate, total_steps, warmup_steps)

    def lora_scale(self, r: int, alpha: float, use_rslora: bool = False) -> float:
        """The factor peft multiplies the adapter's output by: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        return calculators.lora_scale(r, alpha, use_rslora)

    def architecture_params(self, d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int,
                            vocab_size: int, tied_embeddings: bool = False, activation: str = "swiglu",
                            norm: str = "rmsnorm", attention_bias: bool = False) -> calculators.ArchitectureParams:
        """Parameter count of a decoder-only architecture, built in transformers on the meta device."""
        return calculators.architecture_params(d_model, n_layers, n_heads, n_kv_heads, d_ff, vocab_size,
                                               tied_embeddings, activation, norm, attention_bias)

    def pretrain_preview(self, cfg: PretrainConfig) -> dict[str, Any]:
        """What the Train tab shows before a pretraining launch: backend class, parameters, memory estimate."""
        return calculators.pretrain_preview(cfg, self.settings.data_dir)

    def format_bytes(self, n: float) -> str:
        """1536 -> '1.5 KiB'; for labels next to the numbers."""
        return calculators.format_bytes(n)

    # ---- calculators over a model folder ----------------------------------------------------------------------
    def _model_source(self, model_id: str | None, user: str) -> str:
        from lab.inference.models import resolve_model_path  # model work: torch and transformers

        self.uploads.check_model_access(model_id, user)
        return resolve_model_path(model_id or self.settings.model_id, self.settings.data_dir / "models")

    def trainable_params(self, model_id: str | None, r: int, preset: str,
                         user: str = LOCAL_USER) -> calculators.TrainableParams:
        """Trainable and total parameters of LoRA rank `r` on `preset` layers of a model (the default when empty);
        a model folder `user` may not read is refused."""
        return calculators.trainable_params(self._model_source(model_id, user), r, preset)

    def training_memory(self, model_id: str | None, mode: str, bits: int, optimizer: str, batch: int, seq_len: int,
                        grad_checkpointing: bool, r: int, preset: str, autocast: bool = True,
                        user: str = LOCAL_USER) -> tuple[calculators.MemoryEstimate, int, calculators.Verdict]:
        """Training memory of a model (the default when empty), `mode` 'full' or 'lora' (rank `r` on `preset`
        layers), against the free memory of this process's device: (estimate, free bytes, verdict).

        bits is how the base's weights are stored (full fine-tuning: 32 = fp32 master weights, 16 = pure bf16);
        autocast = matmuls in bf16, as the lab trains on a GPU. A 4- or 8-bit base keeps its embeddings, head and
        norms in 16 bits, counted on the model. A model folder `user` may not read is refused."""
        from transformers import AutoConfig  # transformers loads only when a panel asks for a model's shape

        source = self._model_source(model_id, user)
        cfg = AutoConfig.from_pretrained(source)
        adapted = calculators.trainable_params(source, r, preset)
        n_params = adapted.total - adapted.trainable  # the base model alone
        est = calculators.memory_estimate(
            n_params, n_params if mode == "full" else adapted.trainable, bits, optimizer, batch, seq_len,
            cfg.hidden_size, cfg.num_hidden_layers, grad_checkpointing, d_ff=cfg.intermediate_size,
            n_heads=cfg.num_attention_heads, n_kv_heads=cfg.num_key_value_heads, vocab_size=cfg.vocab_size,
            lora_r=r, lora_modules=preset, autocast=autocast,
            unquantized_params=calculators.unquantized_params(cfg) if bits in (4, 8) else 0)
        mem = memory_info(self.device.device)
        free = int(mem.get("gpu_free", mem["ram_available"]))
        return est, free, calculators.verdict(est.total, free)
