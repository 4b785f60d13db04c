"""``MLPClassifier``: the tutorial's multilayer perceptron, configurable."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from dragon_lightning.errors import InvalidArgument
from dragon_lightning.models.base import INJECTED, DragonClassifier

MAX_PARAMETERS = 25_000_000
"""The most weights a network may have (100 MB in float32, 300 MB with Adam's state): far beyond any
dragon's needs, and refused before a layer is allocated."""
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class MLPClassifier(DragonClassifier):
    """Fully connected layers with one activation, trained with cross-entropy on logits."""

    def __init__(
        self,
        num_features: int = 2,
        num_classes: int = 3,
        class_names: Sequence[str] | None = None,
        hidden_sizes: Sequence[int] = (10, 20, 1000),
        activation: Literal["relu", "leaky_relu", "sigmoid", "tanh"] = "relu",
        dropout: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
        threshold: float = 0.5,
    ) -> None:
        """
        Args:
            num_features: inputs per dragon (linked from the data under the CLI).
            num_classes: classes of the task (linked from the data under the CLI).
            class_names: names for logs and figures (linked from the data under the CLI).
            hidden_sizes: width of each hidden layer; the tutorial's network is 10, 20, 1000.
            activation: nonlinearity after every hidden layer.
            dropout: probability of zeroing a hidden unit while training (0: no dropout).
            optimizer: the optimizer and its settings, e.g. ``torch.optim.Adam`` with ``lr: 2e-4``
                (the tutorial's choice).
            scheduler: a learning-rate scheduler, e.g. ``torch.optim.lr_scheduler.StepLR`` (unset: none).
                ``ReduceLROnPlateau`` follows ``val/loss``.
            compile: ``torch.compile`` the network (needs a C++ compiler; pays off on large batches and
                long runs, see the README's speed section). Checkpoints stay loadable without it.
            threshold: probability of ``fire`` above which a dragon is predicted to breathe fire: the
                operating point of accuracy, detection and false positive rates, predictions and
                figures (two classes only).
        """
        super().__init__(num_features, num_classes, class_names, optimizer, scheduler, threshold)
        if not hidden_sizes or any(size < 1 for size in hidden_sizes):
            raise InvalidArgument(self, "hidden_sizes", f"must be positive layer widths, got {list(hidden_sizes)}")
        widths = [num_features, *hidden_sizes, self.num_outputs]
        parameters = sum((inputs + 1) * outputs for inputs, outputs in itertools.pairwise(widths))
        if parameters > MAX_PARAMETERS:
            raise InvalidArgument(
                self,
                "hidden_sizes",
                f"{list(hidden_sizes)} would need {parameters:,} weights, more than {MAX_PARAMETERS:,}; refused before allocating",
            )
        if not 0.0 <= dropout < 1.0:
            raise InvalidArgument(self, "dropout", f"must lie in [0, 1), got {dropout}")
        self.save_hyperparameters(ignore=list(INJECTED))
        layers: list[nn.Module] = []
        width = num_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, self.num_outputs))
        self.net = nn.Sequential(*layers)

    def configure_model(self) -> None:
        if self.hparams["compile"]:
            self.net.compile(dynamic=True)  # in place: checkpoint keys stay net.0.weight, ...

    @property
    def network(self) -> nn.Module:
        return self.net
