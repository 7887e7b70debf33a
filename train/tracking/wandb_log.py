"""One wandb run per training run, that can never take the training run down.

    with WandbLogger(mode="auto", project="isoflop", group="sweep-a/C=1e15", name=run_id,
                     config=resolved_cfg, run_dir=out_dir) as wb:
        wb.log({"tokens": t, "flops": f, "train/loss": loss, "lr": lr})
        ...

- mode "disabled" never imports wandb and writes nothing. "offline" writes
  <run_dir>/wandb/offline-run-*/run-*.wandb (read it back with train.tracking.wandb_offline, or
  upload later with `wandb sync <dir>`). "online" streams to the server. "auto" is online when an
  API key is already available (WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE, a netrc entry for the
  W&B host, or the api_key of wandb's settings file), else offline; WANDB_MODE, when set, wins.
  No mode ever prompts: "online" without any credential falls back to offline with a warning.
- `train/*` and `val/*` use `tokens` as their x-axis (define_metric step_metric); `flops` is
  logged alongside so the UI can plot against FLOPs too.
- Any wandb failure (import, init, log, finish) is a warning: online init failing falls back to
  offline, offline failing disables logging. Training goes on.
- The API key never enters the config: keys that look like secrets are masked, and any string
  equal to the key is masked too. The environment is never logged.
- Quiet and light: console capture off, no requirements.txt / code / git capture, system
  metrics only online (they are what the UI shows for GPU use; offline they only cost time).
"""

from __future__ import annotations

import configparser
import math
import netrc
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MODES = ("online", "offline", "disabled", "auto")
STEP_METRIC = "tokens"
STEPPED_PREFIXES = ("train", "val")  # metrics plotted against tokens
_SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|passwd|auth[_-]?token|access[_-]?token)", re.I)
# wandb 0.31's default base URL is CoreWeave Forge's proxy of api.wandb.ai; netrc entries for
# either host count (wandb itself falls back from the one to the other).
W_AND_B_HOSTS = ("api.forge.coreweave.com", "api.wandb.ai")


def _warn(msg: str) -> None:
    warnings.warn(f"wandb logging: {msg}", RuntimeWarning, stacklevel=3)


def api_key_available() -> bool:
    """Whether wandb would find credentials without prompting (never imports wandb)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    hosts = list(W_AND_B_HOSTS)
    if os.environ.get("WANDB_BASE_URL"):
        hosts = [urlsplit(os.environ["WANDB_BASE_URL"]).netloc]
    paths = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
    for p in paths:
        path = Path(p).expanduser()
        try:
            if path.is_file():
                parsed = netrc.netrc(str(path))
                if any(h and parsed.authenticators(h) for h in hosts):
                    return True
        except (netrc.NetrcParseError, OSError):
            pass
    cfg_dir = os.environ.get("WANDB_CONFIG_DIR", "~/.config/wandb")
    settings = Path(cfg_dir).expanduser() / "settings"
    try:
        parser = configparser.ConfigParser()
        parser.read(settings)
        if parser.has_option("default", "api_key") and parser.get("default", "api_key").strip():
            return True
    except (configparser.Error, OSError):
        pass
    return False


def resolve_mode(mode: str) -> str:
    """The mode a WandbLogger will really run in: online, offline or disabled."""
    if mode not in MODES:
        raise ValueError(f"wandb mode must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
        if env_mode in ("online", "offline", "disabled"):
            mode = env_mode
        elif env_mode == "dryrun":
            mode = "offline"
        else:
            mode = "online" if api_key_available() else "offline"
    if mode == "online" and not api_key_available():
        _warn("mode=online but no API key (WANDB_API_KEY or `wandb login`): logging offline")
        mode = "offline"
    return mode


def scrub_config(obj: Any, secret: str | None = None) -> Any:
    """Copy of a (nested) config with secret-looking keys and the API key's value masked."""
    secret = secret if secret is not None else os.environ.get("WANDB_API_KEY") or None
    if isinstance(obj, dict):
        return {
            k: ("***" if isinstance(k, str) and _SECRET_KEY.search(k) else scrub_config(v, secret))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(scrub_config(v, secret) for v in obj)
    if isinstance(obj, str) and secret and secret in obj:
        return obj.replace(secret, "***")
    return obj


def _plain(v: Any) -> Any:
    """Scalars from numpy/torch objects (`.item()`), leaving everything else as is."""
    item = getattr(v, "item", None)
    if callable(item) and getattr(v, "ndim", 0) == 0:
        try:
            return item()
        except Exception:  # noqa: BLE001 - best effort, wandb can still serialise it
            return v
    return v


class WandbLogger:
    """One wandb run. Use as a context manager, or call `finish()` yourself."""

    def __init__(
        self,
        mode: str,
        project: str,
        group: str | None,
        name: str,
        config: dict,
        run_dir: str,
        tags: list[str] | None = None,
        job_type: str | None = None,
        *,
        entity: str | None = None,
        run_id: str | None = None,
        system_stats: bool | None = None,
        init_timeout_s: float = 30.0,
    ) -> None:
        """mode: online|offline|disabled|auto (see module doc).

        run_id: a stable wandb run id (e.g. the run directory's id), so a resumed training run
        continues the same wandb run (resume="allow"); by default wandb makes a new id.
        system_stats: collect wandb system metrics (GPU use, ...); default: online only.
        init_timeout_s: how long an online init may wait for the server before falling back to
        offline (an unreachable server costs this once per run).
        """
        self.requested_mode = mode
        self.mode = resolve_mode(mode)
        self.run: Any = None
        self.run_dir = str(run_dir)
        self._failed_log = False
        self._finished = False
        self._warned_no_step = False
        if self.mode == "disabled":
            return  # never import wandb
        self._kwargs = dict(
            project=project,
            entity=entity,
            group=group,
            name=name,
            job_type=job_type,
            tags=list(tags) if tags else None,
            config=scrub_config(dict(config or {})),
            dir=self.run_dir,
            id=run_id,
            resume="allow" if run_id else None,
        )
        self._system_stats = system_stats
        self._init_timeout_s = init_timeout_s
        self._init(self.mode)
        if self.run is None and self.mode == "online":
            _warn("online init failed: retrying offline")
            self.mode = "offline"
            self._init(self.mode)
        if self.run is None:
            self.mode = "disabled"
            return
        try:
            self.run.define_metric(STEP_METRIC)
            self.run.define_metric("flops")
            for prefix in STEPPED_PREFIXES:
                self.run.define_metric(f"{prefix}/*", step_metric=STEP_METRIC)
        except Exception as e:  # noqa: BLE001
            _warn(f"define_metric failed ({type(e).__name__}: {e}); logging goes on")

    def _init(self, mode: str) -> None:
        try:
            Path(self.run_dir).mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("WANDB_SILENT", "true")  # also quiets wandb's login banner
            import wandb

            stats = self._system_stats if self._system_stats is not None else mode == "online"
            settings = wandb.Settings(
                mode=mode,
                silent=True,
                quiet=True,
                console="off",  # the run dir already has our logs; no stdout capture
                x_disable_stats=not stats,
                x_save_requirements=False,
                save_code=False,
                disable_job_creation=True,
                reinit="create_new",  # never hand back or finish another run of this process
                init_timeout=self._init_timeout_s,
            )
            self.run = wandb.init(settings=settings, **self._kwargs)
        except Exception as e:  # noqa: BLE001 - wandb must never crash training
            _warn(f"wandb.init({mode}) failed: {type(e).__name__}: {e}")
            self.run = None

    # ------------------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self.run is not None and not self._finished

    @property
    def sync_dir(self) -> str | None:
        """The offline-run-*/run-* directory (what `wandb sync` takes), when there is a run."""
        try:
            return str(self.run.settings.sync_dir) if self.run is not None else None
        except Exception:  # noqa: BLE001
            return None

    def log(self, metrics: dict[str, Any]) -> None:
        """Log one row. Include `tokens` (and `flops`) with every train/ or val/ metric."""
        if not self.enabled or self._failed_log:
            return
        row = {k: _plain(v) for k, v in metrics.items()}
        if STEP_METRIC not in row and not self._warned_no_step:
            if any(k.split("/", 1)[0] in STEPPED_PREFIXES for k in row):
                self._warned_no_step = True
                _warn(f"train/ or val/ metrics logged without '{STEP_METRIC}': no x-axis value")
        try:
            self.run.log(row)
        except Exception as e:  # noqa: BLE001
            self._failed_log = True
            _warn(f"log failed ({type(e).__name__}: {e}); no more wandb logging for this run")

    def summary(self, values: dict[str, Any]) -> None:
        """Set run summary values (e.g. final_val_loss), shown in the runs table."""
        if not self.enabled:
            return
        try:
            for k, v in values.items():
                v = _plain(v)
                if not (isinstance(v, float) and math.isnan(v)):
                    self.run.summary[k] = v
        except Exception as e:  # noqa: BLE001
            _warn(f"summary update failed ({type(e).__name__}: {e})")

    def finish(self, exit_code: int = 0, flush_timeout_s: float = 10.0) -> None:
        """Finish the run, then wait (at most flush_timeout_s) until wandb-core has flushed the
        run's .wandb file: run.finish() returns before that, and the file is this run's record
        when offline (a job killed right after would otherwise leave a header-only file)."""
        if self.run is None or self._finished:
            return
        self._finished = True
        sync_dir = self.sync_dir
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as e:  # noqa: BLE001
            _warn(f"finish failed ({type(e).__name__}: {e})")
            return
        if not sync_dir or flush_timeout_s <= 0:
            return
        from train.tracking.wandb_offline import is_complete

        deadline = time.monotonic() + flush_timeout_s
        while True:
            try:
                if is_complete(sync_dir):
                    return
            except (OSError, ValueError):
                pass  # not created or not flushed yet
            if time.monotonic() >= deadline:
                _warn(f"the .wandb file in {sync_dir} was not complete {flush_timeout_s} s after finish")
                return
            time.sleep(0.05)

    def __enter__(self) -> WandbLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)
