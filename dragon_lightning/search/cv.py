"""``dragon-lightning cv --config C --folds K``: one config trained on each of K stratified folds; then,
on request, the refit on every non-test row for the folds' median epochs and the fold ensemble.

A fold that finished is recorded in ``fold_k/result.json`` with the options it ran with; the same
command again with the same ``--output_dir`` (after an interruption) reuses it instead of training it
again."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from jsonargparse.typing import PositiveInt

from dragon_lightning.arguments import AtLeastTwo
from dragon_lightning.errors import DragonInputError, first_line
from dragon_lightning.gates.inputs import CSV, RUN_RECORD, opened, read_text
from dragon_lightning.gates.outputs import OutputFolder
from dragon_lightning.quiet import quiet_lightning
from dragon_lightning.registry import CONTINUES_IN
from dragon_lightning.search.ensemble import ENSEMBLE_CHECKPOINT, write_ensemble
from dragon_lightning.search.refit import (
    RefitOptions,
    SeedPlan,
    as_refit_trains,
    recommended_epochs,
    refit_outputs,
    refit_with_seeds,
)
from dragon_lightning.search.runs import (
    FitSettings,
    RunResult,
    SearchCLI,
    as_plain_data,
    check_search,
    fit_and_validate,
    fold_name,
    mean_and_std,
    next_free,
    test_run,
    validate_run,
    with_options,
)

PROG = "dragon-lightning cv"
RESULTS = "cv_results.csv"
FOLD_RESULT = "result.json"
ENSEMBLE = "ensemble"


def member_name(fold: str, member: int) -> str:
    """The run folder of a fold's model ``member`` (the first is the fold's own folder)."""
    return fold if member == 0 else f"{fold}_seed_{member}"


def seed_ensemble_name(fold: str) -> str:
    """The run folder where a fold's seed ensemble is validated."""
    return f"{fold}_seeds"


def outputs(folds: int, repeats: int = 1, refit_seeds: int = 1, seeds: int = 1) -> list[str]:
    """What ``cv`` writes into its folder: a run folder per fold (per fold and seed, and the fold's seed
    ensemble, with several seeds), the results table, the refits' and the ensemble's run folders."""
    runs = [fold_name(fold, repeat, repeats) for repeat in range(repeats) for fold in range(folds)]
    seeded = [member_name(run, member) for run in runs for member in range(seeds)]
    ensembles = [seed_ensemble_name(run) for run in runs] if seeds > 1 else []
    return [RESULTS, *seeded, *ensembles, *refit_outputs(refit_seeds), ENSEMBLE]


def finished_fold(run_dir: Path, settings: FitSettings) -> RunResult | None:
    """The recorded result of a fold that ran to its end with the same options and kept its checkpoint."""
    try:
        recorded = json.loads(read_text(run_dir / FOLD_RESULT, RUN_RECORD))
        result = RunResult.from_record(recorded["result"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):  # not a record of ours: the fold runs again
        return None
    same = recorded.get("settings") == as_plain_data(settings) and (not result.checkpoint or Path(result.checkpoint).is_file())
    return result if same else None


def run_fold(folder: OutputFolder, settings: FitSettings, name: str) -> RunResult:
    label = name.replace("_", " ")
    if (result := finished_fold(folder.path / name, settings)) is not None:
        print(f"{label}: finished earlier, reused ({folder.path / name})", flush=True)
        return result
    run_dir = folder.claim_folder(name)
    print(f"{label}: training in {run_dir}", flush=True)
    result = fit_and_validate(run_dir, settings, progress_bar=True)
    record_result(run_dir, settings, result)
    return result


def record_result(run_dir: Path, settings: FitSettings, result: RunResult) -> None:
    """``result.json``: what a finished fold ran with and scored, for the same command to reuse."""
    record = {"settings": as_plain_data(settings), "result": {**asdict(result), "run_dir": str(result.run_dir)}}
    OutputFolder(run_dir).write(FOLD_RESULT, lambda tmp: tmp.write_text(json.dumps(record, indent=1), encoding="utf-8"))


@dataclass(frozen=True)
class FoldRun:
    """A fold's result as cv scores it, and the checkpoints of the models it averaged (its own alone,
    with one seed)."""

    result: RunResult
    members: list[str]


def run_seeded_fold(folder: OutputFolder, settings: FitSettings, name: str, plan: SeedPlan) -> FoldRun:
    """A fold's models, one per seed of ``plan``; with several, the fold is scored as their seed ensemble,
    validated on the fold's rows (kept epochs: the members' median, as a refit would train)."""
    members = [run_fold(folder, with_options(settings, plan.seeded(m)), member_name(name, m)) for m in range(plan.seeds)]
    checkpoints = [member.checkpoint for member in members]
    if plan.seeds == 1:
        return FoldRun(members[0], checkpoints)
    ensemble_name, recorded = seed_ensemble_name(name), {"fit": settings, "members": checkpoints}
    if (result := finished_fold(folder.path / ensemble_name, recorded)) is not None:
        return FoldRun(result, checkpoints)
    run_dir = folder.claim_folder(ensemble_name)
    path = write_ensemble(checkpoints, run_dir / "checkpoints" / ENSEMBLE_CHECKPOINT)
    print(f"{name.replace('_', ' ')}: seed ensemble of {plan.seeds}, validated in {run_dir}", flush=True)
    result = RunResult(
        run_dir,
        validate_run(run_dir, settings, path),
        sum(member.training_seconds for member in members),
        recommended_epochs([member.epochs for member in members]),
        str(path),
    )
    record_result(run_dir, recorded, result)
    return FoldRun(result, checkpoints)


def cross_validate(
    settings: FitSettings,
    folds: int,
    output_dir: Path,
    metric: str,
    repeats: int = 1,
    paired_with: tuple[Path, pd.DataFrame] | None = None,
    seeds: SeedPlan | None = None,
) -> list[FoldRun]:
    """Train on every fold of every draw of folds (run folders ``fold_0`` ..., or ``repeat_R_fold_K``;
    one per seed of ``seeds``), print each fold's validation metrics and kept epochs, write
    ``cv_results.csv`` (one row per fold, with its draw in ``repeat``), and return the folds, draw by draw."""
    seeds = seeds or SeedPlan(1, None, None)
    folder = OutputFolder(output_dir, "--output_dir")
    folder.claim(outputs(folds, repeats, seeds=seeds.seeds))
    runs: list[FoldRun] = []
    rows = []
    for repeat in range(repeats):
        for fold in range(folds):
            name = fold_name(fold, repeat, repeats)
            options = {"data.n_folds": folds, "data.fold": fold, "data.fold_draw": repeat}
            runs.append(run_seeded_fold(folder, with_options(settings, options), name, seeds))
            result = runs[-1].result
            rows.append({"repeat": repeat, "fold": fold, **result.metrics, "epochs": result.epochs})
            print(
                f"{name.replace('_', ' ')}: "
                + ", ".join(f"{key} {value:.4f}" for key, value in sorted(result.metrics.items()))
                + f", kept after {result.epochs} epochs",
                flush=True,
            )
    epochs, as_refit = as_refit_trains([run.result for run in runs])
    for row, score in zip(rows, as_refit, strict=True) if as_refit else ():
        row.update({name + AT_REFIT: value for name, value in score.items()})
    path = folder.write(RESULTS, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
    print(f"{summary(rows, metric, folds, repeats)}; recommended epochs (median kept): {epochs}; {path}", flush=True)
    if as_refit:
        print(f"as the refit trains (each fold's weights after {epochs} epochs, not its best epoch on its own rows): "
              f"{summary(rows, metric + AT_REFIT, folds, repeats)}", flush=True)  # fmt: skip
    for column in (metric, metric + AT_REFIT):
        if paired_with is not None and column in rows[0] and column in paired_with[1]:
            difference, error, paired = paired_difference(pd.DataFrame(rows), paired_with[1], column)
            print(f"{column}, this config minus {paired_with[0]}: {difference:+.4f}, standard error {error:.4f}, "
                  f"paired over the same {paired} folds", flush=True)  # fmt: skip
    return runs


AT_REFIT = " at refit epochs"
"""The column of a fold's metric as the refit trains: ``val/acc at refit epochs``."""


def read_results(folder: Path, metric: str, folds: int, repeats: int) -> pd.DataFrame:
    """Another ``cv``'s ``cv_results.csv`` (through the input gate), refused in one line unless it holds
    ``metric`` for the folds this command will run: the same draws and folds, so differences pair up."""
    path = folder / RESULTS
    with opened(path, CSV, "--paired_with") as file:
        try:
            table = pd.read_csv(file)
        except (ValueError, UnicodeDecodeError) as error:
            raise DragonInputError(f"--paired_with {path}: not a table cv wrote ({first_line(error)})") from None
    wanted = {(repeat, fold) for repeat in range(repeats) for fold in range(folds)}
    keys = [tuple(row) for row in table[["repeat", "fold"]].values.tolist()] if {"repeat", "fold"} <= set(table) else []
    values = pd.to_numeric(table[metric], errors="coerce") if metric in table else pd.Series([np.nan])
    if set(keys) != wanted or len(keys) != len(wanted) or not np.isfinite(values).all():  # text, NaN, inf, a repeated fold
        raise DragonInputError(
            f"--paired_with {path}: holds no finite {metric} for each fold of {repeats} draw(s) of {folds} folds, once; "
            "pair runs made with the same --folds, --repeats, seed and monitored metric"
        )
    column = metric + AT_REFIT  # compared where both tables have it
    refit_values = pd.to_numeric(table[column], errors="coerce") if column in table else pd.Series([np.nan])
    refit_columns = {column: refit_values} if np.isfinite(refit_values).all() else {}
    return table.drop(columns=[column], errors="ignore").assign(**{metric: values}, **refit_columns)


def paired_difference(ours: pd.DataFrame, theirs: pd.DataFrame, metric: str) -> tuple[float, float, int]:
    """One config's ``metric`` minus another's on the same folds: the mean difference, its standard
    error (from the draws' mean differences, or across folds for one draw, as :func:`summary` does),
    and the number of folds paired."""
    joined = ours.merge(theirs, on=["repeat", "fold"], suffixes=("", " other"))
    joined["difference"] = joined[metric] - joined[f"{metric} other"]
    repeats = joined["repeat"].nunique()
    parts = joined.groupby("repeat")["difference"].mean() if repeats > 1 else joined["difference"]
    error = mean_and_std(parts.tolist())[1] / math.sqrt(len(parts))
    return float(joined["difference"].mean()), error, len(joined)


def summary(rows: list[dict], metric: str, folds: int, repeats: int) -> str:
    """The monitored metric's mean over every fold; over one draw its standard deviation across folds,
    over several the standard error of the mean from the draws' means (folds of one draw share rows,
    draws are independent cuts of the same rows)."""
    mean, std = mean_and_std([row[metric] for row in rows])
    if repeats == 1:
        return f"{metric}: mean {mean:.4f}, standard deviation {std:.4f} over {folds} folds"
    draw_means = [mean_and_std([row[metric] for row in rows if row["repeat"] == r])[0] for r in range(repeats)]
    error = mean_and_std(draw_means)[1] / math.sqrt(repeats)
    return f"{metric}: mean {mean:.4f}, standard error {error:.4f} over {repeats} draws of {folds} folds"


@dataclass(frozen=True)
class CrossValidation:
    """What ``cv`` ran: each fold's result, and the test metrics of the refit and of the ensemble when
    they were asked for."""

    folds: list[FoldRun]
    refit_test: dict[str, float] | None = None
    """The first refit's."""
    seed_ensemble_test: dict[str, float] | None = None
    ensemble_test: dict[str, float] | None = None


def test_metrics(cli) -> dict[str, float]:
    return {name: float(value) for name, value in cli.trainer.callback_metrics.items() if name.startswith("test/")}


@dataclass(frozen=True)
class CrossValidationOptions(RefitOptions):
    """cv's own options

    Args:
        folds: number of folds, at least 2
        repeats: repeated cross-validation: cut the same non-test rows into folds this many times, each
            draw stratified and different (the same draws for the same seed), and report the mean with
            its standard error
        paired_with: another cv's folder, run with the same --folds, --repeats and seed: print this
            config's monitored metric minus that one's, paired fold by fold, with its standard error
        seeds: train each fold this many times, with seeds seed_everything, +1, ... on the same rows (run
            folders 'fold_K', 'fold_K_seed_1', ...), and score the fold as their average (validated in
            'fold_K_seeds'): cross-validates the seed ensemble that --refit_seeds trains
        ensemble: then average the fold models' probabilities (the first draw's, with --repeats; every
            seed's, with --seeds) (and the refit models', with --refit true) as one model,
            ensemble/checkpoints/ensemble.ckpt, and test it: run folder 'ensemble'
        output_dir: where the fold runs and cv_results.csv go (default: a new lightning_logs/cv_N under
            --trainer.default_root_dir); a folder that already holds files of the same names that
            dragon-lightning did not write is refused before any run
    """

    folds: AtLeastTwo = 5
    repeats: PositiveInt = 1
    paired_with: Path | None = None
    seeds: PositiveInt = 1
    ensemble: bool = False
    output_dir: Path | None = None


class CrossValidationCLI(SearchCLI):
    Options = CrossValidationOptions

    def check_options(self, options: CrossValidationOptions) -> None:
        if options.output_dir is not None:  # before the config's checks write anything
            OutputFolder(options.output_dir, "--output_dir").claim(
                outputs(options.folds, options.repeats, options.refit_seeds, options.seeds)
            )


DESCRIPTION = (
    "Cross-validate a config: the rows outside the test split are cut into K stratified folds; each fold "
    "validates once while the others train (one run folder each). Prints every fold's validation metrics "
    "and the epochs it trained up to the checkpoint it kept, the mean and standard deviation of the monitored "
    "metric and the median of those epochs, the same metric as the refit trains (each fold's weights after "
    "those epochs, the weights a refit keeps), "
    "and writes cv_results.csv. Test rows are touched only by the refit's and the ensemble's final test. "
    "The same command again with the same --output_dir reuses the folds that finished. Every fit option applies to every run; cv's "
    "own options (--folds, --repeats, --refit, --ensemble, --output_dir...) are listed last, and one YAML file (--config) "
    "can hold them too."
)


def cv_command(args: list[str]) -> CrossValidation:
    quiet_lightning()
    checked = check_search(args, CrossValidationCLI, PROG, DESCRIPTION)
    own: CrossValidationOptions = checked.options
    plan = SeedPlan.for_refit(checked.settings, own.refit_seeds, PROG) if own.refit else None  # before any fold trains
    output_dir: Path = own.output_dir or next_free(checked.root_dir / "lightning_logs", "cv")
    CONTINUES_IN.set(lambda: f"continue with the same command and --output_dir {output_dir}: the finished folds are kept")
    metric = checked.objective.metric
    paired = None if own.paired_with is None else (own.paired_with, read_results(own.paired_with, metric, own.folds, own.repeats))
    seeds = SeedPlan.of(checked.config, own.seeds)
    runs = cross_validate(checked.settings, own.folds, output_dir, metric, own.repeats, paired, seeds)
    folder = OutputFolder(output_dir, "--output_dir")
    members = [member for run in runs[: own.folds] for member in run.members]  # the first draw's fold models
    outcome = CrossValidation(runs)
    if plan is not None:
        epochs = recommended_epochs([run.result.epochs for run in runs])
        refits = refit_with_seeds(plan, checked.settings, epochs, folder)
        members += [run.tested_checkpoint for run in refits.runs]
        outcome = replace(outcome, refit_test=test_metrics(refits.runs[0]))
        if refits.seed_ensemble is not None:
            outcome = replace(outcome, seed_ensemble_test=test_metrics(refits.seed_ensemble))
    if own.ensemble:
        ensemble_dir = folder.claim_folder(ENSEMBLE)
        path = write_ensemble(members, ensemble_dir / "checkpoints" / ENSEMBLE_CHECKPOINT)
        print(f"ensemble of {len(members)} models: {path}", flush=True)
        tested = test_run(ensemble_dir, checked.settings, path)
        outcome = replace(outcome, ensemble_test=test_metrics(tested))
    return outcome
