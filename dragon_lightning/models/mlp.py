"""``MLPClassifier``: the tutorial's multilayer perceptron, configurable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from jsonargparse.typing import PositiveInt
from torch import nn

from dragon_lightning.arguments import ClosedOpenUnitInterval
from dragon_lightning.errors import InvalidArgument
from dragon_lightning.models.base import MAX_PARAMETERS, OptimizedClassifier

MAX_HIDDEN_LAYERS = 64
"""Each layer is a module of its own: a long list of narrow layers costs time and memory beyond its weights."""
DEFAULT_HIDDEN_SIZES = (10, 20, 1000)
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class MLPClassifier(OptimizedClassifier):
    """Fully connected layers with one activation, trained with cross-entropy on logits."""

    def __init__(
        self,
        hidden_sizes: Sequence[PositiveInt] = DEFAULT_HIDDEN_SIZES,
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
                long runs, see docs/speed.md). Checkpoints stay loadable without it.
        """
        super().__init__(**kwargs)
        if len(hidden_sizes) > MAX_HIDDEN_LAYERS:
            raise InvalidArgument(self, "hidden_sizes", f"has {len(hidden_sizes):,} layers, more than {MAX_HIDDEN_LAYERS}")
        parameters = self.weight_count(
            {"num_features": self.num_features, "num_classes": self.num_classes, "hidden_sizes": hidden_sizes}
        )
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

    @classmethod
    def hidden_widths(cls, options: Mapping[str, Any]) -> Sequence[int]:
        return list(options.get("hidden_sizes", DEFAULT_HIDDEN_SIZES))

    @property
    def network(self) -> nn.Module:
        return self.net
