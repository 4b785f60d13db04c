"""Checkpoints: written atomically, loaded as data only, and checked before Lightning loads one given on
the command line.

A checkpoint is a pickle, and unpickling can run code: every load here and in Lightning's restore uses
``weights_only=True``, which admits tensors and plain values only (all a dragon-lightning checkpoint
holds). Lightning's own errors for a missing, truncated or mismatched checkpoint are long tracebacks;
the checks turn each into one line naming the file and what is wrong with it.
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
import warnings
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from dragon_lightning.errors import DragonInputError
from dragon_lightning.paths import require_regular_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside it, then rename: Ctrl-C in the middle of a
    save leaves the previous ``last.ckpt`` whole instead of a truncated one. Load as data only,
    whatever the caller asks for."""

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None) -> dict:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if "://" in str(path):  # remote storage: no local rename
            return super().save_checkpoint(checkpoint, path, storage_options)
        temporary = f"{path}.partial"
        try:
            super().save_checkpoint(checkpoint, temporary, storage_options)
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)


# ckpt_path values that Lightning resolves itself rather than reading a file ("registry" also as a prefix).
# The CLI resolves "last" itself; the others name checkpoints a new command does not have.
LIGHTNING_CHECKPOINT_ALIASES = ("best", "hpc", "registry")


def latest_last_checkpoint(root_dir: str | os.PathLike) -> Path:
    """``last.ckpt`` of the newest run (highest ``version_N``) under ``root_dir/lightning_logs``."""
    runs = Path(root_dir) / "lightning_logs"
    candidates = [
        (int(run.name.removeprefix("version_")), run / "checkpoints" / "last.ckpt")
        for run in runs.glob("version_*")
        if run.name.removeprefix("version_").isdigit() and (run / "checkpoints" / "last.ckpt").is_file()
    ]
    if not candidates:
        raise DragonInputError(f"--ckpt_path last: no run under {runs} has checkpoints/last.ckpt to continue from")
    return max(candidates)[1]


def read_checkpoint(path: Optional[str | os.PathLike], option: Optional[str] = "--ckpt_path") -> Optional[dict]:
    """Load the checkpoint file at ``path`` as data (``None`` for no path); ``option`` is where the
    path came from, for messages."""
    if path is None:
        return None
    if str(path) in LIGHTNING_CHECKPOINT_ALIASES or str(path).startswith("registry"):
        raise DragonInputError(
            f"--ckpt_path {path}: Lightning's name for a checkpoint of a fit in this same process or a model "
            "registry, which this command has none of; give a checkpoint file, or last"
        )
    path = require_regular_file(path, "checkpoint file", option)
    try:
        with warnings.catch_warnings():  # e.g. about the pickle protocol of a file that is then refused
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # The weights-only unpickler names the first object the file would build (and so run code).
        if (unsafe := re.search(r"GLOBAL (\S+)", str(error))) is None:
            raise DragonInputError(f"{path}: not a readable checkpoint (truncated or corrupt: UnpicklingError)") from None
        raise DragonInputError(
            f"{path}: refused: it would build the Python object {unsafe.group(1)}, and loading it could run code; "
            "dragon-lightning checkpoints hold only tensors and plain values"
        ) from None
    except Exception as error:  # any other failure means the file is not a usable checkpoint
        raise DragonInputError(f"{path}: not a readable checkpoint (truncated or corrupt: {type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise DragonInputError(f"{path}: not a Lightning checkpoint (it has no state_dict)")
    if not all(isinstance(checkpoint.get(key, {}), dict) for key in ("state_dict", "hyper_parameters", "datamodule_hyper_parameters")):
        raise DragonInputError(f"{path}: not a Lightning checkpoint (its state_dict or hyperparameters are not mappings)")
    return checkpoint


def check_trained_model(checkpoint: dict, path: str | os.PathLike, configured_class_path: Optional[str]) -> None:
    """The checkpoint must hold the model class the config asks for (LightningCLI would otherwise
    quietly swap in the checkpoint's class)."""
    trained = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if trained and configured_class_path and trained.rsplit(".", 1)[-1] != configured_class_path.rsplit(".", 1)[-1]:
        raise DragonInputError(
            f"{path}: holds a {trained.rsplit('.', 1)[-1]}, but the config asks for "
            f"{configured_class_path.rsplit('.', 1)[-1]}; use the config the checkpoint was trained with "
            "(its run folder has config.yaml)"
        )


def check_checkpoint_fits(checkpoint: dict, path: str | os.PathLike, model: L.LightningModule, task: str) -> None:
    """Raise :class:`DragonInputError` unless ``checkpoint`` holds weights for ``task`` that fit ``model``."""
    trained_task = checkpoint.get("DragonDataModule", {}).get("task")
    if trained_task is not None and trained_task != task:
        raise DragonInputError(f"{path}: was trained for task {trained_task!r}, but --data.task is {task!r}")
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in checkpoint["state_dict"].items()}
    if expected != found:
        raise DragonInputError(
            f"{path}: its weights do not fit the configured {type(model).__name__}; "
            "use the config the checkpoint was trained with (its run folder has config.yaml)"
        )


# Set from the data under the CLI, never by the user.
LINKED_HYPERPARAMETERS = ("num_features", "num_classes", "class_names")


# How a trained model decides, not what it learned: ``validate``, ``test`` and ``predict`` may set them.
DECISION_HYPERPARAMETERS = ("threshold",)


def explicit_values(model_class: type, configured: dict, names: Sequence[str]) -> dict:
    """The options among ``names`` that the config sets away from their defaults."""
    parameters = inspect.signature(model_class.__init__).parameters
    return {
        name: configured[name] for name in names
        if name in configured and name in parameters and _option_text(configured[name]) != _option_text(parameters[name].default)
    }


def check_hyperparameters(
    checkpoint: dict, path: str | os.PathLike, model_class: type, configured: dict, adjustable: Sequence[str] = ()
) -> None:
    """The checkpoint's hyperparameters must be arguments of this version's ``model_class``, and any value
    the config sets away from its default must agree with the checkpoint's (LightningCLI would
    otherwise let the checkpoint win without a word), except for the ``adjustable`` ones."""
    trained = {name: value for name, value in checkpoint.get("hyper_parameters", {}).items() if not name.startswith("_")}
    parameters = inspect.signature(model_class.__init__).parameters
    unknown = sorted(set(trained) - set(parameters))
    if unknown:
        raise DragonInputError(
            f"{path}: its hyperparameters {', '.join(unknown)} are not options of this version's "
            f"{model_class.__name__} (a checkpoint of another version of dragon-lightning?)"
        )
    conflicts = [
        f"--model.init_args.{name} {_option_text(configured[name])} (the checkpoint has {_option_text(value)})"
        for name, value in trained.items()
        if name in configured and name not in (*LINKED_HYPERPARAMETERS, *adjustable)
        and _option_text(configured[name]) not in (_option_text(value), _option_text(parameters[name].default))
    ]
    if conflicts:
        raise DragonInputError(
            f"{path}: the config asks for {' and '.join(conflicts)}; drop those options or use the config "
            "the checkpoint was trained with (its run folder has config.yaml)"
        )


# Data options that decide each split's rows and the features. Resuming with other values would train
# on rows that earlier epochs held out for validation and testing, or on differently scaled features.
SPLIT_OPTIONS = ("task", "csv_path", "n_dragons", "seed", "test_fraction", "val_fraction", "standardize", "n_folds", "fold")


def check_resumable(checkpoint: dict, path: str | os.PathLike, data_options: dict) -> None:
    """Resuming ``fit`` must keep the data options that define the splits."""
    trained_data = checkpoint.get("datamodule_hyper_parameters", {})
    changed = [
        f"--data.{name} {_option_text(trained_data[name])} (now {_option_text(data_options.get(name))})"
        for name in SPLIT_OPTIONS
        if name in trained_data and _option_text(trained_data[name]) != _option_text(data_options.get(name))
        and not (name == "n_dragons" and trained_data.get("csv_path") is not None)
    ]
    if changed:
        raise DragonInputError(
            f"{path}: was trained with {' and '.join(changed)}; resume with the same data options "
            "(they decide each split's rows and the features)"
        )


def _option_text(value) -> str:
    """An option's value as it is typed: ``null``, ``true``/``false``, ``[1, 2]``, or the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_option_text(item) for item in value) + "]"
    return str(value)
