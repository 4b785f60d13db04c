import numpy as np
import pandas as pd
import pytest

from dragon_lightning.data import generate_dragons, read_dragon_csv
from dragon_lightning.data.generator import DIET_BY_TERTILE, FIRE_PER_20
from dragon_lightning.schema import COLORS, COLUMNS, MOUNTAIN_RANGES


def tertile_agreement(table: pd.DataFrame) -> float:
    """Share of rows whose diet is the tertile rule's diet for their testScore."""
    cuts = np.quantile(table["testScore"], [1 / 3, 2 / 3])
    expected = np.asarray(DIET_BY_TERTILE)[np.searchsorted(cuts, table["testScore"], side="right")]
    return float((table["diet"].astype(str).to_numpy() == expected).mean())


def test_480_dragons_have_the_real_files_cell_structure():
    table = generate_dragons(480, seed=3)
    assert list(table.columns) == list(COLUMNS)
    cells = table.groupby(["mountainRange", "color"], observed=True)
    assert (cells.size() == 20).all() and len(cells) == 24
    fire = cells["breathesFire"].sum()
    for mountain in MOUNTAIN_RANGES:
        for color, expected in zip(COLORS, FIRE_PER_20[mountain]):
            assert fire[(mountain, color)] == expected
    assert table["testScore"].between(0, 100).all()


def test_other_sizes_grow_cells_in_proportion():
    table = generate_dragons(4800, seed=1)
    cells = table.groupby(["mountainRange", "color"], observed=True)
    assert (cells.size() == 200).all()
    assert (cells["breathesFire"].sum().loc[(slice(None), "Blue")] == 180).all()
    assert len(generate_dragons(481, seed=1)) == 481


def test_the_seed_decides_the_table():
    pd.testing.assert_frame_equal(generate_dragons(480, seed=5), generate_dragons(480, seed=5))
    assert not generate_dragons(480, seed=5).equals(generate_dragons(480, seed=6))


def test_generated_statistics_match_the_real_file_within_sampling_noise(real_csv):
    real = read_dragon_csv(real_csv)
    generated = generate_dragons(48_000, seed=0)
    n = len(real)
    for column in ("testScore", "bodyLength"):
        # The real file is one sample of 480: its mean and sd lie within a few standard errors.
        assert abs(generated[column].mean() - real[column].mean()) < 3 * real[column].std() / np.sqrt(n)
        assert abs(generated[column].std() / real[column].std() - 1) < 3 / np.sqrt(2 * n)
    assert generated["color"].value_counts().eq(16_000).all()
    real_fire = real.groupby("color", observed=True)["breathesFire"].sum()
    generated_fire = generated.groupby("color", observed=True)["breathesFire"].sum() / 100
    assert (real_fire - generated_fire).abs().max() < 1
    real_diet, generated_diet = real["diet"].value_counts(normalize=True), generated["diet"].value_counts(normalize=True)
    assert (real_diet - generated_diet).abs().max() < 3 * np.sqrt(0.25 / n)
    agreement = tertile_agreement(real)
    assert abs(tertile_agreement(generated) - agreement) < 3 * np.sqrt(agreement * (1 - agreement) / n)
    cell_means = ["mountainRange", "color"]
    real_cells = real.groupby(cell_means, observed=True)["bodyLength"].mean()
    generated_cells = generated.groupby(cell_means, observed=True)["bodyLength"].mean()
    assert (real_cells - generated_cells).abs().max() < 4 * 4.89 / np.sqrt(20)


@pytest.mark.parametrize("n_dragons", [0, -5])
def test_no_dragons_is_an_error(n_dragons):
    with pytest.raises(ValueError, match="n_dragons"):
        generate_dragons(n_dragons)
