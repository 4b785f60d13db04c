"""Every ``dragon-lightning`` command in one place: its name, its purpose and what runs it. The top-level
help, ``--version``, a mistyped command and the dispatcher read it before anything heavy is imported,
so they answer at once. Adding a command is one entry here (and its module)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from dragon_lightning import __version__

PROG = "dragon-lightning"
SUMMARY = (
    "Train, validate, test and predict dragon classifiers (the tutorial's perceptron, logistic regression "
    "and MLP) with PyTorch Lightning."
)


@dataclass(frozen=True)
class Command:
    purpose: str
    """One line, for the top-level help."""
    example: str
    """The options of a first run, shown when the command is typed alone."""
    runs: str | None = None
    """``"module:function"`` taking the command's arguments, imported when used; ``None``: one of
    LightningCLI's subcommands."""
    server: bool = False
    """Stops on SIGTERM by itself (it finishes the requests in flight)."""


CONTINUES_IN: ContextVar[Callable[[], str] | None] = ContextVar("how_a_stopped_command_goes_on", default=None)
"""How a command stopped by Ctrl-C or SIGTERM goes on, for the line it ends with: set by the command
once it knows (``fit``: its own ``last.ckpt``, once written; ``cv``: its folder, a new one unless
given; ``sweep``: its study), asked when it stops."""


CONFIG = "--config configs/color_mlp.yaml"
CHECKPOINT = "best"  # the checkpoint the newest run tested
COMMANDS = {
    "fit": Command("train a config, keep the best checkpoint, then test it", CONFIG),
    "validate": Command("score a checkpoint on the validation split", f"--ckpt_path {CHECKPOINT}"),
    "test": Command("score a checkpoint on the test split", f"--ckpt_path {CHECKPOINT}"),
    "predict": Command(
        "write predictions for a CSV of dragons", f"--ckpt_path {CHECKPOINT} --data.predict_csv examples/dragons_to_predict.csv"
    ),
    "lr_find": Command(
        "plot the loss against the learning rate and suggest one", CONFIG, "dragon_lightning.tuning:find_learning_rate"
    ),
    "cv": Command(
        "cross-validate a config on K stratified folds", f"{CONFIG} --folds 5", "dragon_lightning.search.cv:cv_command"
    ),
    "sweep": Command(
        "search a config's options with Optuna",
        f"{CONFIG} --space configs/sweeps/color_mlp.yaml",
        "dragon_lightning.search.sweep:sweep_command",
    ),
    "export": Command(
        "write a checkpoint as ONNX or torch.export with its preprocessing",
        f"--ckpt_path {CHECKPOINT} --output model.onnx",
        "dragon_lightning.export:export_command",
    ),
    "compare": Command(
        "draw finished runs' decision regions side by side",
        "lightning_logs/version_0 lightning_logs/version_1",
        "dragon_lightning.compare:compare_command",
    ),
    "serve": Command(
        "answer predictions over HTTP (LitServe)",
        f"--ckpt_path {CHECKPOINT}",
        "dragon_lightning.serve:serve_command",
        server=True,
    ),
}

START = f"Start from a config in configs/: '{PROG} fit --config configs/color_mlp.yaml'."


def overview() -> str:
    """``dragon-lightning --help``: every command on the usage line, each with its purpose."""
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} {{{','.join(COMMANDS)}}} [--help] [--version] [options]", "", textwrap.fill(SUMMARY, 100), ""]
    lines += [f"  {name:<{width}}  {command.purpose}" for name, command in COMMANDS.items()]
    lines += ["", textwrap.fill(f"{START} Each command explains its options: '{PROG} COMMAND --help'.", 100)]
    return "\n".join(lines)


def description() -> str:
    """The LightningCLI commands' ``--help`` description: the summary and where the other commands are."""
    others = "; ".join(f"'{name}' to {command.purpose}" for name, command in COMMANDS.items() if command.runs)
    return f"{SUMMARY} {START} More commands, each with --help: {others}."


def alone(name: str) -> str:
    """What a command typed without options answers: how a first run looks, and where the rest is."""
    return (
        f"{PROG}: error: {name} needs options, e.g. '{PROG} {name} {COMMANDS[name].example}' ('{PROG} {name} --help' lists them)"
    )


def version() -> str:
    return f"{PROG} {__version__}"
