"""The one exception type for bad user input.

The CLI turns it into a single line on stderr and a non-zero exit, so its message must name what is
wrong and where (file, line, column or option) on its own.
"""


class DragonInputError(ValueError):
    """Bad input from the user: a CSV, a config value, a checkpoint or an output path."""
