"""Checks that run before a command trains, tests or predicts: option ranges, the optimizer settings and
every place the run will write (through the output gate).

Lightning and PyTorch find most of these problems too, but later: after a run folder, a generated table
or a checkpoint has been written, and as a traceback. Each check here raises one
:class:`DragonInputError` line naming the option or file instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, Timer

from dragon_lightning.callbacks.figures import FILES as FIGURE_FILES
from dragon_lightning.checkpoints.callback import ResumableCheckpoint
from dragon_lightning.errors import DragonInputError
from dragon_lightning.gates.outputs import OutputFolder, require_writable_dir
from dragon_lightning.models import DragonClassifier, OptimizedClassifier


def check_trainer_options(trainer: Namespace) -> None:
    """A ``max_time`` that leaves time to train (the numeric options' ranges are types: :class:`~dragon_lightning.cli.DragonTrainer`)."""
    if trainer.get("max_time") is not None and _seconds(trainer.max_time) <= 0:
        raise DragonInputError(
            f"--trainer.max_time {trainer.max_time}: leaves no time to train; give a positive duration or none"
        )


def _seconds(max_time: Any) -> float:
    """``max_time`` in seconds, read by Lightning's own ``Timer`` (``inf`` for a value it refuses: the
    Trainer says so itself, in one line)."""
    try:
        return Timer(duration=max_time).time_remaining() or 0.0
    except (MisconfigurationException, TypeError, ValueError):
        return float("inf")


def check_monitors(callbacks: Iterable[Callback], model: DragonClassifier, validates: bool) -> None:
    """Every callback that follows a metric (a checkpoint, early stopping) must follow one the model logs
    (Lightning finds out only after the first epoch, when a run folder and its files already exist);
    without validation rows (``--data.val_fraction 0``) no ``val/`` metric is logged at all."""
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None)
        if not monitor or not isinstance(monitor, str):
            continue
        ours = isinstance(callback, ResumableCheckpoint)
        option = "--checkpoint.monitor" if ours else f"--trainer.callbacks {type(callback).__name__}: monitor"
        if not validates and monitor.startswith("val/"):
            remedy = "pass --checkpoint.monitor null to keep the final weights" if ours else "follow a train/ metric"
            raise DragonInputError(
                f"{option} {monitor}: --data.val_fraction 0 leaves no validation rows to measure it on; {remedy}"
            )
        if monitor not in model.monitorable_metrics():
            raise DragonInputError(
                f"{option} {monitor}: the model never logs it; choose one of {', '.join(model.monitorable_metrics())}"
            )


def check_optimization_options(trainer: Namespace, model: DragonClassifier) -> None:
    """Build the model's optimizer and scheduler once: PyTorch refuses a negative learning rate, betas
    outside [0, 1) and the like only when training starts. Clipping and accumulation need Lightning to
    run the optimizer, which the online perceptron does not have."""
    if isinstance(model, OptimizedClassifier):  # the perceptron builds its own
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
    """Every folder the run writes into must be usable, and hold no file of the user's under a name
    the run writes, before anything starts (the output gate's claim)."""
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
        existing = [path.name for path in Path(dirpath).glob("*.ckpt")] if Path(dirpath).is_dir() else []
        OutputFolder(dirpath, "--checkpoint.dirpath").claim(["last.ckpt", *existing])
    figures = config.get("figures", Namespace())
    if subcommand != "predict" and figures.get("enabled") and figures.get("save_dir"):
        OutputFolder(figures.save_dir, "--figures.save_dir").claim(FIGURE_FILES)
    predictions = config.get("predictions", Namespace())
    if subcommand == "predict" and predictions.get("output_path"):
        path = Path(predictions.output_path)
        OutputFolder(path.parent, "--predictions.output_path").claim(
            [path.name],
            replace=bool(predictions.get("overwrite")),
            remedy="choose another file or pass --predictions.overwrite true",
        )
