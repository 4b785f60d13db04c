"""What the project is measured against: the accuracies the tutorial printed, and scikit-learn's models
trained on exactly the rows and features our models see (the benchmark's table and the notebook)."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch

from dragon_lightning.data import DragonDataModule

TUTORIAL_PRINTED = {
    ("fire", "LogisticRegression"): 0.9948,
    ("fire", "Perceptron"): 0.9948,
    ("color", "Perceptron"): 0.8385,
    ("color", "MLPClassifier"): 0.8802,
}
"""The test accuracy the tutorial printed for its own methods (one draw, row-by-row training)."""


def training_rows(data: DragonDataModule, rows: Literal["train", "train+val"] = "train") -> tuple[np.ndarray, np.ndarray]:
    """The raw features and labels a run trains on: the training split, or every non-test row (a refit)."""
    features, labels = data.splits["train"]
    if rows == "train+val":
        features, labels = torch.cat([features, data.splits["val"][0]]), torch.cat([labels, data.splits["val"][1]])
    return features.numpy(), labels.numpy()


def sklearn_peers(seed: int) -> dict:
    """scikit-learn's peers, each standardized as our models are: the tutorial's three
    (LogisticRegression, Perceptron, MLPClassifier (10, 20, 1000)), an RBF SVC with C and gamma chosen
    by stratified 5-fold CV on the rows it is fitted on, and gradient boosting; ``seed`` seeds them."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression, Perceptron
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    svc_grid = {"svc__C": [0.1, 1.0, 10.0, 100.0], "svc__gamma": ["scale", 0.1, 1.0, 10.0]}
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return {
        "LogisticRegression": make_pipeline(StandardScaler(), LogisticRegression()),
        "Perceptron": make_pipeline(StandardScaler(), Perceptron(random_state=seed)),
        "MLPClassifier (10,20,1000)": make_pipeline(
            StandardScaler(), MLPClassifier((10, 20, 1000), max_iter=500, random_state=seed)
        ),
        "SVC (RBF, C and gamma by 5-fold CV)": GridSearchCV(make_pipeline(StandardScaler(), SVC()), svc_grid, cv=folds),
        "HistGradientBoostingClassifier": HistGradientBoostingClassifier(random_state=seed),
    }


def fitted(model, features: np.ndarray, labels: np.ndarray):
    """``model`` fitted, quietly: convergence warnings say that max_iter is the tutorial-sized budget."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(features, labels)


def sklearn_predictions(data: DragonDataModule, rows: Literal["train", "train+val"] = "train") -> dict[str, np.ndarray]:
    """Each of :func:`sklearn_peers`, fitted on ``rows`` of a set-up data module: its predicted classes
    on the test split."""
    features, labels = training_rows(data, rows)
    test_features = data.splits["test"][0].numpy()
    return {name: fitted(model, features, labels).predict(test_features) for name, model in sklearn_peers(data.seed).items()}
