"""The one exception the analysis raises for bad input; the CLI turns it into exit status 2."""


class AnalysisError(Exception):
    """Input or fit problem the user must fix. The message names the rows, fields or budgets."""
