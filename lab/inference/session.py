"""The session manager: one per process, shared by every browser session and CLI call.

    python -m lab info        # prints its stats

It loads each model once (keyed by id and quantization), keeps LoRA adapters on their shared
base, counts the bytes of everything it holds (models, KV caches, batching engines, training
reservations) against a budget, and evicts the least recently used unpinned entry when room is
needed. Nothing a request is using right now can be evicted or unloaded: a request pins what it
uses (the model, its engine, an adapter, a KV cache), and a training job's reservation stays pinned
until the job ends.

Generation goes two ways (`lend` picks):
- batched: each loaded model has one continuous-batching engine (lab.inference.batching), started
  on its first request; every user's base-model request joins its forward passes.
- alone: work that needs the model to itself (loading, attaching or enabling a LoRA adapter,
  the explicit CAG cache, settings the batch cannot honour) takes the one exclusive slot, a
  first-come-first-served queue whose positions callers can read, and pauses that model's
  engine at a step boundary for as long as it holds the slot.
Batched requests pass through the same queue as through a turnstile (they wait behind exclusive
work queued before them, so they see their position too, then hold nothing). A request whose model,
engine or cache does not fit because training jobs' reservations hold the memory waits for them to end
(MEMORY_WAIT_S at most, `memory_wait` says so meanwhile) instead of failing because a job started. Adapters rest
disabled, so the engine always runs the plain base: requests are grouped by adapter, base
requests batch and each adapter request decodes alone.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel

from lab.core.device import DeviceChoice
from lab.core.errors import MemoryBudgetError
from lab.inference.batching import BatchEngine, EngineConfig, solo_reason
from lab.inference.fairness import FairGate, GpuQueue, RequestBoard, Ticket
from lab.inference.generate import GenerationEvent, GenerationSettings, stream_generate
from lab.inference.models import LoadedModel, ModelSpec


def watched(ticket: Ticket, events: Iterator[GenerationEvent]) -> Iterator[GenerationEvent]:
    """Pass the events on until the ticket is cancelled (then RequestCancelled at the next token); closing this
    closes the stream, which cancels a batched request and frees its place."""
    try:
        for event in events:
            ticket.check()
            yield event
    finally:
        events.close()


Streamer = Callable[[torch.Tensor], Iterator[GenerationEvent]]
"""Streams the answer to token ids [1, T] (what `SessionManager.lend` hands out)."""


MEMORY_WAIT_S = 180.0
"""How long a request whose model, adapter, engine or cache does not fit waits for training jobs' memory
reservations to be released (each goes when its job ends) before it fails with a message naming the jobs.
Longer lets more requests outlive a short job; meanwhile the request holds the exclusive slot, so the
requests queued behind it wait too (SessionManager.memory_wait_s, per manager)."""


def engine_key(spec: ModelSpec) -> str:
    return f"{spec.key}#engine"


@dataclass
class Entry:
    key: str
    kind: str
    """'model', 'adapter', 'kv_cache', 'engine' (a model's batching engine and its paged KV cache), 'rag_index'
    or 'reservation'."""
    obj: Any
    nbytes: int
    label: str
    parent: str | None = None
    """An adapter, KV cache or engine belongs to a model: evicting the model drops it too."""
    last_used: float = field(default_factory=time.time)
    pins: int = 0


class SessionManager:
    def __init__(self, device: DeviceChoice, budget_bytes: int, loader: Callable[[ModelSpec], LoadedModel],
                 max_concurrent: int = 16, max_requests_per_user: int = 32, max_batch_per_user: int = 4) -> None:
        self.device = device
        self.max_concurrent = max_concurrent
        """Answers each model's engine plans room for, and runs at once (LAB_MAX_CONCURRENT): its FairGate's slots."""
        self.board = RequestBoard(max_requests_per_user)
        """Every model request in flight: per-user limit (LAB_MAX_REQUESTS_PER_USER), the System tab's list, cancel."""
        self.max_batch_per_user = max_batch_per_user
        """One user's requests decoding at once in a model's batch (LAB_MAX_BATCH_PER_USER); the rest wait their turn."""
        self._gates: dict[str, FairGate] = {}
        self.budget_bytes = budget_bytes
        self._loader = loader
        self._entries: dict[str, Entry] = {}
        self._lock = threading.RLock()
        self._freed = threading.Condition(self._lock)
        """Notified whenever an entry goes or is unpinned: a request waiting for memory looks again."""
        self.memory_wait_s = MEMORY_WAIT_S
        self._memory_waits: dict[str, str] = {}
        """Caller (or thread, outside the exclusive slot) -> what it waits for; `memory_wait` reads it."""
        self._load_locks: dict[str, threading.Lock] = {}
        self.load_counts: dict[str, int] = {}
        self.queue = GpuQueue()
        self._callers = itertools.count(1)

    # ---- bookkeeping -------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def _evict_for(self, nbytes: int, what: str, wait: bool = True) -> None:
        """Drop least-recently-used unpinned entries until `nbytes` more fit the budget. When what is left is
        held by training jobs' reservations whose release would make room, wait up to memory_wait_s for their
        jobs to end (wait=False: fail at once; a reservation itself never waits, so the job runner never blocks)."""
        with self._lock:
            if nbytes > self.budget_bytes:
                raise MemoryBudgetError(
                    f"{what} needs {nbytes / 2**20:.0f} MB but the whole budget is {self.budget_bytes / 2**20:.0f} MB; "
                    "raise LAB_MEMORY_BUDGET_GB or load a smaller or 4-bit model.")
            deadline = time.monotonic() + (self.memory_wait_s if wait else 0.0)
            waiter = self.queue.held_here() or f"thread-{threading.get_ident()}"
            try:
                while self.used_bytes + nbytes > self.budget_bytes:
                    victims = [e for e in self._entries.values() if e.pins == 0 and not self._has_pinned_child(e.key)]
                    if victims:
                        self.remove(min(victims, key=lambda e: e.last_used).key)
                        continue
                    reserved = [e for e in self._entries.values() if e.kind == "reservation"]
                    if not reserved or self.used_bytes - sum(e.nbytes for e in reserved) + nbytes > self.budget_bytes:
                        raise MemoryBudgetError(
                            f"{what} needs {nbytes / 2**20:.0f} MB; {self.used_bytes / 2**20:.0f} of "
                            f"{self.budget_bytes / 2**20:.0f} MB are held by entries in use. Wait for them to finish "
                            "or unload something in the System tab.")
                    jobs = ("s " if len(reserved) > 1 else " ") + ", ".join(e.key.removeprefix("reservation:")
                                                                             for e in reserved)
                    held = f"{sum(e.nbytes for e in reserved) / 2**20:.0f} MB"
                    left = deadline - time.monotonic()
                    if left <= 0:
                        waited = f" and were still after waiting {self.memory_wait_s:.0f} s" if wait else ""
                        raise MemoryBudgetError(
                            f"{what} needs {nbytes / 2**20:.0f} MB, but {held} of the {self.budget_bytes / 2**20:.0f} "
                            f"MB budget are set aside for training job{jobs}{waited}. The memory comes back when "
                            "the job ends (the Train tab shows its time left); stop it there, or raise "
                            "LAB_MEMORY_BUDGET_GB, to have it sooner.")
                    self._memory_waits[waiter] = (f"waiting for memory: {what} needs {nbytes / 2**20:.0f} MB, "
                                                  f"{held} are set aside for training job{jobs} until "
                                                  f"{'they end' if len(reserved) > 1 else 'it ends'} "
                                                  f"(waiting up to {self.memory_wait_s / 60:.0f} min)")
                    self._freed.wait(left)  # releases the lock, so the job runner can release the reservation
            finally:
                self._memory_waits.pop(waiter, None)

    def memory_wait(self, caller: str) -> str | None:
        """What `caller` waits for while its model (or engine, adapter, cache) waits for training jobs' memory
        under the exclusive slot, in words; None when it does not."""
        with self._lock:
            return self._memory_waits.get(caller)

    def _has_pinned_child(self, key: str) -> bool:
        return any(e.parent == key and e.pins for e in self._entries.values())

    def put(self, key: str, kind: str, obj: Any, nbytes: int, label: str, parent: str | None = None,
            wait: bool = True) -> Entry:
        """Hold an object (KV cache, adapter, ...) under the budget, evicting others if needed and waiting for
        training jobs' reservations when only they stand in the way (wait=False: fail at once)."""
        with self._lock:
            if key in self._entries:
                self.remove(key)
            self._evict_for(nbytes, label, wait)
            entry = Entry(key, kind, obj, nbytes, label, parent)
            self._entries[key] = entry
            return entry

    def get(self, key: str) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            entry.last_used = time.time()
            return entry.obj

    def remove(self, key: str) -> bool:
        """Forget an entry and everything that belongs to it; True if something was removed.

        An engine is told to stop without waiting (its in-flight requests end with a message), so
        removing never blocks on a paused engine whose pauser needs this manager.
        """
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            for child in [e.key for e in self._entries.values() if e.parent == key]:
                self.remove(child)
            if entry.kind == "engine":
                entry.obj.stop()
            if entry.kind == "adapter" and entry.parent in self._entries:
                model = self._entries[entry.parent].obj.model
                model.delete_adapter(entry.obj)
                model.base_model.disable_adapter_layers()  # adapters rest disabled (see `use`)
            self._freed.notify_all()
            return True

    def resize(self, key: str, nbytes: int) -> None:
        """Correct an entry's bytes once they are measured (an engine's cache after it is built)."""
        with self._lock:
            self._entries[key].nbytes = nbytes

    def unload(self, key: str) -> bool:
        """Remove an entry on request (the System tab, `engine.models.unload`); True if something was removed.

        Refused with a ValueError naming the entry while it, or anything that belongs to it, is in use: dropping a
        model that a request still holds would make the next request load a second copy while the budget counts
        one. (`remove` is the bookkeeping underneath, for eviction and for owners releasing what they hold.)"""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            busy = [e for e in (entry, *self._descendants(key)) if e.pins]
            if busy:
                what = busy[0]
                why = ("it is held for a training job while the job runs and is released when the job ends"
                       if what.kind == "reservation" else "a request is being answered with it")
                whose = "" if what is entry else f": {what.label}, which belongs to it, is in use"
                raise ValueError(f"{entry.label} is in use right now{whose} ({why}). It cannot be unloaded until "
                                 "that ends; idle entries are evicted by themselves when memory is needed.")
            return self.remove(key)

    def _descendants(self, key: str) -> list[Entry]:
        children = [e for e in self._entries.values() if e.parent == key]
        return [*children, *(d for c in children for d in self._descendants(c.key))]

    def reserve(self, name: str, nbytes: int) -> None:
        """Set memory aside for a training job before it starts (evicting idle models). It stays pinned, so
        nothing evicts or unloads it, until `release` when the job ends."""
        with self._lock:
            # No wait: the job runner reserves from its polling thread and leaves a job that does not fit queued.
            self.put(f"reservation:{name}", "reservation", None, nbytes, f"reservation for {name}", wait=False).pins = 1

    def release(self, name: str) -> None:
        self.remove(f"reservation:{name}")

    def idle_entries(self) -> list[tuple[str, str, int]]:
        """(key, label, bytes) of every entry eviction may drop now: nothing pins it or anything of its own. The job
        runner's arbiter (lab/training/jobs/arbiter.py) removes them before a job starts on this device; a later
        request loads what it needs again."""
        with self._lock:
            return [(e.key, e.label, e.nbytes) for e in self._entries.values()
                    if e.pins == 0 and not self._has_pinned_child(e.key)]

    @contextmanager
    def pinned(self, key: str) -> Iterator[None]:
        """Keep an entry from eviction while it is in use."""
        with self._lock:
            self._entries[key].pins += 1
        try:
            yield
        finally:
            with self._lock:
                if key in self._entries:
                    self._entries[key].pins -= 1
                    self._entries[key].last_used = time.time()
                    self._freed.notify_all()

    # ---- models and adapters ------------------------------------------------------------
    def model(self, spec: ModelSpec) -> LoadedModel:
        """The shared copy of a model, loading it on first use (once, even under concurrency)."""
        with self._lock:
            lock = self._load_locks.setdefault(spec.key, threading.Lock())
        with lock:
            loaded = self.get(spec.key)
            if loaded is not None:
                return loaded
            loaded = self._loader(spec)
            self.load_counts[spec.key] = self.load_counts.get(spec.key, 0) + 1
            self.put(spec.key, "model", loaded, loaded.nbytes,
                     f"{spec.model_id} ({'4-bit NF4' if spec.load_in_4bit else str(self.device.dtype).removeprefix('torch.')})")
            return loaded

    def attach_adapter(self, spec: ModelSpec, name: str, path: str) -> None:
        """Load a LoRA adapter onto the shared base; the base itself is not copied."""
        loaded = self.model(spec)
        key = f"{spec.key}#adapter:{name}"
        with self._lock, self.pinned(spec.key):
            if key in self._entries:
                return
            if isinstance(loaded.model, PeftModel):
                loaded.model.load_adapter(str(path), adapter_name=name)
            else:
                loaded.model = PeftModel.from_pretrained(loaded.model, str(path), adapter_name=name)
            loaded.model.eval()
            # The LoRA layers now sit inside the base modules the batching engine runs: keep them off.
            loaded.model.base_model.disable_adapter_layers()
            nbytes = sum(p.numel() * p.element_size() for n, p in loaded.model.named_parameters()
                         if f".{name}." in n)
            self.put(key, "adapter", name, nbytes, f"adapter {name}", parent=spec.key)

    def adapters(self, spec: ModelSpec) -> list[str]:
        with self._lock:
            return [e.obj for e in self._entries.values() if e.kind == "adapter" and e.parent == spec.key]

    @contextmanager
    def use(self, spec: ModelSpec, adapter: str | None = None) -> Iterator[LoadedModel]:
        """Pin a model and enable the asked adapter while in use (None = the plain base, the resting state).

        An enabled adapter changes the shared base modules, which the batching engine runs too, so
        ask for one only inside `exclusive(spec, ...)`; it is disabled again on the way out.
        """
        loaded = self.model(spec)
        with self.pinned(spec.key):
            if adapter is None:
                yield loaded
                return
            if adapter not in self.adapters(spec):
                raise KeyError(f"adapter '{adapter}' is not loaded on {spec.model_id}; "
                               f"loaded: {', '.join(self.adapters(spec)) or 'none'}")
            model = loaded.model
            # The adapter is pinned too: unloading it mid-answer would delete the weights being decoded with.
            with self.pinned(f"{spec.key}#adapter:{adapter}"):
                model.set_adapter(adapter)
                model.base_model.enable_adapter_layers()
                try:
                    yield loaded
                finally:
                    model.base_model.disable_adapter_layers()

    # ---- batched and exclusive generation -----------------------------------------------------
    def _engine(self, spec: ModelSpec) -> BatchEngine:
        """The model's running engine, loading the model and starting the engine when needed (hold the slot)."""
        key = engine_key(spec)
        engine = self.get(key)
        if engine is not None and engine.running:
            return engine
        self.remove(key)  # a loop that died is replaced
        loaded = self.model(spec)
        with self.pinned(spec.key):
            engine = BatchEngine(loaded, EngineConfig.for_model(loaded, self.max_concurrent, self.budget_bytes))
            self.put(key, "engine", engine, engine.nbytes,
                     f"batching engine of {spec.model_id} (greedy and sampled lanes, paged KV cache of "
                     f"{2 * engine.config.cache_tokens:,} tokens)",
                     parent=spec.key)
            try:
                engine.start()
            except BaseException:
                self.remove(key)
                raise
            self.resize(key, engine.nbytes)
        return engine

    def engine_for(self, spec: ModelSpec, caller: str | None = None) -> BatchEngine:
        """The model's batching engine, started on first use (under the exclusive slot: it allocates its cache)."""
        engine = self.get(engine_key(spec))
        if engine is not None and engine.running:
            return engine
        with self.queue.slot(caller or self.new_caller("engine")):
            return self._engine(spec)

    def engines(self) -> list[BatchEngine]:
        with self._lock:
            return [e.obj for e in self._entries.values() if e.kind == "engine"]

    @contextmanager
    def exclusive(self, spec: ModelSpec, caller: str, ticket: Ticket | None = None) -> Iterator[None]:
        """Have the model alone: wait for the slot (position readable; with `ticket`, cancelling it ends the wait),
        then pause its engine, if it has one, at a step boundary. Its in-flight requests stay and resume when this
        ends."""
        with self.queue.slot(caller, ticket), ExitStack() as stack:
            engine = self.get(engine_key(spec))
            if engine is not None:
                stack.enter_context(self.pinned(engine_key(spec)))
                stack.enter_context(engine.paused())
            yield

    def gate(self, spec: ModelSpec) -> FairGate:
        """The model's admission gate into its batch (one per model, kept across engine restarts)."""
        with self._lock:
            return self._gates.setdefault(spec.key, FairGate(self.max_concurrent, self.max_batch_per_user))

    @contextmanager
    def batched(self, spec: ModelSpec, caller: str, ticket: Ticket | None = None) -> Iterator[tuple[LoadedModel, BatchEngine]]:
        """The model and its engine, pinned while in use. Passes the slot like a turnstile: waits behind exclusive
        work queued earlier (position readable), starts the engine if needed, then holds nothing; then waits for a
        place in the batch at the model's FairGate (with `ticket`: round-robin over users)."""
        pins = ExitStack()
        with self.queue.slot(caller, ticket):
            engine = self._engine(spec)
            pins.enter_context(self.pinned(spec.key))
            pins.enter_context(self.pinned(engine_key(spec)))
            loaded = self.get(spec.key)
        with pins, (self.gate(spec).admit(ticket) if ticket is not None else ExitStack()):
            if ticket is not None:
                ticket.state = "running"
            yield loaded, engine

    @contextmanager
    def lend(self, spec: ModelSpec, settings: GenerationSettings, caller: str,
             adapter: tuple[str, str] | None = None) -> Iterator[tuple[LoadedModel, Streamer]]:
        """The model and a function streaming the answer to token ids [1, T] with `settings`.

        The plain base with settings the batch honours goes through the model's engine; an adapter
        (name, folder), a repetition penalty or a seeded sampled request runs alone under `exclusive`.
        Timings' queue_s counts the wait for either.
        """
        asked = time.perf_counter()
        batch = adapter is None and solo_reason(settings) is None
        what = "batched" if batch else f"alone ({'adapter ' + adapter[0] if adapter else solo_reason(settings)})"
        with self.board.track(caller, spec.model_id, what) as ticket:
            if batch:
                with self.batched(spec, caller, ticket) as (loaded, engine):
                    waited = time.perf_counter() - asked
                    yield loaded, lambda ids: watched(ticket, engine.stream(ids[0].tolist(), settings, queue_s=waited))
                return
            with self.exclusive(spec, caller, ticket):
                ticket.state = "running"
                waited = time.perf_counter() - asked
                if adapter is not None:
                    self.attach_adapter(spec, adapter[0], adapter[1])
                with self.use(spec, adapter[0] if adapter else None) as loaded:
                    yield loaded, lambda ids: watched(ticket, stream_generate(loaded.model, loaded.tokenizer, ids,
                                                                              settings, queue_s=waited))

    @contextmanager
    def tracked(self, caller: str, model: str, what: str) -> Iterator[Ticket]:
        """A ticket on the board for model work that does not go through `lend` (the explicit CAG cache): listed in
        the System tab, counted in the user's limit, cancellable between tokens with `watched`."""
        with self.board.track(caller, model, what) as ticket:
            yield ticket

    def position(self, caller: str) -> int | None:
        """Where `caller` waits: its place for the exclusive slot (0 while holding it), else its place at a model's
        batch gate; None when it waits for neither."""
        position = self.queue.position(caller)
        if position is not None:
            return position
        with self._lock:
            gates = list(self._gates.values())
        return next((p for g in gates if (p := g.position(caller)) is not None), None)

    # ---- queue and stats ----------------------------------------------------------------
    def new_caller(self, prefix: str = "caller", user: str | None = None) -> str:
        """A fresh id for one group of requests (a Compare question, an Arena round); with `user`, it begins with
        '<user>:', the name the fair queues share by (lab.inference.fairness) and a remote server's prefix cache is
        keyed by (endpoints.cache_salt)."""
        return f"{user + ':' if user else ''}{prefix}-{next(self._callers)}"

    def gpu_slot(self, caller: str):
        """The exclusive slot without pausing any engine: only for work that runs its own forward passes on an
        unchanged base model while engines may decode on it too. Anything that changes the model, or must
        not share the device, takes `exclusive(spec, caller)`."""
        return self.queue.slot(caller)

    def stats(self) -> dict:
        now = time.time()
        with self._lock:
            entries = [{"key": e.key, "kind": e.kind, "label": e.label, "bytes": e.nbytes, "mb": round(e.nbytes / 2**20, 1),
                        "idle_s": round(now - e.last_used, 1), "pinned": e.pins > 0}
                       for e in sorted(self._entries.values(), key=lambda e: -e.last_used)]
            return {"device": self.device.device, "dtype": str(self.device.dtype).removeprefix("torch."),
                    "attn_implementation": self.device.attn_implementation,
                    "budget_mb": round(self.budget_bytes / 2**20, 1), "used_mb": round(self.used_bytes / 2**20, 1),
                    "entries": entries, "load_counts": dict(self.load_counts), "queue": self.queue.snapshot(),
                    "gates": {key: gate.snapshot() for key, gate in self._gates.items()},
                    "requests": self.board.rows(),
                    "memory_waits": dict(self._memory_waits),
                    "engines": [engine.stats() for engine in self.engines()]}
