"""Compare's break-even line: after how many questions a one-off cost (CAG's cache, an adapter's training)
has paid for itself against full context."""

from __future__ import annotations

import json
import math

import pytest

from lab.knowledge.breakeven import break_even, break_even_lines


@pytest.mark.parametrize("one_off, per_q, full", [(10.0, 1.0, 3.0), (0.4, 0.05, 0.9), (250.0, 0.2, 0.21), (0.0, 1, 2)])
def test_the_count_is_the_first_question_at_which_the_method_is_ahead(one_off, per_q, full):
    n = break_even("cag", one_off, per_q, full).questions
    assert one_off + n * per_q <= n * full + 1e-9
    if n > 1:
        assert one_off + (n - 1) * per_q > (n - 1) * full


def test_a_method_no_cheaper_per_question_never_pays_off():
    line = break_even("cag", 5.0, 2.0, 2.0)
    assert line.questions is None and "never" in line.sentence()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_bad_figures_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="one-off"):
        break_even("cag", bad, 1.0, 2.0)


def test_lines_use_the_cards_and_an_adapters_training_time(tmp_path):
    """The Engine reads an adapter's training time from its job's status (started to finished)."""
    from lab.core.settings import LabSettings
    from lab.engine import Engine
    adapter = tmp_path / "adapters" / "mine"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_meta.json").write_text(json.dumps({"job_id": "job-1"}))
    (tmp_path / "jobs" / "job-1").mkdir(parents=True)
    (tmp_path / "jobs" / "job-1" / "status.json").write_text(json.dumps(
        {"started": "2026-11-30T10:00:00+00:00", "finished": "2026-11-30T10:02:00+00:00"}))
    engine = Engine(LabSettings(data_dir=tmp_path))
    metrics = {"full": {"total_s": 2.0}, "cag": {"total_s": 0.5, "cache_build_s": 3.0},
               "ft:mine": {"total_s": 0.5}, "rag": {"total_s": 0.7}}
    lines = {line.method: line for line in engine.knowledge.break_even(metrics)}
    assert set(lines) == {"cag", "ft:mine"}  # rag has no one-off cost
    assert lines["ft:mine"].one_off_s == 120.0
    assert lines["cag"].one_off_s == 3.0 and lines["cag"].full_per_question_s == 2.0
    assert break_even_lines({"cag": {"total_s": 0.5, "cache_build_s": 3.0}}, {}) == []  # no full-context card
