"""The project's exceptions for things a user can act on.

The CLI turns each into a single line on stderr and a non-zero exit, so a message must say on its own
what is wrong and where (file, line, column, option or training step).
"""

import os


def first_line(error: BaseException) -> str:
    """An error's message as one line for a one-line report: its first line, or its class's name when
    it has no message."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def os_reason(error: OSError) -> str:
    """What the operating system said, in its own words (``permission denied``), for a one-line report."""
    return (error.strerror or first_line(error)).lower()


def named(path: str | os.PathLike, option: str | None) -> str:
    """``path`` after its option, for a one-line message: a name with a line break or another
    character that does not print (bytes that are not UTF-8 among them) is shown escaped."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else path
    text = text if text.isprintable() else repr(text)[1:-1]
    return f"{option} {text}" if option else text


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
