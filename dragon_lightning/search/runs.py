"""What ``cv`` and ``sweep`` share: one parser for their own options and ``fit``'s, a check of the
config before any run, and quiet ``fit`` runs in named folders scored on validation data only. A run
receives its options as data (:data:`FitSettings`), never as command-line text."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from jsonargparse import Namespace
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from dragon_lightning.callbacks.figures import kept_epoch
from dragon_lightning.callbacks.hparams import record_hyperparameters
from dragon_lightning.cli import DragonCLI, FitSetupCLI, build_cli
from dragon_lightning.errors import DragonInputError

FitSettings = dict[str, Any]
"""A ``fit`` run's options as LightningCLI takes them from Python: the nested mapping a config file
holds (``{"data": {"fold": 1}, ...}``), parsed and checked as ``fit`` parses a config."""
QUIET = {"trainer.enable_model_summary": False, "figures.enabled": False}
"""A search runs many fits: no model summary or pictures in each."""


def with_options(settings: FitSettings, options: Mapping[str, Any]) -> FitSettings:
    """A copy of ``settings`` with each of ``options`` set, keyed as the option is named without its
    dashes (``{"data.fold": 1}``). A section that is not a mapping becomes one: a search's runs need a
    run folder, so ``trainer.logger: false`` gives way to the logger default under ``in_run_folder``."""
    changed = copy.deepcopy(settings)
    for key, value in options.items():
        *sections, name = key.split(".")
        node = changed
        for section in sections:
            if not isinstance(node.get(section), dict):
                node[section] = {}
            node = node[section]
        node[name] = value
    return changed


def as_plain_data(settings: FitSettings) -> dict:
    """``settings`` as a JSON record or a YAML config holds them: paths and other values as their text."""
    return json.loads(json.dumps(settings, default=str))


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


class SearchCLI(FitSetupCLI):
    """``fit``'s set-up for a command that runs many fits of one config and ranks them on a validation
    metric (``cv``, ``sweep``). Its own options, the fields of :attr:`Options` (a dataclass whose
    docstring is their help), sit beside ``fit``'s in one parser, so one YAML file can hold a whole
    command. Parsing splits the two: :attr:`options`, and :attr:`settings` for the runs. Before anything
    is written there must be validation rows and a ``val/`` metric to rank by."""

    Options: ClassVar[type]
    options: Any
    settings: FitSettings
    """The ``fit`` options as parsed, before any default is resolved (each run resolves its own)."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(self.Options, instantiate=False)

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        names = [field.name for field in dataclasses.fields(self.Options)]
        self.options = self.Options(**{name: self.config[name] for name in names})
        fit = self.config.clone()
        for name in [*names, "config"]:
            del fit[name]
        self.settings = fit.as_dict()
        self.check_options(self.options)

    def check_options(self, options: Any) -> None:
        """Refuse the command's own options that contradict each other, before anything is written."""

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        if self.options.folds:  # the split the runs will use, checked now
            self.config.data.n_folds = self.options.folds

    def _check_inputs(self) -> None:
        prog = self.parser.prog
        if not self.datamodule.validates:
            raise DragonInputError(f"{prog}: --data.val_fraction 0 holds no validation rows, on which {prog} compares its runs")
        if not (metric := self.objective.metric).startswith("val/"):
            raise DragonInputError(
                f"{prog}: --checkpoint.monitor {metric}: {prog} compares runs on validation metrics; "
                "monitor a val/ metric (val/acc, val/loss)"
            )
        super()._check_inputs()

    @property
    def objective(self) -> Objective:
        return objective_of(self.config.checkpoint)

    @property
    def root_dir(self) -> Path:
        return Path(self.config.trainer.default_root_dir or ".")


Search = TypeVar("Search", bound=SearchCLI)


def check_search(args: Sequence[str], cli_class: type[Search], prog: str, description: str) -> Search:
    """Parse a search command's options and build ``fit``'s set-up once (Trainer, model, data), so
    that bad options fail before any run."""
    return build_cli(args, run=False, cli_class=cli_class, prog=prog, description=description)  # type: ignore[return-value]


def check_settings(settings: FitSettings, prog: str) -> FitSetupCLI:
    """Build ``fit``'s set-up of ``settings`` once, as ``fit`` would check it, without running it."""
    return build_cli(settings, run=False, cli_class=FitSetupCLI, prog=prog)  # type: ignore[return-value]


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
    validations: tuple[dict, ...] = ()
    """Every validation while fitting, in order: its ``epoch``, ``loss`` and ``acc`` (the model's history)."""

    def after_epochs(self, epochs: int) -> dict[str, float]:
        """``val/loss`` and ``val/acc`` of the weights this run had after ``epochs`` epochs (its last
        validation by then, the last of all if it stopped sooner): what a refit that trains ``epochs``
        epochs and keeps its final weights is worth on these validation rows, without training it.
        Empty when no validation is recorded by then (a seed ensemble's is validated once, at its end)."""
        done = [entry for entry in self.validations if entry["epoch"] < epochs]
        return {"val/loss": done[-1]["loss"], "val/acc": done[-1]["acc"]} if done else {}

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
        validations = record.get("validations", [])
        if not (isinstance(validations, list) and all(_validation(entry) for entry in validations)):
            raise ValueError("validations")
        return cls(Path(record["run_dir"]), dict(metrics), float(seconds), epochs, record["checkpoint"], tuple(validations))


MAX_RECORDED_EPOCHS = 100_000
"""More epochs than any run here trains: a recorded count above it was edited, and a refit would run on for days."""


def _finite(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def _validation(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and entry.keys() == {"epoch", "loss", "acc"}
        and type(entry["epoch"]) is int
        and 0 <= entry["epoch"] < MAX_RECORDED_EPOCHS
        and _finite(entry["loss"])
        and _finite(entry["acc"])
    )


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
    run_dir: Path, settings: FitSettings, callbacks: Sequence[Callback] = (), progress_bar: bool = False
) -> RunResult:
    """``fit`` into ``run_dir`` (its logs, checkpoints and config.yaml), then validate the weights it keeps
    (the monitored best, else the final ones). Test rows are never touched. ``progress_bar``: show
    Lightning's, for runs one after another (the bars of parallel workers would garble each other),
    unless ``settings`` turn it off."""
    shown = progress_bar and (settings.get("trainer") or {}).get("enable_progress_bar") is not False
    options = {**QUIET, "trainer.enable_progress_bar": shown, "test_after_fit": False, **in_run_folder(run_dir)}
    timer = FitTimer()
    cli = build_cli({"fit": with_options(settings, options)}, cli_class=RunCLI, callbacks=[timer, *callbacks])
    trainer = cli.trainer
    trainer.callbacks = [c for c in trainer.callbacks if c not in callbacks]  # type: ignore[attr-defined]  # set by Lightning when a run starts (fit's alone, not validate's)
    checkpoint = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    kept = checkpoint.best_model_path if checkpoint is not None and checkpoint.monitor else None
    epoch = kept_epoch(cli.trainer, cli.model.history)
    kept_path = (checkpoint.best_model_path or checkpoint.last_model_path) if checkpoint is not None else ""
    validations = tuple(
        {key: entry[key] for key in ("epoch", "loss", "acc")} for entry in cli.model.history if entry["stage"] == "val"
    )
    validated = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=kept or None, verbose=False)
    record_hyperparameters(cli.trainer, cli.model)
    return RunResult(
        run_dir,
        {name: float(value) for name, value in validated[0].items()},
        timer.seconds,
        epochs=1 if epoch is None else epoch + 1,
        checkpoint=kept_path,
        validations=validations,
    )


def fold_name(fold: int, repeat: int, repeats: int) -> str:
    """A fold's run folder: ``fold_K``, or ``repeat_R_fold_K`` when the folds are drawn several times."""
    return f"fold_{fold}" if repeats == 1 else f"repeat_{repeat}_fold_{fold}"


def in_run_folder(run_dir: Path) -> dict[str, str]:
    """Options that put a command's logs, checkpoints and config.yaml in ``run_dir`` itself."""
    return {"trainer.logger.init_args.save_dir": str(run_dir.parent), "trainer.logger.init_args.name": "",
            "trainer.logger.init_args.version": run_dir.name}  # fmt: skip


def validate_run(run_dir: Path, settings: FitSettings, checkpoint: Path) -> dict[str, float]:
    """``validate`` of ``checkpoint`` under ``settings`` (their split, fold included) into ``run_dir``:
    its validation metrics."""
    options = {**QUIET, "trainer.enable_progress_bar": False, "verbose": False, "ckpt_path": str(checkpoint),
               **in_run_folder(run_dir)}  # fmt: skip
    cli = build_cli({"validate": with_options(settings, options)})
    return {name: float(value) for name, value in cli.trainer.callback_metrics.items() if name.startswith("val/")}


def test_run(run_dir: Path, settings: FitSettings, checkpoint: Path) -> DragonCLI:
    """``test`` of ``checkpoint`` under ``settings`` into ``run_dir`` (its config.yaml, logs and pictures)."""
    return build_cli({"test": with_options(settings, {"ckpt_path": str(checkpoint), **in_run_folder(run_dir)})})


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; NaN for none)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def next_free(folder: Path, prefix: str) -> Path:
    """``folder/prefix_N`` for the smallest N not yet taken."""
    taken = {path.name for path in folder.glob(f"{prefix}_*")}
    return folder / next(f"{prefix}_{n}" for n in range(len(taken) + 1) if f"{prefix}_{n}" not in taken)
