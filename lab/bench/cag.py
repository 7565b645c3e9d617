"""Benchmarks that print ratios measured side by side in one run, after a warm-up.

    python -m lab bench cag --json

`bench cag` answers the same questions by re-prefilling the whole knowledge prompt (full
context) and from the CAG cache, alternating question by question so that both see the same
machine load, and checks that greedy decoding gives the same text both ways. It also times the
crop back to the knowledge length and RAG retrieval (MiniLM question embedding + FAISS search).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch

from lab.inference.generate import GenerationSettings, generate_text
from lab.inference.runtime import Runtime
from lab.knowledge.cag import crop_to, get_cag, stream_answer
from lab.knowledge.compare import CompareConfig, rag_index
from lab.knowledge.documents import Document
from lab.knowledge.prompt import split_prompt
from lab.knowledge.rag import retrieve


def bench_cag(runtime: Runtime, doc: Document, questions: Sequence[str], retrieval_questions: Sequence[str],
              cfg: CompareConfig | None = None, new_tokens: int = 16) -> dict:
    """TTFT of CAG vs full re-prefill, crop time, greedy equality, and RAG retrieval latency."""
    if not questions or not retrieval_questions:
        raise ValueError("bench cag needs at least one question for the TTFT runs and one for retrieval")
    cfg = cfg or CompareConfig()
    spec = runtime.spec(cfg.model_id, cfg.load_in_4bit)
    settings = GenerationSettings(max_new_tokens=new_tokens)
    caller = runtime.sessions.new_caller("bench")
    full_ttft, cag_ttft, crop_ms, equal = [], [], [], []
    with runtime.sessions.gpu_slot(caller), runtime.sessions.use(spec) as loaded:
        tok = loaded.tokenizer
        kv = get_cag(runtime.sessions, spec, loaded, doc, runtime.settings.subdir("knowledge"), cfg.cag)
        with runtime.sessions.pinned(kv.entry_key):
            # Warm-up: the first forward passes at a new length allocate and pick kernels.
            warm = split_prompt(tok, questions[0], doc.text)
            generate_text(loaded.model, tok, warm.suffix_ids, settings, past_key_values=kv.cache)
            crop_to(kv.cache, kv.kv_len)
            generate_text(loaded.model, tok, warm.ids[:, -256:], settings)
            for question in questions:
                parts = split_prompt(tok, question, doc.text)
                if not torch.equal(parts.prefix_ids, kv.prefix_ids):
                    raise RuntimeError("the CAG cache was built from other tokens than the full prompt")
                full = generate_text(loaded.model, tok, parts.ids, settings)  # [1, K + S] from scratch
                events = list(stream_answer(kv, loaded, parts.suffix_ids, settings))  # [1, S] on the cache
                cag = events[-1]
                # stream_answer cropped in its finally; time one more crop of a freshly extended cache.
                generate_text(loaded.model, tok, parts.suffix_ids, settings, past_key_values=kv.cache)
                crop_ms.append(crop_to(kv.cache, kv.kv_len))
                full_ttft.append(full.timings.ttft_s)
                cag_ttft.append(cag.timings.ttft_s)
                equal.append(full.text == cag.text)
                if kv.cache.get_seq_length() != kv.kv_len:
                    raise RuntimeError("the cache did not return to the knowledge length")
        index = rag_index(runtime, doc, cfg.rag)
        retrieve(index, retrieval_questions[0])  # warm-up
        retrieval_ms = [retrieve(index, q, cfg.rag.top_k).retrieval_ms for q in retrieval_questions]
    ttft_full, ttft_cag = statistics.median(full_ttft), statistics.median(cag_ttft)
    return {
        "model": spec.model_id, "load_in_4bit": spec.load_in_4bit, "device": runtime.device.device,
        "dtype": str(runtime.device.dtype).removeprefix("torch."), "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"),
        # Other processes on the machine slow both sides, small forward passes (CAG) most: record it.
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "document": doc.name, "knowledge_tokens": kv.kv_len, "cache_mb": round(kv.size_mb, 2),
        "cache_build_s": round(kv.build_s, 3), "cache_reused": kv.reused, "questions": len(questions),
        "ttft_full_s": round(ttft_full, 4), "ttft_cag_s": round(ttft_cag, 4),
        "ttft_ratio": round(ttft_full / ttft_cag, 1) if ttft_cag > 0 else None,
        "crop_ms": round(statistics.median(crop_ms), 4), "crop_ms_max": round(max(crop_ms), 4),
        "greedy_equal": all(equal), "greedy_equal_count": f"{sum(equal)}/{len(equal)}",
        "rag_chunks": index.n_chunks, "rag_top_k": cfg.rag.top_k, "rag_queries": len(retrieval_ms),
        "rag_retrieval_p50_ms": round(float(np.percentile(retrieval_ms, 50)), 2),
        "rag_retrieval_p95_ms": round(float(np.percentile(retrieval_ms, 95)), 2),
    }
