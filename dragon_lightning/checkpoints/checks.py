"""Checks of a checkpoint named on the command line against the command's model and data, before
Lightning loads it: Lightning's own errors for a mismatched checkpoint are long tracebacks; these are
one line naming the file and what is wrong with it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import lightning as L

from dragon_lightning.arguments import init_parameters, option_text
from dragon_lightning.checkpoints.files import model_class
from dragon_lightning.errors import DragonInputError
from dragon_lightning.models.base import DATA_LINKED
from dragon_lightning.models.checksum import DATA_STATE_KEY

if TYPE_CHECKING:
    from dragon_lightning.data import DragonDataModule


def check_trained_model(checkpoint: dict, path: str | os.PathLike, configured: type | None) -> None:
    """The checkpoint must hold the model class the config asks for (LightningCLI would otherwise
    quietly swap in the checkpoint's class)."""
    trained = model_class(checkpoint, path)
    if configured is not None and trained is not configured:
        raise DragonInputError(
            f"{path}: holds a {trained.__name__}, but the config asks for {configured.__name__}; use the config "
            "the checkpoint was trained with (its run folder has config.yaml)"
        )


def check_checkpoint_fits(checkpoint: dict, path: str | os.PathLike, model: L.LightningModule, task: str) -> None:
    """Raise :class:`DragonInputError` unless ``checkpoint`` holds weights for ``task`` that fit ``model``."""
    trained_task = checkpoint.get("datamodule_hyper_parameters", {}).get("task")
    if trained_task is not None and trained_task != task:
        raise DragonInputError(f"{path}: was trained for task {trained_task!r}, but --data.task is {task!r}")
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in checkpoint["state_dict"].items()}
    if expected != found:
        raise DragonInputError(
            f"{path}: its weights do not fit the configured {type(model).__name__}; "
            "use the config the checkpoint was trained with (its run folder has config.yaml)"
        )


# How a trained model decides, not what it learned: ``validate``, ``test`` and ``predict`` may set them.
DECISION_HYPERPARAMETERS = ("threshold",)


def explicit_values(model_class: type, configured: dict, names: Sequence[str]) -> dict:
    """The options among ``names`` that the config sets away from their defaults."""
    parameters = init_parameters(model_class)
    return {
        name: configured[name]
        for name in names
        if name in configured and name in parameters and option_text(configured[name]) != option_text(parameters[name].default)
    }


def check_hyperparameters(
    checkpoint: dict, path: str | os.PathLike, model_class: type, configured: dict, adjustable: Sequence[str] = ()
) -> None:
    """The checkpoint's hyperparameters must be arguments of this version's ``model_class``, and any value
    the config sets away from its default must agree with the checkpoint's (LightningCLI would
    otherwise let the checkpoint win without a word), except for the ``adjustable`` ones."""
    trained = {name: value for name, value in checkpoint.get("hyper_parameters", {}).items() if not name.startswith("_")}
    parameters = init_parameters(model_class)
    unknown = sorted(set(trained) - set(parameters))
    if unknown:
        raise DragonInputError(
            f"{path}: its hyperparameters {', '.join(unknown)} are not options of this version's "
            f"{model_class.__name__} (a checkpoint of another version of dragon-lightning?)"
        )
    conflicts = [
        f"--model.init_args.{name} {option_text(configured[name])} (the checkpoint has {option_text(value)})"
        for name, value in trained.items()
        if name in configured
        and name not in (*DATA_LINKED, *adjustable)
        and option_text(configured[name]) not in (option_text(value), option_text(parameters[name].default))
    ]
    if conflicts:
        raise DragonInputError(
            f"{path}: the config asks for {' and '.join(conflicts)}; drop those options or use the config "
            "the checkpoint was trained with (its run folder has config.yaml)"
        )


# Data options that decide each split's rows and the features. Resuming with other values would train
# on rows that earlier epochs held out for validation and testing, or on differently scaled features.
SPLIT_OPTIONS = (
    "task",
    "csv_path",
    "n_dragons",
    "seed",
    "test_fraction",
    "val_fraction",
    "standardize",
    "n_folds",
    "fold",
    "fold_draw",
)


def check_same_rows(checkpoint: dict, path: str | os.PathLike, datamodule: DragonDataModule, stage: str) -> None:
    """With the data options a checkpoint was trained with, the rows must be the ones it was trained on:
    a CSV edited since (or a generator changed since) gives other rows under the same split, which a
    resumed ``fit`` would train on and ``validate`` or ``test`` would score as if held out."""
    recorded, current = checkpoint.get(DATA_STATE_KEY, {}), datamodule.state_dict()  # the rows' SHA-256, as saved and now
    shared = recorded.keys() & current.keys()  # none in checkpoints of earlier versions
    if not shared or changed_split_options(checkpoint, dict(datamodule.hparams)):
        return
    if any(recorded[key] != current[key] for key in shared):
        remedy = (
            "resume with the rows as they were, or start a new run without --ckpt_path"
            if stage == "fit"
            else f"its {stage} split would not be the rows the run held out; give the rows as they were"
        )
        raise DragonInputError(
            f"{path}: was trained on other rows than {datamodule.source} gives now (their "
            f"SHA-256 differs: the table changed since); {remedy}"
        )


def changed_split_options(checkpoint: dict, data_options: dict) -> list[str]:
    """The options of :data:`SPLIT_OPTIONS` that differ from those the checkpoint was trained with."""
    trained_data = checkpoint.get("datamodule_hyper_parameters", {})
    return [
        f"--data.{name} {option_text(trained_data[name])} (now {option_text(data_options.get(name))})"
        for name in SPLIT_OPTIONS
        if name in trained_data
        and option_text(trained_data[name]) != option_text(data_options.get(name))
        and not (name == "n_dragons" and trained_data.get("csv_path") is not None)
    ]


def check_resumable(checkpoint: dict, path: str | os.PathLike, data_options: dict) -> None:
    """Resuming ``fit`` must keep the data options that define the splits."""
    if changed := changed_split_options(checkpoint, data_options):
        raise DragonInputError(
            f"{path}: was trained with {' and '.join(changed)}; resume with the same data options "
            "(they decide each split's rows and the features)"
        )
