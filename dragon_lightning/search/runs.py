"""What ``cv`` and ``sweep`` share: their own options split from the ``fit`` options, a check of the
config before any run, and quiet ``fit`` runs in named folders scored on validation data only."""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jsonargparse import Namespace
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from dragon_lightning.callbacks.figures import kept_epoch
from dragon_lightning.callbacks.hparams import record_hyperparameters
from dragon_lightning.cli import DragonCLI, FitSetupCLI, build_cli
from dragon_lightning.errors import DragonInputError

# Put before the user's options (who may turn them back on): a search runs many quiet fits.
QUIET_DEFAULTS = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--figures.enabled",
    "false",
]
FIT_OPTIONS_EPILOG = (
    "Every other option is a fit option (see 'dragon-lightning fit --help'): --config C and overrides such "
    "as --data.csv_path or --trainer.max_epochs apply to every run, as they would to fit."
)


class CommandParser(argparse.ArgumentParser):
    """The command's own options; ``parse_known_args`` leaves the rest for ``fit``. A bad option is one
    line (``DragonInputError``) rather than argparse's usage block."""

    def __init__(self, **kwargs) -> None:
        super().__init__(epilog=FIT_OPTIONS_EPILOG, **kwargs)

    def error(self, message: str):
        raise DragonInputError(f"{self.prog}: {message}")


@dataclass(frozen=True)
class Objective:
    """The validation metric that ranks runs: the config's checkpoint monitor (``val/acc`` when the
    config keeps final weights) and whether lower is better."""

    metric: str
    mode: str

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return "minimize" if self.mode == "min" else "maximize"


def objective_of(checkpoint: Namespace) -> Objective:
    return Objective(checkpoint.monitor, checkpoint.mode) if checkpoint.monitor else Objective("val/acc", "max")


@dataclass(frozen=True)
class CheckedConfig:
    """A config with its overrides, checked once as ``fit`` would check it."""

    cli: DragonCLI
    fit_args: list[str]

    @property
    def objective(self) -> Objective:
        return objective_of(self.cli.config.checkpoint)

    @property
    def root_dir(self) -> Path:
        return Path(self.cli.config.trainer.default_root_dir or ".")


def check_config(fit_args: Sequence[str], prog: str, compared: bool = True) -> CheckedConfig:
    """Build ``fit``'s set-up once (Trainer, model, data), so that bad options fail before any run;
    ``compared``: its runs are ranked on a validation metric (not so a refit on every non-test row)."""
    if not any(arg == "--config" or arg.startswith("--config=") for arg in fit_args):
        raise DragonInputError(f"{prog} needs --config C: the config whose runs it compares")
    cli_class = SearchSetupCLI if compared else FitSetupCLI
    return CheckedConfig(build_cli(list(fit_args), run=False, cli_class=cli_class, prog=prog), list(fit_args))


class SearchSetupCLI(FitSetupCLI):
    """``fit``'s set-up for a command that compares runs on a validation metric (``cv``, ``sweep``):
    there must be validation rows and a ``val/`` metric to rank by, checked before anything is written."""

    def _check_inputs(self) -> None:
        prog = self.parser.prog
        if not self.datamodule.validates:
            raise DragonInputError(f"{prog}: --data.val_fraction 0 holds no validation rows, on which {prog} compares its runs")
        if not (metric := objective_of(self.config.checkpoint).metric).startswith("val/"):
            raise DragonInputError(
                f"{prog}: --checkpoint.monitor {metric}: {prog} compares runs on validation metrics; "
                "monitor a val/ metric (val/acc, val/loss)"
            )
        super()._check_inputs()


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    training_seconds: float
    """Wall time inside ``Trainer.fit`` (the rest of a run is set-up and validation)."""
    epochs: int
    """Epochs up to the weights the run kept (the monitored best, else the last): what a refit trains."""
    checkpoint: str
    """The kept checkpoint's path ("" without checkpointing)."""

    @classmethod
    def from_record(cls, record: dict) -> RunResult:
        """A result as recorded in a run folder's JSON, which a user may have edited: each field of its
        type and range (a refit trains for its epochs), else ``ValueError``."""
        metrics, seconds, epochs = record["metrics"], record["training_seconds"], record["epochs"]
        if not (isinstance(metrics, dict) and all(isinstance(k, str) and _finite(v) for k, v in metrics.items())):
            raise ValueError("metrics")
        if not (_finite(seconds) and seconds >= 0 and type(epochs) is int and 1 <= epochs <= MAX_RECORDED_EPOCHS):
            raise ValueError("training_seconds or epochs")
        if not (isinstance(record["run_dir"], str) and isinstance(record["checkpoint"], str)):
            raise ValueError("run_dir or checkpoint")
        return cls(Path(record["run_dir"]), dict(metrics), float(seconds), epochs, record["checkpoint"])


MAX_RECORDED_EPOCHS = 100_000
"""More epochs than any run here trains: a recorded count above it was edited, and a refit would run on for days."""


def _finite(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


class FitTimer(Callback):
    def on_fit_start(self, trainer, pl_module) -> None:
        self.started = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.started


class RunCLI(DragonCLI):
    """A search's ``fit`` run: only the ``fit`` subcommand's parser is built (a tenth of a second less per run)."""

    announce = False

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"fit": DragonCLI.subcommands()["fit"]}


def fit_and_validate(
    run_dir: Path, fit_args: Sequence[str], callbacks: Sequence[Callback] = (), progress_bar: bool = False
) -> RunResult:
    """``fit`` into ``run_dir`` (its logs, checkpoints and config.yaml), then validate the weights it keeps
    (the monitored best, else the final ones). Test rows are never touched. ``progress_bar``: show
    Lightning's, for runs one after another (the bars of parallel workers would garble each other)."""
    shown = ["--trainer.enable_progress_bar", "true"] if progress_bar else []
    args = ["fit", *QUIET_DEFAULTS, *shown, *fit_args, "--test_after_fit", "false", *in_run_folder(run_dir)]
    timer = FitTimer()
    cli = build_cli(args, cli_class=RunCLI, callbacks=[timer, *callbacks])
    trainer = cli.trainer
    trainer.callbacks = [c for c in trainer.callbacks if c not in callbacks]  # type: ignore[attr-defined]  # set by Lightning when a run starts (fit's alone, not validate's)
    checkpoint = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    kept = checkpoint.best_model_path if checkpoint is not None and checkpoint.monitor else None
    epoch = kept_epoch(cli.trainer, cli.model.history)
    kept_path = (checkpoint.best_model_path or checkpoint.last_model_path) if checkpoint is not None else ""
    validated = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=kept or None, verbose=False)
    record_hyperparameters(cli.trainer, cli.model)
    return RunResult(
        run_dir,
        {name: float(value) for name, value in validated[0].items()},
        timer.seconds,
        epochs=1 if epoch is None else epoch + 1,
        checkpoint=kept_path,
    )


def in_run_folder(run_dir: Path) -> list[str]:
    """Options that put a command's logs, checkpoints and config.yaml in ``run_dir`` itself."""
    return ["--trainer.logger.init_args.save_dir", str(run_dir.parent), "--trainer.logger.init_args.name", "",
            "--trainer.logger.init_args.version", run_dir.name]  # fmt: skip


def test_run(run_dir: Path, test_args: Sequence[str]) -> DragonCLI:
    """``test`` into ``run_dir`` (its config.yaml, logs and pictures)."""
    return build_cli(["test", *test_args, *in_run_folder(run_dir)])


def ranged(restricted: type) -> Callable[[str], Any]:
    """A jsonargparse range (``PositiveInt``...) as an option type of these commands' own parser,
    refusing in its words as the fit options do (``AtLeastTwo: 1 does not conform to restriction v>=2``)."""

    def parse(text: str) -> Any:
        try:
            return restricted(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{restricted.__name__}: {error}") from None

    return parse


def boolean(text: str) -> bool:
    """``true`` or ``false``, as the fit options are written."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text}")
    return text.lower() == "true"


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; NaN for none)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def next_free(folder: Path, prefix: str) -> Path:
    """``folder/prefix_N`` for the smallest N not yet taken."""
    taken = {path.name for path in folder.glob(f"{prefix}_*")}
    return folder / next(f"{prefix}_{n}" for n in range(len(taken) + 1) if f"{prefix}_{n}" not in taken)
