"""Explain tab: every hyperparameter from the catalog, with live numbers from the real libraries.

    python app.py   # then open the Explain tab
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd
import yaml

from lab.explain import calculators as calc
from lab.explain import catalog
from lab.core.device import memory_info
from lab.engine import Engine
from lab.inference.models import resolve_model_path
from lab.core.spaces import refuse_training_on_zero_gpu
from tabs.common import POLL, USER_ERRORS, user_error


def _choices(query: str, group: str) -> list[tuple[str, str]]:
    found = catalog.search(query) if query and query.strip() else catalog.entries()
    return [(f"{e.title} ({e.name})", e.name) for e in found if group in ("all", e.group)]


def _sweepable(name: str | None) -> bool:
    from lab.explain.sweep import SUGGESTED_GRIDS
    return bool(name) and name in SUGGESTED_GRIDS


def _suggested_yaml(name: str | None) -> str:
    from lab.explain.sweep import suggest_sweep, sweep_to_dict
    return yaml.safe_dump(sweep_to_dict(suggest_sweep(name)), sort_keys=False) if _sweepable(name) else ""


def _sweep_ids(data_dir: Path) -> list[str]:
    from lab.explain.sweep import list_sweeps
    return [s["id"] for s in list_sweeps(data_dir)]


def _guard(fn):
    """Turn bad calculator input into a readable message in the UI."""
    def wrapped(*args):
        try:
            return fn(*args)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
    return wrapped


def build(engine: Engine) -> None:
    def model_path(model_id: str) -> str:
        return resolve_model_path(model_id or engine.settings.model_id, engine.settings.data_dir / "models")

    def show(name: str | None):
        if not name:
            return ("Pick an entry.", *[gr.update(visible=False)] * len(panels))
        entry = catalog.get(name)
        return (catalog.render_markdown(entry), *[gr.update(visible=entry.live == key) for key in panels])

    @_guard
    def do_batch(batch, accum, devices, size, seq_len, epochs, warmup_ratio, max_steps):
        r = calc.batch_math(int(batch), int(accum), int(devices), int(size), int(seq_len), float(epochs),
                            max_steps=int(max_steps), warmup_ratio=float(warmup_ratio))
        return (f"| effective batch | steps / epoch | total steps | warmup steps | tokens / step | epochs covered |\n"
                f"|---|---|---|---|---|---|\n| **{r.effective_batch}** | {r.steps_per_epoch} | **{r.total_steps}** | "
                f"{r.warmup_steps} | {r.tokens_per_step:,} | {r.epochs_covered:.2f} |")

    @_guard
    def do_lr(scheduler, lr, total, warmup):
        points = calc.lr_curve(scheduler, float(lr), int(total), int(warmup))
        frame = pd.DataFrame(points, columns=["step", "learning_rate"])
        peak = frame["learning_rate"].max()
        return frame, (f"`{scheduler}`: peak {peak:.3g} · first {points[0][1]:.3g} · last {points[-1][1]:.3g} "
                       f"· computed by `transformers.get_scheduler` over {len(points)} steps")

    @_guard
    def do_scale(r, alpha):
        r, alpha = int(r), float(alpha)
        plain, rs = calc.lora_scale(r, alpha, False), calc.lora_scale(r, alpha, True)
        ranks = [2 ** k for k in range(0, 9)]
        frame = pd.DataFrame([{"r": x, "scale": calc.lora_scale(x, alpha * x / r, use), "kind": label}
                              for x in ranks for use, label in ((False, "alpha/r"), (True, "rsLoRA alpha/sqrt(r)"))])
        return (f"With r={r}, alpha={alpha:g}: peft puts **{plain:.4g}** (alpha/r) on each LoRA layer, or "
                f"**{rs:.4g}** with rsLoRA (alpha/sqrt(r)). The plot keeps alpha = {alpha / r:g}·r as r grows: "
                "the plain scale stays flat while rsLoRA's grows with sqrt(r)."), frame

    @_guard
    def do_trainable(model_id, r, preset):
        t = calc.trainable_params(model_path(model_id), int(r), preset)
        return (f"**{t.trainable:,}** trainable of {t.total:,} parameters (**{100 * t.share:.3f}%**), "
                f"{t.adapted_layers} adapted layers: {', '.join(t.target_modules)} — counted by peft on "
                f"`{model_id}`.")

    @_guard
    def do_memory(model_id, mode, bits, optimizer, batch, seq_len, ckpt, r, preset):
        from transformers import AutoConfig
        cfg = AutoConfig.from_pretrained(model_path(model_id))
        arch = calc.trainable_params(model_path(model_id), int(r), preset)
        n_params = arch.total - arch.trainable
        trainable = n_params if mode == "full" else arch.trainable
        est = calc.memory_estimate(n_params, trainable, int(bits), optimizer, int(batch), int(seq_len),
                                   cfg.hidden_size, cfg.num_hidden_layers, bool(ckpt), d_ff=cfg.intermediate_size,
                                   n_heads=cfg.num_attention_heads, n_kv_heads=cfg.num_key_value_heads,
                                   vocab_size=cfg.vocab_size, lora_r=int(r), lora_modules=preset)
        mem = memory_info(engine.device.device)
        free = int(mem.get("gpu_free", mem["ram_available"]))
        v = calc.verdict(est.total, free)
        frame = pd.DataFrame({"part": ["weights", "gradients", "optimizer", "activations"],
                              "GiB": [x / 2**30 for x in (est.weights, est.gradients, est.optimizer_state,
                                                          est.activations)]})
        return frame, (f"Estimated **{calc.format_bytes(est.total)}** against {calc.format_bytes(free)} free on "
                       f"{engine.device.device}: **{v.label}** (margin {calc.format_bytes(v.margin_bytes)}).\n\n"
                       + "\n".join(f"- {a}" for a in calc.MEMORY_ASSUMPTIONS))

    @_guard
    def do_arch(d_model, layers, heads, kv_heads, d_ff, vocab, tied, activation, norm, bias):
        a = calc.architecture_params(int(d_model), int(layers), int(heads), int(kv_heads), int(d_ff), int(vocab),
                                     bool(tied), activation, norm, bool(bias))
        kind = "MHA" if kv_heads == heads else "MQA" if kv_heads == 1 else "GQA"
        parts = " · ".join(f"{k} {v:,}" for k, v in a.parts.items())
        return (f"**{a.instantiated:,}** parameters ({a.instantiated / 1e6:.1f} M) built as `{a.backend}` on the "
                f"meta device; formula gives {a.analytic:,}. Attention: **{kind}**. {parts}")

    with gr.Tab("Explain", id="explain") as tab:
        gr.Markdown("Every knob a practitioner meets, what it does, what goes wrong when it is off, and live "
                    "numbers computed by the same libraries that train.")
        with gr.Row():
            with gr.Column(scale=1):
                query = gr.Textbox(label="Search", placeholder="rank, warmup, GQA, beta…", elem_id="explain-search")
                group = gr.Radio(["all", *catalog.GROUPS], value="all", label="Group")
                first = catalog.get("r").name
                pick = gr.Dropdown(_choices("", "all"), value=first, label="Entry", elem_id="explain-entry")
            with gr.Column(scale=2):
                text = gr.Markdown(catalog.render_markdown(catalog.get(first)), elem_id="explain-text")

        panels: dict[str, gr.Group] = {}
        with gr.Group(visible=catalog.get(first).live == "batch_math") as panels["batch_math"]:
            with gr.Row():
                b_batch = gr.Number(4, precision=0, label="per_device_train_batch_size")
                b_accum = gr.Number(4, precision=0, label="gradient_accumulation_steps")
                b_dev = gr.Number(1, precision=0, label="devices")
                b_size = gr.Number(1000, precision=0, label="dataset size (examples)")
            with gr.Row():
                b_seq = gr.Number(512, precision=0, label="max_length")
                b_epochs = gr.Number(3, label="num_train_epochs")
                b_warm = gr.Number(0.03, label="warmup ratio")
                b_max = gr.Number(-1, precision=0, label="max_steps (-1 = from epochs)")
            b_out = gr.Markdown(elem_id="explain-batch-out")
        with gr.Group(visible=catalog.get(first).live == "lr_curve") as panels["lr_curve"]:
            with gr.Row():
                l_sched = gr.Dropdown(list(calc.SCHEDULER_TYPES), value="cosine", label="lr_scheduler_type")
                l_lr = gr.Number(2e-4, label="learning_rate")
                l_total = gr.Number(200, precision=0, label="total steps")
                l_warm = gr.Number(10, precision=0, label="warmup_steps")
            l_plot = gr.LinePlot(x="step", y="learning_rate", height=260, label="Learning rate per step",
                                 elem_id="explain-lr-plot")
            l_out = gr.Markdown(elem_id="explain-lr-out")
        with gr.Group(visible=catalog.get(first).live == "lora_scale") as panels["lora_scale"]:
            with gr.Row():
                s_r = gr.Number(16, precision=0, label="r")
                s_alpha = gr.Number(32, label="lora_alpha")
            s_out = gr.Markdown(elem_id="explain-scale-out")
            s_plot = gr.LinePlot(x="r", y="scale", color="kind", height=240, label="Scale as r grows")
        with gr.Group(visible=catalog.get(first).live == "trainable_params") as panels["trainable_params"]:
            with gr.Row():
                t_model = gr.Textbox(engine.settings.model_id, label="Model id")
                t_r = gr.Number(16, precision=0, label="r")
                t_preset = gr.Dropdown(["minimal", "attention_only", "ffn_only", "all"], value="attention_only",
                                       label="target modules preset")
            t_out = gr.Markdown(elem_id="explain-trainable-out")
        with gr.Group(visible=catalog.get(first).live == "memory_estimate") as panels["memory_estimate"]:
            with gr.Row():
                m_model = gr.Textbox(engine.settings.model_id, label="Model id")
                m_mode = gr.Radio(["full", "lora"], value="lora", label="training")
                m_bits = gr.Radio([32, 16, 8, 4], value=16, label="weight bits")
                m_opt = gr.Dropdown(list(calc.OPTIMIZER_STATES), value="adamw_torch", label="optim")
            with gr.Row():
                m_batch = gr.Number(4, precision=0, label="batch")
                m_seq = gr.Number(512, precision=0, label="max_length")
                m_ckpt = gr.Checkbox(False, label="gradient checkpointing")
                m_r = gr.Number(16, precision=0, label="LoRA r")
                m_preset = gr.Dropdown(["minimal", "attention_only", "ffn_only", "all"], value="all",
                                       label="LoRA preset")
            m_plot = gr.BarPlot(x="part", y="GiB", height=220, label="Training memory")
            m_out = gr.Markdown(elem_id="explain-memory-out")
        with gr.Group(visible=catalog.get(first).live == "architecture_params") as panels["architecture_params"]:
            with gr.Row():
                a_d = gr.Number(576, precision=0, label="d_model")
                a_layers = gr.Number(30, precision=0, label="n_layers")
                a_heads = gr.Number(9, precision=0, label="n_heads")
                a_kv = gr.Number(3, precision=0, label="n_kv_heads")
                a_ff = gr.Number(1536, precision=0, label="d_ff")
                a_vocab = gr.Number(49152, precision=0, label="vocab_size")
            with gr.Row():
                a_tied = gr.Checkbox(True, label="tied embeddings")
                a_act = gr.Dropdown([*calc.GATED_ACTIVATIONS, *calc.PLAIN_ACTIVATIONS], value="swiglu",
                                    label="activation")
                a_norm = gr.Radio(["rmsnorm", "layernorm"], value="rmsnorm", label="norm")
                a_bias = gr.Checkbox(False, label="attention_bias")
            a_out = gr.Markdown(elem_id="explain-arch-out")

        with gr.Accordion("Sweep this knob: run a small grid and let the guide's rule decide", open=False,
                          visible=_sweepable(first), elem_id="explain-sweep") as sweep_box:
            sweep_yaml = gr.Code(_suggested_yaml(first), language="yaml", lines=12,
                                 label="Sweep (grid, tied knobs, base job config, overrides; edit freely)")
            with gr.Row():
                sweep_start = gr.Button("Start sweep", variant="primary", elem_id="explain-sweep-start")
                sweep_pick = gr.Dropdown([], label="Sweep", allow_custom_value=True, elem_id="explain-sweep-id")
                sweep_csv_btn = gr.Button("Export CSV")
            sweep_table = gr.Dataframe(label="Results (one row per grid point)", interactive=False,
                                       elem_id="explain-sweep-table")
            sweep_plot = gr.LinePlot(x="step", y="loss", color="point", height=240, label="Training loss per point")
            sweep_decision_md = gr.Markdown(elem_id="explain-sweep-decision")
            sweep_csv = gr.File(label="CSV", interactive=False, height=80)

        wiring = [
            (do_batch, [b_batch, b_accum, b_dev, b_size, b_seq, b_epochs, b_warm, b_max], [b_out]),
            (do_lr, [l_sched, l_lr, l_total, l_warm], [l_plot, l_out]),
            (do_scale, [s_r, s_alpha], [s_out, s_plot]),
            (do_trainable, [t_model, t_r, t_preset], [t_out]),
            (do_memory, [m_model, m_mode, m_bits, m_opt, m_batch, m_seq, m_ckpt, m_r, m_preset], [m_plot, m_out]),
            (do_arch, [a_d, a_layers, a_heads, a_kv, a_ff, a_vocab, a_tied, a_act, a_norm, a_bias], [a_out]),
        ]
        def only_for(key, fn, n_out):
            """Run a panel's calculator when the shown entry uses it; leave the others untouched."""
            def run(name, *args):
                if name and catalog.get(name).live == key:
                    return fn(*args)
                return gr.skip() if n_out == 1 else tuple(gr.skip() for _ in range(n_out))
            return run

        for (fn, inputs, outputs), key in zip(wiring, panels):
            for component in inputs:
                component.change(fn, inputs, outputs, api_name=False, concurrency_limit=None)
            # Opening the tab or picking an entry fills the visible panel with numbers at once.
            gr.on([tab.select, pick.change], only_for(key, fn, len(outputs)), [pick, *inputs], outputs,
                  api_name=False, concurrency_limit=None)

        def refresh_list(q: str, g: str):
            choices = _choices(q, g)
            return gr.update(choices=choices, value=choices[0][1] if choices else None)

        query.change(refresh_list, [query, group], pick, queue=False)
        group.change(refresh_list, [query, group], pick, queue=False)
        pick.change(show, pick, [text, *panels.values()], queue=False)
        def sweep_for(name: str | None):
            return gr.update(visible=_sweepable(name)), _suggested_yaml(name)

        def start(text: str, request: gr.Request):
            from lab.explain.sweep import start_sweep, sweep_from_dict
            try:
                refuse_training_on_zero_gpu()
                sweep = sweep_from_dict(yaml.safe_load(text), source="the sweep editor")
                sweep_id = start_sweep(sweep, engine.settings.data_dir, engine.jobs)
            except (*USER_ERRORS, yaml.YAMLError) as exc:
                raise user_error(exc) from exc
            return gr.update(choices=_sweep_ids(engine.settings.data_dir), value=sweep_id)

        def watch(sweep_id: str | None):
            from lab.explain.sweep import overlay_curves, sweep_decision, sweep_results
            if not sweep_id:
                return gr.skip(), gr.skip(), gr.skip()
            try:
                rows = sweep_results(sweep_id, engine.settings.data_dir)
                curve = pd.DataFrame(overlay_curves(sweep_id, engine.settings.data_dir),
                                     columns=["point", "step", "loss", "eval_loss"])
            except USER_ERRORS as exc:
                raise user_error(exc) from exc
            done = rows and all(r["state"] in ("completed", "failed", "stopped") for r in rows)
            decision = (sweep_decision(sweep_id, engine.settings.data_dir, rows).explanation if done
                        else f"{sum(r['state'] == 'completed' for r in rows)} of {len(rows)} points finished…")
            columns = [c for c in ("point", "state", "step", "final_train_loss", "best_eval_loss", "qa_f1",
                                   "tokens_per_s", "peak_memory_mb", "trainable_params") if rows and c in rows[0]]
            return pd.DataFrame(rows, columns=columns), curve.dropna(subset=["loss"]), decision

        def export(sweep_id: str | None):
            from lab.explain.sweep import export_csv, sweep_results
            if not sweep_id:
                raise gr.Error("Pick a sweep first.")
            path = Path(tempfile.mkdtemp(prefix="lab-sweep-")) / f"{sweep_id}.csv"
            return str(export_csv(sweep_results(sweep_id, engine.settings.data_dir), path))

        pick.change(sweep_for, pick, [sweep_box, sweep_yaml], queue=False)
        sweep_start.click(start, sweep_yaml, sweep_pick, api_name="explain_sweep")
        sweep_pick.change(watch, sweep_pick, [sweep_table, sweep_plot, sweep_decision_md], queue=False)
        sweep_csv_btn.click(export, sweep_pick, sweep_csv)
        gr.Timer(3).tick(watch, sweep_pick, [sweep_table, sweep_plot, sweep_decision_md], **POLL)
        tab.select(lambda current: gr.update(choices=_sweep_ids(engine.settings.data_dir), value=current), sweep_pick, sweep_pick,
                   queue=False)

        def explain_entry(name: str) -> str:
            """The catalog entry for a knob, as Markdown (what `python -m lab explain NAME` prints)."""
            try:
                return catalog.render_markdown(catalog.get(name))
            except USER_ERRORS as exc:
                raise user_error(exc) from exc

        gr.api(explain_entry, api_name="explain")
