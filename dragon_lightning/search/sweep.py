"""``dragon-lightning sweep --config C --space S --n_trials N``: Optuna's TPE search over a config.

Every trial is a quiet ``fit`` (one run folder per trial, or per fold with ``--folds``) scored on
validation data; a median pruner stops hopeless trials, each epoch through the Lightning pruning
callback (between folds with ``--folds``). The study lives in a journal file in the sweep folder, so
the same command again continues it: finished trials are kept, interrupted ones run again. Test rows
are used only by ``fit --config <sweep>/best_config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from argparse import ArgumentError
from pathlib import Path

import optuna
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from optuna.trial import FrozenTrial, TrialState

from dragon_lightning.cli import FitSetupCLI, build_cli, input_error_message, quiet_lightning, quiet_warnings
from dragon_lightning.data.datamodule import MAX_SEED
from dragon_lightning.errors import DragonError, DragonInputError, TrainingDiverged
from dragon_lightning.figures.drawing import STYLE
from dragon_lightning.gates.outputs import OutputFolder
from dragon_lightning.search.refit import REFIT, recommended_epochs, refit, refit_args
from dragon_lightning.search.runs import (
    CheckedConfig,
    CommandParser,
    Objective,
    boolean,
    check_config,
    fit_and_validate,
    mean_and_std,
)
from dragon_lightning.search.space import SearchSpace, as_options, read_space
from dragon_lightning.search.storage import open_database, open_storage
from dragon_lightning.search.trials import finished, is_surplus, requeue_interrupted, run_until_done

PROG = "dragon-lightning sweep"
PARENT_POLL_SECONDS = 1.0
OUTPUTS = ("trials.csv", "best_config.yaml", "optimization_history.png", "param_importances.png", REFIT)


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """Everything a worker process needs (plain values: workers are started fresh)."""

    fit_args: tuple[str, ...]
    space_path: str
    sweep_dir: str
    storage_url: str | None
    study_name: str
    objective: Objective
    folds: int | None
    seed: int
    threads: int | None
    prune: bool = True
    n_trials: int = 20
    """Trials the study should have in total (see :mod:`dragon_lightning.search.trials`)."""
    heartbeat: int = 60
    """Seconds between a database trial's heartbeats; one silent for twice as long is retried elsewhere."""
    trials_before: int = 0
    """Trials the study had when this command started: a rerun seeds its samplers apart from the last run's."""


def open_study(settings: SweepSettings, worker: int) -> optuna.Study:
    """The shared study, with a sampler seeded per worker (one seed would repeat the same first trials)."""
    return optuna.create_study(
        study_name=settings.study_name,
        storage=open_storage(settings.sweep_dir, settings.storage_url, settings.heartbeat),
        load_if_exists=True,
        direction=settings.objective.direction,
        sampler=optuna.samplers.TPESampler(seed=(settings.seed + 1000 * settings.trials_before + worker) % 2**32),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0 if settings.folds else 5)
        if settings.prune
        else optuna.pruners.NopPruner(),
    )


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

        options = as_options(self.space.suggest(trial))
        trial_dir = Path(self.settings.sweep_dir) / f"trial_{trial.number}"
        metric = self.settings.objective.metric
        base = [*self.settings.fit_args, *options]
        if not self.settings.folds:
            pruning = PyTorchLightningPruningCallback(trial, monitor=metric)
            result = fit_and_validate(trial_dir, base, callbacks=[pruning])
            trial.set_user_attr("training_seconds", result.training_seconds)
            trial.set_user_attr("epochs", result.epochs)
            return result.metrics[metric]
        scores, training, epochs = [], 0.0, []
        for fold in range(self.settings.folds):
            fold_args = [*base, "--data.n_folds", str(self.settings.folds), "--data.fold", str(fold)]
            result = fit_and_validate(trial_dir / f"fold_{fold}", fold_args)
            scores.append(result.metrics[metric])
            training += result.training_seconds
            epochs.append(result.epochs)
            trial.set_user_attr("training_seconds", training)
            trial.set_user_attr("epochs", recommended_epochs(epochs))
            trial.report(mean_and_std(scores)[0], fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {fold}")
        return mean_and_std(scores)[0]


def report_progress(metric: str):
    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.user_attrs.get("surplus"):
            return
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        if trial.state == TrialState.COMPLETE:
            outcome = f"{metric} {trial.value:.4f}"
        elif trial.state == TrialState.PRUNED:
            outcome = f"pruned at step {trial.last_step}"
        else:
            outcome = "failed: " + trial.user_attrs.get("diverged", "no value")
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        best = f"; best {study.best_value:.4f} (trial {study.best_trial.number})" if complete else ""
        print(f"trial {trial.number}: {outcome}{best}; {seconds:.1f} s", flush=True)

    return report


def run_worker(settings: SweepSettings, worker: int) -> None:
    """Take trials of the shared study in this process until it has ``n_trials``, without re-importing
    anything between them."""
    quiet_warnings()
    quiet_lightning()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    study = open_study(settings, worker)
    objective = TrialObjective(settings, read_space(settings.space_path))
    with warnings.catch_warnings():  # Optuna marks its stale-trial check experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        run_until_done(study, objective, settings.n_trials, [report_progress(settings.objective.metric)])


def _stop_with_parent(parent: int) -> None:
    """End this worker when the sweep that started it ends, even by SIGKILL: no orphan keeps writing.
    SIGTERM, as Ctrl-C would, marks its trial as interrupted, to run again next time."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-sweep-parent", daemon=True).start()


def _worker_process(settings: SweepSettings, worker: int, parent: int) -> None:
    _stop_with_parent(parent)
    try:
        run_worker(settings, worker)
    except (KeyboardInterrupt, SIGTERMException):
        raise SystemExit(130) from None


def run_workers(settings: SweepSettings, workers: int) -> None:
    """``workers`` processes share the study; Ctrl-C or SIGTERM stops them all (their trials run again next time)."""
    if workers == 1:
        run_worker(settings, 0)
        return
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_process, args=(settings, i, os.getpid()), daemon=False) for i in range(workers)]

    def stop(signum, frame):
        for process in processes:
            if process.is_alive():
                process.terminate()
        raise SIGTERMException()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = [process.exitcode for process in processes if process.exitcode]
    if failed:
        raise DragonError(
            f"sweep: {len(failed)} of {len(processes)} worker processes failed (exit {failed[0]}); see their output above"
        )


def write_outputs(settings: SweepSettings, checked: CheckedConfig, space: SearchSpace) -> FrozenTrial | None:
    """trials.csv, best_config.yaml and Optuna's history and importance plots in the sweep folder."""
    study = open_study(settings, 0)
    folder = OutputFolder(settings.sweep_dir, "--output_dir")
    table = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration", "user_attrs"))
    if "duration" in table:
        table["duration"] = table["duration"].dt.total_seconds()
    folder.write("trials.csv", lambda tmp: table.to_csv(tmp, index=False))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = study.best_trial
    # The logger's folder stays "<trainer.default_root_dir>": fit places it under that option's value then.
    config = checked.cli.parser.parse_args([*settings.fit_args, *as_options(best.params)])
    over = f"the mean over {settings.folds} folds" if settings.folds else "the validation split"
    header = f"# Best trial {best.number} of the sweep in {folder.path}: {settings.objective.metric} {best.value:.4f} ({over}).\n"
    text = header + checked.cli.parser.dump(config, skip_none=False)
    folder.write("best_config.yaml", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    metric = settings.objective.metric
    _plot(folder, "optimization_history.png", optuna.visualization.matplotlib.plot_optimization_history, study, metric)
    if len(complete) > 1 and len(space.distributions) > 1:
        _plot(folder, "param_importances.png", optuna.visualization.matplotlib.plot_param_importances, study, metric)
    return best


def _plot(folder: OutputFolder, name: str, plot, study: optuna.Study, metric: str) -> None:
    """Optuna's matplotlib plots use pyplot and change its style: draw them inside a style context,
    with the metric named on its axis and trials counted in whole numbers."""
    import matplotlib
    from matplotlib import pyplot
    from matplotlib.ticker import MaxNLocator

    with matplotlib.rc_context(STYLE), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot(study, target_name=metric)
        if "history" in name:
            axes.set_ylabel(metric)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        figure = axes.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        folder.write(name, lambda tmp: figure.savefig(tmp, format="png", dpi=90))
        pyplot.close(figure)


def _default_sweep_dir(checked: CheckedConfig, space: SearchSpace) -> Path:
    config = Path(str(checked.cli.config.config[-1])).stem
    return checked.root_dir / "sweeps" / f"{config}-{space.path.stem}"


def sweep_command(args: list[str]) -> FrozenTrial | None:
    parser = CommandParser(
        prog=PROG,
        description="Search a config's options with Optuna (TPE sampler, median pruner). Each trial is a "
        "fit scored on validation data (its monitored metric), one run folder per trial. The same command "
        "again continues the study. Writes trials.csv, best_config.yaml (train and test it with "
        "'dragon-lightning fit --config <sweep>/best_config.yaml') and Optuna's plots.",
    )
    parser.add_argument("--space", required=True, help="YAML file mapping fit option keys to distributions (configs/sweeps/)")
    parser.add_argument(
        "--n_trials",
        type=int,
        default=20,
        help="trials the study should have in total; a rerun adds the missing ones (default: 20)",
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=None,
        help="score each trial by the mean over this many stratified folds (default: one split)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes that run trials side by side on this machine (default: 1)"
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="an Optuna database URL (postgresql://..., mysql://...) shared by machines; "
        "default: a journal file in the sweep folder",
    )
    parser.add_argument("--study_name", default=None, help="the study's name in the storage (default: the sweep folder's name)")
    parser.add_argument(
        "--prune",
        type=boolean,
        default=True,
        help="stop trials whose validation metric is worse than "
        "the median of earlier trials at the same epoch (or fold); false: run every trial to the end (default: true)",
    )
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        help="with --storage: seconds between a running trial's "
        "heartbeats; a trial whose machine stays silent for twice as long is run again by another (default: 60)",
    )
    parser.add_argument(
        "--refit",
        type=boolean,
        default=False,
        help="then train the best settings once more on every "
        "non-test row (--data.val_fraction 0) for the epochs the best trial kept (the median over its "
        "folds), keep the final weights and test them: run folder 'refit' (default: false)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampler (worker i uses seed + i; default: 0)")
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=None,
        help="the sweep folder (default: sweeps/<config>-<space> "
        "under --trainer.default_root_dir); a folder holding files of the names a sweep writes that "
        "dragon-lightning did not write is refused before any trial",
    )
    own, fit_args = parser.parse_known_args(args)
    for name, value, low in (("n_trials", own.n_trials, 1), ("workers", own.workers, 1), ("folds", own.folds or 2, 2)):
        if value < low:
            parser.error(f"--{name} must be at least {low}, got {value}")
    if not 0 <= own.seed <= MAX_SEED:
        parser.error(f"--seed must lie between 0 and {MAX_SEED}, got {own.seed}")
    if not own.heartbeat > 0:
        parser.error(f"--heartbeat must be a positive number of seconds, got {own.heartbeat}")
    if own.storage is not None:
        open_database(
            own.storage, own.heartbeat
        )  # a bad URL, a missing driver or a server that is down: one line, nothing written
    quiet_lightning()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if own.output_dir is not None:  # before the config's checks write anything
        OutputFolder(own.output_dir, "--output_dir").claim(OUTPUTS)
    space = read_space(own.space)
    folds = ["--data.n_folds", str(own.folds)] if own.folds else []
    checked = check_config([*fit_args, *folds], PROG)
    check_space(checked, space)
    if own.refit:  # the refit's options are checked before any trial runs
        check_config(refit_args(fit_args, 1), PROG)
    sweep_dir = own.output_dir or _default_sweep_dir(checked, space)
    OutputFolder(sweep_dir, "--output_dir").claim(OUTPUTS)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    settings = SweepSettings(
        fit_args=tuple(fit_args),
        space_path=str(space.path),
        sweep_dir=str(sweep_dir),
        storage_url=own.storage,
        study_name=own.study_name or sweep_dir.name,
        objective=checked.objective,
        folds=own.folds,
        seed=own.seed,
        threads=max(1, (os.cpu_count() or 1) // own.workers) if own.workers > 1 else None,
        prune=own.prune,
        n_trials=own.n_trials,
        heartbeat=own.heartbeat,
    )
    check_same_space(settings, space)
    study = open_study(settings, 0)
    settings = dataclasses.replace(settings, trials_before=len(study.trials))
    again = requeue_interrupted(study, running_are_stale=own.storage is None)
    remaining = own.n_trials - len(finished(study))
    print(
        f"sweep in {sweep_dir}: {len(finished(study))} trials done, {max(remaining, 0)} to run"
        + (f" ({again} interrupted, run again)" if again else "")
        + f"; {settings.objective.direction} {settings.objective.metric}",
        flush=True,
    )
    try:
        if remaining > 0:
            run_workers(settings, min(own.workers, remaining))
    except (KeyboardInterrupt, SystemExit) as stopped:  # Lightning ends a run on Ctrl-C with SystemExit(1)
        print(f"{PROG}: stopped; run the same command again to continue the study", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM if isinstance(stopped, SIGTERMException) else 130) from None
    best = write_outputs(settings, checked, space)
    if best is None:
        print(f"no trial completed; trials.csv in {sweep_dir}")
    else:
        print(
            f"best trial {best.number}: {settings.objective.metric} {best.value:.4f}; "
            f"dragon-lightning fit --config {sweep_dir / 'best_config.yaml'}",
            flush=True,
        )
        if own.refit:
            epochs = best.user_attrs.get("epochs") or checked.cli.config.trainer.max_epochs
            refit([*fit_args, *as_options(best.params)], epochs, OutputFolder(sweep_dir, "--output_dir").claim_folder(REFIT))
    return best


def check_space(checked: CheckedConfig, space: SearchSpace) -> None:
    """Every bound and choice of the space must make a config that ``fit`` accepts, before any trial;
    a refusal names the key and the value."""
    for key, value in space.extremes():
        try:
            build_cli([*checked.fit_args, *as_options({key: value})], run=False, cli_class=FitSetupCLI, prog=PROG)
        except (DragonError, ArgumentError, ValueError) as error:
            message = input_error_message(error)
            if message is None:
                raise
            raise DragonInputError(f"{space.path}: {key}: {value}: {message}") from None


def check_same_space(settings: SweepSettings, space: SearchSpace) -> None:
    """A study continues only with the space it was started with: other keys or ranges would mix
    trials that answer different questions. Read without writing to the storage."""
    try:
        study = optuna.load_study(
            study_name=settings.study_name, storage=open_storage(settings.sweep_dir, settings.storage_url, settings.heartbeat)
        )
    except KeyError:  # a new study
        return
    for trial in study.get_trials(deepcopy=False):
        if trial.distributions and trial.distributions != space.distributions:
            changed = sorted(set(trial.distributions) ^ set(space.distributions)) or sorted(
                key for key in space.distributions if trial.distributions[key] != space.distributions[key]
            )
            raise DragonInputError(
                f"{space.path}: differs from the space the study {study.study_name!r} was run with ({', '.join(changed)}); "
                "give another --output_dir or --study_name for a new study"
            )
