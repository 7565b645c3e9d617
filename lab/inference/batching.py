"""Batched generation: one continuous-batching engine per loaded model, shared by every user of the process.

    python -m lab bench serve --clients 8 --workload chat --json   # eight users at once, through the app

A decode step reads every weight of the model once whatever the number of sequences in it, so eight
users' tokens cost little more than one user's when they share the forward passes. The engine is
transformers' continuous batching (`model.init_continuous_batching()`): a background thread that admits
requests between steps, prefills long prompts in chunks of `max_batch_tokens` beside the others' decode
tokens, keeps each request's keys and values in a paged cache (blocks of `page_size` tokens) and, on
full-attention models, lets requests whose prompts begin with the same blocks share them (prefix
sharing: many users asking about one document prefill it once, "served CAG").

What batches: requests on the plain base model whose settings the engine applies per request
(temperature, top_k, top_p, max_new_tokens, stop tokens). The engine has two lanes, each one
transformers manager with its own loop and cache: greedy requests share the greedy lane (argmax, no
logits processing: the same tokens as `stream_generate` alone, which tests/inference/test_batching.py
checks token for token), sampled ones the sampled lane (per-request temperature, top_k and top_p).
Why two: the library samples for a whole manager or for none, and its per-request processors sort the
whole vocabulary for every row at every step; on a CPU that doubled the cost of a step of eight greedy
SmolLM2 answers when greedy went through the sampler as top_k=1 (19.4 s against 12.1 s for eight
64-token answers on 2 cores).

What runs alone, under the session manager's `exclusive` slot, which pauses this engine at a step
boundary and keeps its requests: a repetition penalty or a seeded sampled request (the engine has no
penalty and one random stream), LoRA adapters (their layers live inside the shared base modules, so an
enabled adapter would apply to every request in the batch: requests are grouped by adapter, base
requests batch and each adapter request decodes alone), the explicit CAG cache, loading and merging.
"""

from __future__ import annotations

import functools
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel
from transformers import GenerationConfig, PreTrainedModel
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.generation.continuous_batching.utils import find_head_dim, find_num_key_value_heads

from lab.core.errors import ModelLoadError
from lab.inference.generate import GenerationEvent, GenerationSettings, TextStream, Timings, finish_timings, stop_ids
from lab.inference.models import LoadedModel, run_on_forward_thread

RATE_WINDOW_S = 5.0
"""tokens_per_s in the stats counts the tokens generated over this many last seconds."""

EVENT_INTERVAL_S = 0.05
"""Least time between two partial events of one request; the text held meanwhile goes out with the next one. At GPU
speeds a batch makes hundreds of tokens a second, and a page update for each would cost the web process more than
the decoding (each is a Gradio update through its queue); on a CPU a step takes longer than this, so nothing is held
there. The first text and the final event are never held."""


def solo_reason(settings: GenerationSettings) -> str | None:
    """Why these settings cannot join a shared batch (None: they can)."""
    if settings.repetition_penalty != 1.0:
        return "a repetition penalty (the batch applies none)"
    if settings.seed is not None and settings.temperature > 0:
        return "a seed with sampling (the batch draws from one random stream)"
    return None


def base_model(model: PreTrainedModel | PeftModel) -> PreTrainedModel:
    """The transformers model under a peft wrapper: the module the engine runs (LoRA layers sit inside it)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def kv_bytes_per_token(model: PreTrainedModel) -> int:
    """Bytes of keys and values one token takes in the cache: layers x (K, V) x kv_heads x head_dim x dtype."""
    cfg = model.config.get_text_config()
    return cfg.num_hidden_layers * 2 * find_num_key_value_heads(cfg) * find_head_dim(cfg) * model.dtype.itemsize


@dataclass(frozen=True)
class EngineConfig:
    max_requests: int = 64
    """Most requests in one forward pass; more wait in the engine's queue (stats: waiting)."""
    cache_tokens: int = 8_192
    """Tokens of keys and values each lane's paged cache holds over its requests. When it is full the library
    offloads a request and prefills it again later: slower, never wrong."""
    page_size: int = 256
    """Tokens per cache block: the unit of allocation and of prefix sharing (only whole blocks are shared)."""
    max_batch_tokens: int = 512
    """Tokens one forward pass may hold; a longer prompt is prefilled over several steps, so a long
    document does not stall everyone else's decoding for its whole prefill."""
    prefix_sharing: bool = True
    """Let requests whose prompts begin with the same complete cache blocks share them (served CAG). Off only
    to measure what sharing saves (`bench cag --concurrent`)."""

    @classmethod
    def for_model(cls, loaded: LoadedModel, max_concurrent: int, budget_bytes: int) -> EngineConfig:
        """Room for `max_concurrent` answers of 1,024 tokens each on a CPU (4,096 on a GPU), half in each lane, and
        for at least one full window per lane, but never more than a quarter of the memory budget for both. On a
        CPU the cache is real RAM from the start (SmolLM2-135M in fp32: 45 KB a token, 2 x 8,192 tokens = 720 MB).
        Questions on one document share its blocks, so many full-context users need little more than one
        document's worth."""
        window, cpu = loaded.context_window, loaded.device == "cpu"
        page = min(256, window)
        want = max(window, max_concurrent * min(window, 1024 if cpu else 4096) // 2)
        fit = budget_bytes // 8 // kv_bytes_per_token(base_model(loaded.model))
        tokens = max(2 * page, min(want, fit)) // page * page
        return cls(max_requests=4 * max_concurrent, cache_tokens=tokens, page_size=page,
                   max_batch_tokens=512 if cpu else 4096)


def held_bytes(*roots: Any, depth: int = 3) -> int:
    """Bytes of the distinct tensor storages reachable from the batching library's objects `roots`
    (attributes, dicts and lists; views of one storage count once)."""
    storages: dict[tuple[str, int], int] = {}

    def visit(obj: Any, left: int) -> None:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            storages[(str(obj.device), storage.data_ptr())] = storage.nbytes()
        elif left and isinstance(obj, dict):
            for value in obj.values():
                visit(value, left - 1)
        elif left and isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value, left - 1)
        elif left and type(obj).__module__.startswith("transformers.generation.continuous_batching"):
            for value in vars(obj).values():
                visit(value, left - 1)

    for root in roots:
        visit(root, depth)
    return sum(storages.values())


def on_forward_thread(model: PreTrainedModel, owner: Any, name: str) -> None:
    """Make the method `name` of the batching library's object `owner` run on `model`'s forward thread
    (lab.inference.models.ForwardThread; inline on a GPU). A step's torch work besides the forward (building the
    batch's tensors, the logits processors, argmax or sampling over the whole vocabulary: [rows, 49,152] for
    SmolLM2) is large enough for parallel operations, and each thread that starts one keeps its own OpenMP team.
    The loop thread keeps the scheduling, which may wait for a pause (prepare_next_batch: a request running alone
    then needs the forward thread)."""
    method = getattr(owner, name)

    @functools.wraps(method)
    def on_thread(*args, **kwargs):
        return run_on_forward_thread(model, method, *args, **kwargs)

    setattr(owner, name, on_thread)


class _Lane:
    """One continuous-batching manager, its dispatcher thread and its counters."""

    def __init__(self, engine: BatchEngine, sample: bool) -> None:
        self.engine = engine
        self.sample = sample
        self.manager: Any = None
        self.dispatcher: threading.Thread | None = None
        self.nbytes = 0
        self._inboxes: dict[str, queue.Queue] = {}
        self._seen: dict[str, int] = {}
        self._rate: deque[tuple[float, int]] = deque()  # (perf_counter, new tokens) over RATE_WINDOW_S
        self._done = 0
        self._lock = threading.Lock()
        self._ids = itertools.count()

    def start(self) -> None:
        e, cfg = self.engine, self.engine.config
        if self.sample:
            # temperature, top_k and top_p differ from 1/0/1 so that the library creates the three processors,
            # each then taking its value per request (per_request_processors).
            sampling = {"do_sample": True, "temperature": 0.7, "top_k": 50, "top_p": 0.95}
        else:
            sampling = {"do_sample": False}
        generation = GenerationConfig(max_new_tokens=e.loaded.context_window, eos_token_id=sorted(e.stops),
                                      pad_token_id=e.tokenizer.pad_token_id, **sampling)
        cb = ContinuousBatchingConfig(page_size=cfg.page_size, num_blocks=cfg.cache_tokens // cfg.page_size,
                                      max_batch_tokens=cfg.max_batch_tokens, max_requests_per_batch=cfg.max_requests,
                                      allow_block_sharing=cfg.prefix_sharing, per_request_processors=self.sample,
                                      auto_switch_to_flash=False)
        self.manager = e.model.init_continuous_batching(generation_config=generation, continuous_batching_config=cb)
        # Creates the cache and buffers (zero-filled: parallel torch work) and captures CUDA graphs where the library
        # uses them.
        run_on_forward_thread(e.model, self.manager.warmup)
        processor = self.manager.batch_processor
        on_forward_thread(e.model, processor, "_generation_step")
        on_forward_thread(e.model, processor, "reset")  # the loop resets (zero-fills) its buffers when it starts
        on_forward_thread(e.model, processor.inputs_and_outputs, "prepare_batch_tensors")
        self.nbytes = held_bytes(processor.cache, processor.inputs_and_outputs)
        # The library's loop thread inherits daemon-ness from the thread that starts it: started from a daemon
        # thread it cannot keep the process (a web app, a test run) alive at exit.
        starter = threading.Thread(target=self.manager.start, daemon=True, name="batch-engine-start")
        starter.start()
        starter.join()
        self.dispatcher = threading.Thread(target=self._dispatch, daemon=True, name="batch-dispatcher")
        self.dispatcher.start()

    @property
    def running(self) -> bool:
        return self.manager is not None and self.manager.is_running()

    def stream(self, input_ids: list[int], settings: GenerationSettings, queue_s: float) -> Iterator[GenerationEvent]:
        stops = self.engine.stops | set(settings.stop_token_ids)
        rid = f"lab-{next(self._ids)}"
        inbox: queue.Queue = queue.Queue()
        with self._lock:
            self._inboxes[rid] = inbox
        asked = time.perf_counter()
        finished = False
        try:
            if self.manager.add_request(list(input_ids), request_id=rid, max_new_tokens=settings.max_new_tokens,
                                        streaming=True, record_timestamps=True, eos_token_id=sorted(stops),
                                        **self.engine.sampling(settings)) is None:
                raise self.engine.gone()
            timings = Timings(prompt_tokens=len(input_ids), context_tokens=len(input_ids))
            out_text = TextStream(self.engine.tokenizer)
            sent, sent_at, started = "", 0.0, asked  # the text of the last event yielded, and when
            while not finished:
                out = self._next(inbox)
                if out is None or (out.error is not None and self.engine.stopped):
                    raise self.engine.gone()
                if out.error is not None:
                    raise RuntimeError(f"Batched generation failed: {out.error}")
                finished = out.is_finished()
                # generated_tokens is cumulative: only the ones not yet seen are decoded (the stop token never is).
                kept = len(out.generated_tokens)
                eos = finished and kept > 0 and out.generated_tokens[-1] in stops
                kept -= eos
                if not timings.ttft_s:
                    # lifespan[0]: when the scheduler first put the request in a batch (perf_counter clock).
                    started = out.lifespan[0] if out.lifespan[0] > 0 else asked
                    timings.queue_s = queue_s + max(0.0, started - asked)
                    first = out.timestamps[0] if out.timestamps else time.perf_counter()
                    timings.ttft_s = max(first - started, 1e-6)
                timings.new_tokens = kept
                out_text.add(out.generated_tokens[len(out_text.ids):kept])  # held while a character is unfinished
                now = time.perf_counter()
                if finished:
                    final = out_text.full_text()  # the exact text; the pieces streamed are a prefix of it
                    yield GenerationEvent(final, final[len(sent):], finish_timings(timings, started), True,
                                          "eos" if eos else "length")
                elif len(out_text.text) > len(sent) and (not sent or now - sent_at >= EVENT_INTERVAL_S):
                    yield GenerationEvent(out_text.text, out_text.text[len(sent):], finish_timings(timings, started))
                    sent, sent_at = out_text.text, now
        finally:
            with self._lock:
                self._inboxes.pop(rid, None)
                self._seen.pop(rid, None)
            if not finished and self.running:
                self.manager.cancel_request(rid)

    def _next(self, inbox: queue.Queue) -> Any:
        """The newest output for one request (outputs are cumulative, so a backlog collapses to its last), or None
        once the dispatcher has ended."""
        while True:
            try:
                out = inbox.get(timeout=1.0)
                break
            except queue.Empty:
                if self.dispatcher is None or not self.dispatcher.is_alive():
                    return None
        while out is not None and not inbox.empty():
            out = inbox.get_nowait()
        return out

    def _dispatch(self) -> None:
        """Route every output of the manager's one queue to its request's inbox (the manager's own
        get_result(request_id=...) puts other requests' outputs back, which does not scale); outputs of
        cancelled requests are dropped. When the loop has ended, wake every request still waiting."""
        manager = self.manager
        while True:
            # The timeout adds no latency (a waiting get returns as soon as an output is put); it only bounds how long
            # an idle dispatcher takes to notice that the loop has ended, since nothing is put when it stops idle.
            out = manager.get_result(timeout=0.1)
            if out is None:
                if manager.is_running():
                    continue
                out = manager.get_result(timeout=0)  # delivered just before the loop ended
                if out is None:
                    break
            with self._lock:
                inbox = self._inboxes.get(out.request_id)
                if inbox is None:  # cancelled meanwhile
                    continue
                count = len(out.generated_tokens)
                new = count - self._seen.get(out.request_id, 0)
                self._seen[out.request_id] = count
                if new > 0:
                    self._rate.append((time.perf_counter(), new))
                self._done += out.is_finished()
            inbox.put(out)
        with self._lock:
            waiting = list(self._inboxes.values())
        for inbox in waiting:
            inbox.put(None)

    def stats(self) -> dict:
        processor = self.manager.batch_processor if self.running else None
        running = len(processor.scheduler.active_requests) if processor is not None else 0
        waiting = ((len(processor.scheduler.waiting_requests) if processor is not None else 0)
                   + (self.manager.input_queue.qsize() if self.running else 0))
        now = time.perf_counter()
        with self._lock:
            while self._rate and self._rate[0][0] < now - RATE_WINDOW_S:
                self._rate.popleft()
            recent = sum(n for _, n in self._rate)
            done = self._done
        return {"running": running, "waiting": waiting, "tokens": recent, "requests_done": done,
                "prefix_sharing": bool(processor is not None and processor.cache.use_prefix_sharing)}


class BatchEngine:
    """One model's batching: a greedy lane and a sampled lane, paused, stopped and counted together."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        self.loaded = loaded
        self.config = config
        self.model = base_model(loaded.model)
        self.tokenizer = loaded.tokenizer
        self.stops = stop_ids(loaded.model, loaded.tokenizer, ())
        self._vocab = self.model.config.get_text_config().vocab_size
        self._lanes = {"greedy": _Lane(self, sample=False), "sampled": _Lane(self, sample=True)}
        self.stopped = False
        """Set by stop(): requests failing from then on failed because the model went away."""
        self.nbytes = 2 * config.cache_tokens * kv_bytes_per_token(self.model)
        """Bytes held: the planned caches before start, then what the paged caches and their buffers really take."""

    # ---- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Build both lanes' paged caches in this thread (so their bytes are known), then start generating.

        The attention implementation stays what the model was loaded with ('sdpa' on CPU,
        'flash_attention_2' on CUDA where installed), so plain forwards with a DynamicCache (CAG,
        requests that run alone) keep working on the same model object.
        """
        try:
            for lane in self._lanes.values():
                lane.start()
        except BaseException:
            self.stop()
            raise
        self.nbytes = sum(lane.nbytes for lane in self._lanes.values())

    @property
    def running(self) -> bool:
        return all(lane.running for lane in self._lanes.values())

    def stop(self) -> None:
        """Stop generating without waiting: requests still in flight end with an error saying the model is gone.
        Each loop exits at its next step (after a pause, if one is held), dropping its cache."""
        self.stopped = True
        for lane in self._lanes.values():
            if lane.running:
                lane.manager.stop(block=False, hard_stop=True)

    def wait_stopped(self, timeout_s: float = 30.0) -> bool:
        """Block until the loops and dispatchers have ended; False if one still runs after timeout_s."""
        for lane in self._lanes.values():
            if lane.dispatcher is not None:
                lane.dispatcher.join(timeout_s)
        return not any(lane.running or (lane.dispatcher is not None and lane.dispatcher.is_alive())
                       for lane in self._lanes.values())

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Park both loops at a step boundary while the caller uses or changes the model alone."""
        with ExitStack() as stack:
            for lane in self._lanes.values():
                if lane.running:
                    stack.enter_context(lane.manager.pause())
            yield

    # ---- requests --------------------------------------------------------------------------------
    def sampling(self, settings: GenerationSettings) -> dict:
        """Per-request processor values for the sampled lane (none for the greedy lane)."""
        if settings.temperature == 0:
            return {}
        top_k = self._vocab if settings.top_k == 0 else min(settings.top_k, self._vocab)
        return {"temperature": float(settings.temperature), "top_k": int(top_k), "top_p": float(settings.top_p)}

    def gone(self) -> ModelLoadError:
        return ModelLoadError(f"{self.loaded.spec.model_id} was unloaded (or evicted to make room) while this answer "
                              "was being generated; ask again.")

    def stream(self, input_ids: list[int], settings: GenerationSettings, queue_s: float = 0.0) -> Iterator[GenerationEvent]:
        """Submit one request and yield its events as `stream_generate` does (text so far, delta, timings; done
        with finish_reason 'eos' or 'length' last), partial ones at most every EVENT_INTERVAL_S. Closing the
        generator early cancels the request and frees its cache blocks. `queue_s`: seconds the caller already waited
        before submitting."""
        reason = solo_reason(settings)
        if reason:
            raise ValueError(f"These settings cannot be batched ({reason}); run them alone.")
        lane = self._lanes["greedy" if settings.temperature == 0 else "sampled"]
        yield from lane.stream(input_ids, settings, queue_s)

    # ---- numbers ---------------------------------------------------------------------------------
    def stats(self) -> dict:
        """running: requests in a batch now (continuous batching steps them all together; a long prompt's prefill
        is split over steps), over both lanes; waiting: asked but not yet admitted; tokens_per_s over the last 5 s."""
        lanes = {name: lane.stats() for name, lane in self._lanes.items()}
        running = sum(lane["running"] for lane in lanes.values())
        return {"model": self.loaded.spec.model_id, "state": "running" if self.running else "stopped",
                "running": running, "waiting": sum(lane["waiting"] for lane in lanes.values()),
                "batch_size": max(lane["running"] for lane in lanes.values()),
                "tokens_per_s": round(sum(lane["tokens"] for lane in lanes.values()) / RATE_WINDOW_S, 1),
                "requests_done": sum(lane["requests_done"] for lane in lanes.values()),
                "greedy_running": lanes["greedy"]["running"], "sampled_running": lanes["sampled"]["running"],
                "cache_mb": round(self.nbytes / 2**20, 1), "cache_tokens": 2 * self.config.cache_tokens,
                "prefix_sharing": lanes["greedy"]["prefix_sharing"]}
