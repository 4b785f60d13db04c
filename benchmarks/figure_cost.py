"""What the TensorBoard figures cost: ``fit`` on a config with figures on and off, side by side.

Runs alternate (on, off, on, off, ...) so machine noise hits both alike, and the median wall time of
each is compared, two ways: ``fit`` called in this process (start-up and imports excluded, the
strictest view) and the whole ``dragon-lightning fit`` command as a user runs it. The config runs
with its progress bar (output discarded) unless ``--no-progress-bar``. ``--threads N`` runs every
variant with N PyTorch threads (``OMP_NUM_THREADS``): the pictures are drawn in a worker process only
where that leaves a core spare.

    python benchmarks/figure_cost.py --config configs/color_mlp.yaml --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dragon_lightning.commands import cli_main
from dragon_lightning.figures.painter import spare_core

ROOT = Path(__file__).resolve().parent.parent


def timed_fit(config: str, figures: bool, root: Path, progress_bar: bool) -> float:
    args = ["fit", "--config", str(ROOT / config), "--figures.enabled", str(figures).lower()]
    args += ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", str(progress_bar).lower()]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cli_main(args)
    return time.perf_counter() - started


def timed_command(config: str, figures: bool, root: Path, progress_bar: bool) -> float:
    command = [sys.executable, "-m", "dragon_lightning", "fit", "--config", str(ROOT / config)]
    command += ["--figures.enabled", str(figures).lower(), "--trainer.default_root_dir", str(root)]
    command += ["--trainer.enable_progress_bar", str(progress_bar).lower()]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=root.parent)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/color_mlp.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-progress-bar", dest="progress_bar", action="store_false")
    parser.add_argument("--threads", type=int, help="PyTorch's CPU threads for every variant (default: PyTorch's own)")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the whole commands
        torch.set_num_threads(args.threads)
    print(f"PyTorch CPU threads: {torch.get_num_threads()}; drawn in a worker: {spare_core()}", file=sys.stderr)
    print("| config | measured | figures on (s) | figures off (s) | on / off |\n|---|---|---|---|---|")
    for label, timed in (("fit in-process", timed_fit), ("whole command", timed_command)):
        times: dict[bool, list[float]] = {True: [], False: []}
        with tempfile.TemporaryDirectory() as root:
            timed(args.config, False, Path(root) / "warm-up", args.progress_bar)  # imports, first-run caches
            for repeat in range(args.repeats):
                for figures in (True, False):
                    times[figures].append(timed(args.config, figures, Path(root) / f"{repeat}-{figures}", args.progress_bar))
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(f"| {args.config} | {label} | {on:.2f} | {off:.2f} | {on / off:.3f} |")


if __name__ == "__main__":
    main()
