"""The project's exceptions for things a user can act on.

The CLI turns each into a single line on stderr and a non-zero exit, so a message must say on its own
what is wrong and where (file, line, column, option or training step).
"""


class DragonError(Exception):
    """Base of the errors the CLI reports in one line instead of a traceback."""


class DragonInputError(DragonError, ValueError):
    """Bad input from the user: a CSV, a config value, a checkpoint or an output path."""


class InvalidArgument(DragonInputError):
    """A class's argument out of its range. The message names the argument as Python code passes it
    (``batch_size must be at least 1, got 0``); the CLI puts the option group of the class in front
    (``--data.batch_size ...``)."""

    def __init__(self, owner: object, argument: str, problem: str) -> None:
        super().__init__(f"{argument} {problem}")
        self.owner_class = type(owner)
        self.argument = argument
        self.problem = problem


class TrainingDiverged(DragonError, RuntimeError):
    """The training loss became NaN or infinite; the run stops before saving such weights."""
