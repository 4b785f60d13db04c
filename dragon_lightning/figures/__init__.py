"""The tutorial's pictures, as ``H x W x 3`` uint8 image arrays in the original units (number of toes,
body length): what the figures callback, ``compare``, ``sweep`` and the notebook draw.

:func:`as_image` turns an array into a PIL image, which a notebook shows inline.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dragon_lightning.figures.drawing import (
    DecisionRegions,
    confusion_matrix,
    dragons_by_class,
    learning_curves,
    roc_curve,
    truth_and_predictions,
)


def decision_regions(model, features: np.ndarray, labels: np.ndarray, title: str) -> np.ndarray:
    """A trained model's regions and boundary lines (where it decides, its threshold included) over
    ``features`` colored by ``labels``; ``model`` is what :func:`dragon_lightning.load_model` returns."""
    regions = DecisionRegions(features, labels, list(model.classes_))
    scores = model.decision_function(regions.points.astype(np.float32))
    return regions.draw(scores[:, None] if scores.ndim == 1 else scores, title, boundary_lines=True)


def confusion_counts(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    return np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def as_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array)


__all__ = [
    "DecisionRegions",
    "as_image",
    "confusion_counts",
    "confusion_matrix",
    "decision_regions",
    "dragons_by_class",
    "learning_curves",
    "roc_curve",
    "truth_and_predictions",
]
