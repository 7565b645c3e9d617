"""Many users' questions on one document at the same moment: explicit CAG against served CAG.

    python -m lab bench cag --concurrent 8 --json

The explicit CAG cache (lab.knowledge.cag) is one DynamicCache that every question extends and crops
back, so questions on it take turns under the session manager's exclusive slot: the eighth user waits
for seven answers. Served CAG is full context through the batching engine with prefix sharing: the
engine keeps the document's complete cache blocks and every later request whose prompt starts with the
same tokens reuses them, so it prefills only its question, in the same forward passes as the others.
Without prefix sharing the engine prefills the whole document once per question.

Each mode first answers one question alone (the document's prefill and the kernels' warm-up, which
CAG pays when it builds its cache), then eight threads ask at once. What is reported is what a user
sees: seconds from asking to the first token, and to the last, per question.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from lab.inference.batching import BatchEngine, EngineConfig
from lab.inference.generate import GenerationEvent, GenerationSettings
from lab.inference.models import LoadedModel
from lab.inference.runtime import Runtime
from lab.knowledge.cag import get_cag, stream_answer
from lab.knowledge.compare import CompareConfig
from lab.knowledge.documents import Document
from lab.knowledge.prompt import split_prompt

Ask = Callable[[str], Iterator[GenerationEvent]]


def _concurrent(ask: Ask, questions: Sequence[str]) -> dict:
    """Ask every question from its own thread at once; seconds to the first and last token, and the answers."""
    gate = threading.Barrier(len(questions))
    first, last, texts, errors = [0.0] * len(questions), [0.0] * len(questions), [""] * len(questions), []

    def one(i: int) -> None:
        gate.wait()
        start = time.perf_counter()
        try:
            for event in ask(questions[i]):
                if not first[i] and (event.text or event.done):
                    first[i] = time.perf_counter() - start
                texts[i] = event.text
            last[i] = time.perf_counter() - start
        except Exception as exc:  # reported, the other threads finish
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(questions))]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(questions)} questions failed: {errors[0]}")
    return {"ttft_p50_s": round(statistics.median(first), 3), "ttft_max_s": round(max(first), 3),
            "answer_p50_s": round(statistics.median(last), 3), "wall_s": round(time.perf_counter() - began, 3),
            "texts": texts}


def _engine_mode(loaded: LoadedModel, config: EngineConfig, doc: Document, questions: Sequence[str],
                 settings: GenerationSettings) -> dict:
    engine = BatchEngine(loaded, config)
    engine.start()
    try:
        def ask(question: str) -> Iterator[GenerationEvent]:
            return engine.stream(split_prompt(loaded.tokenizer, question, doc.text).ids[0].tolist(), settings)

        warm = _concurrent(ask, questions[:1])
        result = _concurrent(ask, questions)
        return result | {"first_question_s": warm["answer_p50_s"]}
    finally:
        engine.stop()
        engine.wait_stopped()


def bench_served_cag(runtime: Runtime, doc: Document, questions: Sequence[str], cfg: CompareConfig | None = None,
                     new_tokens: int = 16) -> dict:
    """Eight (len(questions)) concurrent questions on `doc`: explicit CAG (turns on one cache), full context in
    the batching engine with and without prefix sharing. Greedy, so the answers must agree across modes."""
    if len(questions) < 2:
        raise ValueError("served CAG needs at least two questions to ask at once")
    cfg = cfg or CompareConfig()
    spec = runtime.spec(cfg.model_id, cfg.load_in_4bit)
    settings = GenerationSettings(max_new_tokens=new_tokens)
    with runtime.sessions.use(spec) as loaded:
        kv = get_cag(runtime.sessions, spec, loaded, doc, runtime.settings.subdir("knowledge"), cfg.cag)
        with runtime.sessions.pinned(kv.entry_key):
            def ask_cag(question: str) -> Iterator[GenerationEvent]:
                # As Compare serves it: one question at a time on the one cache (exclusive slot, FIFO).
                with runtime.sessions.exclusive(spec, runtime.sessions.new_caller("bench-cag")):
                    yield from stream_answer(kv, loaded, split_prompt(loaded.tokenizer, question, doc.text).suffix_ids,
                                             settings)

            warm = _concurrent(ask_cag, questions[:1])
            explicit = _concurrent(ask_cag, questions) | {"first_question_s": warm["answer_p50_s"],
                                                          "cache_build_s": round(kv.build_s, 3)}
        base = EngineConfig.for_model(loaded, len(questions), runtime.sessions.budget_bytes)
        # Room for every question's own blocks beside one shared copy of the document, and without sharing
        # for a full copy each: the same cache size for both, so only sharing differs.
        pages = -(-(kv.kv_len + 64 + new_tokens) // base.page_size) * len(questions) + 4
        config = replace(base, cache_tokens=max(base.cache_tokens, pages * base.page_size))
        shared = _engine_mode(loaded, replace(config, prefix_sharing=True), doc, questions, settings)
        unshared = _engine_mode(loaded, replace(config, prefix_sharing=False), doc, questions, settings)
    agree = sum(a == b == c for a, b, c in zip(explicit["texts"], shared["texts"], unshared["texts"], strict=True))
    modes = {"explicit_cag": explicit, "served_cag": shared, "full_no_sharing": unshared}
    out = {f"{name}_{key}": value for name, mode in modes.items() for key, value in mode.items() if key != "texts"}
    return out | {
        "concurrent_questions": len(questions), "knowledge_tokens": kv.kv_len,
        "answers_agree": f"{agree}/{len(questions)}",
        # How much sooner the last of the eight users gets a first token, served against explicit CAG.
        "ttft_max_ratio_explicit_over_served": round(explicit["ttft_max_s"] / shared["ttft_max_s"], 2),
        "ttft_p50_ratio_unshared_over_served": round(unshared["ttft_p50_s"] / shared["ttft_p50_s"], 2),
    }
