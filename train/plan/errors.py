"""The planning layer's bad-input errors. Each message names the field; the CLIs report them as one
`error: ...` line and exit code 2 (train/errors.py gathers every such class)."""


class ConfigError(ValueError):
    """A config value that is wrong or inconsistent."""


class ShapeError(ValueError):
    """A shape or parameter target that cannot be built."""


class BudgetError(ValueError):
    """A budget that cannot be met."""


class ConventionError(ValueError):
    """An unknown FLOP convention."""


class HparamError(ValueError):
    """A hyperparameter rule that cannot be applied."""


class MemoryPlanError(ValueError):
    """A run that cannot fit the device's memory, or a setting the memory model does not know."""
