"""``FoldEnsemble``: trained dragon classifiers whose class probabilities are averaged.

``cv --ensemble true`` builds one from its fold models (and the refit model with ``--refit true``).
It is a :class:`~dragon_lightning.models.base.DragonClassifier` like any other, so ``test``,
``predict``, ``load_model``, ``export``, ``compare`` and the figures take it as they take one model.
Its checkpoint holds the members' weights as tensors and, as hyperparameters, each member's model
name and options as plain values: a member's class is looked up in :data:`MEMBER_MODELS`, never
imported by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dragon_lightning.errors import DragonInputError, InvalidArgument
from dragon_lightning.models.base import DATA_LINKED, MAX_PARAMETERS, DragonClassifier, class_probabilities
from dragon_lightning.models.linear import LogisticRegression, Perceptron
from dragon_lightning.models.mlp import MLPClassifier

MEMBER_MODELS = {model.__name__: model for model in (Perceptron, LogisticRegression, MLPClassifier)}
"""The classes an ensemble's members may be (not ensembles themselves)."""
MAX_MEMBERS = 64
"""Every member is a model of its own to build and run on each row: many tiny ones cost minutes."""
LOG_FLOOR = -100.0
"""Log-probabilities are floored here (``exp(-100)`` is 4e-44): a certain member gives finite logits."""


class MeanProbabilities(nn.Module):
    """Raw features to the logits of the members' mean class probabilities: ``log p`` per class, or
    for two classes the one logit ``log p1 - log p0``, so that sigmoid or softmax gives the mean back."""

    def __init__(self, members: Sequence[nn.Module], binary: bool) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.binary = binary

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([class_probabilities(member(features)) for member in self.members]).mean(dim=0)
        log_mean = mean.log().clamp(min=LOG_FLOOR)
        return log_mean[:, 1:] - log_mean[:, :1] if self.binary else log_mean


class FoldEnsemble(DragonClassifier):
    """The mean of its members' class probabilities; not trained itself (its members were)."""

    derived_arguments = DATA_LINKED

    def __init__(self, members: Sequence[dict[str, Any]] = (), threshold: float = 0.5) -> None:
        """
        Args:
            members: each member's model class name and its options, as ``cv --ensemble`` records them
                (``{"model": "MLPClassifier", "options": {...}}``); the weights come from the checkpoint.
            threshold: probability of ``fire`` (the members' mean) above which a dragon is predicted to
                breathe fire (two classes only).
        """
        if not members:
            raise InvalidArgument(
                self, "members", "needs at least one trained model; cv --ensemble true builds an ensemble from its folds"
            )
        if len(members) > MAX_MEMBERS:
            raise InvalidArgument(
                self, "members", f"has {len(members):,} models, more than {MAX_MEMBERS}; refused before building them"
            )
        if (weights := self.weight_count({"members": members})) > MAX_PARAMETERS:
            raise InvalidArgument(
                self,
                "members",
                f"would need {weights:,} weights together, more than {MAX_PARAMETERS:,}; refused before allocating",
            )
        classifiers = [_member(index, spec) for index, spec in enumerate(members)]
        first = classifiers[0]
        super().__init__(first.num_features, first.num_classes, first.class_names, threshold=threshold)
        for index, classifier in enumerate(classifiers[1:], start=1):
            if classifier.class_names != first.class_names:
                raise InvalidArgument(
                    self,
                    "members",
                    f"member {index} predicts {classifier.class_names}, member 0 {first.class_names}: an ensemble needs one task",
                )
        self.average = MeanProbabilities([classifier.logits_module() for classifier in classifiers], self.binary)

    @classmethod
    def weight_count(cls, options: Mapping[str, Any]) -> int:
        """The members' weights together, from their recorded options."""
        total = 0
        for index, spec in enumerate(options.get("members", ())):
            _check_spec(index, spec)
            try:
                total += MEMBER_MODELS[spec["model"]].weight_count(spec.get("options", {}))
            except (TypeError, ValueError):
                raise DragonInputError(f"ensemble member {index}: its sizes are not whole numbers ({spec!r:.80})") from None
        return total

    @property
    def network(self) -> nn.Module:
        return self.average

    @classmethod
    def of(cls, classifiers: Sequence[DragonClassifier], threshold: float = 0.5) -> FoldEnsemble:
        """An ensemble of trained ``classifiers`` (their weights copied); its input layer spans their
        training ranges, so that predictions mark the rows far outside all of them."""
        ensemble = cls([member_spec(classifier) for classifier in classifiers], threshold)
        for member, classifier in zip(ensemble.average.members, classifiers):
            member.load_state_dict(classifier.logits_module().state_dict())
        ensemble.inputs.low.copy_(torch.stack([c.inputs.low for c in classifiers]).min(dim=0).values)
        ensemble.inputs.high.copy_(torch.stack([c.inputs.high for c in classifiers]).max(dim=0).values)
        return ensemble.eval()

    def configure_optimizers(self):
        raise DragonInputError("a FoldEnsemble is not trained: its members are; build one with cv --ensemble true")


def _check_spec(index: int, spec: Any) -> None:
    if not (isinstance(spec, dict) and spec.get("model") in MEMBER_MODELS and isinstance(spec.get("options", {}), dict)):
        raise DragonInputError(
            f"ensemble member {index}: not a model of {', '.join(MEMBER_MODELS)} with its options ({spec!r:.80})"
        )


def _member(index: int, spec: Any) -> DragonClassifier:
    _check_spec(index, spec)
    options = {**spec.get("options", {}), **({"compile": False} if spec["model"] == "MLPClassifier" else {})}
    try:
        return MEMBER_MODELS[spec["model"]](**options)
    except TypeError as error:
        raise DragonInputError(f"ensemble member {index}: {error}") from None


def member_spec(classifier: DragonClassifier) -> dict[str, Any]:
    """What an ensemble records of a member: its class name and its options (plain values)."""
    options = {name: value for name, value in classifier.hparams.items() if not name.startswith("_")}
    return {"model": type(classifier).__name__, "options": {name: _plain(value) for name, value in options.items()}}


def _plain(value: Any) -> Any:
    return [_plain(item) for item in value] if isinstance(value, (list, tuple)) else value
