"""``TutorialFigures``: the tutorial's pictures in TensorBoard, beside the curves."""

from __future__ import annotations

import math
from typing import Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from dragon_lightning.callbacks import plots
from dragon_lightning.models import LinearClassifier


class TutorialFigures(Callback):
    """Draws, on rank 0 and only for a TensorBoard logger:

    - ``figures/truth_vs_predictions``: the test set by true and by predicted class, side by side;
    - ``figures/decision_regions``: the model's regions and boundaries over the test set;
    - ``figures/confusion_matrix``: test counts per true and predicted class;
    - ``figures/boundary_over_training``: the regions over the training set during training, an
      image series for TensorBoard's step slider (the tutorial's redrawn perceptron boundary).

    All axes are in the original units, also when the model sees standardized features.
    """

    def __init__(
        self, enabled: bool = True, boundary_every_n_epochs: Optional[int] = None, max_boundary_images: int = 60
    ) -> None:
        """
        Args:
            enabled: draw the figures (off: ``--figures.enabled false``).
            boundary_every_n_epochs: epochs between boundary snapshots while training. Unset: every
                epoch for linear models, every 40 for others.
            max_boundary_images: at most this many snapshots per run (spaced further apart on long runs).
        """
        self.enabled = enabled
        self.boundary_every_n_epochs = boundary_every_n_epochs
        self.max_boundary_images = max_boundary_images
        self._training_regions: Optional[plots.DecisionRegions] = None

    def _experiment(self, trainer: L.Trainer):
        if not self.enabled or not trainer.is_global_zero or not isinstance(trainer.logger, TensorBoardLogger):
            return None
        if trainer.datamodule is None or not getattr(trainer.datamodule, "splits", None):
            return None
        return trainer.logger.experiment

    @staticmethod
    def _is_linear(pl_module: L.LightningModule) -> bool:
        return isinstance(pl_module, LinearClassifier)

    def _snapshot_interval(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        every = self.boundary_every_n_epochs
        if every is None:
            every = 1 if self._is_linear(pl_module) else 40
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else every
        return max(every, math.ceil(max_epochs / self.max_boundary_images))

    @torch.no_grad()
    def _logits_on(self, trainer: L.Trainer, pl_module: L.LightningModule, points: np.ndarray) -> np.ndarray:
        """The model's logits for raw-feature ``points``, through the data's fitted transform."""
        was_training = pl_module.training
        pl_module.eval()
        features = trainer.datamodule.transform(torch.as_tensor(points, dtype=torch.float32))
        logits = pl_module(features.to(device=pl_module.device, dtype=pl_module.dtype))
        pl_module.train(was_training)
        return logits.float().cpu().numpy()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        experiment = self._experiment(trainer)
        epoch = trainer.current_epoch
        last = trainer.should_stop or (trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs)
        if experiment is None or (epoch + 1) % self._snapshot_interval(trainer, pl_module) and not last:
            return
        if self._training_regions is None:
            features, labels = (t.numpy() for t in trainer.datamodule.splits["train"])
            self._training_regions = plots.DecisionRegions(features, labels, pl_module.class_names, grid_size=80)
        regions = self._training_regions
        logits = self._logits_on(trainer, pl_module, regions.points)
        image = regions.draw(logits, f"training set after epoch {epoch}", boundary_lines=self._is_linear(pl_module))
        experiment.add_image("figures/boundary_over_training", image, epoch, dataformats="HWC")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._training_regions = None

    def _test_regions(self, trainer: L.Trainer, pl_module: L.LightningModule, features, labels) -> np.ndarray:
        regions = plots.DecisionRegions(features, labels, pl_module.class_names)
        logits = self._logits_on(trainer, pl_module, regions.points)
        return regions.draw(logits, "test set: predicted regions and boundaries", boundary_lines=True)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        experiment = self._experiment(trainer)
        if experiment is None:
            return
        features, labels = (t.numpy() for t in trainer.datamodule.splits["test"])
        predicted = plots.predicted_regions(self._logits_on(trainer, pl_module, features))
        names, step = pl_module.class_names, trainer.current_epoch
        accuracy = float((predicted == labels).mean())
        images = {
            "figures/truth_vs_predictions": plots.truth_and_predictions(features, labels, predicted, names, accuracy),
            "figures/decision_regions": self._test_regions(trainer, pl_module, features, labels),
            "figures/confusion_matrix": plots.confusion_matrix(labels, predicted, names),
        }
        for tag, image in images.items():
            experiment.add_image(tag, image, step, dataformats="HWC")
