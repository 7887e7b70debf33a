"""One training run at a fixed FLOP budget, in layers that import only downward:
plan/ (pure: shape, params, FLOPs, budget, hparams) -> model/ -> data/ -> run/ (lifecycle, loop, run
directory) -> tracking/ (wandb). config.py is the typed Hydra schema; `python -m train` is __main__.py."""
