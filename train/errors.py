"""The exceptions that mean "bad input": reported as one line and exit code 2, never a traceback."""
from train.data.errors import DataError
from train.plan.errors import BudgetError, ConfigError, ConventionError, HparamError, MemoryPlanError, ShapeError

USER_ERRORS: tuple[type[Exception], ...] = (BudgetError, ConfigError, ConventionError, DataError, HparamError,
                                            MemoryPlanError, ShapeError)
