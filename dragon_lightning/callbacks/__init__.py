"""Callbacks the CLI adds to every run: prediction CSVs and the HPARAMS summary."""

from dragon_lightning.callbacks.hparams import HyperparametersWithMetrics
from dragon_lightning.callbacks.predictions import PredictionWriter

__all__ = ["HyperparametersWithMetrics", "PredictionWriter"]
