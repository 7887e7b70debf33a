"""The planning layer, pure Python (no torch): shape, parameter and FLOP counts, budget -> tokens -> steps,
hyperparameter rules and the run plan. Sweeps and analysis use it without building a model."""
from train.plan.run_plan import RunPlan, make_plan

__all__ = ["RunPlan", "make_plan"]
