"""Dragon classifiers: the tutorial's linear models and its MLP, binary and multiclass."""

from dragon_lightning.models.base import DragonClassifier
from dragon_lightning.models.linear import LinearClassifier
from dragon_lightning.models.mlp import MLPClassifier

__all__ = ["DragonClassifier", "LinearClassifier", "MLPClassifier"]
