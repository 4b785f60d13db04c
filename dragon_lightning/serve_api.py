"""The LitAPI of ``dragon-lightning serve`` (needs the ``serve`` extra): requests through the table gate,
a batch of requests answered with one model call."""

from __future__ import annotations

import itertools
from typing import Any

import litserve
import numpy as np
from fastapi import HTTPException

from dragon_lightning.errors import DragonInputError
from dragon_lightning.serve import checkpoint_predictor, onnx_predictor, rows_to_features


class DragonAPI(litserve.LitAPI):
    """Loads the model in each worker; decodes with the table gate (422 naming the row and field)."""

    def __init__(self, source: str, onnx: bool, max_rows: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.source, self.onnx, self.max_rows = source, onnx, max_rows

    def setup(self, device) -> None:
        self.predictor = onnx_predictor(self.source) if self.onnx else checkpoint_predictor(self.source)

    def decode_request(self, request: dict) -> np.ndarray:
        try:
            return rows_to_features(request, self.max_rows)
        except DragonInputError as error:
            raise HTTPException(status_code=422, detail=str(error)) from None

    def batch(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        return np.concatenate(inputs), [len(rows) for rows in inputs]

    def predict(self, features) -> Any:
        if isinstance(features, tuple):  # a batch of requests: all their rows in one model call
            rows, sizes = features
            answers = self.predictor.answer(rows)
            bounds = np.cumsum([0, *sizes])
            return [answers[start:end] for start, end in itertools.pairwise(bounds)]
        return self.predictor.answer(features)

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output: list[dict]) -> dict:
        return {"predictions": output}
