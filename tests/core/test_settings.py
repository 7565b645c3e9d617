"""LabSettings read from LAB_* variables through pydantic-settings: defaults, keywords over variables, and messages
that name the variable and what it accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab.core.settings import REPO_ROOT, LabSettings


@pytest.fixture(autouse=True)
def no_lab_variables(monkeypatch):
    for name in ("LAB_DATA_DIR", "LAB_MODEL", "LAB_MAX_CHUNKS", "LAB_MAX_UPLOAD_MB", "LAB_AUTH", "LAB_ENDPOINTS"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_variables_and_keywords(monkeypatch, tmp_path):
    settings = LabSettings()
    assert (settings.data_dir, settings.model_id, settings.max_upload_mb, settings.max_chunks, settings.endpoints) \
        == (REPO_ROOT / "data", "embedded", 20.0, 2000, ())
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LAB_MODEL", "gpt2")
    monkeypatch.setenv("LAB_MAX_CHUNKS", "7.0")
    monkeypatch.setenv("LAB_AUTH", "")  # empty is unset
    settings = LabSettings()
    assert (settings.data_dir, settings.model_id, settings.max_chunks, settings.auth) == (tmp_path, "gpt2", 7, "")
    assert LabSettings(max_chunks=3, model_id="x", data_dir=str(tmp_path)).max_chunks == 3  # a keyword wins
    assert isinstance(LabSettings(data_dir=str(tmp_path)).data_dir, Path)


def test_fields_stay_assignable_and_the_helpers_read_them():
    settings = LabSettings(auth="alice:a", admins="carol, dave")
    assert settings.sign_in_on() and settings.admin_names() == {"carol", "dave"}
    settings.auth = ""
    assert not settings.sign_in_on()
    assert LabSettings(max_upload_mb=1).max_upload_bytes() == 2**20


@pytest.mark.parametrize("variable, value, message", [
    ("LAB_MAX_UPLOAD_MB", "lots", r"^LAB_MAX_UPLOAD_MB='lots' is not a number; unset it or give a value like 8$"),
    ("LAB_MAX_CHUNKS", "2.5", r"^LAB_MAX_CHUNKS=2.5 is not a whole number"),
    ("LAB_MAX_CHUNKS", "0", r"^max_chunks \(LAB_MAX_CHUNKS\) must be a whole number >= 1, got 0$"),
    ("LAB_MAX_UPLOAD_MB", "nan", r"^max_upload_mb \(LAB_MAX_UPLOAD_MB\) must be a finite number > 0, got nan$"),
    ("LAB_ENDPOINTS", '[{"name": "a"}]', r"^LAB_ENDPOINTS \(inline JSON\) entry 1 \('a'\) needs base_url"),
])
def test_a_bad_variable_is_named_with_what_it_accepts(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message):
        LabSettings()


def test_bad_keywords_are_refused_by_name():
    with pytest.raises(ValueError, match=r"^memory_budget_gb \(LAB_MEMORY_BUDGET_GB\) must be a finite number > 0"):
        LabSettings(memory_budget_gb=-1)
    with pytest.raises(ValueError, match=r"^max_concurrent \(LAB_MAX_CONCURRENT\) must be a whole number >= 1, got True"):
        LabSettings(max_concurrent=True)
    with pytest.raises(ValueError, match=r"^model_id \(LAB_MODEL\) is empty"):
        LabSettings(model_id=" ")
    with pytest.raises(ValueError, match="max_concurent: extra inputs are not permitted"):
        LabSettings(max_concurent=3)


def test_reading_the_settings_loads_no_model_library():
    code = "import sys, lab.core.settings; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0
