"""The refit: once cross-validation has chosen the settings and the number of epochs, train once more
on every non-test row (no validation split) and keep the final weights, as scikit-learn's
``GridSearchCV(refit=True)`` does. It is a normal ``fit`` run: config.yaml, checkpoints, pictures and
the test at the end, the only use of the test rows."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from dragon_lightning.cli import DragonCLI, build_cli
from dragon_lightning.search.runs import in_run_folder

REFIT = "refit"
"""The refit's run folder in a cv or sweep folder."""
REFIT_OPTIONS = ("--data.val_fraction", "0", "--checkpoint.monitor", "null")
"""No validation rows, so nothing to rank checkpoints by: the final weights are kept."""


def recommended_epochs(epochs: Sequence[int]) -> int:
    """The median of the folds' kept epochs, rounded half up (at least 1)."""
    return max(1, int(statistics.median(epochs) + 0.5))


def refit_args(fit_args: Sequence[str], epochs: int) -> list[str]:
    """``fit`` options for the refit of ``fit_args``: every non-test row, ``epochs`` epochs."""
    return [*fit_args, *REFIT_OPTIONS, "--trainer.max_epochs", str(epochs)]


def refit(fit_args: Sequence[str], epochs: int, run_dir: Path) -> DragonCLI:
    """Train and test the refit into ``run_dir`` (a run folder of its own); returns the finished CLI."""
    args = ["fit", *refit_args(fit_args, epochs), "--test_after_fit", "true", *in_run_folder(run_dir)]
    print(f"refit on every non-test row for {epochs} epochs: {run_dir}", flush=True)
    return build_cli(args)
