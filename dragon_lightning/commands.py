"""``dragon-lightning`` and ``python -m dragon_lightning``: every command, and the boundary that turns
bad input into one line.

LightningCLI's commands (``fit``, ``validate``, ``test``, ``predict``) run through
:func:`~dragon_lightning.cli.build_cli`; the others are :data:`EXTRA_COMMANDS`, each a function of its
own module, imported when used. Those modules build on :mod:`dragon_lightning.cli`, never on this one,
so the imports form no cycle. Every command's arguments pass the input gate first.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import signal
import sys
import threading
import warnings
from argparse import ArgumentError

import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.multiprocessing import ProcessRaisedException

from dragon_lightning.cli import DESCRIPTION, PROG, build_cli
from dragon_lightning.errors import DragonError, first_line
from dragon_lightning.gates.inputs import check_argument_files
from dragon_lightning.messages import input_error_message
from dragon_lightning.quiet import quiet_warnings

DIST_ERRORS = (torch.distributed.DistError,) if torch.distributed.is_available() else ()
"""What PyTorch raises when the processes of a multi-node run cannot find each other."""

COMMANDS = {
    "fit": "train a config, keep the best checkpoint, then test it",
    "validate": "score a checkpoint on the validation split",
    "test": "score a checkpoint on the test split",
    "predict": "write predictions for a CSV of dragons",
    "lr_find": "plot the loss against the learning rate and suggest one",
    "cv": "cross-validate a config on K stratified folds",
    "sweep": "search a config's options with Optuna",
    "export": "write a checkpoint as ONNX or torch.export with its preprocessing",
    "compare": "draw finished runs' decision regions side by side",
    "serve": "answer predictions over HTTP (LitServe)",
}
"""Every command with its one-line purpose, for the top-level help."""


def print_overview() -> None:
    """``dragon-lightning --help``: every command on the usage line, each with its purpose."""
    print(f"usage: {PROG} {{{','.join(COMMANDS)}}} [--help] [options]\n")
    print(DESCRIPTION.split(". Start")[0] + ".\n")
    width = max(map(len, COMMANDS))
    for name, purpose in COMMANDS.items():
        print(f"  {name:<{width}}  {purpose}")
    print(
        f"\nStart from a config in configs/: '{PROG} fit --config configs/color_mlp.yaml'. "
        f"Each command explains its options: '{PROG} COMMAND --help'."
    )


# Commands beside LightningCLI's, as "module:function(args)"; imported when used.
EXTRA_COMMANDS = {
    "lr_find": "dragon_lightning.tuning:find_learning_rate",
    "export": "dragon_lightning.export:export_command",
    "compare": "dragon_lightning.compare:compare_command",
    "cv": "dragon_lightning.search.cv:cv_command",
    "sweep": "dragon_lightning.search.sweep:sweep_command",
    "serve": "dragon_lightning.serve:serve_command",
}
SERVERS = ("serve",)


def main() -> None:
    """Console entry point: ``dragon-lightning`` and ``python -m dragon_lightning``."""
    cli_main()


def cli_main(args: list[str] | None = None):
    """Run the CLI; ``args`` replaces ``sys.argv[1:]`` (for tests and notebooks). ``lr_find``,
    ``export``, ``compare``, ``cv`` and ``sweep`` are :data:`EXTRA_COMMANDS`; everything else is
    LightningCLI's. Every command's arguments pass the input gate first. Returns the command's result
    (the LightningCLI object for LightningCLI's commands)."""
    arguments = sys.argv[1:] if args is None else list(args)
    if arguments in ([], ["-h"], ["--help"]):
        print_overview()
        raise SystemExit(0 if arguments else 2)
    with warnings.catch_warnings():  # the filters last as long as the command, not the Python session
        quiet_warnings(arguments[0])
        try:
            check_argument_files(arguments)
            if arguments[:1] and arguments[0] in EXTRA_COMMANDS:
                module, function = EXTRA_COMMANDS[arguments[0]].split(":")
                command = getattr(importlib.import_module(module), function)
                if arguments[0] in SERVERS:  # a server stops on SIGTERM itself: it finishes the requests in flight
                    return command(arguments[1:])
                with _sigterm_as_exception():
                    return command(arguments[1:])
            cli = build_cli(arguments)
            _close_process_group()
            return cli
        except DIST_ERRORS as error:  # another node never arrived, or the address is wrong
            where = f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ.get('MASTER_PORT', '?')}"
            print(
                f"dragon-lightning: error: rendezvous at {where}: {first_line(error)} Every node needs the same "
                "MASTER_ADDR, MASTER_PORT and --trainer.num_nodes; the wait is --trainer.strategy.init_args.timeout",
                file=sys.stderr,
            )
            raise SystemExit(1) from None
        except ProcessRaisedException as error:  # a process Lightning spawned (ddp_spawn) raised; its traceback is text
            # Every exception class of the package is a DragonError (errors.py, and DiskFull/NotWritten in gates.outputs).
            ours = re.match(r"dragon_lightning\.[\w.]+: (.+)", str(error).strip().splitlines()[-1])
            if ours is None:
                raise
            print(f"dragon-lightning: error: {ours.group(1)}", file=sys.stderr)
            raise SystemExit(2) from None
        except SIGTERMException:
            resume = "; continue with the same command and --ckpt_path last" if arguments[:1] == ["fit"] else ""
            print(f"dragon-lightning: stopped by SIGTERM{resume}", file=sys.stderr)
            raise SystemExit(128 + signal.SIGTERM) from None
        except (DragonError, ArgumentError, ValueError, OSError) as error:
            message = input_error_message(error)
            if message is None:
                raise
            print(f"dragon-lightning: error: {message}", file=sys.stderr)
            raise SystemExit(2) from None


@contextlib.contextmanager
def _sigterm_as_exception():
    """SIGTERM raises inside our own commands (Lightning installs the same for a Trainer's run), so
    that every ``finally`` runs: no temporary file outlives the command."""

    def stop(signum, frame):
        raise SIGTERMException()

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _close_process_group() -> None:
    """End a finished multi-process run's process group before the interpreter shuts down, as PyTorch
    asks: Lightning does so only for NCCL, and leaves a CPU (gloo) group to be torn down at exit."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
