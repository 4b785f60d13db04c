"""Sweep throughput with one and with two worker processes, side by side in one run.

    python benchmarks/sweep_workers.py --trials 8 --epochs 40

Runs the whole ``dragon-lightning sweep`` command twice on the same config, each in a fresh folder,
over a space that varies only the learning rate (so every trial costs the same), without pruning.
Prints trials per minute for each, their ratio, and the share of a trial's wall time spent outside
``Trainer.fit`` (set-up, validation of the kept weights, bookkeeping), from ``trials.csv``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SPACE = "model.init_args.optimizer.init_args.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n"


def timed_sweep(folder: Path, config: str, trials: int, epochs: int, workers: int) -> dict:
    (folder / "space.yaml").write_text(SPACE)
    command = [
        sys.executable,
        "-m",
        "dragon_lightning",
        "sweep",
        "--config",
        str(ROOT / config),
        "--space",
        str(folder / "space.yaml"),
        "--n_trials",
        str(trials),
        "--workers",
        str(workers),
        "--prune",
        "false",
        "--output_dir",
        str(folder / "sweep"),
        "--trainer.max_epochs",
        str(epochs),
        "--data.data_dir",
        str(folder / "data"),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=folder)
    seconds = time.perf_counter() - started
    table = pd.read_csv(folder / "sweep" / "trials.csv")
    outside = 1 - (table["user_attrs_training_seconds"] / table["duration"])
    return {
        "workers": workers,
        "seconds": seconds,
        "trials_per_minute": trials * 60 / seconds,
        "outside_training": outside.mean(),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/color_mlp.yaml")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    rows = []
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as folder:
            rows.append(timed_sweep(Path(folder), args.config, args.trials, args.epochs, workers))
    print(f"{args.config}, {args.trials} trials of {args.epochs} epochs, no pruning")
    print("| workers | wall time (s) | trials per minute | share of a trial outside training |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['workers']} | {row['seconds']:.1f} | {row['trials_per_minute']:.2f} | {row['outside_training']:.1%} |")
    print(f"two workers / one: {rows[1]['trials_per_minute'] / rows[0]['trials_per_minute']:.2f}x")
    return rows


if __name__ == "__main__":
    main()
