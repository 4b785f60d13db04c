"""How many trials a study has done, and taking the next one so that the study ends with exactly
``--n_trials`` finished trials, however many processes or machines share it.

A trial counts once it is complete, pruned or failed on its own (a diverging run). It does not count
when it was interrupted (Ctrl-C, SIGTERM), went stale (its machine stopped beating) and was retried,
or was taken as a surplus: processes that ask for a trial at the same moment near the end may get one
more than the study needs; trial numbers are handed out in order, so the trial beyond the budget
knows it is one, and ends before it runs (as does a second trial of the config's own settings).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

SKIPPED = ("interrupted", "surplus")
"""User attributes that mark a failed trial as not run to its end, so not counted."""
CONFIGS_OWN = "config_own"
"""The user attribute that marks the trial of the config's own settings. Every machine that starts a
shared sweep enqueues it, and Optuna's ``skip_if_exists`` is no lock: machines that start together
may each enqueue one, and all but the first are a surplus."""
POLL_SECONDS = 2.0


def retried(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials run again under another number: ours (``retry_of``) and Optuna's heartbeat retries."""
    numbers = {t.user_attrs.get("retry_of") for t in trials}
    numbers.update(number for t in trials for number in t.system_attrs.get("retry_history", []))
    return {number for number in numbers if number is not None}


def counts(trial: FrozenTrial, again: set[int]) -> bool:
    """Whether a finished trial counts towards ``--n_trials``."""
    if trial.number in again:
        return False
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not any(trial.user_attrs.get(mark) for mark in SKIPPED)


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count towards ``--n_trials``."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    return [t for t in trials if counts(t, again)]


def interrupted(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.RUNNING or (trial.state == TrialState.FAIL and bool(trial.user_attrs.get("interrupted")))


def requeue_interrupted(study: optuna.Study, running_are_stale: bool) -> int:
    """Queue each interrupted trial's settings once more (Optuna's journal has no heartbeat). Trials
    still marked running are stale only when this folder's journal is the storage."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    count = 0
    for trial in trials:
        if trial.number in again or not interrupted(trial):
            continue
        if trial.state == TrialState.RUNNING:
            if not running_are_stale:
                continue
            study.tell(trial.number, state=TrialState.FAIL)
        kept = {CONFIGS_OWN: True} if trial.user_attrs.get(CONFIGS_OWN) else {}  # still the config's own settings
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, **kept})
        count += 1
    return count


def is_surplus(trial: optuna.Trial, n_trials: int) -> bool:
    """Whether ``n_trials`` trials numbered before this one already count or run, or one numbered
    before it already holds the config's own settings (:data:`CONFIGS_OWN`), other than one this
    trial retries (a retry copies the failed trial's attributes)."""
    trials = trial.study.get_trials(deepcopy=False)
    again = retried(trials)
    if trial.user_attrs.get(CONFIGS_OWN) and any(
        t.user_attrs.get(CONFIGS_OWN) and t.number not in again and not t.user_attrs.get("surplus")
        for t in trials
        if t.number < trial.number
    ):
        return True
    ahead = [
        t
        for t in trials
        if t.number < trial.number and (counts(t, again) or (t.state == TrialState.RUNNING and t.number not in again))
    ]
    return len(ahead) >= n_trials


def run_until_done(study: optuna.Study, objective: Callable[[optuna.Trial], Any], n_trials: int, callbacks: list) -> None:
    """Take trials until the study has ``n_trials`` that count. While the others' running trials would
    reach the budget, wait: one of them may stop, go stale and be retried here (Optuna fails stale
    trials of a database with a heartbeat when a trial starts)."""
    while len(finished(study)) < n_trials:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if len(finished(study)) + len(running) >= n_trials:
            optuna.storages.fail_stale_trials(study)
            time.sleep(POLL_SECONDS)
            continue
        study.optimize(objective, n_trials=1, callbacks=callbacks, gc_after_trial=False)
