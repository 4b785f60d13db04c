"""Checks that run before a command trains, tests or predicts: config files, option ranges, the optimizer
settings and every place the run will write.

Lightning and PyTorch find most of these problems too, but later: after a run folder, a generated table
or a checkpoint has been written, and as a traceback. Each check here raises one
:class:`DragonInputError` line naming the option or file instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from jsonargparse import Namespace

from dragon_lightning.data.datamodule import MAX_SEED
from dragon_lightning.errors import DragonInputError
from dragon_lightning.models import DragonClassifier
from dragon_lightning.paths import require_regular_file, require_writable_dir, require_writable_file


def check_config_files(args: Sequence[str]) -> None:
    """Every ``--config`` that names a file must be a regular file holding a YAML mapping.

    A value that names no file is left to jsonargparse, which also takes inline YAML. Safe loading
    refuses tags that would build Python objects.
    """
    for path in _config_paths(args):
        if not os.path.lexists(path):
            continue
        require_regular_file(path, "config file", "--config")
        try:
            content = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise DragonInputError(f"--config {path}: not UTF-8 text") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise DragonInputError(f"--config {path}: {where}not valid YAML ({problem})") from None
        if not isinstance(content, dict):
            raise DragonInputError(
                f"--config {path}: expected a mapping of options (e.g. 'trainer: {{max_epochs: 10}}'), "
                f"got {type(content).__name__}"
            )


def _config_paths(args: Sequence[str]) -> list[str]:
    paths = []
    for index, arg in enumerate(args):
        if arg == "--config" and index + 1 < len(args):
            paths.append(args[index + 1])
        elif arg.startswith("--config="):
            paths.append(arg.removeprefix("--config="))
    return paths


def check_seed(value: Any) -> None:
    """``seed_everything``: ``true`` (a random seed), ``false``/unset, or an integer NumPy accepts."""
    if isinstance(value, bool) or value is None:
        return
    if not 0 <= int(value) <= MAX_SEED:
        raise DragonInputError(f"--seed_everything must lie between 0 and {MAX_SEED}, got {value}")


# Trainer options with a lower bound Lightning checks late or not at all; None always passes.
TRAINER_MINIMUMS = {
    "max_epochs": -1,
    "min_epochs": 0,
    "max_steps": -1,
    "min_steps": 0,
    "check_val_every_n_epoch": 1,
    "log_every_n_steps": 0,
    "num_sanity_val_steps": -1,
    "accumulate_grad_batches": 1,
    "gradient_clip_val": 0,
}
BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


def check_trainer_options(trainer: Namespace) -> None:
    """Ranges of the Trainer's numeric options, and an accelerator this machine has."""
    for name, minimum in TRAINER_MINIMUMS.items():
        value = trainer.get(name)
        if value is not None and value < minimum:
            raise DragonInputError(f"--trainer.{name} must be at least {minimum}, got {value}")
    for name in BATCH_LIMITS:
        _check_batch_count(f"--trainer.{name}", trainer.get(name), allow_zero=True)
    _check_batch_count("--trainer.val_check_interval", trainer.get("val_check_interval"), allow_zero=False)
    accelerator = trainer.get("accelerator")
    gpu = torch.cuda.is_available() or (accelerator == "gpu" and torch.backends.mps.is_available())
    if accelerator in ("gpu", "cuda") and not gpu:
        raise DragonInputError(
            f"--trainer.accelerator {accelerator}: PyTorch finds no GPU on this machine; use cpu or auto"
        )


def _check_batch_count(option: str, value: Any, allow_zero: bool) -> None:
    """An int counts batches (at least 0 or 1); a float is a share of them, in (0, 1] (or [0, 1])."""
    if value is None:
        return
    if isinstance(value, float):
        if not (0.0 <= value <= 1.0 if allow_zero else 0.0 < value <= 1.0):
            raise DragonInputError(f"{option}: a share of the batches must lie in {'[0' if allow_zero else '(0'}, 1], got {value}")
    elif value < (0 if allow_zero else 1):
        raise DragonInputError(f"{option} must be at least {0 if allow_zero else 1} batches, got {value}")


def check_optimization_options(trainer: Namespace, model: DragonClassifier) -> None:
    """Build the model's optimizer and scheduler once: PyTorch refuses a negative learning rate, betas
    outside [0, 1) and the like only when training starts. Clipping and accumulation need Lightning to
    run the optimizer, which the online perceptron does not have."""
    if model.optimizer is not None:  # injected from the config (the perceptron builds its own)
        try:
            optimizer = model.optimizer(model.parameters())
        except (ValueError, TypeError) as error:
            raise DragonInputError(f"--model.init_args.optimizer: {error}") from None
        if model.scheduler is not None:
            try:
                model.scheduler(optimizer)
            except (ValueError, TypeError, KeyError) as error:
                raise DragonInputError(f"--model.init_args.scheduler: {error}") from None
    if model.automatic_optimization:
        return
    for name, inactive in (("gradient_clip_val", (None, 0)), ("accumulate_grad_batches", (1,))):
        if trainer.get(name) not in inactive:
            raise DragonInputError(
                f"--trainer.{name} needs an optimizer that Lightning runs: --model.init_args.online true "
                "applies the perceptron rule row by row itself"
            )


def check_output_locations(config: Namespace, subcommand: str, writes_generated_table: bool) -> None:
    """Every folder the run writes into, and the predictions file, must be usable before anything starts."""
    trainer = config.trainer
    require_writable_dir(trainer.get("default_root_dir") or ".", "--trainer.default_root_dir")
    logger = trainer.get("logger")
    if isinstance(logger, Namespace) and logger.get("init_args") and logger.init_args.get("save_dir"):
        require_writable_dir(logger.init_args.save_dir, "--trainer.logger.init_args.save_dir")
    data_dir = config.data.get("init_args", config.data).get("data_dir")
    if writes_generated_table and data_dir is not None:
        require_writable_dir(data_dir, "--data.data_dir")
    dirpath = config.get("checkpoint", Namespace()).get("dirpath")
    if subcommand == "fit" and dirpath:
        require_writable_dir(dirpath, "--checkpoint.dirpath")
    figures = config.get("figures", Namespace())
    if subcommand != "predict" and figures.get("enabled") and figures.get("save_dir"):
        require_writable_dir(figures.save_dir, "--figures.save_dir")
    if subcommand == "predict":
        _check_predictions_path(config.get("predictions", Namespace()))


def _check_predictions_path(options: Namespace) -> None:
    """Refuse, before predicting, to replace an existing file unless told to, or to write where no file can go."""
    path: Optional[str] = options.get("output_path")
    if path is None:
        return
    require_writable_file(path, "--predictions.output_path")
    if Path(path).exists() and not options.get("overwrite"):
        raise DragonInputError(
            f"{path}: exists; choose another --predictions.output_path or pass --predictions.overwrite true"
        )
