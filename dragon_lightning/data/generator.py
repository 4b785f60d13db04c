"""A seeded, vectorised generator of dragon tables with the real file's joint distribution.

Every parameter below is read off the real teaching file (see the project README): the table is 24
cells (8 mountain ranges x 3 colors) of equal size; within a cell bodyLength and testScore are
independent normals, breathesFire is a fixed share of the cell, and diet is the tertile of
testScore with some rows reassigned at random.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dragon_lightning.schema import COLORS, DIETS, MOUNTAIN_RANGES

# Per mountain range, the cell means for (Blue, Red, Yellow).
BODY_LENGTH_MEANS = {
    "Bavarian": (178.77, 170.10, 190.76),
    "Central": (210.94, 209.87, 207.02),
    "Emmental": (212.39, 200.59, 220.37),
    "Julian": (219.40, 210.20, 229.59),
    "Ligurian": (211.19, 200.72, 220.15),
    "Maritime": (199.59, 199.98, 198.30),
    "Sarntal": (199.99, 190.45, 211.72),
    "Southern": (177.60, 171.49, 190.43),
}
TEST_SCORE_MEANS = {
    "Bavarian": (19.49, 19.89, 29.95),
    "Central": (61.07, 50.52, 68.61),
    "Emmental": (43.48, 35.15, 40.51),
    "Julian": (71.34, 71.18, 63.67),
    "Ligurian": (40.36, 42.50, 40.88),
    "Maritime": (71.58, 67.18, 80.95),
    "Sarntal": (57.69, 69.64, 68.73),
    "Southern": (35.27, 30.80, 28.82),
}
# Fire-breathers in a cell of 20 dragons, for (Blue, Red, Yellow).
FIRE_PER_20 = {
    "Bavarian": (18, 15, 0),
    "Central": (18, 13, 1),
    "Emmental": (18, 8, 6),
    "Julian": (18, 12, 2),
    "Ligurian": (18, 4, 1),
    "Maritime": (18, 7, 1),
    "Sarntal": (18, 15, 3),
    "Southern": (18, 18, 1),
}
BODY_LENGTH_SD = 4.89
TEST_SCORE_SD = 14.6
TEST_SCORE_RANGE = (0.0, 100.0)
DIET_REASSIGNED_SHARE = 0.11
# Tertiles of testScore, low to high, map to these diets.
DIET_BY_TERTILE = ("Carnivore", "Vegetarian", "Omnivore")


def _cell_table(n_dragons: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell sizes (color-major, as the real file is sorted), range index and color index per cell."""
    n_cells = len(MOUNTAIN_RANGES) * len(COLORS)
    sizes = np.full(n_cells, n_dragons // n_cells, dtype=np.int64)
    sizes[: n_dragons % n_cells] += 1
    color_of_cell = np.repeat(np.arange(len(COLORS)), len(MOUNTAIN_RANGES))
    range_of_cell = np.tile(np.arange(len(MOUNTAIN_RANGES)), len(COLORS))
    return sizes, range_of_cell, color_of_cell


def _per_cell(table: dict[str, tuple], range_of_cell: np.ndarray, color_of_cell: np.ndarray) -> np.ndarray:
    values = np.array([table[name] for name in MOUNTAIN_RANGES], dtype=np.float64)
    return values[range_of_cell, color_of_cell]


def generate_dragons(n_dragons: int = 480, seed: int = 0) -> pd.DataFrame:
    """Draw a dragon table of ``n_dragons`` rows with the real file's columns and joint distribution.

    For 480 dragons each cell holds 20 and Blue exactly 18 fire-breathers per cell; other sizes grow
    the cells in proportion (fire counts rounded per cell). Memory is a few bytes per column and row.
    """
    if n_dragons < 1:
        raise ValueError(f"n_dragons must be at least 1, got {n_dragons}")
    rng = np.random.default_rng(seed)
    sizes, range_of_cell, color_of_cell = _cell_table(n_dragons)
    cell = np.repeat(np.arange(len(sizes)), sizes)
    position_in_cell = np.arange(n_dragons) - np.repeat(np.cumsum(sizes) - sizes, sizes)

    body_length = _per_cell(BODY_LENGTH_MEANS, range_of_cell, color_of_cell)[cell]
    body_length += rng.normal(0.0, BODY_LENGTH_SD, n_dragons)
    test_score = _per_cell(TEST_SCORE_MEANS, range_of_cell, color_of_cell)[cell]
    test_score += rng.normal(0.0, TEST_SCORE_SD, n_dragons)
    np.clip(test_score, *TEST_SCORE_RANGE, out=test_score)

    # Rows of a cell are exchangeable draws, so the first k of each cell can be the fire-breathers.
    fire_in_cell = np.rint(_per_cell(FIRE_PER_20, range_of_cell, color_of_cell) * sizes / 20).astype(np.int64)
    breathes_fire = (position_in_cell < fire_in_cell[cell]).astype(np.int8)

    cuts = np.quantile(test_score, [1 / 3, 2 / 3])
    diet_by_tertile = np.array([DIETS.index(d) for d in DIET_BY_TERTILE], dtype=np.int8)
    diet = diet_by_tertile[np.searchsorted(cuts, test_score, side="right")]
    reassigned = rng.random(n_dragons) < DIET_REASSIGNED_SHARE
    diet[reassigned] = rng.integers(0, len(DIETS), int(reassigned.sum()), dtype=np.int8)

    return pd.DataFrame(
        {
            "testScore": test_score,
            "bodyLength": body_length,
            "mountainRange": pd.Categorical.from_codes(range_of_cell[cell].astype(np.int8), MOUNTAIN_RANGES),
            "color": pd.Categorical.from_codes(color_of_cell[cell].astype(np.int8), COLORS),
            "diet": pd.Categorical.from_codes(diet, DIETS),
            "breathesFire": breathes_fire,
        }
    )
