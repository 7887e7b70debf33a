"""Fixtures of the reliability tests; the helpers are in helpers.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.helpers import STEPS, result, train


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Path:
    """The micro run, uninterrupted: what every faulted run must end up equal to."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = train(f"out_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result(run_dir)["status"] == "completed" and result(run_dir)["steps"] == STEPS
    return run_dir
