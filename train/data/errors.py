"""The one exception type of the data pipeline."""
import warnings


class DataError(ValueError):
    """Bad data input: a one-line message that names the config field (``data.<field>``) or file."""


class RepeatedDataWarning(UserWarning):
    """A run would see some training tokens more than once (see ``check_repeats``)."""


# check_repeats prints its own one-line warning; Python's display of the same warning would
# print it a second time (with a source line). Recorders (pytest.warns) still see it.
warnings.filterwarnings("ignore", category=RepeatedDataWarning)
