"""What the TensorBoard figures cost: ``fit`` on a config with figures on and off, side by side.

Runs alternate (on, off, on, off, ...) in one process so machine noise hits both alike, and the
median wall time of each is compared. The config runs as a user runs it (progress bar included,
its output discarded) unless ``--no-progress-bar``.

    python benchmarks/figure_cost.py --config configs/color_mlp.yaml --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

from dragon_lightning.cli import cli_main

ROOT = Path(__file__).resolve().parent.parent


def timed_fit(config: str, figures: bool, root: Path, progress_bar: bool) -> float:
    args = ["fit", "--config", str(ROOT / config), "--figures.enabled", str(figures).lower()]
    args += ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", str(progress_bar).lower()]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cli_main(args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/color_mlp.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-progress-bar", dest="progress_bar", action="store_false")
    args = parser.parse_args()
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as root:
        timed_fit(args.config, False, Path(root), args.progress_bar)  # warm-up: imports, first-run caches
        for repeat in range(args.repeats):
            for figures in (True, False):
                times[figures].append(timed_fit(args.config, figures, Path(root) / f"{repeat}-{figures}", args.progress_bar))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"| config | figures on (s) | figures off (s) | on / off |\n|---|---|---|---|")
    print(f"| {args.config} | {on:.2f} | {off:.2f} | {on / off:.3f} |")


if __name__ == "__main__":
    main()
