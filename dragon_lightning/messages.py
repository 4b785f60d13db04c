"""Bad input as one line: our own errors, and jsonargparse's complaints about an option reworded to
name the option as it is typed (``--model.init_args.lr: ...``)."""

from __future__ import annotations

import contextlib
import os
import re
from contextvars import ContextVar

from jsonargparse import ArgumentError, add_instantiator
from lightning import LightningDataModule, LightningModule
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger

from dragon_lightning.callbacks import PredictionWriter, TutorialFigures
from dragon_lightning.checkpoints.callback import ResumableCheckpoint
from dragon_lightning.errors import DragonError, DragonInputError, InvalidArgument, first_line
from dragon_lightning.gates.outputs import DISK_FULL


def input_error_message(error: BaseException) -> str | None:
    """One line for bad input: our own :class:`DragonError` anywhere in the exception chain, or
    jsonargparse's complaint about an option; ``None`` for anything else (a real bug keeps its traceback)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in DISK_FULL:
            return f"{cause.filename or 'a file'}: not written, the disk is full ({os.strerror(cause.errno)})"
        if isinstance(cause, InvalidArgument):
            return f"{_option_group(cause.owner_class)}{cause}"
        if isinstance(cause, DragonError):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    if not isinstance(error, ArgumentError):
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    key = re.match(r'Parser key "([^"]+)"', lines[0]) if lines else None
    if key is None:
        return " ".join(lines[:2])
    option = "--" + key.group(1).replace(".init_args", "")
    if problem := _class_problem(option, lines):
        return problem
    if option == "--model":
        return "--model must name a model: Perceptron, LogisticRegression, MLPClassifier or a class_path"
    detail = lines[0][key.end() :].lstrip(": ") or (lines[1] if len(lines) > 1 else "")
    if misnamed := _misnamed_class(lines):
        return f"{option}: {misnamed}"
    if detail.startswith("Does not validate"):
        # A union's alternatives each refuse: a restriction (``v>=0``) says what was expected.
        restriction = next((line for line in lines if "does not conform to restriction" in line), None)
        given = next((line for line in lines if line.startswith("Given value:")), "")
        value = given.removeprefix("Given value:").strip()
        detail = f"{restriction.lstrip('- ')} (given {value})" if restriction else f"invalid value {value}"
    return f"{option}: {detail}"


# Where a class's arguments live on the command line.
OPTION_GROUPS = {
    LightningDataModule: "--data.",
    LightningModule: "--model.init_args.",
    ResumableCheckpoint: "--checkpoint.",
    PredictionWriter: "--predictions.",
    TutorialFigures: "--figures.",
}


def _option_group(owner_class: type) -> str:
    return next((prefix for base, prefix in OPTION_GROUPS.items() if issubclass(owner_class, base)), "")


_BUILDING = ContextVar("building_a_commands_classes", default=False)


@contextlib.contextmanager
def refusals_named():
    """While a command builds its configured classes, a callback's or logger's refusal of its arguments
    is one line naming its option (see :func:`built_or_refused`)."""
    token = _BUILDING.set(True)
    try:
        yield
    finally:
        _BUILDING.reset(token)


def built_or_refused(class_type: type, *args, **kwargs):
    """jsonargparse's instantiator for callbacks and loggers. Lightning refuses some arguments only when
    it builds the class (``MisconfigurationException`` for ``--checkpoint.save_top_k -2``, ``ValueError``
    for an ``EarlyStopping`` mode); inside :func:`refusals_named` that refusal is one line naming the
    option (``--checkpoint: ``, ``--trainer.callbacks EarlyStopping: ``)."""
    try:
        return class_type(*args, **kwargs)
    except (MisconfigurationException, ValueError) as error:
        if not _BUILDING.get():
            raise
        if group := _option_group(class_type):
            raise DragonInputError(f"{group.rstrip('.')}: {first_line(error)}") from None
        kind = "logger" if issubclass(class_type, Logger) else "callbacks"
        raise DragonInputError(f"--trainer.{kind} {class_type.__name__}: {first_line(error)}") from None


add_instantiator(built_or_refused, Callback)
add_instantiator(built_or_refused, Logger)  # type: ignore[type-abstract]  # subclasses of the abstract Logger


def _class_problem(option: str, lines: list[str]) -> str | None:
    """jsonargparse's reason for refusing a class's arguments (a model, callback, logger, optimizer), as
    ``--option.init_args.NAME: reason``; ``None`` when no class was refused."""
    for index, line in enumerate(lines):
        problem = re.match(r"- Problem with given class_path '([^']+)':", line)
        if problem is None:
            continue
        name, detail = problem.group(1).rsplit(".", 1)[-1], lines[index + 1 :] or [""]
        if unknown := re.match(r"Option '([^']+)' is not accepted", detail[0]):
            return f"{option}.init_args.{unknown.group(1)}: not an option of {name} (see {option}.help {name})"
        if key := re.match(r'Parser key "([^"]+)":', detail[0]):
            reason = _misnamed_class(detail, listed_by=f"{option}.help {name}") or _first_reason(detail[1:])
            if argument := re.search(r'Parser key "([^"]+)":$', reason):  # an argument of an optimizer or scheduler
                given = re.search(r"val='([^']*)'\)|Given value: (\S+)\. Got value", "\n".join(detail))
                value = f" {given.group(1) or given.group(2)}" if given else ""
                return f"{option}.init_args.{key.group(1)}.init_args.{argument.group(1)}: invalid value{value}"
            return f"{option}.init_args.{key.group(1)}: {reason}"
        return f"{option} {name}: {detail[0]}"
    return None


def _first_reason(lines: list[str]) -> str:
    """The reason among a union's alternatives that is not "not None" (jsonargparse lists them all)."""
    if not lines or not lines[0].startswith("Does not validate"):
        return lines[0] if lines else "invalid value"
    reasons = [line[2:] for line in lines if line.startswith("- ") and "NoneType" not in line]
    return reasons[0].split("callable class: ", 1)[-1] if reasons else lines[0]


def _misnamed_class(lines: list[str], listed_by: str = "--help") -> str | None:
    """A class name that names no class of the option's kind. jsonargparse tries the value as a config
    file's path first and says "Expected a path", which misleads; what is wrong is the name. ``listed_by``:
    the help that lists the option's classes."""
    first_reason = re.match(r"- Expected a path but (\S+) either not", lines[1]) if len(lines) > 1 else None
    if first_reason is None:  # lines[0] names the option (Parser key ...); its own first reason follows
        return None
    given, text = first_reason.group(1), "\n".join(lines)
    remedy = f"name one that {listed_by} lists for this option, or give its full import path"
    if "Expected a dot import path string" in text:
        return f"no class {given} to use here; {remedy}"
    if kind := re.search(r"does not correspond to a subclass of (\w+)|to be a subclass of <class '(\w+)'>", text):
        return f"{given} is not a subclass of {kind.group(1) or kind.group(2)}; {remedy}"
    return None
