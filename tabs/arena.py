"""Arena tab: one prompt streamed to 2-4 models or adapters side by side, with chat history.

    python app.py   # then open the Arena tab
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from lab.core.spaces import gpu
from lab.engine import Engine
from lab.inference.arena import ArenaColumn
from lab.inference.generate import GenerationSettings
from tabs.common import GPU, USER_ERRORS, user_error, waiting_note, with_queue_position


def _timings(reply) -> str:
    if reply.error:
        return f"⚠️ {reply.error}"
    t = reply.timings
    if t is None:
        return ""
    state = "" if reply.done else " · streaming…"
    queued = f" · queued {t.queue_s:.2f} s" if t.queue_s >= 0.01 else ""
    return (f"TTFT **{t.ttft_s:.3f} s** · **{t.decode_tokens_per_s:.1f} tok/s** · {t.new_tokens} tokens · "
            f"{t.total_s:.2f} s{queued}{state}")


def build(engine: Engine) -> None:
    max_cols = engine.arena.MAX_COLUMNS

    def columns_from(n: int, values: list) -> list[ArenaColumn]:
        cols = []
        for i in range(int(n)):
            choice, temperature, max_new = values[3 * i: 3 * i + 3]
            cols.append(ArenaColumn(choice or "", GenerationSettings(max_new_tokens=int(max_new or 0),
                                                                     temperature=float(temperature))))
        return cols

    # The request comes first: gradio passes it only to parameters before *values.
    def send(request: gr.Request, prompt: str, n: int, chat_mode: bool, histories: list[list[dict]], *values):
        histories = [list(h) if chat_mode else [] for h in histories]
        try:
            columns = columns_from(n, list(values))
            user = engine.uploads.user_of(request.username)
            caller = engine.requests.new_caller("arena", user, request.session_hash)
            shown = [list(h) for h in histories]
            notes = [""] * max_cols
            stream = engine.arena.stream(prompt, columns, histories[: len(columns)], caller, user=user)
            for kind, value in with_queue_position(engine, caller, stream):
                if kind == "waiting":
                    notes = [waiting_note(engine, value)] * len(columns) + notes[len(columns):]
                else:
                    i = value.index
                    shown[i] = [*histories[i], {"role": "user", "content": prompt.strip()},
                                {"role": "assistant", "content": value.text or ("⚠️ " + value.error if value.error else "")}]
                    notes[i] = _timings(value)
                    if value.done and not value.error:
                        histories[i] = shown[i]
                yield *shown, *notes, histories
            engine.history.record_arena(user, columns, histories[: len(columns)])  # kept in the user's History
        except USER_ERRORS as exc:
            raise user_error(exc) from exc

    def export(fmt: str, n: int, histories: list[list[dict]], *values):
        try:
            columns = columns_from(n, list(values))
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        transcript = engine.arena.transcript_json if fmt == "JSON" else engine.arena.transcript_markdown
        text = transcript(columns, histories[: len(columns)])
        suffix = ".json" if fmt == "JSON" else ".md"
        path = Path(tempfile.mkdtemp(prefix="arena-")) / f"arena-transcript{suffix}"
        path.write_text(text, encoding="utf-8")
        return str(path)

    def show_columns(n: int):
        return [gr.update(visible=i < int(n)) for i in range(max_cols)]

    def refresh_models():
        """Choices only: what a column shows stays picked (or typed) while new adapters join the list."""
        choices = engine.arena.choice_labels()
        return [gr.update(choices=choices) for _ in range(max_cols)]

    with gr.Tab("Arena", id="arena") as tab:
        gr.Markdown("The same prompt to several models or adapters, one column each, streamed with its own "
                    "time to first token and tokens/s. Columns on a base model run at once in one batch; a column "
                    "with an adapter runs alone (the batch pauses meanwhile). Adapters on the same base share one "
                    "copy of the base.")
        histories = gr.State([[] for _ in range(max_cols)])
        with gr.Row():
            n_cols = gr.Radio([2, 3, 4], value=2, label="Columns", scale=1)
            chat_mode = gr.Checkbox(value=False, label="Chat mode (keep each column's history)", scale=2)
        boxes, chats, notes, inputs = [], [], [], []
        with gr.Row():
            for i in range(max_cols):
                with gr.Column(visible=i < 2, elem_id=f"arena-col-{i}") as box:
                    choices = engine.arena.choice_labels()
                    choice = gr.Dropdown(choices, value=choices[min(i, len(choices) - 1)][1], allow_custom_value=True,
                                         label=f"Model {i + 1}", elem_id=f"arena-model-{i}",
                                         info="model id, 'MODEL + adapter NAME', or ft:NAME as in Compare")
                    with gr.Row():
                        # Every column greedy by default, so base against adapter compares like with like.
                        temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="temperature (0 = greedy)")
                        max_new = gr.Number(value=96, precision=0, label="max_new_tokens")
                    chat = gr.Chatbot(label=f"Column {i + 1}", height=320, elem_id=f"arena-chat-{i}")
                    note = gr.Markdown(elem_id=f"arena-timings-{i}")
                boxes.append(box)
                chats.append(chat)
                notes.append(note)
                inputs += [choice, temperature, max_new]
        prompt = gr.Textbox(label="Prompt", lines=2, placeholder="Explain LoRA in one sentence.", elem_id="arena-prompt")
        with gr.Row():
            send_btn = gr.Button("Send to all columns", variant="primary", elem_id="arena-send")
            clear_btn = gr.Button("Clear chats")
            fmt = gr.Radio(["JSON", "Markdown"], value="Markdown", label="Export format")
            export_btn = gr.Button("Export transcript")
        exported = gr.File(label="Transcript", interactive=False, height=90)

        n_cols.change(show_columns, n_cols, boxes, queue=False)
        # Adapters finished in the Train tab join the lists without a restart or a reload.
        models = inputs[0::3]
        tab.select(refresh_models, None, models, queue=False)
        gr.Timer(10).tick(refresh_models, None, models, concurrency_limit=None, show_progress="hidden", queue=False)
        send_btn.click(gpu(send), [prompt, n_cols, chat_mode, histories, *inputs], [*chats, *notes, histories],
                       api_name="arena", **GPU)
        clear_btn.click(lambda: ([[] for _ in range(max_cols)], *[[] for _ in range(max_cols)],
                                 *[""] * max_cols), None, [histories, *chats, *notes], queue=False)
        export_btn.click(export, [fmt, n_cols, histories, *inputs], exported, api_name="arena_export")
