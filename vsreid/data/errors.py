"""The one exception type for bad input data."""


class DataError(ValueError):
    """Bad input data; the message is one line, ``<file>: <problem>``."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
