"""How well could any classifier do? The test accuracy of a classifier that knows the tutorial's recipe.

The features are made from each dragon's own body length and the draw of its toes (see
``dragon_lightning.data.features``): toes come from a known distribution that depends only on
whether the dragon breathes fire, and the body length is the file's, shifted by known amounts for
fire and color. A classifier that knows this recipe needs to estimate only one thing, the density
of the file's body lengths, and does so from the non-test rows (a Gaussian kernel, Scott's
bandwidth). Each class's density at a test dragon is then the sum over the non-test dragons of that
class of (the exact probability of its toes) x (the kernel at its unshifted length), and the class
with the highest density wins (class shares are in the sums). No trained model knows the recipe, so
this is close to the best any can do on the same draws: the ceiling the results table is read against.

    python benchmarks/bayes_limit.py --csv path/to/2020-10-21-dragon-data.csv --draws 10
"""

from __future__ import annotations

import argparse

import numpy as np

from dragon_lightning.data import DragonDataModule
from dragon_lightning.data.features import (
    BODY_LENGTH_SHIFT_FIRE,
    BODY_LENGTH_SHIFT_NO_FIRE,
    COLOR_SHIFTS,
    TOE_PROBABILITIES,
    TOES,
    tutorial_features,
)
from dragon_lightning.schema import COLORS


def recipe_accuracy(task: str, seed: int, csv: str | None) -> float:
    """Test accuracy on draw ``seed`` of the classifier that knows the recipe (see the module's docstring)."""
    data = DragonDataModule(task=task, csv_path=csv, seed=seed, data_dir=None)
    table = data.load_table()
    features, labels = tutorial_features(table, task, data.seed)
    split = data.split_indices(labels)
    known, test = np.concatenate([split.train, split.val]), split.test
    fire = table["breathesFire"].to_numpy() == 1
    color = np.asarray(table["color"].cat.codes)
    color_shifts = np.array([COLOR_SHIFTS[name] for name in COLORS])[color] if task == "color" else np.zeros((len(table), 2))
    length_shift = np.where(fire, BODY_LENGTH_SHIFT_FIRE, BODY_LENGTH_SHIFT_NO_FIRE) + color_shifts[:, 1]
    lengths = table["bodyLength"].to_numpy(dtype=np.float64)[known]
    bandwidth = lengths.std(ddof=1) * len(lengths) ** -0.2
    # For each test dragon (rows) and known dragon (columns): could the test dragon's features have
    # come from the known dragon's class, fire and length? Toes exactly, length through the kernel.
    toes = features[test, 0:1].astype(np.float64) - color_shifts[known, 0]
    toe_index = np.searchsorted(TOES, toes).clip(0, len(TOES) - 1)
    drawn = TOES[toe_index] == toes
    toe_probability = np.where(fire[known], TOE_PROBABILITIES[toe_index], TOE_PROBABILITIES[::-1][toe_index]) * drawn
    length = features[test, 1:2].astype(np.float64) - length_shift[known]
    kernel = np.exp(-0.5 * ((length - lengths) / bandwidth) ** 2)
    likelihood = toe_probability * kernel
    classes = np.unique(labels)
    density = np.stack([likelihood[:, labels[known] == k].sum(axis=1) for k in classes], axis=1)
    return float((classes[density.argmax(axis=1)] == labels[test]).mean())


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="a dragon CSV (default: generated dragons)")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--first-draw", type=int, default=0, help="the first draw's seed (the results table uses 0-9)")
    options = parser.parse_args(argv)
    seeds = range(options.first_draw, options.first_draw + options.draws)
    results = {task: [recipe_accuracy(task, seed, options.csv) for seed in seeds] for task in ("fire", "color")}
    print(f"test accuracy of the classifier that knows the recipe, draws {seeds.start}-{seeds.stop - 1}\n")
    print("| task | mean | min | max |\n|---|---|---|---|")
    for task, values in results.items():
        print(f"| {task} | {np.mean(values):.3f} | {min(values):.3f} | {max(values):.3f} |")
    return results


if __name__ == "__main__":
    main()
