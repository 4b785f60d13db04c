"""The tutorial's feature recipe and the seeded, stratified splits.

Kept apart from the DataModule so the benchmarks can hand scikit-learn exactly the rows and features
our models see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dragon_lightning.errors import DragonInputError
from dragon_lightning.schema import COLORS

TASKS = ("fire", "color")
CLASS_NAMES = {"fire": ("no fire", "fire"), "color": COLORS}

# Fire-breathers draw their toes with these probabilities; the others with them reversed.
TOES = np.array([5, 6, 7, 8, 9, 10, 22], dtype=np.float64)
TOE_PROBABILITIES = np.array([0.3, 0.25, 0.2, 0.15, 0.07, 0.02, 0.01])
BODY_LENGTH_SHIFT_FIRE = -30.0
BODY_LENGTH_SHIFT_NO_FIRE = 30.0
# Task "color": (numberToes, bodyLength) shifts added per color on top of the fire shifts.
COLOR_SHIFTS = {"Blue": (-3.0, 0.0), "Red": (7.0, -50.0), "Yellow": (0.0, 30.0)}


def tutorial_features(table: pd.DataFrame, task: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(features, labels)``: float32 ``[numberToes, bodyLength]`` and int64 class indices."""
    if task not in TASKS:
        raise DragonInputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    rng = np.random.default_rng(seed)
    fire = table["breathesFire"].to_numpy() == 1
    toe_index = rng.choice(len(TOES), size=len(table), p=TOE_PROBABILITIES)
    toes = TOES[np.where(fire, toe_index, len(TOES) - 1 - toe_index)]
    body_length = table["bodyLength"].to_numpy(dtype=np.float64)
    body_length = body_length + np.where(fire, BODY_LENGTH_SHIFT_FIRE, BODY_LENGTH_SHIFT_NO_FIRE)
    if task == "fire":
        labels = fire.astype(np.int64)
    else:
        labels = np.asarray(table["color"].cat.codes, dtype=np.int64)
        shifts = np.array([COLOR_SHIFTS[name] for name in COLORS])[labels]
        toes = toes + shifts[:, 0]
        body_length = body_length + shifts[:, 1]
    return np.stack([toes, body_length], axis=1).astype(np.float32), labels


@dataclass(frozen=True)
class SplitIndices:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _take(indices: np.ndarray, fraction: float) -> int:
    return round(len(indices) * fraction)


def stratified_split(
    labels: np.ndarray, test_fraction: float, val_fraction: float, seed: int, class_names: tuple[str, ...]
) -> SplitIndices:
    """Split row indices per class: ``test_fraction`` to test, then ``val_fraction`` of the rest to val
    (none at 0).

    Each split keeps the class shares of the whole table (to rounding). Rows within a split are in
    random order. Raises when a split would be empty or a class would be missing from training.
    """
    n_test = _take(labels, test_fraction)
    n_val = _take(labels[n_test:], val_fraction)
    for name, size in (("test", n_test), ("val", n_val), ("train", len(labels) - n_test - n_val)):
        if size < 1 and not (name == "val" and val_fraction == 0):
            _too_few(len(labels), test_fraction, val_fraction, name)
    rng = np.random.default_rng([seed, 1])
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label, name in enumerate(class_names):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_test = _take(rows, test_fraction)
        n_val = _take(rows[n_test:], val_fraction)
        if len(rows) - n_test - n_val < 1:
            raise DragonInputError(
                f"class {name!r} has {len(rows)} rows, too few to leave one for training after "
                f"test_fraction={test_fraction} and val_fraction={val_fraction}"
            )
        parts["test"].append(rows[:n_test])
        parts["val"].append(rows[n_test : n_test + n_val])
        parts["train"].append(rows[n_test + n_val :])
    split = {name: rng.permutation(np.concatenate(rows)) for name, rows in parts.items()}
    for name, rows in split.items():
        if len(rows) == 0 and not (name == "val" and val_fraction == 0):
            _too_few(len(labels), test_fraction, val_fraction, name)
    return SplitIndices(**split)


def _too_few(n_rows: int, test_fraction: float, val_fraction: float, split: str) -> None:
    raise DragonInputError(
        f"{n_rows} rows are too few for test_fraction={test_fraction} and val_fraction={val_fraction}: "
        f"the {split} split would be empty"
    )


def stratified_folds(
    labels: np.ndarray,
    split: SplitIndices,
    n_folds: int,
    fold: int,
    seed: int,
    class_names: tuple[str, ...],
    draw: int = 0,
) -> SplitIndices:
    """Keep ``split.test``; cut the other rows into ``n_folds`` stratified folds (scikit-learn's
    ``StratifiedKFold``), validate on fold ``fold`` and train on the rest. Rows are in random order.
    ``draw`` picks one of many cuts (repeated cross-validation); draw 0 is the cut of ``seed`` alone."""
    from sklearn.model_selection import StratifiedKFold  # only cross-validation needs it

    rest = np.concatenate([split.train, split.val])
    counts = np.bincount(labels[rest], minlength=len(class_names))
    if counts.min() < n_folds:
        name = class_names[int(counts.argmin())]
        raise DragonInputError(f"class {name!r} has {counts.min()} rows outside the test split, too few for {n_folds} folds")
    cut_seed = seed if draw == 0 else int(np.random.SeedSequence([seed, 3, draw]).generate_state(1)[0])
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=cut_seed).split(rest, labels[rest])
    train, val = list(folds)[fold]
    rng = np.random.default_rng([seed, 2, fold] if draw == 0 else [seed, 2, fold, draw])
    return SplitIndices(train=rng.permutation(rest[train]), val=rng.permutation(rest[val]), test=split.test)
