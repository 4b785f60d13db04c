"""``dragon-lightning cv --config C --folds K``: one config trained on each of K stratified folds."""

from __future__ import annotations

from pathlib import Path
import pandas as pd

from dragon_lightning.cli import quiet_lightning
from dragon_lightning.gates.outputs import OutputFolder
from dragon_lightning.search.runs import (
    CommandParser,
    RunResult,
    check_config,
    fit_and_validate,
    mean_and_std,
    next_free,
)

PROG = "dragon-lightning cv"
RESULTS = "cv_results.csv"


def outputs(folds: int) -> list[str]:
    """What ``cv`` writes into its folder: a run folder per fold and the results table."""
    return [RESULTS, *(f"fold_{fold}" for fold in range(folds))]


def cross_validate(fit_args: list[str], folds: int, output_dir: Path, metric: str) -> list[RunResult]:
    """Train on every fold (run folders ``fold_0`` ...), print each fold's validation metrics, write
    ``cv_results.csv``, and return the results."""
    folder = OutputFolder(output_dir, "--output_dir")
    folder.claim(outputs(folds))
    results = []
    for fold in range(folds):
        result = fit_and_validate(folder.claim_folder(f"fold_{fold}"), [*fit_args, "--data.n_folds", str(folds), "--data.fold", str(fold)])
        results.append(result)
        print(f"fold {fold}: " + ", ".join(f"{name} {value:.4f}" for name, value in sorted(result.metrics.items())), flush=True)
    table = pd.DataFrame([{"fold": fold, **result.metrics} for fold, result in enumerate(results)])
    path = folder.write(RESULTS, lambda tmp: table.to_csv(tmp, index=False))
    mean, std = mean_and_std([result.metrics[metric] for result in results])
    print(f"{metric}: mean {mean:.4f}, standard deviation {std:.4f} over {folds} folds; {path}")
    return results


def cv_command(args: list[str]) -> list[RunResult]:
    parser = CommandParser(
        prog=PROG,
        description="Cross-validate a config: the rows outside the test split are cut into K stratified "
        "folds; each fold validates once while the others train (one run folder each). Prints every "
        "fold's validation metrics and the mean and standard deviation of the monitored one, and writes "
        "cv_results.csv. Test rows are not touched.",
    )
    parser.add_argument("--folds", type=int, default=5, help="number of folds, at least 2 (default: 5)")
    parser.add_argument("--output_dir", type=Path, default=None, help="where the fold runs and cv_results.csv go "
                        "(default: a new lightning_logs/cv_N under --trainer.default_root_dir); a folder that already "
                        "holds files of the same names that dragon-lightning did not write is refused before any run")
    own, fit_args = parser.parse_known_args(args)
    if own.folds < 2:
        parser.error(f"--folds must be at least 2, got {own.folds}")
    quiet_lightning()
    if own.output_dir is not None:  # before the config's checks write anything
        OutputFolder(own.output_dir, "--output_dir").claim(outputs(own.folds))
    checked = check_config([*fit_args, "--data.n_folds", str(own.folds)], PROG)
    output_dir: Path = own.output_dir or next_free(checked.root_dir / "lightning_logs", "cv")
    return cross_validate(fit_args, own.folds, output_dir, checked.objective.metric)
