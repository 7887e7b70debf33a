"""`python -m train`: train one model at a fixed FLOP budget, or print its plan (dry_run=true)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from train.config import register_configs
from train.errors import USER_ERRORS

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")
register_configs()


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from train.plan import make_plan
    try:
        if cfg.dry_run:
            print(json.dumps(make_plan(cfg).to_dict()))
            return
        from train.run import run_training
        run_training(cfg)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
