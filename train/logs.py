"""Progress, warnings and notes through Python's `logging`, under the logger ``isoflop``.

Each part logs to its own child: ``isoflop.run`` (one training run), ``isoflop.sweep``,
``isoflop.data``, ``isoflop.analysis``. On the console a record is one plain line, as the CLIs have
always printed it: progress (INFO, DEBUG) on stdout; warnings and errors on stderr with a
``warning:`` / ``error:`` prefix; data preparation, whatever its level, on stderr with ``[data]``, so
that a dry run's stdout holds its plan alone.

Verbosity: ``log_level=debug|info|warning|error`` on `python -m train` and `python -m sweeps`
(a config key; a bad value is a one-line error), or ``ISOFLOP_LOG_LEVEL`` for every command (the analysis and export
CLIs too). ``warning`` keeps the console to warnings, errors and the results.

Each run directory keeps its own log, ``train.log``: every record of the run at every level, with
time and logger, appended on each resume (``run_log``). Hydra's own job logging stays off
(``hydra/job_logging: none``): Hydra writes its job log into its output folder, and a run's folder is
known only once its plan (and so its run id) is.
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = "isoflop"
LEVELS = ("debug", "info", "warning", "error")
ENV_LEVEL = "ISOFLOP_LOG_LEVEL"
PREFIX = {logging.DEBUG: "debug: ", logging.WARNING: "warning: ", logging.ERROR: "error: ",
          logging.CRITICAL: "error: "}


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = PREFIX.get(record.levelno, "") + record.getMessage()
        return f"[data] {text}" if record.name.startswith(f"{ROOT}.data") else text


class _ConsoleHandler(logging.Handler):
    """Writes to the sys.stdout / sys.stderr of the moment (not those at set-up: pytest and
    contextlib.redirect_stdout swap them), and flushes each line. A closed pipe (`... | head`)
    ends the output to that stream quietly, as it ends `head`'s reading."""

    def __init__(self) -> None:
        super().__init__()
        self.closed_pipes: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        to_stderr = record.levelno >= logging.WARNING or record.name.startswith(f"{ROOT}.data")
        stream = sys.stderr if to_stderr else sys.stdout
        if id(stream) in self.closed_pipes:
            return
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except BrokenPipeError:
            self.closed_pipes.add(id(stream))
        except Exception:  # noqa: BLE001 - logging must never stop a run
            self.handleError(record)


def get_logger(part: str) -> logging.Logger:
    """``isoflop.<part>``, with the console set up at the default level if no CLI did it."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, _ConsoleHandler) for h in root.handlers):
        setup_logging()
    return logging.getLogger(f"{ROOT}.{part}")


def parse_level(level: str | None) -> int:
    """A level name (any case) or None (then $ISOFLOP_LOG_LEVEL, else info) -> logging's number."""
    name = (level if level is not None else os.environ.get(ENV_LEVEL) or "info").strip().lower()
    if name not in LEVELS:
        from train.plan.errors import ConfigError
        source = "log_level" if level is not None else ENV_LEVEL
        raise ConfigError(f"{source}: unknown level {name!r}; choose one of {', '.join(LEVELS)}")
    return getattr(logging, name.upper())


def setup_logging(level: str | None = None) -> None:
    """The console handler on ``isoflop`` at `level` (see parse_level); called again, it only
    changes the level. The logger itself passes every record, so that a run's train.log gets them all."""
    root = logging.getLogger(ROOT)
    root.setLevel(logging.DEBUG)
    root.propagate = False  # Hydra or a host program may configure the root logger; no doubled lines
    console = next((h for h in root.handlers if isinstance(h, _ConsoleHandler)), None)
    if console is None:
        console = _ConsoleHandler()
        console.setFormatter(_ConsoleFormatter())
        root.addHandler(console)
    try:
        console.setLevel(parse_level(level))
    except ValueError as error:  # ConfigError
        console.setLevel(logging.INFO)
        if level is not None:
            raise
        if not getattr(console, "warned_env", False):  # once per process, not once per sweep job
            console.warned_env = True
            logging.getLogger(f"{ROOT}.logs").warning(f"{error}; using info")


class _RunFileHandler(logging.FileHandler):
    """train.log. A write that fails (a full disk) stops the file, with one console warning: the
    run's own files say how it ended, and logging's default would print a traceback per record."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        logging.getLogger(ROOT).removeHandler(self)
        logging.getLogger(f"{ROOT}.logs").warning(f"{self.baseFilename}: not written further ({error})")


@contextmanager
def run_log(run_dir: Path):
    """Every ``isoflop`` record while the block runs, appended to ``<run_dir>/train.log``."""
    get_logger("run")
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    handler = _RunFileHandler(Path(run_dir) / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger(ROOT)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        try:
            handler.close()
        except OSError:  # its last lines cannot be flushed (a full disk): the run's own outcome matters more
            pass
