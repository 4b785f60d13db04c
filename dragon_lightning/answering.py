"""What every way of answering rows shares, whether the model runs in PyTorch (``load_model``,
``predict``) or in onnxruntime (``serve --model``): rows go through in bounded chunks, and a row far
outside the training range is flagged. Written for NumPy arrays and PyTorch tensors alike, and
importing neither, so that a server's ONNX model worker never imports PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHUNK_ROWS = 16_384
"""Rows through a network at once: memory stays bounded whatever the table's length (the tutorial's
MLP holds 1,000 numbers a row in its widest layer: 65 MB a chunk, where 5 million rows at once took 20 GB)."""


def chunks(features: Any) -> list[Any]:
    """``features`` (an array or a tensor of rows) cut into pieces of at most :data:`CHUNK_ROWS` rows."""
    return [features[start : start + CHUNK_ROWS] for start in range(0, len(features), CHUNK_ROWS)]


def in_chunks(function, features: Any) -> np.ndarray:
    """``function`` applied to ``features`` :data:`CHUNK_ROWS` rows at a time, its outputs joined."""
    return np.concatenate([np.asarray(function(chunk)) for chunk in chunks(features)])


def answers_in_chunks(function, features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and classes from ``function`` (a model that gives both, or a file that holds one)
    applied :data:`CHUNK_ROWS` rows at a time."""
    parts = [function(chunk) for chunk in chunks(features)]
    return np.concatenate([np.asarray(p) for p, _ in parts]), np.concatenate([np.asarray(c) for _, c in parts])


def far_outside(features: Any, low: Any, high: Any) -> Any:
    """Rows with a feature outside the training range ``[low, high]`` by more than that range's width:
    where a prediction is an extrapolation."""
    width = high - low
    return ((features < low - width) | (features > high + width)).any(1)
