"""``dragon-lightning compare RUN...``: the decision regions of finished runs side by side in one PNG,
as the tutorial compares its models, each titled with its config and test accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dragon_lightning.arguments import parse_options
from dragon_lightning.callbacks.run_config import CONFIG_FILES_COMMENT
from dragon_lightning.checkpoints.files import tested_checkpoint
from dragon_lightning.errors import DragonInputError
from dragon_lightning.figures import drawing as plots
from dragon_lightning.gates.inputs import CONFIG, load_yaml, read_text, read_yaml_mapping
from dragon_lightning.gates.outputs import OutputFolder
from dragon_lightning.inference import TrainedModel, load_model

PANELS_PER_ROW = 3


def compared_checkpoint(run: Path) -> Path:
    """A checkpoint file as it is; for a run folder, the checkpoint its ``fit`` tested."""
    if run.is_file():
        return run
    if not (run / "checkpoints").is_dir():
        raise DragonInputError(f"{run}: not a run folder (no checkpoints/ in it) or a checkpoint file")
    return tested_checkpoint(run / "checkpoints" / "last.ckpt")


def run_name(run: Path, model: TrainedModel) -> str:
    """The config file a run started from (its config.yaml's first line) and what the command line
    changed in its model: another model class, or settings the config file sets to other values.
    Without a config.yaml, the model's class and the run's folder name."""
    folder = run.parent.parent if run.is_file() else run
    trained = type(model.classifier).__name__
    saved = folder / "config.yaml"
    if not saved.is_file():
        return f"{trained} ({run.name})"
    text = read_text(saved, CONFIG)
    first = text.splitlines()[0] if text else ""
    if not first.startswith(CONFIG_FILES_COMMENT):
        return f"{trained} ({folder.name})"
    origin = Path(first.removeprefix(CONFIG_FILES_COMMENT).split(", ")[-1])
    run_model = _section(load_yaml(text, str(saved)), "model")
    try:
        original = _section(read_yaml_mapping(origin, CONFIG), "model")
    except DragonInputError:  # the config file moved or changed since: name what the run says
        original = {}
    if str(original.get("class_path", trained)).rsplit(".", 1)[-1] != trained:
        return f"{trained} ({origin.stem} with --model)"
    trained_options = _flat(_section(run_model, "init_args"))
    changed = [
        f"{key.rsplit('.', 1)[-1]}={_text(trained_options[key])}"
        for key, value in _flat(_section(original, "init_args")).items()
        if key in trained_options and trained_options[key] != value
    ]
    return f"{origin.stem}" + (f" ({', '.join(changed)})" if changed else "")


def _section(mapping: object, key: str) -> dict:
    """``mapping[key]`` where both are mappings, else nothing: a config.yaml edited by hand may hold anything."""
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, dict) else {}


def _flat(options: dict, prefix: str = "") -> dict:
    """Nested options as dotted keys (``optimizer.init_args.lr``)."""
    flat = {}
    for key, value in options.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _text(value) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


@dataclass(frozen=True)
class Panel:
    name: str
    accuracy: float
    image: np.ndarray


def panel(run: Path, model: TrainedModel) -> Panel:
    """The model's regions over its own test split, titled like the tutorial's side-by-side plots."""
    test_split = model.test_split()
    if test_split is None:
        raise DragonInputError(
            f"{run}: its data ({model.data_options.get('csv_path')}) cannot be read again to draw the test set"
        )
    features, labels = test_split
    accuracy = float((model.predict(features) == model.classes_[labels]).mean())
    regions = plots.DecisionRegions(features, labels, list(model.classes_))
    scores = model.decision_function(regions.points)
    name = run_name(run, model)
    image = regions.draw(scores.reshape(len(regions.points), -1), f"{name}: test accuracy {accuracy:.3f}", boundary_lines=True)
    return Panel(name, accuracy, image)


def tile(images: list[np.ndarray], per_row: int) -> np.ndarray:
    """Images in rows of ``per_row`` on a white background."""
    height, width = max(image.shape[0] for image in images), max(image.shape[1] for image in images)
    rows = -(-len(images) // per_row)
    canvas = np.full((rows * height, min(len(images), per_row) * width, 3), 255, dtype=np.uint8)
    for index, image in enumerate(images):
        top, left = (index // per_row) * height, (index % per_row) * width
        canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    return canvas


def compare_runs(runs: list[Path], output: Path, overwrite: bool = False) -> list[Panel]:
    """Write the runs' panels to ``output`` (atomically) and return them."""
    folder = OutputFolder(output.parent, "--output")
    folder.claim([output.name], replace=overwrite, remedy="choose another path or add --overwrite true")
    panels = [panel(run, load_model(compared_checkpoint(run))) for run in runs]
    folder.write(output.name, plots.png_writer(tile([panel.image for panel in panels], PANELS_PER_ROW)), replace=overwrite)
    return panels


@dataclass(frozen=True)
class CompareOptions:
    """compare's options

    Args:
        output: the PNG to write
        overwrite: replace an existing --output file
    """

    runs: list[str]
    output: str = "comparison.png"
    overwrite: bool = False


def compare_command(args: list[str]) -> list[Panel]:
    options = parse_options(
        CompareOptions,
        args,
        prog="dragon-lightning compare",
        description="Draw the decision regions of finished runs side by side in one PNG, each over its "
        "own test set and titled with its config and test accuracy. A run is a run folder "
        "(lightning_logs/version_N: its best checkpoint, else last.ckpt) or a checkpoint file.",
        words=("runs", "run folders or checkpoint files"),
    )
    panels = compare_runs([Path(run) for run in options.runs], Path(options.output), options.overwrite)
    print(f"wrote {options.output}: " + "; ".join(f"{panel.name} {panel.accuracy:.3f}" for panel in panels))
    return panels
