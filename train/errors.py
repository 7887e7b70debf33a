"""The exceptions that mean "bad input": reported as one line and exit code 2, never a traceback."""
from train.budget import BudgetError
from train.config import ConfigError
from train.flops import ConventionError
from train.hparams import HparamError
from train.shapes import ShapeError

USER_ERRORS: tuple[type[Exception], ...] = (BudgetError, ConfigError, ConventionError, HparamError, ShapeError)

try:  # the data pipeline's errors, once it is importable
    from train.data import DataError
    USER_ERRORS += (DataError,)
except ImportError:  # pragma: no cover
    pass
