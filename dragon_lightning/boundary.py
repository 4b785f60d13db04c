"""The boundary every command runs inside: the input gate over its arguments first, then the command,
and whatever bad input it meets turned into one line and exit status 2.

LightningCLI's commands (``fit``, ``validate``, ``test``, ``predict``) run through
:func:`~dragon_lightning.cli.build_cli`; the others are functions of their own modules, named in
:data:`~dragon_lightning.registry.COMMANDS` and imported when used. Those modules build on
:mod:`dragon_lightning.cli`, never on this one, so the imports form no cycle.
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

import torch
from jsonargparse import ArgumentError
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.multiprocessing import ProcessRaisedException

from dragon_lightning.cli import build_cli
from dragon_lightning.errors import DragonError, first_line
from dragon_lightning.gates.inputs import check_argument_files
from dragon_lightning.messages import input_error_message
from dragon_lightning.quiet import quiet_warnings
from dragon_lightning.registry import COMMANDS, CONTINUES_IN

DIST_ERRORS = (torch.distributed.DistError,) if torch.distributed.is_available() else ()
"""What PyTorch raises when the processes of a multi-node run cannot find each other."""


def run_command(arguments: list[str]):
    """Run the command ``arguments`` name (a subcommand first) and return its result (the LightningCLI
    object for LightningCLI's commands); bad input ends it with one line and exit status 2."""
    with warnings.catch_warnings():  # the filters last as long as the command, not the Python session
        quiet_warnings(arguments[0])
        try:
            CONTINUES_IN.set(None)  # an earlier command's, in the same Python session, is not this one's
            check_argument_files(arguments)
            entry = COMMANDS.get(arguments[0])
            if entry is not None and entry.runs is not None:
                module, function = entry.runs.split(":")
                command = getattr(importlib.import_module(module), function)
                if entry.server:  # a server stops on SIGTERM itself: it finishes the requests in flight
                    return command(arguments[1:])
                with _sigterm_as_exception():
                    return command(arguments[1:])
            with _sigterm_as_exception(within_a_trainers_run=False):
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
        except (KeyboardInterrupt, SystemExit) as stopped:
            signum = stopping_signal(stopped)
            if signum is None:
                raise
            continues = CONTINUES_IN.get()
            advice = continues() if continues is not None else ""
            name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
            after_a_bar = "\n" if sys.stderr.isatty() else ""  # a progress bar's line may still be open
            print(f"{after_a_bar}dragon-lightning: stopped by {name}{'; ' + advice if advice else ''}", file=sys.stderr)
            raise SystemExit(128 + signum) from None
        except (DragonError, ArgumentError, ValueError, OSError) as error:
            message = input_error_message(error)
            if message is None:
                raise
            print(f"dragon-lightning: error: {message}", file=sys.stderr)
            raise SystemExit(2) from None


def stopping_signal(stopped: BaseException) -> int | None:
    """The signal that ``stopped`` a command: SIGTERM (Lightning's ``SIGTERMException``, also what
    :func:`_sigterm_as_exception` raises), SIGINT (a ``KeyboardInterrupt``, or the ``SystemExit(1)`` that
    Lightning ends a Trainer's run with on one); ``None`` for any other exit."""
    if isinstance(stopped, SIGTERMException):
        return signal.SIGTERM
    if isinstance(stopped, KeyboardInterrupt) or isinstance(stopped.__context__, KeyboardInterrupt):
        return signal.SIGINT
    return None


@contextlib.contextmanager
def _sigterm_as_exception(within_a_trainers_run: bool = True):
    """SIGTERM raises, so that every ``finally`` runs: no temporary file outlives the command (a table
    being generated, an export). Inside a Trainer's run, Lightning's handler notes the signal and then
    calls this one; without ``within_a_trainers_run`` (LightningCLI's commands) it is left to Lightning,
    which stops at the next step, where a run can be resumed exactly (and
    :meth:`~dragon_lightning.cli.DragonCLI.stop_if_terminated` after the run's last step)."""

    def stop(signum, frame):
        if within_a_trainers_run or signal.getsignal(signal.SIGTERM) is stop:
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
