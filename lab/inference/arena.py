"""The Arena: one prompt to several models or adapters, streamed column by column.

    python -m lab info    # the Arena itself lives in the web app's Arena tab

A column is a model choice ('embedded', 'embedded + adapter NAME', a merged model folder or a
Hub id) with its own generation settings and its own chat history. Columns that name adapters
of the same base share one copy of the base through the session manager. Columns start at once,
each in its own thread: columns on a base model join its batching engine and decode in the same
forward passes, so an Arena takes about as long as its slowest column, not the sum. A column with
an adapter (or settings the batch cannot honour) runs alone on the model, pausing the batch while
it decodes. Each column keeps its own timings (queue wait, time to first token, tokens/s).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar

from lab.core.checks import check_question_length
from lab.core.errors import USER_ERRORS, user_message
from lab.inference.adapters import available_adapters, resolve_adapter
from lab.inference.configs import MAX_COLUMNS, GenerationSettings
from lab.inference.endpoints import is_endpoint, stream_model
from lab.inference.generate import Timings, prompt_ids
from lab.inference.runtime import Runtime

ADAPTER_SEP = " + adapter "


def choice_label(model_id: str, adapter: str | None = None) -> str:
    return f"{model_id}{ADAPTER_SEP}{adapter}" if adapter else model_id


def parse_choice(choice: str) -> tuple[str, str | None]:
    """'embedded + adapter qa' -> ('embedded', 'qa'); 'embedded' -> ('embedded', None)."""
    if not choice or not choice.strip():
        raise ValueError("A column has no model chosen; pick one from the list or type a model id.")
    model_id, _, adapter = choice.partition(ADAPTER_SEP)
    return model_id.strip(), (adapter.strip() or None)


def model_choices(runtime: Runtime, adapter_names: Sequence[str] | None = None) -> list[str]:
    """What a column can pick without typing: the default model, and it with each trained adapter (or with each of
    `adapter_names`)."""
    base = runtime.settings.model_id
    names = available_adapters(runtime.settings.data_dir) if adapter_names is None else adapter_names
    return [base, *(choice_label(base, name) for name in names)]


@dataclass
class ArenaColumn:
    choice: str
    """Model choice, see parse_choice."""
    settings: GenerationSettings = field(default_factory=GenerationSettings)


@dataclass
class ColumnReply:
    index: int
    choice: str
    text: str = ""
    timings: Timings | None = None
    done: bool = False
    error: str | None = None


def check_columns(columns: Sequence[ArenaColumn], prompt: str) -> None:
    """Everything that can be refused before any model loads or any prompt is tokenized."""
    if not prompt or not prompt.strip():
        raise ValueError("The prompt is empty; type something to send to every column.")
    check_question_length(prompt, "The prompt")
    if not 1 <= len(columns) <= MAX_COLUMNS:
        raise ValueError(f"The Arena takes 1 to {MAX_COLUMNS} columns, got {len(columns)}.")
    for column in columns:
        parse_choice(column.choice)


def stream_column(runtime: Runtime, index: int, column: ArenaColumn, history: list[dict], prompt: str,
                  caller: str) -> Iterator[ColumnReply]:
    model_id, adapter_ref = parse_choice(column.choice)
    spec = runtime.spec(model_id)
    runtime.check_settings(column.settings)
    if is_endpoint(spec.model_id):  # a remote server (LAB_ENDPOINTS); an adapter is a LoRA served under that name
        messages = [*history, {"role": "user", "content": prompt}]
        for event in stream_model(runtime.settings, spec.model_id, messages, column.settings, caller, adapter_ref):
            yield ColumnReply(index, column.choice, event.text, event.timings, event.done)
        return
    adapter = None
    if adapter_ref:
        name, path = resolve_adapter(runtime.settings.data_dir, adapter_ref)
        adapter = (name, str(path))
    with runtime.sessions.lend(spec, column.settings, caller, adapter) as (loaded, run):
        ids = prompt_ids(loaded.tokenizer, [*history, {"role": "user", "content": prompt}])
        if ids.shape[1] + column.settings.max_new_tokens > loaded.context_window:
            raise ValueError(f"This chat is {ids.shape[1]} tokens long; with max_new_tokens="
                             f"{column.settings.max_new_tokens} it no longer fits the window of "
                             f"{loaded.context_window}. Clear the chat.")
        for event in run(ids):
            yield ColumnReply(index, column.choice, event.text, event.timings, event.done)


def stream_arena(runtime: Runtime, prompt: str, columns: Sequence[ArenaColumn],
                 histories: Sequence[list[dict]] | None = None, caller: str | None = None) -> Iterator[ColumnReply]:
    """Stream the prompt through every column at once; replies of the columns interleave (ColumnReply.index says
    whose). A failing column reports and the rest go on; closing this generator cancels the columns."""
    check_columns(columns, prompt)
    histories = histories or [[] for _ in columns]
    caller = caller or runtime.sessions.new_caller("arena")
    yield from interleave([_column_or_error(runtime, index, column, histories[index], prompt.strip(), caller)
                           for index, column in enumerate(columns)])


def _column_or_error(runtime: Runtime, index: int, column: ArenaColumn, history: list[dict], prompt: str,
                     caller: str) -> Generator[ColumnReply, None, None]:
    try:
        yield from stream_column(runtime, index, column, history, prompt, caller)
    except USER_ERRORS as exc:
        yield ColumnReply(index, column.choice, done=True, error=user_message(exc))


T = TypeVar("T")


def interleave(streams: Sequence[Generator[T, None, None]]) -> Iterator[T]:
    """Run each stream in its own thread and yield items as they come.

    An error in a stream is raised here. Closing this generator makes each stream stop at its next item and
    close (a batched request is cancelled, an exclusive slot released).
    """
    box: queue.Queue = queue.Queue()
    stop = threading.Event()
    end = object()

    def drain(stream: Generator[T, None, None]) -> None:
        try:
            for item in stream:
                if stop.is_set():
                    break
                box.put((item, None))
        except BaseException as exc:  # handed to the consumer's thread, which raises it
            box.put((None, exc))
        finally:
            stream.close()
            box.put((end, None))

    for i, stream in enumerate(streams):
        threading.Thread(target=drain, args=(stream,), daemon=True, name=f"arena-column-{i}").start()
    left = len(streams)
    try:
        while left:
            item, exc = box.get()
            if exc is not None:
                raise exc
            if item is end:
                left -= 1
            else:
                yield item
    finally:
        stop.set()


def transcript(columns: Sequence[ArenaColumn], histories: Sequence[list[dict]]) -> dict:
    """Everything needed to read or replay an Arena session."""
    return {"columns": [{"choice": c.choice, "settings": asdict(c.settings), "messages": h}
                        for c, h in zip(columns, histories)]}


def transcript_json(columns: Sequence[ArenaColumn], histories: Sequence[list[dict]]) -> str:
    return json.dumps(transcript(columns, histories), indent=2, ensure_ascii=False)


def transcript_markdown(columns: Sequence[ArenaColumn], histories: Sequence[list[dict]]) -> str:
    parts = ["# LLM Lab Arena transcript"]
    for i, (column, history) in enumerate(zip(columns, histories), 1):
        s = column.settings
        parts.append(f"\n## Column {i}: {column.choice}\n\n_temperature {s.temperature}, "
                     f"max_new_tokens {s.max_new_tokens}_\n")
        parts += [f"**{m['role']}**: {m['content']}\n" for m in history]
    return "\n".join(parts)
