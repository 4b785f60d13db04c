"""The ``dragon-lightning`` command: LightningCLI over the dragon data and models.

``fit`` trains, then tests the best checkpoint (``--test_after_fit false`` skips that); ``validate``,
``test`` and ``predict`` take ``--ckpt_path``. Bad input ends the run with one line on stderr and
exit status 2, before anything is written.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from dragon_lightning.callbacks import HyperparametersWithMetrics, PredictionWriter
from dragon_lightning.data import DragonDataModule
from dragon_lightning.errors import DragonInputError
from dragon_lightning.models import DragonClassifier

DESCRIPTION = (
    "Train, validate, test and predict dragon classifiers (the tutorial's perceptron, logistic "
    "regression and MLP) with PyTorch Lightning. Start from a config in configs/, e.g. "
    "'dragon-lightning fit --config configs/color_mlp.yaml'."
)


class DragonCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("num_features", "num_classes", "class_names"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:03d}-val_acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="fit only: test the best checkpoint when training ends, as the tutorial reports test accuracy",
        )

    def before_instantiate_classes(self) -> None:
        """Default to a TensorBoard logger under ``default_root_dir`` with an HPARAMS-ready setup."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.trainer.logger in (None, True):
            config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.TensorBoardLogger",
                init_args=Namespace(save_dir=config.trainer.default_root_dir or ".", default_hp_metric=False),
            )

    def instantiate_trainer(self, **kwargs):
        """Read and check every input first: bad input then fails before the Trainer prints or writes."""
        if self.subcommand is not None:
            self.datamodule.setup(self.subcommand)
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        if not self._get(self.config, "test_after_fit"):
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def cli_main(args: Optional[list[str]] = None) -> DragonCLI:
    """Run the CLI; ``args`` replaces ``sys.argv[1:]`` (for tests)."""
    # The seed is recorded in the run's config.yaml; its log line would stand before any error message.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    try:
        return DragonCLI(
            DragonClassifier,
            DragonDataModule,
            subclass_mode_model=True,
            trainer_defaults={"callbacks": [HyperparametersWithMetrics()]},
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"description": DESCRIPTION},
            auto_configure_optimizers=False,
            args=args,
        )
    except DragonInputError as error:
        print(f"dragon-lightning: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
