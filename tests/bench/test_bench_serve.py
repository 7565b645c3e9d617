"""The serving load test runs with 4 concurrent clients against the real app and reports no errors."""

from __future__ import annotations

import pytest

from lab.bench.serve import ServeBenchConfig, bench_serve

pytestmark = pytest.mark.slow


def test_four_clients_share_one_model_without_errors():
    result = bench_serve(ServeBenchConfig(clients=4, requests_per_client=1, max_new_tokens=8))
    assert result["errors"] == 0, result["error_samples"]
    assert result["requests"] == 4 and result["clients"] == 4
    assert result["models_loaded"] == 1 and set(result["model_load_counts"].values()) == {1}
    assert result["latency_p50_s"] > 0 and result["rss_before_mb"] > 0


def test_config_bounds_are_checked():
    with pytest.raises(ValueError, match="clients"):
        ServeBenchConfig(clients=0)
    with pytest.raises(ValueError, match="requests_per_client"):
        ServeBenchConfig(requests_per_client=1000)
