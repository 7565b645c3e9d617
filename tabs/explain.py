"""Explain tab: every hyperparameter from the catalog, with live numbers from the real libraries.

    python app.py   # then open the Explain tab

The tab is a picker (search, group, entry), one panel per live calculator (the entry's `live` field
says which panel shows), and a sweep box for knobs with a suggested grid. Each panel function below
creates its own components and wires its own handlers, so panels can be read and changed one at a time.
"""

from __future__ import annotations

import functools
import tempfile
import textwrap
from pathlib import Path

import gradio as gr
import pandas as pd
import yaml

from lab.engine import Engine
from tabs.common import POLL, USER_ERRORS, user_error

FIRST_ENTRY = "r"
LORA_PRESETS = ["minimal", "attention_only", "ffn_only", "all"]


def _guard(fn):
    """Turn bad calculator input into a readable message in the UI."""
    @functools.wraps(fn)  # gradio reads fn's parameters through the wrapper, so a gr.Request one is filled in
    def wrapped(*args):
        try:
            return fn(*args)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
    return wrapped


def _live(engine: Engine, name: str | None) -> str | None:
    """The calculator panel an entry shows (None for entries without one, or no entry)."""
    return engine.explain.catalog_entry(name).live if name else None


def _choices(engine: Engine, query: str, group: str) -> list[tuple[str, str]]:
    found = engine.explain.catalog_search(query) if query and query.strip() else engine.explain.catalog_entries()
    return [(f"{e.title} ({e.name})", e.name) for e in found if group in ("all", e.group)]


def _sweepable(engine: Engine, name: str | None) -> bool:
    return bool(name) and name in engine.sweeps.SUGGESTED


def _suggested_yaml(engine: Engine, name: str | None) -> str:
    if not _sweepable(engine, name):
        return ""
    try:
        sweep = engine.sweeps.suggest(name)
    except ValueError as exc:  # a grid whose points would be identical jobs: say why instead of offering it
        return "# No sweep suggested for this knob here:\n" + "".join(f"# {line}\n" for line in textwrap.wrap(str(exc)))
    body = yaml.safe_dump(engine.sweeps.to_dict(sweep), sort_keys=False)
    try:  # the plan reads the model's tokenizer: a data directory the lab cannot write must not stop the page
        plan = engine.sweeps.plan(sweep)
    except (*USER_ERRORS, OSError) as exc:
        return f"# (no plan: {str(exc).splitlines()[0][:160]})\n" + body
    lines = [f"# {p['point']}: {p['max_steps']} steps, {p['examples']:g} examples"
             + (f", {p['tokens']:,} tokens" if p["tokens"] is not None else "")
             + (f", LoRA scale {p['lora_scale']:g}" if p["lora_scale"] is not None else "") for p in plan]
    return "# Planned points:\n" + "\n".join(lines) + "\n" + body


def _sweep_ids(engine: Engine) -> list[str]:
    return [s["id"] for s in engine.sweeps.all()]


def _wire_panel(engine: Engine, key: str, tab: gr.Tab, pick: gr.Dropdown, fn, inputs: list, outputs: list,
                with_request: bool = False) -> None:
    """Recompute a panel's numbers when one of its inputs changes; and when the tab opens or an entry is
    picked, if the entry shown uses this panel (the other panels are left untouched). `with_request`: fn takes
    the gr.Request after its inputs (panels that read a model the user names check who is asking)."""
    for component in inputs:
        component.change(fn, inputs, outputs, api_name=False, concurrency_limit=None)

    def when_shown(request: gr.Request, name: str | None, *args):
        if _live(engine, name) == key:
            return fn(*args, request) if with_request else fn(*args)
        return gr.skip() if len(outputs) == 1 else tuple(gr.skip() for _ in outputs)

    gr.on([tab.select, pick.change], when_shown, [pick, *inputs], outputs, api_name=False, concurrency_limit=None)


def _entry_picker(engine: Engine) -> tuple[gr.Dropdown, gr.Markdown]:
    """Search box, group filter and entry list on the left, the entry's text on the right."""
    with gr.Row():
        with gr.Column(scale=1):
            query = gr.Textbox(label="Search", placeholder="rank, warmup, GQA, beta…", elem_id="explain-search")
            group = gr.Radio(["all", *engine.explain.CATALOG_GROUPS], value="all", label="Group")
            pick = gr.Dropdown(_choices(engine, "", "all"), value=FIRST_ENTRY, label="Entry", elem_id="explain-entry")
        with gr.Column(scale=2):
            text = gr.Markdown(engine.explain.markdown(FIRST_ENTRY), elem_id="explain-text")

    def refresh_list(q: str, g: str):
        choices = _choices(engine, q, g)
        return gr.update(choices=choices, value=choices[0][1] if choices else None)

    query.change(refresh_list, [query, group], pick, queue=False)
    group.change(refresh_list, [query, group], pick, queue=False)
    return pick, text


def _batch_panel(engine: Engine, tab: gr.Tab, pick: gr.Dropdown) -> gr.Group:
    @_guard
    def batch_math(batch, accum, devices, size, seq_len, epochs, warmup_ratio, max_steps):
        r = engine.explain.batch_math(int(batch), int(accum), int(devices), int(size), int(seq_len), float(epochs),
                                      max_steps=int(max_steps), warmup_ratio=float(warmup_ratio))
        return (f"| effective batch | steps / epoch | total steps | warmup steps | tokens / step | epochs covered |\n"
                f"|---|---|---|---|---|---|\n| **{r.effective_batch}** | {r.steps_per_epoch} | **{r.total_steps}** | "
                f"{r.warmup_steps} | {r.tokens_per_step:,} | {r.epochs_covered:.2f} |")

    with gr.Group(visible=_live(engine, pick.value) == "batch_math") as panel:
        with gr.Row():
            batch = gr.Number(4, precision=0, label="per_device_train_batch_size")
            accum = gr.Number(4, precision=0, label="gradient_accumulation_steps")
            devices = gr.Number(1, precision=0, label="devices")
            size = gr.Number(1000, precision=0, label="dataset size (examples)")
        with gr.Row():
            seq_len = gr.Number(512, precision=0, label="max_length")
            epochs = gr.Number(3, label="num_train_epochs")
            warmup = gr.Number(0.03, label="warmup ratio")
            max_steps = gr.Number(-1, precision=0, label="max_steps (-1 = from epochs)")
        out = gr.Markdown(elem_id="explain-batch-out")
    _wire_panel(engine, "batch_math", tab, pick, batch_math,
                [batch, accum, devices, size, seq_len, epochs, warmup, max_steps], [out])
    return panel


def _lr_panel(engine: Engine, tab: gr.Tab, pick: gr.Dropdown) -> gr.Group:
    @_guard
    def lr_curve(scheduler, lr, total, warmup):
        points = engine.explain.lr_curve(scheduler, float(lr), int(total), int(warmup))
        frame = pd.DataFrame(points, columns=["step", "learning_rate"])
        peak = frame["learning_rate"].max()
        return frame, (f"`{scheduler}`: peak {peak:.3g} · first {points[0][1]:.3g} · last {points[-1][1]:.3g} "
                       f"· computed by `transformers.get_scheduler` over {len(points)} steps")

    with gr.Group(visible=_live(engine, pick.value) == "lr_curve") as panel:
        with gr.Row():
            scheduler = gr.Dropdown(list(engine.explain.SCHEDULER_TYPES), value="cosine", label="lr_scheduler_type")
            lr = gr.Number(2e-4, label="learning_rate")
            total = gr.Number(200, precision=0, label="total steps")
            warmup = gr.Number(10, precision=0, label="warmup_steps")
        plot = gr.LinePlot(x="step", y="learning_rate", height=260, label="Learning rate per step",
                           elem_id="explain-lr-plot")
        out = gr.Markdown(elem_id="explain-lr-out")
    _wire_panel(engine, "lr_curve", tab, pick, lr_curve, [scheduler, lr, total, warmup], [plot, out])
    return panel


def _scale_panel(engine: Engine, tab: gr.Tab, pick: gr.Dropdown) -> gr.Group:
    @_guard
    def lora_scale(r, alpha):
        r, alpha = int(r), float(alpha)
        plain, rs = engine.explain.lora_scale(r, alpha, False), engine.explain.lora_scale(r, alpha, True)
        ranks = [2 ** k for k in range(0, 9)]
        frame = pd.DataFrame([{"r": x, "scale": engine.explain.lora_scale(x, alpha * x / r, use), "kind": label}
                              for x in ranks for use, label in ((False, "alpha/r"), (True, "rsLoRA alpha/sqrt(r)"))])
        return (f"With r={r}, alpha={alpha:g}: peft puts **{plain:.4g}** (alpha/r) on each LoRA layer, or "
                f"**{rs:.4g}** with rsLoRA (alpha/sqrt(r)). The plot keeps alpha = {alpha / r:g}·r as r grows: "
                "the plain scale stays flat while rsLoRA's grows with sqrt(r)."), frame

    with gr.Group(visible=_live(engine, pick.value) == "lora_scale") as panel:
        with gr.Row():
            r = gr.Number(16, precision=0, label="r")
            alpha = gr.Number(32, label="lora_alpha")
        out = gr.Markdown(elem_id="explain-scale-out")
        plot = gr.LinePlot(x="r", y="scale", color="kind", height=240, label="Scale as r grows")
    _wire_panel(engine, "lora_scale", tab, pick, lora_scale, [r, alpha], [out, plot])
    return panel


def _trainable_panel(engine: Engine, tab: gr.Tab, pick: gr.Dropdown) -> gr.Group:
    @_guard
    def trainable_params(model_id, r, preset, request: gr.Request):
        t = engine.explain.trainable_params(model_id, int(r), preset, user=engine.uploads.user_of(request.username))
        return (f"**{t.trainable:,}** trainable of {t.total:,} parameters (**{100 * t.share:.3f}%**), "
                f"{t.adapted_layers} adapted layers: {', '.join(t.target_modules)} — counted by peft on "
                f"`{model_id}`.")

    with gr.Group(visible=_live(engine, pick.value) == "trainable_params") as panel:
        with gr.Row():
            model_id = gr.Textbox(engine.settings.model_id, label="Model id")
            r = gr.Number(16, precision=0, label="r")
            preset = gr.Dropdown(LORA_PRESETS, value="attention_only", label="target modules preset")
        out = gr.Markdown(elem_id="explain-trainable-out")
    _wire_panel(engine, "trainable_params", tab, pick, trainable_params, [model_id, r, preset], [out],
                with_request=True)
    return panel


def _memory_panel(engine: Engine, tab: gr.Tab, pick: gr.Dropdown) -> gr.Group:
    @_guard
    def memory_estimate(model_id, mode, bits, optimizer, batch, seq_len, ckpt, r, preset, autocast,
                        request: gr.Request):
        est, free, v = engine.explain.training_memory(model_id, mode, int(bits), optimizer, int(batch), int(seq_len),
                                                      bool(ckpt), int(r), preset, bool(autocast),
                                                      user=engine.uploads.user_of(request.username))
        frame = pd.DataFrame({"part": ["weights", "gradients", "optimizer", "activations"],
                              "GiB": [x / 2**30 for x in (est.weights, est.gradients, est.optimizer_state,
                                                          est.activations)]})
        fmt = engine.explain.format_bytes
        return frame, (f"Estimated **{fmt(est.total)}** against {fmt(free)} free on {engine.device.device}: "
                       f"**{v.label}** (margin {fmt(v.margin_bytes)}).\n\n"
                       + "\n".join(f"- {a}" for a in engine.explain.MEMORY_ASSUMPTIONS))

    with gr.Group(visible=_live(engine, pick.value) == "memory_estimate") as panel:
        with gr.Row():
            model_id = gr.Textbox(engine.settings.model_id, label="Model id")
            mode = gr.Radio(["full", "lora"], value="lora", label="training")
            bits = gr.Radio([32, 16, 8, 4], value=16, label="weight bits (full: 32 = fp32 master weights, "
                                                            "16 = pure bf16)")
            optimizer = gr.Dropdown(list(engine.explain.OPTIMIZER_STATES), value="adamw_torch", label="optim")
        with gr.Row():
            batch = gr.Number(4, precision=0, label="batch")
            seq_len = gr.Number(512, precision=0, label="max_length")
            ckpt = gr.Checkbox(False, label="gradient checkpointing")
            r = gr.Number(16, precision=0, label="LoRA r")
            preset = gr.Dropdown(LORA_PRESETS, value="all", label="LoRA preset")
            autocast = gr.Checkbox(True, label="bf16 autocast (how the lab trains on a GPU)")
        plot = gr.BarPlot(x="part", y="GiB", height=220, label="Training memory")
        out = gr.Markdown(elem_id="explain-memory-out")
    _wire_panel(engine, "memory_estimate", tab, pick, memory_estimate,
                [model_id, mode, bits, optimizer, batch, seq_len, ckpt, r, preset, autocast], [plot, out],
                with_request=True)
    return panel


def _architecture_panel(engine: Engine, tab: gr.Tab, pick: gr.Dropdown) -> gr.Group:
    @_guard
    def architecture_params(d_model, layers, heads, kv_heads, d_ff, vocab, tied, activation, norm, bias):
        a = engine.explain.architecture_params(int(d_model), int(layers), int(heads), int(kv_heads), int(d_ff),
                                               int(vocab), bool(tied), activation, norm, bool(bias))
        kind = "MHA" if kv_heads == heads else "MQA" if kv_heads == 1 else "GQA"
        parts = " · ".join(f"{k} {v:,}" for k, v in a.parts.items())
        return (f"**{a.instantiated:,}** parameters ({a.instantiated / 1e6:.1f} M) built as `{a.backend}` on the "
                f"meta device; formula gives {a.analytic:,}. Attention: **{kind}**. {parts}")

    with gr.Group(visible=_live(engine, pick.value) == "architecture_params") as panel:
        with gr.Row():
            d_model = gr.Number(576, precision=0, label="d_model")
            layers = gr.Number(30, precision=0, label="n_layers")
            heads = gr.Number(9, precision=0, label="n_heads")
            kv_heads = gr.Number(3, precision=0, label="n_kv_heads")
            d_ff = gr.Number(1536, precision=0, label="d_ff")
            vocab = gr.Number(49152, precision=0, label="vocab_size")
        with gr.Row():
            tied = gr.Checkbox(True, label="tied embeddings")
            activation = gr.Dropdown(list(engine.explain.ACTIVATIONS), value="swiglu", label="activation")
            norm = gr.Radio(["rmsnorm", "layernorm"], value="rmsnorm", label="norm")
            bias = gr.Checkbox(False, label="attention_bias")
        out = gr.Markdown(elem_id="explain-arch-out")
    _wire_panel(engine, "architecture_params", tab, pick, architecture_params,
                [d_model, layers, heads, kv_heads, d_ff, vocab, tied, activation, norm, bias], [out])
    return panel


def _show_entry(engine: Engine, pick: gr.Dropdown, text: gr.Markdown, panels: dict[str, gr.Group]) -> None:
    """Picking an entry shows its text and only the panel its `live` field names."""
    def show(name: str | None) -> dict:
        live = _live(engine, name)
        shown = {text: engine.explain.markdown(name) if name else "Pick an entry."}
        return shown | {panel: gr.update(visible=bool(name) and live == key) for key, panel in panels.items()}

    pick.change(show, pick, [text, *panels.values()], queue=False)


def _sweep_panel(engine: Engine, tab: gr.Tab, pick: gr.Dropdown) -> gr.Accordion:
    """Edit a suggested grid for the picked knob, start it as jobs owned by the user, watch the table fill."""
    with gr.Accordion("Sweep this knob: run a small grid and let the knob's rule decide", open=False,
                      visible=_sweepable(engine, pick.value), elem_id="explain-sweep") as box:
        editor = gr.Code(_suggested_yaml(engine, pick.value), language="yaml", lines=12,
                         label="Sweep (grid, tied knobs, base job config, overrides; edit freely)")
        with gr.Row():
            start_btn = gr.Button("Start sweep", variant="primary", elem_id="explain-sweep-start")
            sweep_pick = gr.Dropdown([], label="Sweep", allow_custom_value=True, elem_id="explain-sweep-id")
            csv_btn = gr.Button("Export CSV")
        table = gr.Dataframe(label="Results (one row per grid point)", interactive=False, elem_id="explain-sweep-table")
        plot = gr.LinePlot(x="step", y="loss", color="point", height=240, label="Training loss per point")
        decision = gr.Markdown(elem_id="explain-sweep-decision")
        csv = gr.File(label="CSV", interactive=False, height=80)

    def sweep_for(name: str | None):
        return gr.update(visible=_sweepable(engine, name)), _suggested_yaml(engine, name)

    def start(text: str, request: gr.Request):
        try:
            sweep = engine.sweeps.from_dict(yaml.safe_load(text), source="the sweep editor")
            sweep_id = engine.sweeps.start(sweep, engine.uploads.user_of(request.username))
        except (*USER_ERRORS, yaml.YAMLError) as exc:
            raise user_error(exc) from exc
        return gr.update(choices=_sweep_ids(engine), value=sweep_id)

    def watch(sweep_id: str | None):
        if not sweep_id:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            rows = engine.sweeps.results(sweep_id)
            curve = pd.DataFrame(engine.sweeps.curves(sweep_id), columns=["point", "step", "loss", "eval_loss"])
            done = rows and all(r["state"] in ("completed", "failed", "stopped") for r in rows)
            explanation = (engine.sweeps.decision(sweep_id, rows).explanation if done
                           else f"{sum(r['state'] == 'completed' for r in rows)} of {len(rows)} points finished…")
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        columns = [c for c in ("point", "state", "step", "final_train_loss", "best_eval_loss", "qa_f1",
                               "tokens_per_s", "peak_memory_mb", "trainable_params") if rows and c in rows[0]]
        return pd.DataFrame(rows, columns=columns), curve.dropna(subset=["loss"]), explanation

    def export(sweep_id: str | None) -> str:
        if not sweep_id:
            raise gr.Error("Pick a sweep first.")
        try:
            return str(engine.sweeps.export(sweep_id, Path(tempfile.mkdtemp(prefix="lab-sweep-")) / f"{sweep_id}.csv"))
        except USER_ERRORS as exc:
            raise user_error(exc) from exc

    pick.change(sweep_for, pick, [box, editor], queue=False)
    start_btn.click(start, editor, sweep_pick, api_name="explain_sweep")
    sweep_pick.change(watch, sweep_pick, [table, plot, decision], queue=False)
    csv_btn.click(export, sweep_pick, csv)
    gr.Timer(3).tick(watch, sweep_pick, [table, plot, decision], **POLL)
    # Choices only, never a value: the tab's select handlers answer one after another, so on a busy machine this
    # one can answer after Start's. Handing back the value it read when the tab was selected (none yet) would then
    # replace the sweep just started, and the table would stop following it.
    tab.select(lambda: gr.update(choices=_sweep_ids(engine)), None, sweep_pick, queue=False)
    return box


def _explain_api(engine: Engine) -> None:
    def explain_entry(name: str, trainer: str = "") -> str:
        """The catalog entry for a knob, as Markdown (what `python -m lab explain NAME [--trainer KIND]` prints)."""
        try:
            return engine.explain.markdown(name, trainer or None)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc

    gr.api(explain_entry, api_name="explain")


def build(engine: Engine) -> None:
    with gr.Tab("Explain", id="explain") as tab:
        gr.Markdown("Every knob a practitioner meets, what it does, what goes wrong when it is off, and live "
                    "numbers computed by the same libraries that train.")
        pick, text = _entry_picker(engine)
        panels = {"batch_math": _batch_panel(engine, tab, pick), "lr_curve": _lr_panel(engine, tab, pick),
                  "lora_scale": _scale_panel(engine, tab, pick),
                  "trainable_params": _trainable_panel(engine, tab, pick),
                  "memory_estimate": _memory_panel(engine, tab, pick),
                  "architecture_params": _architecture_panel(engine, tab, pick)}
        _show_entry(engine, pick, text, panels)
        _sweep_panel(engine, tab, pick)
        _explain_api(engine)
