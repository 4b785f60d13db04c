"""What serving needs of a model, from a checkpoint or an ONNX file: answers per row for raw features
(``serve``'s extra: pydantic checks an ONNX file's metadata). PyTorch is imported only where a
checkpoint is served: a model worker of an ONNX file starts in a second and a fifth of the memory.

Both are read through their gates and refused in one line if unusable; the checkpoint's network and the
ONNX graph each decide the class themselves (:func:`dragon_lightning.models.base.decide`), so the
answers of ``serve`` are those of ``load_model`` and of onnxruntime.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, Json, ValidationError

from dragon_lightning.answering import answers_in_chunks
from dragon_lightning.arguments import MAX_CLASSES
from dragon_lightning.errors import DragonInputError, first_line
from dragon_lightning.schema import FEATURE_COLUMNS, INPUT_NAME, OUTPUT_NAMES, prediction_columns

FeatureBounds = Annotated[
    list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=len(FEATURE_COLUMNS), max_length=len(FEATURE_COLUMNS))
]


class ExportMetadata(BaseModel, extra="forbid"):
    """An exported file's metadata (:func:`dragon_lightning.export.metadata`), each field that ``serve``
    reads checked: the file is the user's, and these label the answers and tell /info the training range.
    No other key is accepted: a damaged byte in the name of export's checksum (``sha256``) would
    otherwise make the file one of an earlier export, read without it."""

    task: Literal["fire", "color"]
    class_names: Json[Annotated[list[str], Field(min_length=2, max_length=MAX_CLASSES)]]
    threshold: Annotated[float, Field(gt=0, lt=1)]
    feature_min: Json[FeatureBounds]
    feature_max: Json[FeatureBounds]
    feature_names: str = ""
    output: str = ""
    model: str = ""
    producer: str = ""
    sha256: str = ""


@dataclass
class Predictor:
    """What serving needs of a model, from a checkpoint or an ONNX file: probabilities of raw features."""

    task: str
    class_names: list[str]
    threshold: float
    feature_min: np.ndarray
    feature_max: np.ndarray
    answers: Any
    """``[N, 2]`` float32 array in; probabilities ``[N, C]``, the decided class index ``[N]`` and the
    extrapolation flag ``[N]`` out, as the model decides them (given at most ``answering.CHUNK_ROWS`` rows
    at a time)."""

    def answer(self, features: np.ndarray) -> list[dict]:
        """One answer per row: the predicted class, its probabilities and whether it extrapolates."""
        probabilities, chosen, far = answers_in_chunks(self.answers, features)
        predicted_column, *probability_columns, outside_column = prediction_columns(self.class_names)
        return [
            {
                predicted_column: self.class_names[k],
                **{c: float(p) for c, p in zip(probability_columns, row)},
                outside_column: bool(f),
            }
            for k, row, f in zip(chosen, probabilities, far)
        ]


def checkpoint_predictor(path: str, data: bytes, threads: int | None = None) -> Predictor:
    """The checkpoint ``data`` (read from ``path`` through the gate); ``threads``: what PyTorch computes
    on in this process (``None``: its default)."""
    import torch

    from dragon_lightning.inference import load_model

    if threads is not None:
        torch.set_num_threads(threads)
    model = load_model(path, option="--ckpt_path", data=data)
    return Predictor(
        model.task,
        list(model.classes_),
        float(model.classifier.threshold),
        *model.feature_range,
        # Rows arrive validated (serve_api.PredictRequest) and in chunks (Predictor.answer): the network alone.
        answers=torch.no_grad()(lambda features: [output.numpy() for output in model.module(torch.from_numpy(features))]),
    )


def onnx_predictor(path: str, data: bytes, threads: int | None = None) -> Predictor:
    """The ONNX model ``data`` (read from ``path`` by :func:`~dragon_lightning.gates.inputs.read_onnx`);
    ``threads``: what the session computes on (``None``: onnxruntime's default)."""
    try:
        import onnxruntime
    except ImportError:
        raise DragonInputError("serve --model needs onnxruntime: pip install 'dragon-lightning[export]'") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # its own error lines would stand beside the one line below
    if threads is not None:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
    try:
        # On a failure onnxruntime prints its own lines ("EP Error ...") before retrying on the same CPU
        # provider; the one line below says it.
        with contextlib.redirect_stdout(io.StringIO()):
            session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's errors share no base class: any failure means an unusable file
        raise DragonInputError(f"--model {path}: not an ONNX model onnxruntime can load ({first_line(error)})") from None
    if [output.name for output in session.get_outputs()] != list(OUTPUT_NAMES):
        raise DragonInputError(
            f"--model {path}: its graph's outputs are not {', '.join(OUTPUT_NAMES)} (a file from an earlier "
            "dragon-lightning export, or another program's): export the checkpoint again"
        )
    try:
        meta = ExportMetadata.model_validate(session.get_modelmeta().custom_metadata_map)
    except UnicodeDecodeError:  # onnxruntime hands its entries over as text
        raise DragonInputError(f"--model {path}: its metadata is not UTF-8 text (a damaged file?)") from None
    except ValidationError as error:
        problem = error.errors()[0]
        raise DragonInputError(
            f"--model {path}: its metadata {'.'.join(map(str, problem['loc']))}: {problem['msg']}; not as dragon-lightning "
            "export writes it (export the checkpoint again)"
        ) from None
    columns = session.get_outputs()[0].shape[-1]
    if isinstance(columns, int) and columns != len(meta.class_names):
        raise DragonInputError(
            f"--model {path}: its metadata names {len(meta.class_names)} classes for {columns} probability columns"
        )
    return Predictor(
        meta.task,
        meta.class_names,
        meta.threshold,
        np.array(meta.feature_min, np.float32),
        np.array(meta.feature_max, np.float32),
        answers=lambda features: session.run(list(OUTPUT_NAMES), {INPUT_NAME: features}),
    )
