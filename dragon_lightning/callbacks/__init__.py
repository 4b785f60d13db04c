"""Callbacks the CLI adds to every run: checkpoints, figures, prediction CSVs and the HPARAMS summary."""

from dragon_lightning.callbacks.checkpointing import ResumableCheckpoint
from dragon_lightning.callbacks.figures import TutorialFigures
from dragon_lightning.callbacks.hparams import HyperparametersWithMetrics
from dragon_lightning.callbacks.predictions import PredictionWriter
from dragon_lightning.callbacks.run_config import RunConfig

__all__ = ["HyperparametersWithMetrics", "PredictionWriter", "ResumableCheckpoint", "RunConfig", "TutorialFigures"]
