"""The metrics every model logs, built once per task and cloned per stage.

``acc`` is plain (micro) accuracy, the figure the tutorial reports. For ``fire`` the test stage adds
the tutorial's detection rate (recall of fire) and false positive rate; for ``color`` it adds
balanced accuracy (macro recall) and each class's recall. ``fire`` also logs ``test/auroc``, which
scores the probabilities themselves and so does not depend on the decision threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import ClasswiseWrapper, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryRecall,
    BinarySpecificity,
    MulticlassAccuracy,
    MulticlassRecall,
)


class BinaryFalsePositiveRate(BinarySpecificity):
    """Share of true negatives predicted positive: ``1 - specificity``."""

    def compute(self) -> torch.Tensor:
        return 1 - super().compute()


def accuracy_collection(num_classes: int) -> MetricCollection:
    """Micro accuracy on hard class predictions; ``validate_args=False`` avoids a host sync per step."""
    if num_classes == 2:
        return MetricCollection({"acc": BinaryAccuracy(validate_args=False)})
    return MetricCollection({"acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False)})


def test_collection(num_classes: int, class_names: Sequence[str]) -> MetricCollection:
    """Accuracy plus the task's extra test metrics."""
    metrics = accuracy_collection(num_classes)
    if num_classes == 2:
        metrics.add_metrics(
            {
                "detection_rate": BinaryRecall(validate_args=False),
                "false_positive_rate": BinaryFalsePositiveRate(validate_args=False),
            }
        )
    else:
        metrics.add_metrics(
            {
                "balanced_acc": MulticlassAccuracy(num_classes, average="macro", validate_args=False),
                "recall": ClasswiseWrapper(
                    MulticlassRecall(num_classes, average=None, validate_args=False),
                    labels=list(class_names),
                    prefix="recall_",
                ),
            }
        )
    return metrics


def score_collection(num_classes: int) -> MetricCollection:
    """Metrics of the predicted probability rather than the decision: for ``fire``, the area under the
    ROC curve (exact, every score kept until the epoch ends); none for ``color``."""
    return MetricCollection({"auroc": BinaryAUROC()} if num_classes == 2 else {})


class TrainingTally:
    """A training epoch's loss, rows predicted right and rows, batch by batch. A step only appends its
    tensors: summing them on the device every step cost a small model a tenth of its step. ``settle``
    sums what is pending when validation, a checkpoint or the epoch's end needs it, or every
    :attr:`most_pending` batches so that a long epoch's memory stays bounded (one host sync each)."""

    most_pending = 1024

    def __init__(self) -> None:
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor, int]] = []
        self.loss_sum: torch.Tensor | float = 0.0
        self.right: torch.Tensor | float = 0.0
        self.rows = 0
        self.first_nonfinite_batch: int | None = None
        self.last_batch = -1

    def add(self, batch: int, loss: torch.Tensor, right: torch.Tensor, rows: int) -> None:
        """Count a batch at its first evaluation only: a closure optimizer (L-BFGS) evaluates it again."""
        if batch != self.last_batch:
            self.last_batch = batch
            self.pending.append((batch, loss, right, rows))
            if len(self.pending) >= self.most_pending:
                self.settle()

    def settle(self) -> int | None:
        """Sum the pending batches; returns the first batch whose loss was NaN or infinite, if any."""
        if self.pending:
            batches, losses, right, rows = zip(*self.pending)
            self.pending = []
            loss = torch.stack(losses)
            finite = torch.isfinite(loss)
            if self.first_nonfinite_batch is None and not bool(finite.all()):
                self.first_nonfinite_batch = batches[int((~finite).nonzero()[0])]
            self.loss_sum = self.loss_sum + (loss * torch.tensor(rows, dtype=loss.dtype, device=loss.device)).sum()
            self.right = self.right + torch.stack(right).sum()
            self.rows += sum(rows)
        return self.first_nonfinite_batch
