"""The exceptions that mean "bad input": reported as one line and exit code 2, never a traceback."""
from train.budget import BudgetError
from train.config import ConfigError
from train.data import DataError
from train.flops import ConventionError
from train.hparams import HparamError
from train.memory import MemoryPlanError
from train.shapes import ShapeError

USER_ERRORS: tuple[type[Exception], ...] = (BudgetError, ConfigError, ConventionError, DataError, HparamError,
                                            MemoryPlanError, ShapeError)

