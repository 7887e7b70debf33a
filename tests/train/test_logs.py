"""Python logging with a verbosity setting (train/logs.py): console streams and prefixes, the
`log_level` key and ISOFLOP_LOG_LEVEL, and each run's own train.log."""
from __future__ import annotations

import logging
import re

import pytest

from tests.conftest import run_cli
from tests.reliability.helpers import train
from train.logs import get_logger, setup_logging


@pytest.fixture
def info_level():
    yield
    setup_logging("info")


def test_console_streams_and_prefixes(capsys, info_level):
    setup_logging("info")
    get_logger("run").info("step 1/10")
    get_logger("sweep").warning("3 runs diverged")
    get_logger("data").info("tokenized 12 tokens")
    get_logger("run").debug("hidden at info")
    out, err = capsys.readouterr()
    assert out == "step 1/10\n"
    assert err == "warning: 3 runs diverged\n[data] tokenized 12 tokens\n"
    setup_logging("warning")
    get_logger("run").info("progress")
    get_logger("run").warning("kept")
    out, err = capsys.readouterr()
    assert out == "" and err == "warning: kept\n"
    setup_logging("debug")
    get_logger("run").debug("shown")
    assert capsys.readouterr().out == "debug: shown\n"


def test_bad_level_is_a_config_error(monkeypatch, capsys, info_level):
    from train.plan.errors import ConfigError
    with pytest.raises(ConfigError, match=r"log_level: unknown level 'loud'; choose one of debug, info"):
        setup_logging("loud")
    monkeypatch.setenv("ISOFLOP_LOG_LEVEL", "loud")
    setup_logging()  # the environment variable: a warning, and info
    assert "ISOFLOP_LOG_LEVEL: unknown level 'loud'" in capsys.readouterr().err
    assert logging.getLogger("isoflop").handlers[0].level == logging.INFO


def test_a_quiet_run_keeps_everything_in_its_train_log(tmp_path):
    run_dir = tmp_path / "run"
    proc = train(f"out_dir={run_dir}", "log_level=warning", "log_every=5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "", proc.stdout[-2000:]  # no progress, no summary on the console
    log = (run_dir / "train.log").read_text()
    lines = log.splitlines()
    # time, level, logger, message
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO isoflop\.run: run [0-9a-f]{12}: [\d,]+ params"
    assert any(re.match(stamp, line) for line in lines), lines[:3]
    assert sum(" | loss " in line for line in lines) >= 8  # the progress lines, every 5 of 42 steps
    assert "completed; final val loss" in lines[-1]
    again = train(f"out_dir={run_dir}")  # finished: the re-run says so, and leaves the run directory alone
    assert again.returncode == 0 and "already completed" in again.stdout
    assert (run_dir / "train.log").read_text() == log


def test_an_unknown_level_is_one_line_and_exit_2(tmp_path):
    proc = train(f"out_dir={tmp_path / 'run'}", "log_level=loud")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: log_level: unknown level 'loud'; choose one of debug, info, warning, error"]
    assert not (tmp_path / "run").exists()


def test_the_sweep_plan_follows_the_environment_level(tmp_path):
    proc = run_cli("-m", "sweeps", "sweep=demo", "dry_run=true", f"sweep.out_dir={tmp_path / 's'}",
                   env={"ISOFLOP_LOG_LEVEL": "warning"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "budget C" not in proc.stdout  # the plan table is progress, at info
    shown = run_cli("-m", "sweeps", "sweep=demo", "dry_run=true", "log_level=info", f"sweep.out_dir={tmp_path / 's'}",
                    env={"ISOFLOP_LOG_LEVEL": "warning"})
    assert shown.returncode == 0 and "budget C" in shown.stdout  # the key wins over the variable
