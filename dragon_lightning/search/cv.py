"""``dragon-lightning cv --config C --folds K``: one config trained on each of K stratified folds; then,
on request, the refit on every non-test row for the folds' median epochs and the fold ensemble.

A fold that finished is recorded in ``fold_k/result.json`` with the options it ran with; the same
command again (after an interruption) reuses it instead of training it again."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from dragon_lightning.arguments import AtLeastTwo
from dragon_lightning.gates.inputs import RUN_RECORD, read_text
from dragon_lightning.gates.outputs import OutputFolder
from dragon_lightning.quiet import quiet_lightning
from dragon_lightning.search.ensemble import ENSEMBLE_CHECKPOINT, write_ensemble
from dragon_lightning.search.refit import REFIT, recommended_epochs, refit, refit_args
from dragon_lightning.search.runs import (
    CommandParser,
    RunResult,
    boolean,
    check_config,
    fit_and_validate,
    mean_and_std,
    next_free,
    ranged,
    test_run,
)

PROG = "dragon-lightning cv"
RESULTS = "cv_results.csv"
FOLD_RESULT = "result.json"
ENSEMBLE = "ensemble"


def outputs(folds: int) -> list[str]:
    """What ``cv`` writes into its folder: a run folder per fold, the results table, the refit and the
    ensemble run folders."""
    return [RESULTS, *(f"fold_{fold}" for fold in range(folds)), REFIT, ENSEMBLE]


def finished_fold(run_dir: Path, fold_args: list[str]) -> RunResult | None:
    """The recorded result of a fold that ran to its end with the same options and kept its checkpoint."""
    try:
        recorded = json.loads(read_text(run_dir / FOLD_RESULT, RUN_RECORD))
        result = RunResult.from_record(recorded["result"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):  # not a record of ours: the fold runs again
        return None
    same = recorded.get("fit_args") == fold_args and (not result.checkpoint or Path(result.checkpoint).is_file())
    return result if same else None


def run_fold(folder: OutputFolder, fold_args: list[str], fold: int) -> RunResult:
    name = f"fold_{fold}"
    if (result := finished_fold(folder.path / name, fold_args)) is not None:
        print(f"fold {fold}: finished earlier, reused ({folder.path / name})", flush=True)
        return result
    run_dir = folder.claim_folder(name)
    print(f"fold {fold}: training in {run_dir}", flush=True)
    result = fit_and_validate(run_dir, fold_args, progress_bar=True)
    record = {"fit_args": fold_args, "result": {**asdict(result), "run_dir": str(result.run_dir)}}
    OutputFolder(run_dir).write(FOLD_RESULT, lambda tmp: tmp.write_text(json.dumps(record, indent=1), encoding="utf-8"))
    return result


def cross_validate(fit_args: list[str], folds: int, output_dir: Path, metric: str) -> list[RunResult]:
    """Train on every fold (run folders ``fold_0`` ...), print each fold's validation metrics and kept
    epochs, write ``cv_results.csv``, and return the results."""
    folder = OutputFolder(output_dir, "--output_dir")
    folder.claim(outputs(folds))
    results = []
    for fold in range(folds):
        result = run_fold(folder, [*fit_args, "--data.n_folds", str(folds), "--data.fold", str(fold)], fold)
        results.append(result)
        print(
            f"fold {fold}: "
            + ", ".join(f"{name} {value:.4f}" for name, value in sorted(result.metrics.items()))
            + f", kept epoch {result.epochs}",
            flush=True,
        )
    table = pd.DataFrame([{"fold": fold, **result.metrics, "epochs": result.epochs} for fold, result in enumerate(results)])
    path = folder.write(RESULTS, lambda tmp: table.to_csv(tmp, index=False))
    mean, std = mean_and_std([result.metrics[metric] for result in results])
    print(
        f"{metric}: mean {mean:.4f}, standard deviation {std:.4f} over {folds} folds; "
        f"recommended epochs (median kept): {recommended_epochs([r.epochs for r in results])}; {path}",
        flush=True,
    )
    return results


@dataclass(frozen=True)
class CrossValidation:
    """What ``cv`` ran: each fold's result, and the test metrics of the refit and of the ensemble when
    they were asked for."""

    folds: list[RunResult]
    refit_test: dict[str, float] | None = None
    ensemble_test: dict[str, float] | None = None


def test_metrics(cli) -> dict[str, float]:
    return {name: float(value) for name, value in cli.trainer.callback_metrics.items() if name.startswith("test/")}


def cv_command(args: list[str]) -> CrossValidation:
    parser = CommandParser(
        prog=PROG,
        description="Cross-validate a config: the rows outside the test split are cut into K stratified "
        "folds; each fold validates once while the others train (one run folder each). Prints every "
        "fold's validation metrics and kept epoch, the mean and standard deviation of the monitored metric "
        "and the median kept epoch, and writes cv_results.csv. Test rows are touched only by the refit's and "
        "the ensemble's final test. The same command again reuses the folds that finished.",
    )
    parser.add_argument("--folds", type=ranged(AtLeastTwo), default=5, help="number of folds, at least 2 (default: 5)")
    parser.add_argument(
        "--refit",
        type=boolean,
        default=False,
        help="then train once more on every non-test row "
        "(--data.val_fraction 0) for the median kept epoch of the folds, keep the final weights and "
        "test them: run folder 'refit' (default: false)",
    )
    parser.add_argument(
        "--ensemble",
        type=boolean,
        default=False,
        help="then average the fold models' probabilities "
        "(and the refit model's, with --refit true) as one model, ensemble/checkpoints/ensemble.ckpt, "
        "and test it: run folder 'ensemble' (default: false)",
    )
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=None,
        help="where the fold runs and cv_results.csv go "
        "(default: a new lightning_logs/cv_N under --trainer.default_root_dir); a folder that already "
        "holds files of the same names that dragon-lightning did not write is refused before any run",
    )
    own, fit_args = parser.parse_known_args(args)
    quiet_lightning()
    if own.output_dir is not None:  # before the config's checks write anything
        OutputFolder(own.output_dir, "--output_dir").claim(outputs(own.folds))
    checked = check_config([*fit_args, "--data.n_folds", str(own.folds)], PROG)
    if own.refit:  # the refit's options are checked before any fold trains
        check_config(refit_args(fit_args, 1), PROG, compared=False)
    output_dir: Path = own.output_dir or next_free(checked.root_dir / "lightning_logs", "cv")
    results = cross_validate(fit_args, own.folds, output_dir, checked.objective.metric)
    folder = OutputFolder(output_dir, "--output_dir")
    members = [result.checkpoint for result in results]
    outcome = CrossValidation(results)
    if own.refit:
        refitted = refit(fit_args, recommended_epochs([r.epochs for r in results]), folder.claim_folder(REFIT))
        if refitted.tested_checkpoint:  # none without checkpointing
            members.append(refitted.tested_checkpoint)
        outcome = replace(outcome, refit_test=test_metrics(refitted))
    if own.ensemble:
        ensemble_dir = folder.claim_folder(ENSEMBLE)
        path = write_ensemble(members, ensemble_dir / "checkpoints" / ENSEMBLE_CHECKPOINT)
        print(f"ensemble of {len(members)} models: {path}", flush=True)
        tested = test_run(ensemble_dir, [*fit_args, "--ckpt_path", str(path)])
        outcome = replace(outcome, ensemble_test=test_metrics(tested))
    return outcome
