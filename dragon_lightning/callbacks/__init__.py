"""Callbacks the CLI adds to every run: figures, prediction CSVs, the run's config, the HPARAMS summary and
the progress bar (its checkpoints: :mod:`dragon_lightning.checkpoints.callback`)."""

from dragon_lightning.callbacks.figures import TutorialFigures
from dragon_lightning.callbacks.hparams import HyperparametersWithMetrics
from dragon_lightning.callbacks.predictions import PredictionWriter
from dragon_lightning.callbacks.progress import RunProgressBar
from dragon_lightning.callbacks.run_config import RunConfig

__all__ = ["HyperparametersWithMetrics", "PredictionWriter", "RunConfig", "RunProgressBar", "TutorialFigures"]
