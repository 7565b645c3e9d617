"""One question, every way of giving a model knowledge, answered side by side with what each costs.

    python -m lab ask --question "What does CAG stand for?" --methods rag,cag,full,base,ft:my-adapter

Methods (all share lab.knowledge.prompt's prompt and answer reading, and one decode loop):

- `base`: the question alone; what the model knows from pre-training.
- `rag`: the top-k retrieved chunks of the document in the prompt (lab.knowledge.rag).
- `cag`: the whole document prefilled once into a KV cache, reused for every question (lab.knowledge.cag).
- `full`: the same tokens as CAG, re-prefilled from scratch for every question (the no-cache baseline).
- `ft:<adapter>`: the question alone, through a LoRA adapter from `<data>/adapters/<adapter>` (or a folder path).

Methods run one after another and stream `MethodUpdate`s so a UI can fill one column per method as
tokens arrive. base, rag and full go through the model's batching engine, sharing forward passes
with every other user's requests (and, on full-attention models, the document's cache blocks with
other full-context questions on it: prefix sharing). cag keeps its explicit cache and `ft:` its
adapter, so those two run alone on the model under the session manager's exclusive slot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field

from lab.core import checks
from lab.core.errors import USER_ERRORS
from lab.core.keylocks import KeyedLocks
from lab.core.settings import BUNDLED_DOC
from lab.inference.adapters import resolve_adapter
from lab.inference.endpoints import is_endpoint, stream_model
from lab.inference.generate import GenerationEvent
from lab.inference.runtime import Runtime
from lab.inference.session import watched
from lab.knowledge.cag import check_fits, get_cag, stream_answer
from lab.knowledge.configs import ADAPTER_PREFIX, METHODS, CompareConfig, RagConfig
from lab.knowledge.documents import Document, load_document
from lab.knowledge.prompt import _SLOT, Reject, _messages, heading_guard, read_answer, split_prompt, suffix_ids
from lab.knowledge.rag import RagIndex, RetrievedChunk, build_or_load_index, cite, knowledge_text, retrieve


@dataclass
class MethodUpdate:
    """One step of one method's answer: what a UI column shows."""

    method: str
    """'base', 'rag', 'cag', 'full' or 'ft:<adapter>'."""
    text: str = ""
    """Everything the model generated so far."""
    answer: str = ""
    """The short answer read from `text` (lab.knowledge.prompt.read_answer, the same rule for every method)."""
    metrics: dict = field(default_factory=dict)
    """retrieval_ms, ttft_s, decode_tokens_per_s, total_s, context_tokens, cache_mb (None where a method
    has no such cost), queue_s (waiting for the model before it ran), plus new_tokens, kv_len, cache_build_s,
    cache_reused and crop_ms where they apply."""
    done: bool = False
    """True on the method's last update."""
    error: str | None = None
    """Why this method could not answer (e.g. the document is too long for CAG); other methods still run."""
    finish_reason: str | None = None
    """'answer' (stopped after the short answer), 'eos' or 'length' on the last update."""
    note: str = ""
    """Before the first token: what the method is doing now (e.g. building the RAG index, chunks embedded so far)."""
    chunks: list[RetrievedChunk] = field(default_factory=list)
    """RAG only: the retrieved chunks with their cosine scores, best first."""
    citation: RetrievedChunk | None = None
    """On the last update of rag, cag and full: the passage of the document that supports the answer, its
    heading path telling the user where to check it. RAG: the retrieved chunk holding most of the answer's
    words (the top one when none does); CAG and full: the chunk the embedder finds closest to question +
    answer, None when there is no answer or the model is an endpoint. Always None for base and ft:."""

    def as_dict(self) -> dict:
        return asdict(self)


def load_bundled_document() -> Document:
    return load_document(BUNDLED_DOC)


# ---- methods and adapters ----------------------------------------------------------------------

def parse_methods(methods: str | Sequence[str]) -> list[str]:
    """Split 'rag,cag' (or take a list), drop blanks and repeats, and check every name."""
    names = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    if not names:
        raise ValueError(f"No method selected; choose some of {', '.join(METHODS)} or ft:<adapter>.")
    for name in names:
        if name not in METHODS and not (name.startswith(ADAPTER_PREFIX) and name[len(ADAPTER_PREFIX):].strip()):
            raise ValueError(f"Unknown method '{name}'; choose from {', '.join(METHODS)} or ft:<adapter>.")
    return list(dict.fromkeys(names))


def check_request(runtime: Runtime, question: str, methods: str | Sequence[str]) -> list[str]:
    """Everything that can be refused before any model runs: empty or overlong question, unknown method or
    adapter."""
    if not question or not question.strip():
        raise ValueError("The question is empty; type a question first.")
    checks.check_question_length(question)
    names = parse_methods(methods)
    for name in names:
        if name.startswith(ADAPTER_PREFIX):
            resolve_adapter(runtime.settings.data_dir, name[len(ADAPTER_PREFIX):])
    return names


_INDEX_LOCKS = KeyedLocks()
"""One lock per document and chunking: two users' first RAG question on a document build its index once, while
questions on other documents, or on this one once it is held, go on during the build."""


def rag_index(runtime: Runtime, doc: Document, cfg: RagConfig,
              progress: Callable[[int, int], None] | None = None) -> RagIndex:
    """The document's FAISS index, held by the session manager after the first load.

    A held index is returned without waiting for any build. Otherwise the caller takes this document's lock and
    looks again (a user asking at the same moment may just have built it) before building or loading it from
    disk; `progress(done, total)` is told after each batch of chunks a build embeds. A document that would make
    more chunks than LAB_MAX_CHUNKS is refused.
    """
    key = f"rag:{doc.sha256[:16]}:{cfg.chunking}:{cfg.chunk_size}:{cfg.chunk_overlap}:{cfg.separators!r}"
    index = runtime.sessions.get(key)
    if index is not None:
        return index
    with _INDEX_LOCKS.hold(key):
        index = runtime.sessions.get(key)
        if index is None:
            index = build_or_load_index(doc, cfg, runtime.settings.subdir("knowledge"),
                                        max_chunks=runtime.settings.max_chunks, progress=progress)
            # Vectors are 384 float32 per chunk; the text and docstore are small next to them.
            runtime.sessions.put(key, "rag_index", index, index.n_chunks * 384 * 4, f"RAG index of {doc.name}")
    return index


# ---- running one method ------------------------------------------------------------------------

def _metrics(event: GenerationEvent, prep_s: float, **extra) -> dict:
    t = event.timings
    base = {"retrieval_ms": None, "queue_s": round(t.queue_s, 4), "ttft_s": round(prep_s + t.ttft_s, 4),
            "decode_tokens_per_s": round(t.decode_tokens_per_s, 2), "total_s": round(prep_s + t.total_s, 4),
            "context_tokens": t.context_tokens, "cache_mb": None, "new_tokens": t.new_tokens}
    return base | extra


def _stream(method: str, events: Iterator[GenerationEvent], prep_s: float, cfg: CompareConfig,
            extra: dict, chunks: list[RetrievedChunk] | None = None,
            final: Callable[[], dict] | None = None,
            passage: Callable[[str], RetrievedChunk | None] | None = None,
            reject: Reject | None = None) -> Iterator[MethodUpdate]:
    """Turn generation events into updates; stop once the short answer is complete.

    `final` adds metrics known only after the stream is closed (CAG's crop time). The citation is the
    retrieved chunk holding the answer (RAG) or `passage(answer)` (CAG and full context).
    """
    last, finish = None, None
    with closing(events):  # closing a CAG stream crops its cache back
        for event in events:
            last = event
            answer, complete = read_answer(event.text, reject)
            if event.done:
                finish = event.finish_reason
                break
            if cfg.stop_at_answer and complete:
                finish = "answer"
                break
            yield MethodUpdate(method, event.text, answer, _metrics(event, prep_s, **extra), chunks=chunks or [])
    assert last is not None
    extra = extra | (final() if final else {})
    answer = read_answer(last.text, reject)[0]
    yield MethodUpdate(method, last.text, answer, _metrics(last, prep_s, **extra), done=True,
                       finish_reason=finish, chunks=chunks or [],
                       citation=passage(answer) if passage else cite(answer, chunks or []))


def _passage(runtime: Runtime, doc: Document, cfg: CompareConfig, question: str) -> Callable[[str], RetrievedChunk | None]:
    """For CAG and full context, which read the whole document: the chunk the embedder finds closest to the
    question and its answer. It runs after the answer, so it adds nothing to the answer's time."""
    def find(answer: str) -> RetrievedChunk | None:
        if not answer:
            return None
        return retrieve(rag_index(runtime, doc, cfg.rag), f"{question}\n{answer}", top_k=1).chunks[0]
    return find


CAG_ON_ENDPOINT = ("On an endpoint CAG is the server's own prefix caching: this ran as full context, and the "
                   "server reuses the document's cached prefix from an earlier request, so compare this time to first "
                   "token with the first full-context question's.")


def _stream_endpoint(runtime: Runtime, doc: Document, question: str, method: str, cfg: CompareConfig, model_id: str,
                     caller: str) -> Iterator[MethodUpdate]:
    """One method against a remote endpoint: the same prompt text as locally, sent as chat messages.

    cag runs as full (see CAG_ON_ENDPOINT); ft:<adapter> asks the server for the adapter's name as the
    model (a LoRA loaded on vLLM with POST /v1/load_lora_adapter under that name).
    """
    yield MethodUpdate(method)
    adapter = resolve_adapter(runtime.settings.data_dir, method[len(ADAPTER_PREFIX):])[0] \
        if method.startswith(ADAPTER_PREFIX) else None
    index = rag_index(runtime, doc, cfg.rag) if method == "rag" else None  # a one-off, as locally
    start = time.perf_counter()
    chunks, extra, knowledge = None, {}, doc.text if method in ("full", "cag") else None
    if index is not None:
        found = retrieve(index, question, cfg.rag.top_k, cfg.retrieval)
        chunks, extra["retrieval_ms"] = found.chunks, round(found.retrieval_ms, 2)
        knowledge = knowledge_text(chunks)
    if method == "cag":
        extra["note"] = CAG_ON_ENDPOINT
    messages = [{**m, "content": m["content"].replace(_SLOT, question)} for m in _messages(knowledge, cfg.shots)]
    events = stream_model(runtime.settings, model_id, messages, cfg.generation, user=caller, adapter=adapter)
    yield from _stream(method, events, time.perf_counter() - start, cfg, extra, chunks,
                       reject=heading_guard(doc.text) if knowledge else None)


def _index_with_progress(runtime: Runtime, doc: Document, cfg: RagConfig) -> Generator[MethodUpdate, None, RagIndex]:
    """The document's index (rag_index); while a build runs, an update every half second saying how many chunks
    are embedded, so a person waiting on a long document sees it move. Returns the index."""
    done: dict[str, object] = {}
    counts = [0, 0]  # chunks embedded, chunks in all

    def progress(embedded: int, total: int) -> None:
        counts[:] = [embedded, total]

    def build() -> None:
        try:
            done["index"] = rag_index(runtime, doc, cfg, progress=progress)
        except BaseException as exc:  # raised in the caller's thread below
            done["error"] = exc

    worker = threading.Thread(target=build, daemon=True, name="rag-index")
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
        if worker.is_alive() and counts[1]:
            yield MethodUpdate("rag", note=f"building the RAG index of {doc.name}: {counts[0]:,} of "
                                           f"{counts[1]:,} chunks embedded")
    if "error" in done:
        raise done["error"]
    return done["index"]


def stream_method(runtime: Runtime, doc: Document, question: str, method: str, cfg: CompareConfig | None = None,
                  caller: str | None = None) -> Iterator[MethodUpdate]:
    """Answer with one method, streaming: batched (base, rag, full) or alone on the model (cag, ft:).

    The first update (empty text, no metrics) comes as soon as the method may run (past work queued
    before it), before any prefill, so a UI can show that it is now running; the last one has done=True.
    """
    cfg = cfg or CompareConfig()
    question = question.strip()
    spec = runtime.spec(cfg.model_id, cfg.load_in_4bit)
    settings = cfg.generation
    runtime.check_settings(settings)
    caller = caller or runtime.sessions.new_caller("compare")
    if is_endpoint(spec.model_id):  # a remote server (LAB_ENDPOINTS): no local model, no GPU slot
        yield from _stream_endpoint(runtime, doc, question, method, cfg, spec.model_id, caller)
        return
    if method == "cag":  # the explicit cache is one DynamicCache extended and cropped in place: the model alone
        with (runtime.sessions.tracked(caller, spec.model_id, "alone (CAG cache)") as ticket,
              runtime.sessions.exclusive(spec, caller, ticket)):
            ticket.state = "running"
            yield MethodUpdate(method)
            with runtime.sessions.use(spec) as loaded:
                kv = get_cag(runtime.sessions, spec, loaded, doc, runtime.settings.subdir("knowledge"), cfg.cag,
                             cfg.shots)
                with runtime.sessions.pinned(kv.entry_key):
                    start = time.perf_counter()
                    ids = suffix_ids(loaded.tokenizer, question, doc.text, cfg.shots)  # [1, S]: the prefix is cached
                    prep_s = time.perf_counter() - start
                    extra = {"cache_mb": round(kv.size_mb, 2), "kv_len": kv.kv_len,
                             "cache_build_s": round(kv.build_s, 3), "cache_reused": kv.reused}
                    yield from _stream(method, watched(ticket, stream_answer(kv, loaded, ids, settings)), prep_s, cfg, extra,
                                       final=lambda: {"crop_ms": round(kv.last_crop_ms, 4)},
                                       passage=_passage(runtime, doc, cfg, question), reject=heading_guard(doc.text))
        return
    adapter = None
    if method.startswith(ADAPTER_PREFIX):  # an adapter request decodes alone; base, rag and full are batched
        name, path = resolve_adapter(runtime.settings.data_dir, method[len(ADAPTER_PREFIX):])
        adapter = (name, str(path))
    with runtime.sessions.lend(spec, settings, caller, adapter) as (loaded, run):
        yield MethodUpdate(method)
        tok = loaded.tokenizer
        # Building or loading the index is a one-off like the CAG prefill: not part of the question's time.
        index = (yield from _index_with_progress(runtime, doc, cfg.rag)) if method == "rag" else None
        start = time.perf_counter()
        chunks, extra = None, {}
        if index is not None:
            found = retrieve(index, question, cfg.rag.top_k, cfg.retrieval)
            chunks = found.chunks
            extra["retrieval_ms"] = round(found.retrieval_ms, 2)
            knowledge = knowledge_text(chunks)
        else:  # full: the whole document, re-prefilled; base and ft: the question alone
            knowledge = doc.text if method == "full" else None
        parts = split_prompt(tok, question, knowledge, cfg.shots)
        if method == "full":  # the same refusal as CAG: the same prompt must fit
            check_fits(parts.prefix_ids.shape[1], loaded.context_window, cfg.cag.reserve_tokens, spec.model_id)
        ids = parts.ids  # [1, T]
        if ids.shape[1] + settings.max_new_tokens > loaded.context_window:
            raise ValueError(f"The prompt has {ids.shape[1]} tokens; with max_new_tokens={settings.max_new_tokens} "
                             f"it exceeds the model's window of {loaded.context_window}.")
        prep_s = time.perf_counter() - start
        passage = _passage(runtime, doc, cfg, question) if method == "full" else None
        # A heading path copied from the knowledge is no answer (HeadingGuard): the next line is read instead.
        yield from _stream(method, run(ids), prep_s, cfg, extra, chunks, passage=passage,
                           reject=heading_guard(doc.text) if knowledge else None)


def stream_compare(runtime: Runtime, doc: Document, question: str, methods: str | Sequence[str],
                   cfg: CompareConfig | None = None, caller: str | None = None) -> Iterator[MethodUpdate]:
    """Stream a question through each method in turn.

    Bad requests (empty question, unknown method or adapter) raise ValueError before anything
    runs. A method that cannot answer (a document too long for CAG, say) yields one update with
    `error` set and `done=True`, and the next method runs.
    """
    names = check_request(runtime, question, methods)
    cfg = cfg or CompareConfig()
    caller = caller or runtime.sessions.new_caller("compare")
    for name in names:
        try:
            yield from stream_method(runtime, doc, question, name, cfg, caller)
        except USER_ERRORS as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            yield MethodUpdate(name, done=True, error=str(message))


def ask(runtime: Runtime, doc: Document, question: str, methods: str | Sequence[str],
        cfg: CompareConfig | None = None) -> list[MethodUpdate]:
    """The final update of every method, in the order asked (no streaming)."""
    return [u for u in stream_compare(runtime, doc, question, methods, cfg) if u.done]
