"""What every way of answering rows shares, whether the model runs in PyTorch (``load_model``,
``predict``) or in onnxruntime (``serve --model``): rows go through in bounded chunks. Written for
NumPy arrays and PyTorch tensors alike, and importing neither, so that a server's ONNX model worker
never imports PyTorch.
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


def answers_in_chunks(function, features: Any) -> tuple[np.ndarray, ...]:
    """Each output of ``function`` (a model that gives probabilities, classes and extrapolation flags, or
    a file that holds one) applied :data:`CHUNK_ROWS` rows at a time, joined."""
    parts = [function(chunk) for chunk in chunks(features)]
    return tuple(np.concatenate([np.asarray(output) for output in outputs]) for outputs in zip(*parts))
