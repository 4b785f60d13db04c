"""``LinearClassifier``: one linear layer trained by the tutorial's perceptron rule or a logistic loss."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from dragon_lightning.errors import DragonInputError
from dragon_lightning.models.base import DragonClassifier

# The perceptron rule updates its weights itself and has no optimizer by design.
warnings.filterwarnings("ignore", message=r".*`configure_optimizers` returned `None`")


def perceptron_pass(weight: np.ndarray, bias: np.ndarray, features: np.ndarray, labels: np.ndarray, lr: float) -> float:
    """The tutorial's online rule, row by row and in place: ``w += lr * (y - y_hat) * x`` where wrong.

    One output (binary): ``y_hat = 1`` when ``w.x + b > 0``. One output per class: ``y_hat`` is the
    argmax, and the true class's row moves towards ``x`` and the predicted class's row away from it.
    The bias is the weight of a constant input 1. Returns the summed absolute change of all updates.
    """
    binary = weight.shape[0] == 1
    moved = 0.0
    for x, y in zip(features, labels):
        activation = weight @ x + bias
        if binary:
            error = y - int(activation[0] > 0)
            if error:
                weight[0] += lr * error * x
                bias[0] += lr * error
                moved += lr * (np.abs(x).sum() + 1)
        else:
            predicted = int(activation.argmax())
            if predicted != y:
                weight[y] += lr * x
                bias[y] += lr
                weight[predicted] -= lr * x
                bias[predicted] -= lr
                moved += 2 * lr * (np.abs(x).sum() + 1)
    return moved


class LinearClassifier(DragonClassifier):
    """A perceptron-style linear model: one unit (binary) or one unit per class, zero initial weights.

    ``rule: perceptron`` is the tutorial's hand-written perceptron: no gradients, the update
    ``w += lr / (epoch + 1) * (y - y_hat) * x`` on wrongly classified rows, and training stops once
    an epoch's updates move the weights by less than ``tol`` in total (the sum of every update's
    absolute change, so an epoch without mistakes moves them by 0). ``rule: logistic`` is its
    logistic-regression baseline: cross-entropy on the logits, minimised by ``optimizer``.
    """

    def __init__(
        self,
        num_features: int = 2,
        num_classes: int = 2,
        class_names: Optional[Sequence[str]] = None,
        minibatches_per_step: int = 1,
        rule: Literal["perceptron", "logistic"] = "logistic",
        lr: float = 1.0,
        tol: Optional[float] = 0.1,
        online: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
    ) -> None:
        """
        Args:
            num_features: inputs per dragon (linked from the data under the CLI).
            num_classes: classes of the task (linked from the data under the CLI).
            class_names: names for logs and figures (linked from the data under the CLI).
            minibatches_per_step: minibatches per training step (linked from the data under the CLI).
            rule: ``perceptron`` (the tutorial's update rule) or ``logistic`` (gradient descent on
                cross-entropy).
            lr: perceptron only: learning rate of epoch 0; epoch ``e`` uses ``lr / (e + 1)``.
            tol: perceptron only: stop when an epoch's updates add up to less than this (summed
                absolute weight change); unset: run all epochs.
            online: perceptron only: apply the rule row by row inside each batch, exactly as batch
                size 1 would, at a fraction of the cost per row (single process). Off: each batch
                makes one update, the sum of its rows' corrections with the weights at batch start.
            optimizer: logistic only: the optimizer and its settings.
        """
        super().__init__(num_features, num_classes, class_names, minibatches_per_step)
        if lr <= 0:
            raise DragonInputError(f"--model.lr must be positive, got {lr}")
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer = optimizer
        self.linear = nn.Linear(num_features, self.num_outputs)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        if rule == "perceptron":
            self.automatic_optimization = False
        self._epoch_movement = 0.0

    @property
    def perceptron(self) -> bool:
        return self.hparams.rule == "perceptron"

    @property
    def has_optimizer(self) -> bool:
        return not self.perceptron

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy for ``logistic``; for ``perceptron`` the criterion its rule descends:
        how far the true class's activation falls short of the winning one (0 when right)."""
        if not self.perceptron:
            return super().loss(logits, labels)
        if self.binary:
            return F.relu(-(2 * labels - 1) * logits[:, 0]).mean()
        return (logits.max(dim=1).values - logits.gather(1, labels[:, None])[:, 0]).mean()

    def configure_optimizers(self) -> Optional[torch.optim.Optimizer]:
        return None if self.perceptron else self.optimizer(self.parameters())

    def update_on(self, minibatch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.perceptron:
            return super().update_on(minibatch)
        features, labels = minibatch
        with torch.no_grad():
            logits = self(features)
            loss = self.loss(logits, labels)
            lr = self.hparams.lr / (self.current_epoch + 1)
            if self.hparams.online:
                self._epoch_movement += self._online_update(features, labels, lr)
            else:
                self._epoch_movement += self._batch_update(features, labels, logits, lr)
        return logits, loss

    def _online_update(self, features: torch.Tensor, labels: torch.Tensor, lr: float) -> float:
        if self.trainer.world_size > 1:
            raise DragonInputError("--model.online applies the rule row by row and runs in one process only")
        weight = self.linear.weight.detach().cpu().double().numpy()
        bias = self.linear.bias.detach().cpu().double().numpy()
        moved = perceptron_pass(weight, bias, features.cpu().double().numpy(), labels.cpu().numpy(), lr)
        self.linear.weight.copy_(torch.from_numpy(weight))
        self.linear.bias.copy_(torch.from_numpy(bias))
        return moved

    def _batch_update(self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, lr: float) -> torch.Tensor:
        predicted = self.predict_classes(logits)
        if self.binary:
            error = (labels - predicted)[:, None].to(features.dtype)
        else:
            error = F.one_hot(labels, self.num_classes) - F.one_hot(predicted, self.num_classes)
            error = error.to(features.dtype)
        delta = torch.cat([error.T @ features, error.sum(dim=0)[:, None]], dim=1) * lr
        delta = self.trainer.strategy.reduce(delta, reduce_op="sum")
        self.linear.weight += delta[:, :-1]
        self.linear.bias += delta[:, -1]
        return delta.abs().sum()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._epoch_movement = 0.0

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if not self.perceptron:
            return
        self.log("train/weight_change", self._epoch_movement)
        if self.hparams.tol is not None and self._epoch_movement < self.hparams.tol:
            self.trainer.should_stop = True
