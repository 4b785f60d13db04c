"""Reproduce the tutorial's results table against scikit-learn peers, over random draws.

Each draw (seed) changes the toes draw, the split and the model init. All ten configs run through
the CLI's own code path (``cli_main(["fit", ...])``); scikit-learn's LogisticRegression, Perceptron
and MLPClassifier train on exactly the same rows and standardized features, once on the training
split (as our plain runs) and once on every non-test row (as a refit). ``--pipelines`` adds, for the
four main configs, ``cv --folds 5 --refit true --ensemble true``: the refit on every non-test row and
the ensemble of the five fold models and the refit; with ``--refit-seeds N``, N refits with different
seeds, their seed ensemble, and all of them in the fold ensemble. The peers add an RBF SVC tuned by
5-fold CV and gradient boosting. Prints a markdown table and optionally writes the
numbers as JSON.

    python benchmarks/reproduce_tutorial.py --csv path/to/2020-10-21-dragon-data.csv --draws 10 --pipelines

The results table (docs/results.md) uses draws 0-9; pipelines were chosen on draws 1000-1009 (``--first-draw 1000``),
whose test rows that table's numbers never saw used for a choice.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dragon_lightning.baselines import TUTORIAL_PRINTED as TUTORIAL_PRINTED_BY_MODEL
from dragon_lightning.baselines import sklearn_predictions
from dragon_lightning.commands import cli_main
from dragon_lightning.data import DragonDataModule

TUTORIAL_CONFIG_NAMES = {"LogisticRegression": "logistic", "Perceptron": "perceptron", "MLPClassifier": "mlp"}

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [
    "configs/fire_logistic.yaml",
    "configs/fire_recommended.yaml",
    "configs/fire_perceptron.yaml",
    "configs/color_perceptron.yaml",
    "configs/color_mlp.yaml",
    "configs/color_recommended.yaml",
    "configs/tutorial/fire_logistic.yaml",
    "configs/tutorial/fire_perceptron.yaml",
    "configs/tutorial/color_perceptron.yaml",
    "configs/tutorial/color_mlp.yaml",
]
# The single-draw test accuracy the tutorial printed for its own methods.
TUTORIAL_PRINTED = {
    f"configs/tutorial/{task}_{TUTORIAL_CONFIG_NAMES[model]}.yaml": value
    for (task, model), value in TUTORIAL_PRINTED_BY_MODEL.items()
}
METRICS = ("test/acc", "test/detection_rate", "test/false_positive_rate")


def task_of(config: str) -> str:
    return "fire" if "fire_" in Path(config).name else "color"


def run_config(config: str, seed: int, csv: str | None, root: Path, extra: list[str] = ()) -> dict[str, float]:
    """``dragon-lightning fit --config CONFIG`` for one seed; returns the test metrics."""
    args = ["fit", "--config", str(ROOT / config), "--seed_everything", str(seed)]
    args += ["--trainer.default_root_dir", str(root), "--data.data_dir", str(root / "data"), "--trainer.logger", "false"]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    if csv:
        args += ["--data.csv_path", csv]
    with contextlib.redirect_stdout(io.StringIO()):  # keep the per-run test tables out of the report
        cli = cli_main([*args, *extra])
    return {name: float(value) for name, value in cli.trainer.callback_metrics.items() if name.startswith("test/")}


MAIN_CONFIGS = (
    "configs/fire_logistic.yaml",
    "configs/fire_recommended.yaml",
    "configs/color_mlp.yaml",
    "configs/color_recommended.yaml",
)
PIPELINE_FOLDS = 5


def run_pipelines(config: str, seed: int, csv: str | None, root: Path, refit_seeds: int = 1) -> dict[str, dict[str, float]]:
    """``cv --refit true --ensemble true`` (``--refit_seeds``) for one seed; the test metrics of the refit,
    of the refits' seed ensemble, and of the ensemble."""
    args = [
        "cv",
        "--config",
        str(ROOT / config),
        "--folds",
        str(PIPELINE_FOLDS),
        "--refit",
        "true",
        "--refit_seeds",
        str(refit_seeds),
        "--ensemble",
        "true",
        "--seed_everything",
        str(seed),
        "--output_dir",
        str(root / "cv"),
        "--trainer.default_root_dir",
        str(root),
        "--data.data_dir",
        str(root / "data"),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]
    if csv:
        args += ["--data.csv_path", csv]
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = cli_main(args)
    results = {f"{config} refit": outcome.refit_test}
    if outcome.seed_ensemble_test is not None:
        results[f"{config} seed ensemble ({refit_seeds} refits)"] = outcome.seed_ensemble_test
    refits = "refit" if refit_seeds == 1 else f"{refit_seeds} refits"
    return {**results, f"{config} ensemble ({PIPELINE_FOLDS} folds + {refits})": outcome.ensemble_test}


def sklearn_metrics(task: str, seed: int, csv: str | None) -> dict[str, dict[str, float]]:
    """scikit-learn peers on the same rows and standardized features as our models: the training split
    (as a plain run), and every non-test row (as a refit)."""
    data = DragonDataModule(task=task, csv_path=csv, seed=seed, data_dir=None)
    data.setup("fit")
    truth = data.splits["test"][1].numpy()
    return {
        f"scikit-learn {name} on {rows}": binary_or_multiclass_metrics(predicted, truth, task)
        for rows in ("train", "train+val")
        for name, predicted in sklearn_predictions(data, rows).items()
    }


def binary_or_multiclass_metrics(predicted: np.ndarray, truth: np.ndarray, task: str) -> dict[str, float]:
    metrics = {"test/acc": float((predicted == truth).mean())}
    if task == "fire":
        metrics["test/detection_rate"] = float((predicted[truth == 1] == 1).mean())
        metrics["test/false_positive_rate"] = float((predicted[truth == 0] == 1).mean())
    return metrics


def summarise(runs: dict[tuple[str, str], list[dict[str, float]]]) -> list[dict]:
    rows = []
    for (task, method), draws in runs.items():
        row = {"task": task, "method": method, "draws": len(draws)}
        for metric in METRICS:
            values = [draw[metric] for draw in draws if metric in draw]
            if values:
                row[metric] = {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}
        row["tutorial_printed"] = TUTORIAL_PRINTED.get(method)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| task | method | acc mean | acc min | acc max | detection rate | false positive rate | tutorial printed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        acc = row["test/acc"]
        rates = [f"{row[m]['mean']:.3f}" if m in row else "" for m in METRICS[1:]]
        printed = f"{row['tutorial_printed']:.4f}" if row["tutorial_printed"] else ""
        lines.append(
            f"| {row['task']} | {row['method']} | {acc['mean']:.3f} | {acc['min']:.3f} | {acc['max']:.3f} "
            f"| {rates[0]} | {rates[1]} | {printed} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="a dragon CSV (default: generated dragons)")
    parser.add_argument("--draws", type=int, default=10, help="random draws (seeds first-draw .. first-draw + draws - 1)")
    parser.add_argument(
        "--first-draw", type=int, default=0, help="the first draw's seed (default 0, the draws of docs/results.md)"
    )
    parser.add_argument("--pipelines", action="store_true", help="also cv --refit --ensemble for the four main configs")
    parser.add_argument("--refit-seeds", type=int, default=1, help="with --pipelines: the refit's seeds (a seed ensemble)")
    parser.add_argument("--configs", nargs="*", default=CONFIGS, help="configs to run (default: all ten)")
    parser.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn peers")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    tasks = sorted({task_of(config) for config in args.configs})
    started = time.perf_counter()
    total, done = args.draws * len(args.configs), 0
    with tempfile.TemporaryDirectory() as root:
        for seed in range(args.first_draw, args.first_draw + args.draws):
            for config in args.configs:
                run_dir = Path(root) / f"{seed}-{config.replace('/', '-')}"
                runs.setdefault((task_of(config), config), []).append(run_config(config, seed, args.csv, run_dir))
                if args.pipelines and config in MAIN_CONFIGS:
                    for method, metrics in run_pipelines(config, seed, args.csv, run_dir, args.refit_seeds).items():
                        runs.setdefault((task_of(config), method), []).append(metrics)
                done += 1
                print(f"[{done}/{total} configs, {time.perf_counter() - started:.0f}s] draw {seed} {config}", file=sys.stderr)
            if not args.no_sklearn:
                for task in tasks:
                    for method, metrics in sklearn_metrics(task, seed, args.csv).items():
                        runs.setdefault((task, method), []).append(metrics)
    rows = summarise(dict(sorted(runs.items())))
    print(markdown(rows))
    if args.json:
        args.json.write_text(
            json.dumps({"csv": args.csv, "first_draw": args.first_draw, "draws": args.draws, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
