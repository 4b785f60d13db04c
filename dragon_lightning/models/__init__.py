"""Dragon classifiers with scikit-learn's names: the tutorial's perceptron, logistic regression and MLP."""

from dragon_lightning.models.base import DragonClassifier, OptimizedClassifier
from dragon_lightning.models.ensemble import FoldEnsemble
from dragon_lightning.models.linear import LogisticRegression, Perceptron
from dragon_lightning.models.mlp import MLPClassifier

MODELS = (Perceptron, LogisticRegression, MLPClassifier, FoldEnsemble)
"""Every model class dragon-lightning trains; the only classes a checkpoint may name."""

__all__ = [
    "MODELS",
    "DragonClassifier",
    "FoldEnsemble",
    "LogisticRegression",
    "MLPClassifier",
    "OptimizedClassifier",
    "Perceptron",
]
