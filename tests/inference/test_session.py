"""Session manager: one load per model, LRU eviction, pinning, budget, adapters, queue positions."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lab.core.device import choose_device
from lab.core.errors import MemoryBudgetError
from lab.inference.models import ModelSpec, load_model
from lab.inference.session import SessionManager
from support import wait_until

CPU = choose_device(has_cuda=False, has_flash_attn=False)


def manager(budget_bytes: int, tmp_path) -> SessionManager:
    return SessionManager(CPU, budget_bytes, lambda spec: load_model(spec, CPU, tmp_path))


def model_bytes(path, tmp_path) -> int:
    return load_model(ModelSpec(str(path)), CPU, tmp_path).nbytes


def test_model_loaded_once_even_under_concurrency(tiny_model_dir, tmp_path):
    sm = manager(2**30, tmp_path)
    spec = ModelSpec(str(tiny_model_dir))
    results = []
    threads = [threading.Thread(target=lambda: results.append(sm.model(spec))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sm.load_counts == {spec.key: 1}
    assert all(r is results[0] for r in results)
    assert sm.used_bytes == results[0].nbytes > 0


def test_least_recently_used_is_evicted_first(tiny_model_dirs, tmp_path):
    size = model_bytes(tiny_model_dirs[0], tmp_path)
    sm = manager(int(2.5 * size), tmp_path)
    a, b, c = (ModelSpec(str(p)) for p in tiny_model_dirs)
    sm.model(a)
    time.sleep(0.01)
    sm.model(b)
    time.sleep(0.01)
    sm.model(a)  # a is now more recent than b
    time.sleep(0.01)
    sm.model(c)
    held = {e["key"] for e in sm.stats()["entries"]}
    assert held == {a.key, c.key}
    assert sm.used_bytes <= sm.budget_bytes


def test_pinned_model_is_not_evicted_and_full_budget_raises(tiny_model_dirs, tmp_path):
    size = model_bytes(tiny_model_dirs[0], tmp_path)
    sm = manager(int(1.5 * size), tmp_path)
    a, b = ModelSpec(str(tiny_model_dirs[0])), ModelSpec(str(tiny_model_dirs[1]))
    with sm.use(a):
        with pytest.raises(MemoryBudgetError, match="in use"):
            sm.model(b)
        assert {e["key"] for e in sm.stats()["entries"]} == {a.key}
    sm.model(b)  # once a is unpinned it can make room
    assert {e["key"] for e in sm.stats()["entries"]} == {b.key}


def test_model_larger_than_budget_is_refused_with_sizes(tiny_model_dir, tmp_path):
    sm = manager(1024, tmp_path)
    with pytest.raises(MemoryBudgetError, match="whole budget"):
        sm.model(ModelSpec(str(tiny_model_dir)))
    assert sm.used_bytes == 0


def test_kv_cache_and_reservation_count_against_budget(tiny_model_dir, tmp_path):
    sm = manager(2**30, tmp_path)
    spec = ModelSpec(str(tiny_model_dir))
    base = sm.model(spec).nbytes
    sm.put("cache:x", "kv_cache", object(), 1000, "cache x", parent=spec.key)
    sm.reserve("job-1", 5000)
    assert sm.used_bytes == base + 6000
    sm.remove(spec.key)  # the cache belongs to the model and goes with it
    assert sm.used_bytes == 5000
    sm.release("job-1")
    assert sm.used_bytes == 0


def test_adapters_share_one_base(tiny_model_dir, tmp_path):
    from support import build_tiny_llama, build_tiny_tokenizer
    paths = []
    for i, r in enumerate((2, 4)):
        peft_model = get_peft_model(build_tiny_llama(len(build_tiny_tokenizer())),
                                    LoraConfig(r=r, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        peft_model.save_pretrained(tmp_path / f"adapter{i}")
        paths.append(tmp_path / f"adapter{i}")
    sm = manager(2**30, tmp_path)
    spec = ModelSpec(str(tiny_model_dir))
    ids = torch.tensor([[4, 10, 11, 12]])
    with sm.use(spec) as loaded:
        base_logits = loaded.model(ids).logits
    base_bytes = sm.used_bytes
    sm.attach_adapter(spec, "one", str(paths[0]))
    sm.attach_adapter(spec, "two", str(paths[1]))
    adapter_bytes = sm.used_bytes - base_bytes
    assert 0 < adapter_bytes < base_bytes  # the base is not copied per adapter
    assert sm.load_counts == {spec.key: 1}
    outs = {}
    for name in ("one", "two", None):
        with sm.use(spec, adapter=name) as loaded:
            outs[name] = loaded.model(ids).logits
    assert not torch.allclose(outs["one"], outs["two"])
    assert torch.allclose(outs[None], base_logits, atol=1e-6)  # adapter disabled = the base
    with pytest.raises(KeyError, match="not loaded"):
        with sm.use(spec, adapter="three"):
            pass


def test_queue_reports_positions_in_arrival_order(tmp_path):
    sm = manager(2**30, tmp_path)
    release = threading.Event()
    started = threading.Event()

    def hold():
        with sm.gpu_slot("first"):
            started.set()
            release.wait(5)

    def wait_turn(name):
        with sm.gpu_slot(name):
            pass

    holder = threading.Thread(target=hold)
    holder.start()
    started.wait(5)
    waiters = []
    for name in ("second", "third"):
        t = threading.Thread(target=wait_turn, args=(name,))
        t.start()
        waiters.append(t)
        while sm.queue.position(name) is None:
            time.sleep(0.001)
    assert sm.queue.position("first") == 0
    assert sm.queue.position("second") == 1
    assert sm.queue.position("third") == 2
    assert sm.stats()["queue"] == {"running": "first", "waiting": ["second", "third"]}
    release.set()
    for t in [holder, *waiters]:
        t.join(5)
    assert sm.queue.position("third") is None


def test_unload_refuses_what_a_request_is_using_and_keeps_one_copy(tiny_model_dir, tmp_path):
    from support import build_tiny_llama, build_tiny_tokenizer
    peft_model = get_peft_model(build_tiny_llama(len(build_tiny_tokenizer())),
                                LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    sm = manager(2**30, tmp_path)
    spec = ModelSpec(str(tiny_model_dir))
    sm.attach_adapter(spec, "one", str(tmp_path / "adapter"))
    sm.put("cache:doc", "kv_cache", object(), 1000, "CAG cache of doc.md", parent=spec.key)
    held = sm.used_bytes
    with sm.use(spec) as loaded:  # a request on the base model
        with pytest.raises(ValueError, match=f"{spec.model_id}.*in use"):
            sm.unload(spec.key)
        assert sm.used_bytes == held and sm.model(spec) is loaded
    with sm.use(spec, adapter="one"):  # a request through the adapter
        with pytest.raises(ValueError, match="adapter one.*in use"):
            sm.unload(f"{spec.key}#adapter:one")
    with sm.pinned("cache:doc"):  # a CAG answer reading the cache; the model it belongs to is busy too
        with pytest.raises(ValueError, match="CAG cache of doc.md.*in use"):
            sm.unload("cache:doc")
        with pytest.raises(ValueError, match="CAG cache of doc.md"):
            sm.unload(spec.key)
    sm.reserve("job-1", 5000)  # held for a running job until the runner releases it
    with pytest.raises(ValueError, match="job-1.*in use"):
        sm.unload("reservation:job-1")
    assert sm.used_bytes == held + 5000 and sm.load_counts == {spec.key: 1}
    # Idle entries unload; a reservation goes only when its job ends.
    assert sm.unload("cache:doc") and sm.unload(f"{spec.key}#adapter:one") and sm.unload(spec.key)
    assert sm.unload("nothing-here") is False
    sm.release("job-1")
    assert sm.used_bytes == 0


def test_a_running_jobs_reservation_is_never_evicted(tiny_model_dir, tmp_path):
    spec = ModelSpec(str(tiny_model_dir))
    size = model_bytes(tiny_model_dir, tmp_path)
    sm = manager(size + size // 2, tmp_path)
    sm.memory_wait_s = 0  # a request waits for a reservation first (below); here the wait is over at once
    sm.reserve("job-1", size)
    with pytest.raises(MemoryBudgetError, match="job-1"):
        sm.model(spec)  # only the job's reservation could make room, and it is not idle
    assert [(e["kind"], e["pinned"]) for e in sm.stats()["entries"]] == [("reservation", True)]


def test_a_load_waits_for_a_jobs_reservation_and_says_so(tiny_model_dir, tmp_path):
    """A job that started takes the memory a model needs: the request waits for the job to end, not fails."""
    spec = ModelSpec(str(tiny_model_dir))
    size = model_bytes(tiny_model_dir, tmp_path)
    sm = manager(size + size // 2, tmp_path)
    sm.reserve("job-1", size)
    outcome = {}

    def request():
        with sm.queue.slot("req-1"):  # a served request loads under the exclusive slot, as `lend` does
            try:
                outcome["loaded"] = sm.model(spec)
            except MemoryBudgetError as exc:
                outcome["error"] = exc

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    wait_until(lambda: sm.memory_wait("req-1") or not thread.is_alive(), "the request waits for memory")
    assert "error" not in outcome, outcome
    note = sm.memory_wait("req-1")
    assert "job-1" in note and "waiting for memory" in note
    assert sm.stats()["memory_waits"] == {"req-1": note}
    sm.release("job-1")  # the job ended
    thread.join(60)
    assert "loaded" in outcome and sm.memory_wait("req-1") is None
    assert {e["key"] for e in sm.stats()["entries"]} == {spec.key}


def test_a_load_fails_naming_the_job_once_the_wait_runs_out(tiny_model_dir, tmp_path):
    spec = ModelSpec(str(tiny_model_dir))
    size = model_bytes(tiny_model_dir, tmp_path)
    sm = manager(size + size // 2, tmp_path)
    sm.memory_wait_s = 0  # the wait is over at once
    sm.reserve("job-1", size)
    with pytest.raises(MemoryBudgetError, match=r"training job job-1.*Train tab"):
        sm.model(spec)
    assert sm.stats()["memory_waits"] == {}  # the request that gave up is no longer listed as waiting


def test_a_jobs_reservation_never_waits_for_another(tmp_path):
    """The job runner reserves from its polling thread: a job that does not fit stays queued, it never blocks."""
    sm = manager(10_000, tmp_path)
    sm.memory_wait_s = 3600
    sm.reserve("job-1", 6000)
    outcome = {}

    def reserve():
        try:
            sm.reserve("job-2", 6000)
        except MemoryBudgetError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=reserve, daemon=True)
    thread.start()
    wait_until(lambda: sm.stats()["memory_waits"] or not thread.is_alive(), "the reservation returns or waits")
    assert sm.stats()["memory_waits"] == {}
    thread.join(60)
    assert "job-1" in str(outcome["error"])
