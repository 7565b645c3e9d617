"""Whole-or-nothing writes, published folders, the cross-process lock and JSONL rows (lab/core/files.py)."""

from __future__ import annotations

import json
import multiprocessing
import stat
import time

import pytest

from lab.core import files


def test_atomic_writes_replace_the_file_and_leave_no_partial(tmp_path):
    path = tmp_path / "status.json"
    files.atomic_write_json(path, {"state": "queued", "name": "café"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"state": "queued", "name": "café"}
    files.atomic_write_text(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["status.json"]
    files.atomic_write_bytes(tmp_path / "secret", b"x", private=True)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600


def test_a_write_that_fails_halfway_keeps_the_old_file_whole(tmp_path):
    path = tmp_path / "upload.md"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_open(path) as handle:
            handle.write("half of the new")
            raise RuntimeError("disk full")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["upload.md"]


def test_publish_dir_renames_a_complete_folder_into_place(tmp_path):
    target = tmp_path / "index" / "abc"
    with files.publish_dir(target) as tmp:
        assert not target.exists() and tmp.parent == target.parent and tmp.name.startswith(".")
        (tmp / "meta.json").write_text("{}")
    assert (target / "meta.json").is_file() and [p.name for p in target.parent.iterdir()] == ["abc"]

    with pytest.raises(ValueError):
        with files.publish_dir(tmp_path / "broken") as tmp:
            (tmp / "half").write_text("x")
            raise ValueError("build failed")
    assert not (tmp_path / "broken").exists() and [p.name for p in tmp_path.iterdir()] == ["index"]


def test_publish_dir_keeps_replaces_or_refuses_a_folder_published_meanwhile(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    (target / "first").write_text("1")
    with files.publish_dir(target) as tmp:  # 'keep': the same inputs built it first
        (tmp / "second").write_text("2")
    assert [p.name for p in target.iterdir()] == ["first"]
    with files.publish_dir(target, existing="replace") as tmp:
        (tmp / "second").write_text("2")
    assert [p.name for p in target.iterdir()] == ["second"]
    with pytest.raises(OSError):
        with files.publish_dir(target, existing="fail") as tmp:
            (tmp / "third").write_text("3")
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def _hold(path, seconds):
    with files.path_lock(path):
        time.sleep(seconds)


def test_path_lock_holds_out_another_process(tmp_path):
    lock = tmp_path / ".x.lock"
    other = multiprocessing.get_context("spawn").Process(target=_hold, args=(lock, 1.0))
    other.start()
    deadline = time.monotonic() + 30
    while not lock.exists() and time.monotonic() < deadline:  # the child has started and taken it
        time.sleep(0.02)
    time.sleep(0.3)
    started = time.monotonic()
    with files.path_lock(lock):
        waited = time.monotonic() - started
    other.join()
    assert waited > 0.2


def test_jsonl_rows_with_line_numbers_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "qa.jsonl"
    files.write_jsonl(path, [{"q": 1}, {"q": "é"}])
    files.append_jsonl(path, {"q": 3})
    path.write_text(path.read_text() + "\n")
    assert list(files.iter_jsonl(path)) == [(1, {"q": 1}), (2, {"q": "é"}), (3, {"q": 3})]
    assert files.read_jsonl(path, since=1) == [{"q": "é"}, {"q": 3}]
    assert files.read_jsonl(tmp_path / "missing.jsonl") == []


def test_a_bad_line_names_the_file_and_line_unless_it_is_the_row_being_written(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": ')  # a writer is halfway through row 3
    with pytest.raises(ValueError, match=r"^metrics\.jsonl line 3 is not valid JSON \(Expecting value at column 10\)"):
        files.read_jsonl(path)
    assert files.read_jsonl(path, partial_tail=True) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step"\n{"step": 3}\n')  # a tolerant read stops at the bad row, as before
    assert files.read_jsonl(path, partial_tail=True) == [{"step": 1}]

    class FormatError(ValueError):
        pass

    (tmp_path / "latin.jsonl").write_bytes(b'{"q": "caf\xe9"}\n')
    with pytest.raises(FormatError, match=r"^latin\.jsonl is not UTF-8 text"):
        list(files.iter_jsonl(tmp_path / "latin.jsonl", error=FormatError))
