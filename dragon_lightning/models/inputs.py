"""``Standardize``: the first layer of every dragon classifier, so a model takes raw features.

The mean and standard deviation of the training split are buffers: they travel in the checkpoint's
``state_dict`` with the weights and in every exported graph, and inference, export, serving and the
figures need nothing but the module. The training range (lowest and highest value of each feature)
travels with them: it is what marks a prediction as an extrapolation.
"""

from __future__ import annotations

import torch
from torch import nn

LEGACY_DATA_KEY = "DragonDataModule"
"""Where checkpoints of version 0.x before the in-model scaling kept the fitted statistics."""
LEGACY_FIELDS = {"mean": "feature_mean", "std": "feature_std", "low": "feature_min", "high": "feature_max"}


def far_outside(features: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Rows with a feature outside the training range ``[low, high]`` by more than that range's width:
    where a prediction is an extrapolation."""
    width = high - low
    return ((features < low - width) | (features > high + width)).any(dim=1)


class Standardize(nn.Module):
    """``(x - mean) / std`` with statistics fitted once on training rows; identity until then."""

    mean: torch.Tensor
    std: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.register_buffer("low", torch.full((num_features,), -torch.inf))
        self.register_buffer("high", torch.full((num_features,), torch.inf))

    def fit(self, features: torch.Tensor, scale: bool = True) -> None:
        """Take the statistics of ``features`` (``[N, F]``, raw units); ``scale=False`` keeps only the
        range (the data's ``standardize: false``). A constant feature keeps a standard deviation of 1."""
        features = features.detach().to(self.mean.device)
        self.low.copy_(features.min(dim=0).values)
        self.high.copy_(features.max(dim=0).values)
        if scale:
            self.mean.copy_(features.double().mean(dim=0))
            std = features.double().std(dim=0) if len(features) > 1 else torch.ones_like(self.std, dtype=torch.double)
            self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std

    def outside_training_range(self, features: torch.Tensor) -> torch.Tensor:
        """Rows with a feature outside the training range by more than that range's width."""
        return far_outside(features, self.low, self.high)


def migrate_legacy_statistics(checkpoint: dict, prefix: str) -> None:
    """Move the statistics a checkpoint of an earlier version kept beside the weights (under the data
    module's entry) into the weights, as ``<prefix>.mean`` and so on; newer checkpoints are unchanged."""
    legacy = checkpoint.get(LEGACY_DATA_KEY)
    state = checkpoint.get("state_dict")
    if not isinstance(legacy, dict) or not isinstance(state, dict) or f"{prefix}.mean" in state:
        return
    for buffer, field in LEGACY_FIELDS.items():
        if field in legacy:
            state[f"{prefix}.{buffer}"] = legacy[field]
