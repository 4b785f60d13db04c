"""Argument types with their ranges, shared by the data, the models, the callbacks, the Trainer and
the commands' own options.

A range lives in the signature as a jsonargparse type (``PositiveInt``, ``OpenUnitInterval``...):
the CLI's parser refuses a value outside it and ``--help`` shows it. :func:`check_arguments` applies
the same types to Python callers, so each range is written once. A command outside LightningCLI
declares its options as a dataclass, parsed by :func:`parse_options`. Every command's ``--config`` is
:class:`ConfigFile`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from jsonargparse.typing import restricted_number_type

from dragon_lightning.errors import DragonInputError, InvalidArgument, named

MAX_SEED = 2**32 - 1  # NumPy's and Lightning's limit
Seed = restricted_number_type("Seed", int, [(">=", 0), ("<=", MAX_SEED)])
ClosedOpenUnitInterval = restricted_number_type("ClosedOpenUnitInterval", float, [(">=", 0), ("<", 1)])
AtLeastTwo = restricted_number_type("AtLeastTwo", int, (">=", 2))
AtLeastMinusOne = restricted_number_type("AtLeastMinusOne", int, (">=", -1))
ShareOfAnEpoch = restricted_number_type("ShareOfAnEpoch", float, [(">", 0), ("<=", 1)])
MAX_FEATURES = 64
"""A dragon has two features; no model is built for more than this many (a checkpoint's hyperparameters
could otherwise ask for a layer of any size)."""
FeatureCount = restricted_number_type("FeatureCount", int, [(">=", 1), ("<=", MAX_FEATURES)])
MAX_CLASSES = 64
"""Fire has two classes and color three; the test metrics hold a confusion matrix of classes squared."""
ClassCount = restricted_number_type("ClassCount", int, [(">=", 2), ("<=", MAX_CLASSES)])
MAX_DRAGONS = 30_000_000
"""Generated tables are held in memory: one epoch of fit measured 798 MB at 2 million dragons and 2,344 MB
at 20 million (86 MB per million more, benchmarks/scale.sh), so about 3.2 GB here; and their CSV
(62 bytes a row, 1.9 GB) stays within what the CSV gate reads back."""
DragonCount = restricted_number_type("DragonCount", int, [(">=", 1), ("<=", MAX_DRAGONS)])
Port = restricted_number_type("Port", int, [(">=", 1024), ("<=", 65535)])
"""The ports ``serve`` listens on (LitServe refuses others when the server starts, as a traceback)."""


def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments of ``cls``, including those its ``**kwargs`` hand on to base classes (as
    jsonargparse resolves them)."""
    parameters: dict[str, inspect.Parameter] = {}
    for owner in cls.__mro__:
        if "__init__" not in vars(owner):
            continue
        own = inspect.signature(vars(owner)["__init__"]).parameters
        for name, parameter in list(own.items())[1:]:
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                parameters.setdefault(name, parameter)
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in own.values()):
            break
    return parameters


def check_arguments(owner: object, values: Mapping[str, Any]) -> None:
    """Refuse ``values`` outside the restricted types of ``owner``'s signature in one
    :class:`InvalidArgument` line: what the parser checks on the command line, for Python callers."""
    for cls in type(owner).__mro__:
        if "__init__" in vars(cls) and cls.__module__.startswith("dragon_lightning"):
            for name, annotation in typing.get_type_hints(vars(cls)["__init__"]).items():
                if name in values:
                    _check(owner, name, annotation, values[name])


def _admits_none(annotation: Any) -> bool:
    return annotation is type(None) or (
        typing.get_origin(annotation) in (typing.Union, type(int | None)) and type(None) in typing.get_args(annotation)
    )


def _check(owner: object, name: str, annotation: Any, value: Any) -> None:
    if value is None:
        if annotation is not Any and not _admits_none(annotation):  # jsonargparse passes a class's init_args null
            raise InvalidArgument(owner, name, "may not be null; leave it out for its default")
        return
    if typing.get_origin(annotation) in (typing.Union, type(int | None)):
        for option in typing.get_args(annotation):
            _check(owner, name, option, value)
    elif typing.get_args(annotation) and isinstance(value, (list, tuple)):
        for item in value:
            _check(owner, name, typing.get_args(annotation)[0], item)
    elif isinstance(annotation, type) and annotation.__module__ == "jsonargparse.typing" and isinstance(value, (int, float)):
        try:
            annotation(value)
        except ValueError as error:
            raise InvalidArgument(owner, name, f"is not of type {annotation.__name__}: {error}") from None


class ConfigFile(ActionConfigFile):
    """``--config`` of every command. jsonargparse applies options in the order they are typed, so in
    ``--trainer.max_epochs 2 --config run.yaml`` the config's ``max_epochs`` would win and the run go on
    with it without a word: such an option is refused in one line instead. A config may still override
    an earlier config (a base config, then a variant)."""

    after_last_config: tuple[Namespace, Namespace] | None = None
    """The namespace being parsed, and a copy as the last ``--config`` left it."""

    def __call__(self, parser, cfg, values, option_string=None):
        before = cfg.clone()
        super().__call__(parser, cfg, values, option_string)
        last = self.after_last_config
        typed_since = last[1] if last is not None and last[0] is cfg else parser.get_defaults()
        overridden = [
            key
            for key, value in before.items()
            if key != self.dest
            and not key.rsplit(".", 1)[-1].startswith("__")  # jsonargparse's own entries (__path__)
            and value != typed_since.get(key)
            and (key not in cfg or cfg[key] != value)
        ]
        if overridden:
            key = overridden[0]
            now = f"sets it to {option_text(cfg[key])}" if key in cfg else "leaves it out"
            raise DragonInputError(
                f"--{key.removesuffix('.class_path')} {option_text(before[key])} comes before {named(values, '--config')}, which {now}; "
                "give --config first (options after it override it)"
            )
        self.after_last_config = (cfg, cfg.clone())


def option_text(value: Any) -> str:
    """An option's value as it is typed: ``null``, ``true``/``false``, ``[1, 2]``, or the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(option_text(item) for item in value) + "]"
    return str(value)


Options = TypeVar("Options")


def parse_options(
    options: type[Options], args: Sequence[str], prog: str, description: str, words: tuple[str, str] | None = None
) -> Options:
    """``args`` as a command's ``options``: a dataclass whose fields, with their types and the help its
    docstring gives them, are the command's options (``--config`` reads them from a YAML file).
    ``words``: the name and help of a first field that takes the words before the options instead
    (``compare RUN...``)."""
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False, allow_abbrev=False)
    parser.add_argument("--config", action=ConfigFile, help="a YAML file of these options")
    if words:
        parser.add_argument(words[0], type=str, nargs="+", help=words[1])
    parser.add_class_arguments(options, skip={words[0]} if words else None, instantiate=False)
    values = parser.parse_args(list(args)).as_dict()
    values.pop("config", None)
    return options(**values)
