"""``dragon-lightning export``: a checkpoint as a self-contained ONNX or ``torch.export`` (``.pt2``) file.

The file maps raw float32 ``[N, 2]`` features (``numberToes``, ``bodyLength``, the units ``predict``
takes) to class probabilities ``[N, C]`` (output ``probabilities``) and the class index ``predict``
decides (output ``predicted``, int64 ``[N]``, the threshold applied): standardization, network,
sigmoid or softmax and the decision are all in the graph, and the batch size is free. Before the file takes its name, it is run (onnxruntime, or the
loaded ``.pt2`` program) on the checkpoint's test split and a grid over the training range, and must
agree with the PyTorch model to :data:`TOLERANCE` and decide the same classes; otherwise nothing is
written.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dragon_lightning import __version__
from dragon_lightning.arguments import parse_options
from dragon_lightning.errors import DragonError, DragonInputError
from dragon_lightning.gates.inputs import ONNX_CHECKSUM, onnx_checksum
from dragon_lightning.gates.outputs import OutputFolder
from dragon_lightning.inference import TrainedModel, load_model
from dragon_lightning.schema import FEATURE_COLUMNS, INPUT_NAME, OUTPUT_NAMES

TOLERANCE = 1e-5
ONNX_OPSET = 20
PT2_METADATA = "dragon_lightning.json"
EXPORT_EXTRA = "pip install 'dragon-lightning[export]'"


@dataclass(frozen=True)
class ExportReport:
    path: Path
    size_bytes: int
    rows_checked: int
    max_abs_difference: float


def metadata(model: TrainedModel) -> dict[str, str]:
    """What a consumer needs besides the graph: the task, the output columns and the input columns
    (``serve`` accepts these keys and the checksum only: :class:`~dragon_lightning.predictors.ExportMetadata`)."""
    return {
        "task": model.task,
        "class_names": json.dumps(list(model.classes_)),
        "feature_names": json.dumps(list(FEATURE_COLUMNS)),
        "output": "probabilities: one column per class in class_names order; predicted: the index in class_names "
        "of the class predict decides; outside_training_range: true where a feature lies outside the training range "
        "(feature_min to feature_max) by more than its width, an extrapolation",
        "model": type(model.classifier).__name__,
        "threshold": str(model.classifier.threshold),  # binary: predict the second class above it
        "feature_min": json.dumps([float(v) for v in model.feature_range[0]]),  # the training range, for extrapolations
        "feature_max": json.dumps([float(v) for v in model.feature_range[1]]),
        "producer": f"dragon-lightning {__version__}",
    }


def check_points(model: TrainedModel) -> np.ndarray:
    """Rows to compare on: the checkpoint's test split (rebuilt from its data options; skipped when its
    CSV is gone) and a 50 x 50 grid over the training range and twice as far again beyond it, where
    rows are extrapolations."""
    test_split = model.test_split()
    parts = [] if test_split is None else [test_split[0]]
    low, high = model.feature_range
    width = high - low
    axes = [np.linspace(low[i] - 2 * width[i], high[i] + 2 * width[i], 50) for i in range(len(FEATURE_COLUMNS))]
    parts.append(np.stack([grid.ravel() for grid in np.meshgrid(*axes)], axis=1))
    return np.concatenate(parts).astype(np.float32)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporters' progress lines and warnings about optional packages say nothing to act on."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _example_batch() -> torch.Tensor:
    # A batch of 1 would be specialized into the graph; 8 keeps the batch dimension free.
    return torch.zeros(8, len(FEATURE_COLUMNS))


def _batch_dimension() -> dict:
    return {INPUT_NAME: {0: torch.export.Dim("batch")}}


Answers = Callable[[np.ndarray], "list[np.ndarray]"]
"""A written file, run: features in; probabilities, class indices and extrapolation flags out."""


def _write_onnx(model: TrainedModel, path: Path) -> Answers:
    import onnx
    import onnxruntime

    with _quiet_exporter():
        program = torch.onnx.export(
            model.module,
            (_example_batch(),),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=_batch_dimension(),
            opset_version=ONNX_OPSET,
            external_data=False,
            verbose=False,
        )
        assert program is not None  # the dynamo exporter always returns its program
        program.save(str(path))
    proto = onnx.load(str(path))
    for key, value in metadata(model).items():
        proto.metadata_props.add(key=key, value=value)
    proto.metadata_props.add(key=ONNX_CHECKSUM, value=onnx_checksum(proto))  # serve checks it when it reads the file
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda features: session.run(list(OUTPUT_NAMES), {INPUT_NAME: features})


def _write_pt2(model: TrainedModel, path: Path) -> Answers:
    with _quiet_exporter():
        program = torch.export.export(model.module, (_example_batch(),), dynamic_shapes=_batch_dimension())
    torch.export.save(program, path, extra_files={PT2_METADATA: json.dumps(metadata(model))})
    loaded = torch.export.load(path).module()
    return lambda features: [output.detach().numpy() for output in loaded(torch.from_numpy(features))]


WRITERS = {"onnx": _write_onnx, "pt2": _write_pt2}


def _on_the_boundary(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Rows whose decision rounding within :data:`TOLERANCE` could flip: a binary probability at the
    threshold, or the two largest of several probabilities tied."""
    if probabilities.shape[1] == 2:
        return np.abs(probabilities[:, 1] - threshold) <= TOLERANCE
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0] <= TOLERANCE


SUFFIXES = {".onnx": "onnx", ".pt2": "pt2"}


def export_model(
    model: TrainedModel, output: str | Path, format: Literal["onnx", "pt2"] = "onnx", overwrite: bool = False
) -> ExportReport:
    """Write ``model`` to ``output`` atomically, after checking the written file against ``model``."""
    output = Path(output)
    if output.suffix.lower() in SUFFIXES and SUFFIXES[output.suffix.lower()] != format:
        raise DragonInputError(
            f"--output {output}: a .{SUFFIXES[output.suffix.lower()]} name for --format {format}; name it *.{format}"
        )
    if model.path.exists() and output.exists() and output.samefile(model.path):
        raise DragonInputError(f"--output {output}: is the checkpoint being exported; choose another path")
    folder = OutputFolder(output.parent, "--output")
    folder.claim([output.name], replace=overwrite, remedy="choose another path or add --overwrite true")
    if format == "onnx":
        for module in ("onnx", "onnxscript", "onnxruntime"):  # the exporter needs onnxscript too
            try:
                importlib.import_module(module)
            except ImportError:
                raise DragonInputError(f"export --format onnx needs {module}: {EXPORT_EXTRA}") from None
    points = check_points(model)
    with torch.no_grad():
        expected, expected_classes, expected_outside = (output.numpy() for output in model.module(torch.from_numpy(points)))
    difference = np.inf

    def write_and_check(temporary: Path) -> None:
        nonlocal difference
        probabilities, classes, outside = WRITERS[format](model, temporary)(points)
        difference = float(np.abs(probabilities - expected).max())
        if not difference <= TOLERANCE:
            raise DragonError(
                f"export: the {format} file's probabilities differ from the PyTorch model's by up to {difference:.3g} "
                f"(more than {TOLERANCE:g}) on {len(points):,} rows; nothing was written"
            )
        disagree = (classes != expected_classes) & ~_on_the_boundary(expected, model.classifier.threshold)
        if disagree.any():
            raise DragonError(
                f"export: the {format} file decides another class than the PyTorch model on {int(disagree.sum()):,} "
                f"of {len(points):,} rows; nothing was written"
            )
        if (outside != expected_outside).any():
            raise DragonError(
                f"export: the {format} file marks other rows as outside the training range than the PyTorch model "
                f"({int((outside != expected_outside).sum()):,} of {len(points):,}); nothing was written"
            )

    folder.write(output.name, write_and_check, replace=overwrite)
    return ExportReport(output, output.stat().st_size, len(points), difference)


@dataclass(frozen=True)
class ExportOptions:
    """export's options

    Args:
        ckpt_path: the checkpoint to export (e.g. a run's checkpoints/last.ckpt; best: the one the newest
            run under ./lightning_logs tested; last: its last.ckpt)
        output: the file to write (default: model.onnx, or model.pt2, in the working folder)
        format: onnx (onnxruntime, any language) or pt2 (torch.export.load)
        overwrite: replace an existing --output file
    """

    ckpt_path: str
    output: str | None = None
    format: Literal["onnx", "pt2"] = "onnx"
    overwrite: bool = False


def export_command(args: list[str]) -> ExportReport:
    """``dragon-lightning export``: parse ``args``, export, print where and how well it checked out."""
    options = parse_options(
        ExportOptions,
        args,
        prog="dragon-lightning export",
        description="Write a trained checkpoint as one ONNX (or torch.export .pt2) file that takes raw "
        "[N, 2] float32 features (numberToes, bodyLength, the units predict takes) and returns class "
        "probabilities [N, C], the decided class index [N] and whether each row lies far outside the training "
        "range [N], with the checkpoint's standardization inside. "
        f"The file is checked against the PyTorch model (to {TOLERANCE:g}) before it is written. ONNX needs {EXPORT_EXTRA}.",
    )
    model = load_model(options.ckpt_path, option="--ckpt_path")
    output = options.output or f"model.{options.format}"
    report = export_model(model, output, options.format, options.overwrite)
    print(
        f"wrote {report.path} ({report.size_bytes:,} bytes): {model.task} probabilities for {', '.join(model.classes_)}; "
        f"checked on {report.rows_checked:,} rows, max |difference| from PyTorch {report.max_abs_difference:.2g}"
    )
    return report
