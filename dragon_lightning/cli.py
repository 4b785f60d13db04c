"""LightningCLI over the dragon data and models: defaults, argument links, checks before a run.

``fit`` trains, then tests the best checkpoint (``--test_after_fit false`` skips that); ``validate``,
``test`` and ``predict`` take ``--ckpt_path``. Bad input ends the run with one line on stderr and
exit status 2, before anything is written.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning
import torch
import yaml
from jsonargparse import ArgumentError, Namespace, get_loader, set_loader
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveInt, register_type
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dragon_lightning.arguments import AtLeastMinusOne, ConfigFile, Seed, ShareOfAnEpoch
from dragon_lightning.callbacks import (
    HyperparametersWithMetrics,
    PredictionWriter,
    RunConfig,
    RunProgressBar,
    TutorialFigures,
)
from dragon_lightning.checkpoints.callback import LAST, ResumableCheckpoint
from dragon_lightning.checkpoints.checks import (
    DECISION_HYPERPARAMETERS,
    SPLIT_OPTIONS,
    check_checkpoint_fits,
    check_hyperparameters,
    check_resumable,
    check_same_rows,
    check_trained_model,
    explicit_values,
)
from dragon_lightning.checkpoints.files import RUNS, SHORTCUTS, class_path, load_checkpoint, model_class, resolve_shortcut
from dragon_lightning.data import DragonDataModule
from dragon_lightning.errors import DragonInputError, first_line, named
from dragon_lightning.gates.inputs import bounded
from dragon_lightning.messages import input_error_message, refusals_named
from dragon_lightning.models import DragonClassifier, FoldEnsemble, MLPClassifier
from dragon_lightning.models.base import DATA_LINKED
from dragon_lightning.preflight import (
    check_monitors,
    check_optimization_options,
    check_output_locations,
    check_trainer_options,
)
from dragon_lightning.quiet import held_back_logs
from dragon_lightning.registry import CONTINUES_IN, PROG, description

DESCRIPTION = description()
set_loader("yaml", bounded(get_loader("yaml")), exceptions=(yaml.YAMLError,))
# Some of Lightning's callbacks default to a ``torch.device`` (StochasticWeightAveraging's ``device``), which
# jsonargparse would write into config.yaml as "Unable to serialize instance cpu": written as its text instead.
register_type(torch.device, serializer=str, deserializer=torch.device)


TENSORBOARD_LOGGER = "lightning.pytorch.loggers.TensorBoardLogger"
EVALUATION_COMMANDS = ("validate", "test", "predict")
DEFAULT_MODEL = MLPClassifier
"""The model a run trains when its config names none: the tutorial's MLP."""
ROOT_DIR = "<trainer.default_root_dir>"
"""A logger's ``save_dir`` by default: replaced by the Trainer's ``default_root_dir`` before the run."""


class DragonTrainer(Trainer):
    """Lightning's Trainer: every aspect of training, its flags' ranges checked as they are parsed.

    The options Lightning checks late, or not at all, have restricted types here: the parser refuses a
    value outside them wherever it comes from, and ``--help`` shows them."""

    def __init__(
        self,
        *,
        min_epochs: NonNegativeInt | None = None,
        min_steps: NonNegativeInt | None = None,
        check_val_every_n_epoch: PositiveInt | None = 1,
        val_check_interval: PositiveInt | ShareOfAnEpoch | None = None,
        log_every_n_steps: NonNegativeInt | None = None,
        num_sanity_val_steps: AtLeastMinusOne | None = None,
        accumulate_grad_batches: PositiveInt = 1,
        gradient_clip_val: NonNegativeFloat | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            min_epochs: train at least this many epochs (early stopping waits for them).
            min_steps: take at least this many optimizer steps.
            check_val_every_n_epoch: validate every this many epochs (``null``: only by ``val_check_interval``).
            val_check_interval: validate within an epoch too: every this share of it (0 to 1), or every
                this many training batches.
            log_every_n_steps: log training metrics every this many steps.
            num_sanity_val_steps: validation batches run before training to catch bugs (-1: all of them).
            accumulate_grad_batches: sum the gradients of this many batches per optimizer step.
            gradient_clip_val: clip gradients to this value (0 or ``null``: no clipping).
        """
        super().__init__(
            min_epochs=min_epochs,
            min_steps=min_steps,
            check_val_every_n_epoch=check_val_every_n_epoch,
            val_check_interval=val_check_interval,
            log_every_n_steps=log_every_n_steps,
            num_sanity_val_steps=num_sanity_val_steps,
            accumulate_grad_batches=accumulate_grad_batches,
            gradient_clip_val=gradient_clip_val,
            **kwargs,
        )


class DragonCLI(LightningCLI):
    checkpoint: dict | None = None
    """The ``--ckpt_path`` checkpoint, read once to check it before the Trainer starts."""
    decision_overrides: dict
    """Options of how a checkpoint's model decides (its threshold) set on an evaluation command."""
    trained_draw: dict
    """The data options an evaluation command takes from its checkpoint (:func:`trained_draw`)."""
    announce = True
    """Print where a run's files went (off for a search's many quiet runs)."""
    tested_checkpoint = ""
    """The checkpoint the test after ``fit`` ran on ("" for the final weights in memory, or no test)."""

    @property
    def stage(self) -> str | None:
        """What the run does: its subcommand (``None`` when a tool builds the CLI without one)."""
        return self.subcommand

    @property
    def one_process_command(self) -> str | None:
        """The command, where its work is not split across processes: ``predict`` writes one CSV in
        the input's row order."""
        return "predict" if self.stage == "predict" else None

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands, without ``--weights_only``: checkpoints always load as data."""
        return {name: {*skipped, "weights_only"} for name, skipped in LightningCLI.subcommands().items()}

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """LightningCLI's parser (its ``config.yaml`` header naming Lightning's version included), with a
        ``--config`` that refuses to override what was typed before it."""
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={lightning.__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument("-c", "--config", action=ConfigFile, help="a YAML or JSON file of options (give it first)")
        return parser

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """``--seed_everything`` as LightningCLI adds it, with NumPy's range as its type."""
        parser.add_argument(
            "--seed_everything",
            type=bool | Seed,
            default=self.seed_everything_default,
            help="seeds the data draw and the weights (one seed for both; --data.seed sets the draw alone); false: unseeded",
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in DATA_LINKED:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.set_defaults({"model": {"class_path": class_path(DEFAULT_MODEL)}})
        parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # A logger's save_dir follows --trainer.default_root_dir, as Lightning's own default logger does;
        # jsonargparse carries it over when --trainer.logger names another class (e.g. CSVLogger).
        parser.set_defaults(
            {
                "trainer.logger": {
                    "class_path": TENSORBOARD_LOGGER,
                    "init_args": {"save_dir": ROOT_DIR, "default_hp_metric": False},
                }
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_lightning_class_args(TutorialFigures, "figures")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="fit only: test the best checkpoint when training ends, as the tutorial reports test accuracy",
        )

    def before_instantiate_classes(self) -> None:
        """Defaults that need the parsed config: the data seed from ``seed_everything``, a logger under
        ``default_root_dir`` (TensorBoard, set up for HPARAMS, unless another is named), atomic
        checkpoint writes."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.data.get("seed") is None and config.get("seed_everything") is not False:
            config.data.seed = config.seed_everything  # one seed for the data draw and the weights, recorded in config.yaml
        if config.get("checkpoint") is not None and config.checkpoint.filename is None:
            config.checkpoint.filename = checkpoint_filename(config.checkpoint.monitor)
        if config.trainer.plugins is None:
            config.trainer.plugins = [Namespace(class_path="dragon_lightning.checkpoints.AtomicCheckpointIO")]
        for name, value in self.decision_overrides.items():
            config.model.init_args[name] = value
        resolve_logger(config.trainer)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, then resolve ``--ckpt_path last`` and ``best`` to the newest run's ``last.ckpt`` and best
        checkpoint (a new run gets a new version folder, where Lightning itself would find none) and read
        the checkpoint through its gate, and check it, before LightningCLI reads the model's
        hyperparameters from it."""
        super().parse_arguments(parser, args)
        self.decision_overrides, self.trained_draw = {}, {}
        command = self.config.get("subcommand")
        config = self.config[command] if command else self.config
        default = parser.parse_object({"subcommand": command, command: {}})[command] if command else parser.get_defaults()
        check_sections(config, default)
        if command in EVALUATION_COMMANDS and config.get("ckpt_path") is None:
            raise DragonInputError(
                f"{command} needs --ckpt_path: the trained checkpoint to {command} (a .ckpt file; best for the checkpoint "
                "the newest run tested, last for its last.ckpt); without one it would use untrained weights"
            )
        if config.get("ckpt_path") in SHORTCUTS:
            runs, version = logged_runs(config.trainer)
            dirpath = (config.get("checkpoint") or Namespace()).get("dirpath")
            config.ckpt_path = resolve_shortcut(config.ckpt_path, runs, version=version, dirpath=dirpath)
        self.checkpoint = load_checkpoint(config.get("ckpt_path"))
        if self.checkpoint is not None:
            if command in EVALUATION_COMMANDS:
                config.model = evaluated_model(config.model, default.model, model_class(self.checkpoint, config.ckpt_path))
                self.trained_draw = trained_draw(self.checkpoint, config.ckpt_path, config.data, default.data, command)
            class_path = config.model.get("class_path")
            check_trained_model(self.checkpoint, config.ckpt_path, _import(class_path))
            configured = (config.model.get("init_args") or Namespace()).as_dict()
            adjustable = DECISION_HYPERPARAMETERS if self.config.get("subcommand") in EVALUATION_COMMANDS else ()
            check_hyperparameters(self.checkpoint, config.ckpt_path, _import(class_path), configured, adjustable)
            # LightningCLI is about to let the checkpoint's values win; these the user's should.
            self.decision_overrides = explicit_values(_import(class_path), configured, adjustable)

    def _parse_ckpt_path(self) -> None:
        """The checkpoint's hyperparameters into the config, as LightningCLI does, but from the copy the
        checkpoint gate read and checked, and a value this version refuses named with the checkpoint.
        Overridden (the one private LightningCLI method here) because Lightning 2.6's version reads the
        file a second time and lets its ``_class_path`` choose the module jsonargparse imports; the gate
        has allowed only dragon-lightning's models by then. An evaluation command also takes the
        checkpoint's draw of the data (:func:`trained_draw`) where its config leaves it at the defaults,
        so ``test --ckpt_path`` alone tests on the rows the run held out."""
        if self.checkpoint is None:
            return
        command, config = self.config.subcommand, self.config[self.config.subcommand]
        trained = {k: v for k, v in self.checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
        settings: dict[str, Any] = {"model": {"class_path": config.model.class_path, "init_args": trained}} if trained else {}
        if self.trained_draw:
            settings["data"] = self.trained_draw
        try:
            self.config = self.parser.parse_object({command: settings}, self.config)
        except ArgumentError as error:
            reason = input_error_message(error) or first_line(error)
            raise DragonInputError(f"{config.ckpt_path}: a setting this version does not accept: {reason}") from None

    def instantiate_classes(self) -> None:
        """As LightningCLI does; a callback or logger that refuses its arguments while it is built (as
        ``ModelCheckpoint`` refuses ``--checkpoint.save_top_k -2``) is one line naming its option."""
        with refusals_named():
            super().instantiate_classes()

    def instantiate_trainer(self, **kwargs):
        """Read and check every input first: bad input then fails before the Trainer prints or writes.
        The generated table is written once the Trainer, the last thing that can refuse, exists."""
        if self.stage is not None:
            self._check_inputs()
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        with held_back_logs():  # dropped if the Trainer, or the check after it, refuses
            try:
                trainer = super().instantiate_trainer(callbacks=default_callbacks(config.trainer), **kwargs)
            except (MisconfigurationException, TypeError, ValueError, ImportError) as error:  # what the Trainer refuses
                raise DragonInputError(f"--trainer: {first_line(error)}") from None
            if self.one_process_command and trainer.world_size > 1:
                raise DragonInputError(
                    f"{self.one_process_command} runs each Trainer in one process; drop --trainer.devices, "
                    "--trainer.num_nodes and --trainer.strategy, which would start several"
                )
        if self.stage not in (None, "predict"):
            self.datamodule.prepare_data()
        if self.stage != "predict":  # every callback costs a little on every step
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, PredictionWriter)]
        for callback in list(trainer.callbacks):
            if isinstance(callback, ResumableCheckpoint):  # after it: trainer.checkpoint_callback stays the ranking one
                trainer.callbacks.extend(callback.resume_points)
        return trainer

    def _check_inputs(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.checkpoint is not None:
            path = config.ckpt_path
            check_checkpoint_fits(self.checkpoint, path, self.model, self.datamodule.task)
            if self.stage == "fit":
                check_resumable(self.checkpoint, path, dict(self.datamodule.hparams))
        check_trainer_options(config.trainer)
        if self.stage == "fit":
            check_optimization_options(config.trainer, self.model)
            built = self.config_init[self.subcommand] if self.subcommand else self.config_init
            callbacks = [built.get("checkpoint"), *callback_list(built.trainer.get("callbacks"))]
            check_monitors(callbacks, self.model, self.datamodule.validates)
        if self.stage == "validate" and not self.datamodule.validates:
            raise DragonInputError("validate: --data.val_fraction 0 holds no validation rows; set it above 0, or use test")
        assert self.stage is not None  # a subcommand is running
        writes_table = self.stage != "predict" and self.datamodule.csv_path is None
        check_output_locations(config, self.stage, writes_generated_table=writes_table)
        self.datamodule.setup(self.stage)
        if self.checkpoint is not None and self.stage != "predict":
            check_same_rows(self.checkpoint, config.ckpt_path, self.datamodule, self.stage)
        self.checkpoint = None  # only its verdict was needed; Lightning loads the file itself

    def before_fit(self) -> None:
        """Say, should the run be stopped, how it goes on: from its own ``last.ckpt`` once it has written
        one (before that, ``--ckpt_path last`` would take an earlier run's)."""
        if self.announce:
            writers = [c for c in self.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.filename == LAST]
            CONTINUES_IN.set(lambda: continue_from(writers))

    def after_fit(self) -> None:
        """Say where the run went, then test the weights it kept (the best checkpoint, else the last)."""
        self.stop_if_terminated()
        log_dir = self.trainer.log_dir  # a collective call under DDP: every process asks
        if self.announce and self.trainer.is_global_zero and log_dir:
            print(f"run folder: {Path(log_dir)}", flush=True)
        if self.announce and self.trainer.is_global_zero and (stopped := early_stop(self.trainer)):
            print(stopped, flush=True)
        if not (self.config[self.subcommand] if self.subcommand else self.config).get("test_after_fit"):
            self.show_pictures()
            return
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        self.tested_checkpoint = str(Path(best)) if best else ""  # named as the other lines name paths: no leading ./
        if self.announce and self.trainer.is_global_zero:
            print(f"testing {self.tested_checkpoint or 'the final weights'}", flush=True)
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=self.tested_checkpoint or None)
        self.after_test()

    def after_test(self) -> None:
        self.stop_if_terminated()
        self.show_pictures()

    def show_pictures(self) -> None:
        """Say where the run's pictures went (``figures/`` in its folder, or ``--figures.save_dir``)."""
        figures = (self.config_init[self.subcommand] if self.subcommand else self.config_init).get("figures")
        drawn = isinstance(figures, TutorialFigures) and figures.drawing(self.trainer) and figures.figure_dir.is_dir()
        if self.announce and drawn:
            print(f"pictures: {figures.figure_dir}", flush=True)

    def stop_if_terminated(self) -> None:
        """End the command where its Trainer received SIGTERM. Lightning's loops act on one only before
        their last step; one that arrives later (in a stage's last hooks, while the pictures are finished
        or the predictions written) would be forgotten, and the command would go on and exit 0."""
        if self.trainer.received_sigterm:
            raise SIGTERMException

    after_validate = after_predict = stop_if_terminated


def continue_from(writers: Sequence[ModelCheckpoint]) -> str:
    """How a stopped ``fit`` goes on: with the ``last.ckpt`` its ``writers`` wrote in this run's folder
    (none yet: nothing to go on from)."""
    for writer in writers:
        if writer.best_model_path and writer.dirpath is not None:
            saved = Path(writer.best_model_path)
            if saved.parent == Path(writer.dirpath) and saved.is_file():
                return f"continue with the same command and --ckpt_path {saved}"
    return ""


def check_sections(config: Namespace, default: Namespace) -> None:
    """A section of options (``trainer``, ``data``...) must be a mapping of them: jsonargparse takes
    ``trainer: 0`` or ``data: null`` in a config as the section's value (and an option given after it, such as
    ``--trainer.max_epochs 5``, as the whole section), and the run would meet it as a traceback."""
    for name, section in vars(default).items():
        value = config.get(name)
        if isinstance(section, Namespace) and (
            not isinstance(value, Namespace) or not vars(section).keys() <= vars(value).keys()
        ):
            given = "" if isinstance(value, Namespace) else f", got {'null' if value is None else repr(value)}"
            raise DragonInputError(f"--{name}: a config gave it one value, not a mapping of its options ({name}: {{...}}){given}")


def early_stop(trainer: Trainer) -> str | None:
    """A line saying that, and why, a run ended before ``max_epochs`` (Lightning says so only for
    ``max_epochs`` and ``max_steps``); ``None`` when it did not."""
    epochs, most = trainer.current_epoch, trainer.max_epochs
    if trainer.interrupted or not trainer.should_stop or most is None or most < 0 or epochs >= most:
        return None
    stopping = [callback for callback in trainer.early_stopping_callbacks if callback.stopped_epoch]
    reason = (
        f"EarlyStopping: {stopping[0].monitor} did not improve in {stopping[0].patience} checks"
        if stopping
        else "the model's own rule (the perceptron's tol: its weights moved less than that in an epoch)"
    )
    return f"stopped early after {epochs} of {most} epochs: {reason}"


class FitSetupCLI(DragonCLI):
    """``fit``'s set-up and checks (Trainer, model, data split), without running ``fit``: for commands
    that build on a config (``lr_find``, ``cv``, ``sweep``). Build it with ``run=False``."""

    @property
    def stage(self) -> str:
        return "fit"

    @property
    def one_process_command(self) -> str:
        """These commands run their Trainers one after another (``sweep --workers`` runs trials side by side)."""
        return self.parser.prog


def checkpoint_filename(monitor: str | None) -> str:
    """A best checkpoint's name: its epoch and the monitored metric (``epoch007-val_loss0.3121.ckpt``)."""
    if not monitor:
        return "epoch{epoch:03d}"
    return f"epoch{{epoch:03d}}-{monitor.replace('/', '_')}{{{monitor}:.4f}}"


def resolve_logger(trainer: Namespace) -> None:
    """Give the Trainer config a logger under ``default_root_dir``: TensorBoard when none is named."""
    if trainer.logger in (None, True):
        trainer.logger = Namespace(class_path=TENSORBOARD_LOGGER, init_args=Namespace(save_dir=ROOT_DIR, default_hp_metric=False))
    loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    for logger in loggers:
        if isinstance(logger, Namespace) and logger.get("init_args") and logger.init_args.get("save_dir") == ROOT_DIR:
            logger.init_args.save_dir = trainer.default_root_dir or "."


def logged_runs(trainer: Namespace) -> tuple[Path, str | None]:
    """Where the Trainer's first logger, which the checkpoints follow, puts its run folders, as Lightning
    names them: ``save_dir/name`` (``lightning_logs`` unless the logger names another), with the run
    folder the logger names itself (its ``version``), if any."""
    root = Path(trainer.default_root_dir or ".")
    loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    options = loggers[0].get("init_args") if loggers and isinstance(loggers[0], Namespace) else None
    if not options:
        return root / RUNS, None
    save_dir = root if options.get("save_dir") in (None, ROOT_DIR) else Path(options.save_dir)
    version = options.get("version")
    folder = None if version is None else version if isinstance(version, str) else f"version_{version}"
    return save_dir / (options.get("name", RUNS.name) or ""), folder


def _import(class_path: str) -> type:
    module, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


PROGRESS_BAR_REFRESH_STEPS = 10


def callback_list(callbacks: Sequence[Callback] | Callback | None) -> list[Callback]:
    """The Trainer's ``callbacks`` as a list: it takes one alone too (``--trainer.callbacks BatchSizeFinder``)."""
    return [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])


def default_callbacks(trainer: Namespace) -> list[Callback]:
    """What a run gets unless its config has its own: a progress bar that redraws every few steps
    (redrawing after every step of a small model costs a tenth of the step) and names the run's version
    whole, and the learning rate
    logged each epoch (``lr-Adam``) when there is a logger (Lightning's monitor refuses to run without
    one). Added to the Trainer, not the config: ``config.yaml`` keeps what the user chose."""
    configured = callback_list(trainer.get("callbacks"))
    defaults: list[Callback] = []
    if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in configured):
        defaults.append(RunProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_STEPS))
    if trainer.get("logger") not in (False, []) and not any(isinstance(c, LearningRateMonitor) for c in configured):
        defaults.append(LearningRateMonitor(logging_interval="epoch"))
    return [*configured, *defaults]


def evaluated_model(model: Namespace, default: Namespace, trained: type) -> Namespace:
    """The model section an evaluation command runs: the checkpoint's class (with the config's decision
    options) where the config leaves the model at its ``default`` but for those, or where the
    checkpoint holds a fold ensemble, which validates, tests and predicts under the config its members
    were trained with; else the config's, which the checkpoint must then match."""

    def learned(section: Namespace) -> dict:
        options = (section.get("init_args") or Namespace()).as_dict()
        return {name: value for name, value in options.items() if name not in DECISION_HYPERPARAMETERS}

    if trained is not FoldEnsemble and (model.class_path, learned(model)) != (default.class_path, learned(default)):
        return model
    init_args = model.get("init_args") or Namespace()
    kept = {name: init_args[name] for name in DECISION_HYPERPARAMETERS if name in init_args}
    return Namespace(class_path=class_path(trained), init_args=Namespace(**kept))


def trained_draw(checkpoint: dict, path: str, data: Namespace, default: Namespace, command: str) -> dict[str, Any]:
    """The checkpoint's values of the options that decide its rows (``SPLIT_OPTIONS``, as resuming
    checks them) that ``data`` leaves at their ``default``. Its CSV is never read because the checkpoint names it: a model trained on a CSV is
    validated and tested on it only where the command names it."""
    trained = checkpoint.get("datamodule_hyper_parameters") or {}
    if command != "predict" and trained.get("csv_path") and data.get("csv_path") is None:
        raise DragonInputError(
            f"{path}: was trained on the rows of {named(trained['csv_path'], None)}; name them with --data.csv_path "
            "(or give the run's config.yaml with --config)"
        )
    return {
        name: trained[name]
        for name in SPLIT_OPTIONS
        if name != "csv_path" and name in trained and data.get(name) == default.get(name)
    }


def build_cli(
    args: Sequence[str] | Mapping[str, Any],
    run: bool = True,
    cli_class: type[DragonCLI] = DragonCLI,
    prog: str | None = None,
    callbacks: Sequence[Callback] = (),
    description: str = DESCRIPTION,
) -> DragonCLI:
    """The dragon-lightning LightningCLI over ``args``: command-line words, or settings as a config
    file holds them (``{"fit": {...}}`` when ``run``: keyed by the subcommand); ``prog`` names
    the command in ``--help``; ``callbacks`` join the configured ones (objects that a config cannot
    name, such as a search trial's pruning callback)."""
    with warnings.catch_warnings():
        # build_cli(args) from Python (tests, notebooks, a search's runs) while sys.argv holds the caller's own.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return cli_class(
            DragonClassifier,
            DragonDataModule,
            trainer_class=DragonTrainer,
            subclass_mode_model=True,
            # Lightning's default (true) seeds with 0 and warns "No seed found", or with the seed an earlier
            # run in the same process left in PL_GLOBAL_SEED (a notebook's previous cell): 0, said.
            seed_everything_default=0,
            trainer_defaults={"callbacks": [HyperparametersWithMetrics(), *callbacks]},
            save_config_callback=RunConfig,
            parser_kwargs={"description": description, "exit_on_error": False, "prog": prog or PROG, "allow_abbrev": False},
            auto_configure_optimizers=False,
            args=list(args) if isinstance(args, Sequence) else dict(args),
            run=run,
        )
