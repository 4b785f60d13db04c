"""``MLPClassifier``: the tutorial's multilayer perceptron, configurable."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

from jsonargparse.typing import PositiveInt
from torch import nn

from dragon_lightning.arguments import ClosedOpenUnitInterval
from dragon_lightning.errors import InvalidArgument
from dragon_lightning.models.base import OptimizedClassifier

MAX_PARAMETERS = 25_000_000
"""The most weights a network may have (100 MB in float32, 300 MB with Adam's state): far beyond any
dragon's needs, and refused before a layer is allocated."""
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class MLPClassifier(OptimizedClassifier):
    """Fully connected layers with one activation, trained with cross-entropy on logits."""

    def __init__(
        self,
        hidden_sizes: Sequence[PositiveInt] = (10, 20, 1000),
        activation: Literal["relu", "leaky_relu", "sigmoid", "tanh"] = "relu",
        dropout: ClosedOpenUnitInterval = 0.0,
        compile: bool = False,
        **kwargs,
    ) -> None:
        """
        Args:
            hidden_sizes: width of each hidden layer; the tutorial's network is 10, 20, 1000.
            activation: nonlinearity after every hidden layer.
            dropout: probability of zeroing a hidden unit while training (0: no dropout).
            compile: ``torch.compile`` the network (needs a C++ compiler; pays off on large batches and
                long runs, see the README's speed section). Checkpoints stay loadable without it.
        """
        super().__init__(**kwargs)
        widths = [self.num_features, *hidden_sizes, self.num_outputs]
        parameters = sum((inputs + 1) * outputs for inputs, outputs in itertools.pairwise(widths))
        if parameters > MAX_PARAMETERS:
            raise InvalidArgument(
                self,
                "hidden_sizes",
                f"{list(hidden_sizes)} would need {parameters:,} weights, more than {MAX_PARAMETERS:,}; refused before allocating",
            )
        layers: list[nn.Module] = []
        width = self.num_features
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
