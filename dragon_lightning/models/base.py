"""What every dragon classifier shares: outputs, loss, metrics per stage, and prediction.

A binary task has one output (the logit of the positive class, predicted when above 0); a
multiclass task has one output per class (predicted by argmax, the first on ties). Losses work on
logits: the tutorial's ``log(softmax(...))`` underflows to ``-inf`` on raw features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from dragon_lightning.errors import TrainingDiverged
from dragon_lightning.models.metrics import accuracy_collection, test_collection

STAGES = ("train", "val", "test")


class DragonClassifier(L.LightningModule):
    """Base class: subclasses build the network in ``forward`` and may replace ``loss``."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        class_names: Optional[Sequence[str]],
        minibatches_per_step: int = 1,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if minibatches_per_step < 1:
            raise ValueError(f"minibatches_per_step must be at least 1, got {minibatches_per_step}")
        self.minibatches_per_step = minibatches_per_step
        # Lightning's automatic optimization makes one step per training_step; a group needs one per minibatch.
        self.automatic_optimization = minibatches_per_step == 1
        self.num_features = num_features
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class_names given for {num_classes} classes")
        self.metrics = torch.nn.ModuleDict(
            {
                "train_metrics": accuracy_collection(num_classes).clone(prefix="train/"),
                "val_metrics": accuracy_collection(num_classes).clone(prefix="val/"),
                "test_metrics": test_collection(num_classes, self.class_names).clone(prefix="test/"),
            }
        )
        # "disable": no NaN check (a host sync) per update; divergence is watched separately.
        self.losses = torch.nn.ModuleDict({f"{stage}_loss": MeanMetric(nan_strategy="disable") for stage in STAGES})
        self._first_nonfinite_batch = torch.tensor(-1)

    @property
    def num_outputs(self) -> int:
        return 1 if self.num_classes == 2 else self.num_classes

    @property
    def has_optimizer(self) -> bool:
        """False for a model that updates its weights by its own rule, without gradients."""
        return True

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype))
        return F.cross_entropy(logits, labels)

    def predict_classes(self, logits: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return (logits[:, 0] > 0).long()
        return logits.argmax(dim=1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        if self.binary:
            positive = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - positive, positive], dim=1)
        return logits.softmax(dim=1)

    def _shared_step(self, batch: Sequence[torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of a batch; the stage's loss and metrics accumulate on the way."""
        features, labels = batch
        logits = self(features)
        loss = self.loss(logits, labels)
        self.update_metrics(stage, self.predict_classes(logits.detach()), labels, loss.detach(), len(labels))
        return loss, logits

    def update_metrics(
        self, stage: str, predicted: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor, rows: int | list[int]
    ) -> None:
        """Accumulate a batch, or a group of minibatches (their losses weighted by their rows); nothing
        leaves the device until the epoch ends."""
        self.losses[f"{stage}_loss"].update(loss, weight=rows)
        self.metrics[f"{stage}_metrics"].update(predicted, labels)

    def watch_divergence(self, losses: torch.Tensor, first_batch: int) -> None:
        """Remember the epoch's first minibatch with a NaN or infinite loss, without a host sync per step.

        ``losses`` holds consecutive minibatches' losses, the first of them minibatch ``first_batch``.
        """
        nonfinite = ~torch.isfinite(losses.detach().reshape(-1))
        offending = torch.where(nonfinite.any(), first_batch + nonfinite.int().argmax(), -1)
        known = self._first_nonfinite_batch.to(losses.device)
        self._first_nonfinite_batch = torch.where(known < 0, offending, known)

    def _stop_if_diverged(self) -> None:
        """Raise before anything (validation, a checkpoint) uses weights from a diverged step."""
        batch = int(self._first_nonfinite_batch)
        if batch >= 0:
            raise TrainingDiverged(
                f"training diverged: the loss became NaN or infinite at epoch {self.current_epoch}, batch {batch}; "
                "no checkpoint was saved from that point on. Lower the learning rate and run again"
            )

    def on_train_epoch_start(self) -> None:
        self._first_nonfinite_batch = torch.tensor(-1, device=self.device)

    def on_validation_start(self) -> None:
        if self.trainer.training:
            self._stop_if_diverged()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._stop_if_diverged()

    def _log_epoch(self, stage: str) -> None:
        """Log the epoch's loss and metrics, synced across processes by torchmetrics, then reset them."""
        metrics = self.metrics[f"{stage}_metrics"]
        values = {f"{stage}/loss": self.losses[f"{stage}_loss"].compute(), **metrics.compute()}
        # Already identical on every rank; sync_dist only averages equal values (and tells Lightning so).
        self.log_dict(values, prog_bar=stage != "test", sync_dist=True)
        self.losses[f"{stage}_loss"].reset()
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._stop_if_diverged()
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def training_step(self, batch, batch_idx: int) -> Optional[torch.Tensor]:
        """One update per minibatch: Lightning's automatic optimization for a single minibatch, or
        :meth:`update_on` for each minibatch of a group (and for models that update themselves)."""
        if self.automatic_optimization:
            loss, _ = self._shared_step(batch, "train")
            self.watch_divergence(loss, batch_idx)
            return loss
        minibatches = batch if self.minibatches_per_step > 1 else [batch]
        self._train_on_group(minibatches, first_batch=batch_idx * self.minibatches_per_step)
        return None

    def _train_on_group(self, minibatches: Sequence[Sequence[torch.Tensor]], first_batch: int) -> None:
        """:meth:`update_on` each minibatch in order, then accumulate the group's training metrics."""
        max_steps = self.trainer.max_steps
        if max_steps >= 0:  # Lightning checks max_steps only between training steps
            minibatches = minibatches[: max(max_steps - self.trainer.global_step, 0)]
        # Filled in place: a small tensor per minibatch kept alive across the group would sit between
        # the large short-lived activations and fragment the heap (hundreds of MB at batch size 4096).
        sizes = [len(labels) for _, labels in minibatches]
        predicted = torch.empty(sum(sizes), dtype=torch.long, device=self.device)
        losses = torch.empty(len(minibatches), device=self.device)
        rows = 0
        for step, (features, labels) in enumerate(minibatches):
            logits, losses[step] = self.update_on((features, labels))
            predicted[rows : rows + len(labels)] = self.predict_classes(logits)
            rows += len(labels)
        labels = torch.cat([labels for _, labels in minibatches])
        self.update_metrics("train", predicted, labels, losses, sizes)
        self.watch_divergence(losses, first_batch)

    def update_on(self, minibatch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One manual optimizer step on a minibatch; returns its logits and loss from before the step.

        ``manual_backward`` and the wrapped optimizer keep what automatic optimization gives: DDP
        gradient sync, precision scaling, the backward and optimizer hooks, ``global_step``.
        """
        features, labels = minibatch
        optimizer = self.optimizers()
        evaluations = []

        def closure() -> torch.Tensor:  # optimizers such as L-BFGS evaluate it several times
            optimizer.zero_grad()
            logits = self(features)
            loss = self.loss(logits, labels)
            self.manual_backward(loss)
            evaluations.append((logits.detach(), loss.detach()))
            return loss

        optimizer.step(closure=closure)
        return evaluations[0]

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Returns the predicted classes, for callbacks that look at the test set (the figures)."""
        _, logits = self._shared_step(batch, "test")
        return self.predict_classes(logits)

    def predict_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Class probabilities (one column per class) and the predicted class index."""
        logits = self(batch[0])
        return {"probabilities": self.probabilities(logits), "predicted": self.predict_classes(logits)}
