"""``dragon-lightning`` and ``python -m dragon_lightning``. The top-level help, ``--version`` and a
mistyped command are answered from :mod:`dragon_lightning.registry` at once; every other command runs
inside :mod:`dragon_lightning.boundary`, which imports PyTorch and Lightning.
"""

from __future__ import annotations

import sys

from dragon_lightning.registry import COMMANDS, PROG, alone, overview, version


def main() -> None:
    """Console entry point: ``dragon-lightning`` and ``python -m dragon_lightning``."""
    cli_main()


def cli_main(args: list[str] | None = None):
    """Run the CLI; ``args`` replaces ``sys.argv[1:]`` (for tests and notebooks). Returns the command's
    result (the LightningCLI object for LightningCLI's commands)."""
    arguments = sys.argv[1:] if args is None else list(args)
    if arguments in ([], ["-h"], ["--help"]):
        print(overview())
        raise SystemExit(0 if arguments else 2)
    if arguments in (["--version"], ["-V"]):
        print(version())
        raise SystemExit(0)
    if len(arguments) == 1 and arguments[0] in COMMANDS:
        print(alone(arguments[0]), file=sys.stderr)
        raise SystemExit(2)
    if not arguments[0].startswith("-") and arguments[0] not in COMMANDS:
        print(
            f"{PROG}: error: no command {arguments[0]!r}; the commands are {', '.join(COMMANDS)} ('{PROG} --help')",
            file=sys.stderr,
        )
        raise SystemExit(2)
    from dragon_lightning.boundary import run_command  # PyTorch and Lightning: seconds, so only now

    return run_command(arguments)
