"""The access tests' engine: sign-in for alice, bob and carol (admin); see support.make_engine."""

from __future__ import annotations

import pytest

from support import make_engine


@pytest.fixture
def lab(tmp_path, tiny_model_dir):
    engine = make_engine(tmp_path / "data", tiny_model_dir)
    yield engine
    engine.close()
