"""`python -m train`: train one model at a fixed FLOP budget, or print its plan (dry_run=true).

    python -m train model.params=1e6 budget.flops=3e11 model.seq_len=128
    python -m train model=llama-160m data=embedded_gpt2 budget.flops=1e18 dry_run=true

Every option is a Hydra override (key=value) of the typed config in train/config.py (TrainConfig);
an unknown key is an error. The main ones:

    model.params=<N> | model=<catalog name>   the model: a size for the shape rule, or a named shape
    budget.flops=<C> budget.convention=6N     the FLOP budget, and the convention it is counted in
    data=<preset> data.paths=[...]            configs/data/: embedded (default), text, parquet, ... (docs/data.md)
    model.seq_len model.tie_embeddings data.vocab_size   the settings that matter most on a small corpus
    optim.lr=<peak LR>                        overrides the size rule (optim.lr_rule)
    out_dir=<run dir> seed=<int> wandb.mode=online|offline|disabled
    log_level=debug|info|warning|error        console verbosity; each run keeps every line in train.log
    dry_run=true                              print the plan as one JSON line and train nothing
    divergence_factor / divergence_window / divergence_patience   the loss-spike check (docs/reliability.md)
    retry_diverged=true                       train a run that ended `diverged` again, from step 0

`python -m train --cfg job` prints the whole resolved config.
Exit codes: 0 completed (or already finished); 2 bad input; 3 diverged or failed; 4 the run directory
is locked by another process; 74 disk full; 75 preempted (re-run to resume).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from train.config import register_configs


def _config_dir() -> str:
    """configs/ of this checkout; in an installed copy, the package isoflop_configs (pyproject.toml)."""
    checkout = Path(__file__).resolve().parent.parent / "configs"
    if (checkout / "train.yaml").is_file():
        return str(checkout)
    import importlib.util
    spec = importlib.util.find_spec("isoflop_configs")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: the Hydra configs were not found: neither configs/ beside train/ nor an "
                         "installed isoflop_configs package; reinstall isoflop")
    return str(Path(list(spec.submodule_search_locations)[0]))


CONFIG_DIR = _config_dir()
register_configs()


def in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> dict | None:
    from train.run.lifecycle import cli_errors, run_training
    from train.run.results_table import update_results_csv, write_results_csv
    from train.logs import setup_logging
    if in_sweep():
        # One job of a sweep: errors go back to the sweeper as a failed job, and the sweep's
        # results table is brought up to date as each run ends.
        try:
            setup_logging(cfg.log_level)
            return run_training(cfg)
        finally:
            if cfg.sweep.out_dir:  # a plain `python -m train --multirun` has no sweep directory
                write_results_csv(Path(cfg.sweep.out_dir))
    with cli_errors():  # one `error: ...` line and a distinct exit code (train/run/lifecycle.py)
        setup_logging(cfg.log_level)
        if cfg.dry_run:
            from train.plan import make_plan
            print(json.dumps(make_plan(cfg).to_dict()))
            return None
        try:
            result = run_training(cfg)
        finally:
            if cfg.sweep.name and cfg.sweep.out_dir:
                # a sweep job launched as its own process (GPU pool): keep the sweep's table current
                update_results_csv(Path(cfg.sweep.out_dir))
    if result is not None and result["status"] != "completed":
        sys.exit(3)
    return result


def main() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__.strip())
        return
    from train.overrides import check_command_line, hydra_flags_first
    sys.argv = [sys.argv[0], *hydra_flags_first(sys.argv[1:])]
    problem = check_command_line(sys.argv[1:], Path(CONFIG_DIR))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
