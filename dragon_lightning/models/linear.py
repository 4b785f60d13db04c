"""The tutorial's two linear models: ``Perceptron`` (its hand-written rule) and ``LogisticRegression``.

Both are one linear unit (binary) or one unit per class, starting from zero weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jsonargparse.typing import NonNegativeFloat, PositiveFloat
from torch import nn

from dragon_lightning.errors import InvalidArgument
from dragon_lightning.models.base import DragonClassifier, OptimizedClassifier


def _zero_linear(num_features: int, num_outputs: int) -> nn.Linear:
    linear = nn.Linear(num_features, num_outputs)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


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


class OnlineRule(torch.optim.Optimizer):
    """The online perceptron's optimizer: its step is the rule's pass over a batch, handed in as the
    closure, at the learning rate of its parameter group. Being an optimizer makes the pass a step
    that Lightning counts, and its rate one that a scheduler sets and a learning-rate monitor reads."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    def step(self, closure) -> None:  # type: ignore[override]
        closure()


class Perceptron(DragonClassifier):
    """The tutorial's perceptron: the update ``w += lr / (epoch + 1) * (y - y_hat) * x`` on wrongly
    classified rows, and a stop once an epoch's updates move the weights by less than ``tol`` in total
    (the sum of every update's absolute change, so an epoch without mistakes moves them by 0).

    A batch makes one update, the sum of its rows' corrections with the weights at batch start. That
    is plain SGD, with learning rate ``lr`` and a ``LambdaLR`` of ``1 / (epoch + 1)``, on the
    perceptron criterion ``-(e * logits).sum()`` where ``e = onehot(y) - onehot(y_hat)`` is held
    constant: its gradient is exactly the rule's correction. So Lightning's automatic optimization runs
    it, with clipping, accumulation, DDP and the learning-rate monitor. Batch size 1 is the tutorial's
    row-by-row rule.

    ``online: true`` applies the rule row by row inside each batch, exactly as batch size 1 would, in
    numpy at a fraction of the cost per row: the tutorial's 432,000 updates take seconds instead of
    432,000 optimizer steps. It is the one place where the project optimizes manually: each batch's
    pass is one step of :class:`OnlineRule`, so Lightning counts it (its checkpoints and logs follow
    the optimizer steps), and it runs in one process.

    ``threshold`` moves the decision only: the rule always trains on the sign of the activation, as
    the tutorial's does.
    """

    def __init__(self, lr: PositiveFloat = 1.0, tol: NonNegativeFloat | None = 0.1, online: bool = False, **kwargs) -> None:
        """
        Args:
            lr: learning rate of epoch 0; epoch ``e`` uses ``lr / (e + 1)``.
            tol: stop when an epoch's updates add up to less than this (summed absolute weight
                change); unset: run all epochs.
            online: apply the rule row by row inside each batch (single process), exactly as batch
                size 1 would. Off: each batch makes one update, the sum of its rows' corrections.
        """
        super().__init__(**kwargs)
        self.linear = _zero_linear(self.num_features, self.num_outputs)
        self.automatic_optimization = not online
        self._epoch_movement = torch.zeros(())

    @property
    def network(self) -> nn.Module:
        return self.linear

    def _criterion(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per row, ``-(e * logits)``: how far the true class's activation falls short of the
        prediction's (0 when right). Its gradient is the rule's correction."""
        predicted = (logits.detach()[:, 0] > 0).long() if self.binary else logits.detach().argmax(dim=1)
        if self.binary:
            correction = (labels - predicted)[:, None]
        else:
            correction = F.one_hot(labels, self.num_classes) - F.one_hot(predicted, self.num_classes)
        return -(correction.to(logits.dtype) * logits).sum(dim=1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._criterion(logits, labels).mean()

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if self.hparams["online"]:
            self._online_step(batch, batch_idx)
            return None
        features, labels = batch
        logits = self(features)
        rows = self._criterion(logits, labels)
        self.update_metrics("train", self.predict_classes(logits.detach()), labels, rows.detach().mean(), batch_idx)
        # The rule sums its rows' corrections; DDP averages gradients over processes, so scale back up.
        return rows.sum() * self.trainer.world_size

    def configure_optimizers(self):
        lr = self.hparams["lr"]
        optimizer = OnlineRule(self.parameters(), lr) if self.hparams["online"] else torch.optim.SGD(self.parameters(), lr=lr)
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1 / (epoch + 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "epoch"}}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Add this update's size to the epoch's movement (on the device: no host sync per step)."""
        lr = optimizer.param_groups[0]["lr"]
        self._epoch_movement += lr * sum(p.grad.abs().sum() for p in self.parameters() if p.grad is not None)

    def _online_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        if self.trainer.world_size > 1:
            raise InvalidArgument(self, "online", "applies the rule row by row and runs in one process only")
        rule = self.optimizers()
        assert not isinstance(rule, list)
        rule.step(closure=lambda: self._apply_rule(batch, batch_idx, rule.param_groups[0]["lr"]))

    def _apply_rule(self, batch: Sequence[torch.Tensor], batch_idx: int, lr: float) -> None:
        features, labels = batch
        with torch.no_grad():
            logits = self(features)
            self.update_metrics("train", self.predict_classes(logits), labels, self.loss(logits, labels), batch_idx)
            weight = self.linear.weight.detach().cpu().double().numpy()
            bias = self.linear.bias.detach().cpu().double().numpy()
            scaled = self.inputs(features).cpu().double().numpy()
            self._epoch_movement += perceptron_pass(weight, bias, scaled, labels.cpu().numpy(), lr)
            self.linear.weight.copy_(torch.from_numpy(weight))
            self.linear.bias.copy_(torch.from_numpy(bias))

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._epoch_movement = torch.zeros((), dtype=torch.float64, device=self.device)

    def monitorable_metrics(self) -> list[str]:
        return [*super().monitorable_metrics(), "train/weight_change"]

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.hparams["online"]:  # manual optimization: the rate's decay is stepped here, as Lightning asks
            decay = self.lr_schedulers()
            assert decay is not None and not isinstance(decay, list)
            decay.step()
        moved = float(self._epoch_movement)
        self.log("train/weight_change", moved)
        if self.hparams["tol"] is not None and moved < self.hparams["tol"]:
            self.trainer.should_stop = True


class LogisticRegression(OptimizedClassifier):
    """Logistic regression: one linear layer, cross-entropy on its logits (softmax across classes for
    ``color``), minimised by any optimizer (L-BFGS fits it to convergence, as scikit-learn does)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.linear = _zero_linear(self.num_features, self.num_outputs)

    @property
    def network(self) -> nn.Module:
        return self.linear
