"""The one exception type of the data pipeline."""


class DataError(ValueError):
    """Bad data input: a one-line message that names the config field (``data.<field>``) or file."""


class RepeatedDataWarning(UserWarning):
    """A run would see some training tokens more than once (see ``check_repeats``)."""
