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
from dragon_lightning.models import LogisticRegression, Perceptron


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
        self,
        enabled: bool = True,
        boundary_every_n_epochs: Optional[int] = None,
        max_boundary_images: int = 60,
        max_points: int = 2000,
    ) -> None:
        """
        Args:
            enabled: draw the figures (off: ``--figures.enabled false``).
            boundary_every_n_epochs: epochs between boundary snapshots while training. Unset: every
                epoch for linear models, every 60 for others.
            max_boundary_images: at most this many snapshots per run (spaced further apart on long runs).
            max_points: dragons drawn in a scatter plot; larger sets show a random sample of this
                size (the confusion matrix always counts every test dragon).
        """
        self.enabled = enabled
        self.boundary_every_n_epochs = boundary_every_n_epochs
        self.max_boundary_images = max_boundary_images
        self.max_points = max_points
        self._training_regions: Optional[plots.DecisionRegions] = None
        self._test_counts: Optional[torch.Tensor] = None
        self._test_sample: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._test_sampled = 0

    def _experiment(self, trainer: L.Trainer):
        """The TensorBoard writer where this process draws (rank 0, data set up), else ``None``."""
        if not self._drawing(trainer) or not trainer.is_global_zero or not getattr(trainer.datamodule, "splits", None):
            return None
        return trainer.logger.experiment

    @staticmethod
    def _is_linear(pl_module: L.LightningModule) -> bool:
        return isinstance(pl_module, (LogisticRegression, Perceptron))

    def _snapshot_interval(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        every = self.boundary_every_n_epochs
        if every is None:
            every = 1 if self._is_linear(pl_module) else 60
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
            # Split rows are in random order, so the first rows are a random sample.
            features, labels = (t[: self.max_points].numpy() for t in trainer.datamodule.splits["train"])
            self._training_regions = plots.DecisionRegions(features, labels, pl_module.class_names, grid_size=80)
        regions = self._training_regions
        logits = self._logits_on(trainer, pl_module, regions.points)
        image = regions.draw(logits, f"training set after epoch {epoch}", boundary_lines=self._is_linear(pl_module))
        experiment.add_image("figures/boundary_over_training", image, epoch, dataformats="HWC")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._training_regions = None

    def _drawing(self, trainer: L.Trainer) -> bool:
        """The same answer on every rank, so that all of them join the collective sum of the counts."""
        return self.enabled and isinstance(trainer.logger, TensorBoardLogger) and trainer.datamodule is not None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = pl_module.num_classes
        self._test_counts = torch.zeros(n * n, dtype=torch.long, device=pl_module.device)
        self._test_sample, self._test_sampled = [], 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        """Count every test dragon into the confusion matrix; keep the first ones for scatter plots."""
        if not self._drawing(trainer) or outputs is None:
            return
        features, labels = batch
        self._test_counts += torch.bincount(labels * pl_module.num_classes + outputs, minlength=len(self._test_counts))
        if trainer.is_global_zero and self._test_sampled < self.max_points:
            rows = slice(0, self.max_points - self._test_sampled)
            raw = trainer.datamodule.untransform(features[rows].float())
            self._test_sample.append((raw.cpu(), labels[rows].cpu(), outputs[rows].cpu()))
            self._test_sampled += len(self._test_sample[-1][1])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._drawing(trainer) and self._test_counts is not None:
            self._test_counts = trainer.strategy.reduce(self._test_counts, reduce_op="sum")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        experiment = self._experiment(trainer)
        if experiment is None or not self._test_sample:
            return
        names, n = pl_module.class_names, pl_module.num_classes
        counts = self._test_counts.cpu().numpy().reshape(n, n)
        features, labels, predicted = (torch.cat(parts).numpy() for parts in zip(*self._test_sample))
        shown = f"{len(labels):,} of {counts.sum():,} test dragons" if len(labels) < counts.sum() else "test set"
        caption = f"{shown}; accuracy {counts.trace() / counts.sum():.3f}"
        regions = plots.DecisionRegions(features, labels, names)
        boundaries = regions.draw(self._logits_on(trainer, pl_module, regions.points), caption, boundary_lines=True)
        images = {
            "figures/truth_vs_predictions": plots.truth_and_predictions(features, labels, predicted, names, caption),
            "figures/decision_regions": boundaries,
            "figures/confusion_matrix": plots.confusion_matrix(counts, names),
        }
        for tag, image in images.items():
            experiment.add_image(tag, image, trainer.current_epoch, dataformats="HWC")
        self._test_sample = []
