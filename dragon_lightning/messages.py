"""Bad input as one line: our own errors, and jsonargparse's complaints about an option reworded to
name the option as it is typed (``--model.init_args.lr: ...``)."""

from __future__ import annotations

import os
import re
import traceback

from jsonargparse import ArgumentError
from lightning import LightningDataModule, LightningModule
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger

from dragon_lightning.callbacks import PredictionWriter, TutorialFigures
from dragon_lightning.checkpoints.callback import ResumableCheckpoint
from dragon_lightning.errors import DragonError, InvalidArgument, first_line
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


def configuration_refusal(error: BaseException) -> str | None:
    """Lightning's refusal of a configured class's arguments while it is built (a
    ``MisconfigurationException``, also where jsonargparse wraps it in its own error) as one line naming
    the option (``--checkpoint: ``, ``--trainer.callbacks EarlyStopping: ``); ``None`` for any other error."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, MisconfigurationException):  # as a traceback shows the chain
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    if cause is None:
        return None
    owners = [
        frame.f_locals["self"]
        for frame, _ in traceback.walk_tb(cause.__traceback__)
        if frame.f_code.co_name == "__init__" and "self" in frame.f_locals
    ]
    owner = owners[-1] if owners else None
    kind = "callbacks" if isinstance(owner, Callback) else "logger" if isinstance(owner, Logger) else None
    if group := _option_group(type(owner)):
        prefix = f"{group.rstrip('.')}: "
    else:
        prefix = f"--trainer.{kind} {type(owner).__name__}: " if kind else ""
    return f"{prefix}{first_line(cause)}"


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
