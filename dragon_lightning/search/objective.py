"""One trial of a sweep: the space's settings as ``fit`` options, scored on validation data; and the line
printed as each trial ends."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from dragon_lightning.errors import TrainingDiverged
from dragon_lightning.search.refit import as_refit_trains, recommended_epochs
from dragon_lightning.search.runs import RunResult, fit_and_validate, fold_name, mean_and_std, with_options
from dragon_lightning.search.space import SearchSpace
from dragon_lightning.search.study import SweepSettings
from dragon_lightning.search.trials import is_surplus


class TrialObjective:
    """One trial: the space's settings as ``fit`` options, trained on the split or on every fold."""

    def __init__(self, settings: SweepSettings, space: SearchSpace) -> None:
        self.settings = settings
        self.space = space

    def __call__(self, trial: optuna.Trial) -> float:
        if is_surplus(trial, self.settings.n_trials):
            trial.set_user_attr("surplus", True)  # another process took the study's last trial meanwhile
            return math.nan
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except TrainingDiverged as diverged:
            trial.set_user_attr("diverged", str(diverged))
            return math.nan  # a failed trial; the sweep goes on
        except BaseException:
            trial.set_user_attr("interrupted", True)  # Ctrl-C, SIGTERM: run it again next time
            raise

    def _run(self, trial: optuna.Trial) -> float:
        from optuna_integration import PyTorchLightningPruningCallback

        trial_dir = Path(self.settings.sweep_dir) / f"trial_{trial.number}"
        metric = self.settings.objective.metric
        base = with_options(self.settings.fit_settings, self.space.suggest(trial))
        if not self.settings.folds:
            pruning = PyTorchLightningPruningCallback(trial, monitor=metric)
            result = fit_and_validate(trial_dir, base, callbacks=[pruning])
            trial.set_user_attr("training_seconds", result.training_seconds)
            trial.set_user_attr("epochs", result.epochs)
            return result.metrics[metric]
        results: list[RunResult] = []
        folds, repeats = self.settings.folds, self.settings.repeats
        for step, (repeat, fold) in enumerate((r, k) for r in range(repeats) for k in range(folds)):
            on_fold = with_options(base, {"data.n_folds": folds, "data.fold": fold, "data.fold_draw": repeat})
            results.append(fit_and_validate(trial_dir / fold_name(fold, repeat, repeats), on_fold))
            trial.set_user_attr("training_seconds", sum(result.training_seconds for result in results))
            trial.set_user_attr("epochs", recommended_epochs([result.epochs for result in results]))
            trial.report(mean_and_std([result.metrics[metric] for result in results])[0], step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {fold_name(fold, repeat, repeats).replace('_', ' ')}")
        return refit_score(results, metric, trial)


def refit_score(results: list[RunResult], metric: str, trial: optuna.Trial) -> float:
    """A trial's score over its folds as its refit trains (:func:`as_refit_trains`), as ``cv`` reports
    it; the mean of the folds' best epochs is kept as a user attribute."""
    kept = mean_and_std([result.metrics[metric] for result in results])[0]
    trial.set_user_attr("kept_epochs_score", kept)
    scores = as_refit_trains(results)[1]
    return mean_and_std([score[metric] for score in scores])[0] if scores else kept


def report_progress(metric: str):
    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.user_attrs.get("surplus"):
            return
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        if trial.state == TrialState.COMPLETE:
            kept = trial.user_attrs.get("kept_epochs_score")
            at_best = f" as the refit trains ({kept:.4f} at each fold's best epoch)" if kept is not None else ""
            outcome = f"{metric} {trial.value:.4f}{at_best}"
        elif trial.state == TrialState.PRUNED:
            outcome = f"pruned at step {trial.last_step}"
        else:
            outcome = "failed: " + trial.user_attrs.get("diverged", "no value")
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        best = f"; best {study.best_value:.4f} (trial {study.best_trial.number})" if complete else ""
        print(f"trial {trial.number}: {outcome}{best}; {seconds:.1f} s", flush=True)

    return report
