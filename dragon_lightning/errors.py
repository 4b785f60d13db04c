"""The project's exceptions for things a user can act on.

The CLI turns each into a single line on stderr and a non-zero exit, so a message must say on its own
what is wrong and where (file, line, column, option or training step).
"""


class DragonError(Exception):
    """Base of the errors the CLI reports in one line instead of a traceback."""


class DragonInputError(DragonError, ValueError):
    """Bad input from the user: a CSV, a config value, a checkpoint or an output path."""


class TrainingDiverged(DragonError, RuntimeError):
    """The training loss became NaN or infinite; the run stops before saving such weights."""
