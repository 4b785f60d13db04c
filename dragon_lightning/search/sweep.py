"""``dragon-lightning sweep --config C --space S --n_trials N``: Optuna's TPE search over a config.

Every trial is a quiet ``fit`` (one run folder per trial, or per fold with ``--folds``) scored on
validation data; a median pruner stops hopeless trials, each epoch through the Lightning pruning
callback (between folds with ``--folds``). The study lives in a journal file in the sweep folder, so
the same command again continues it: finished trials are kept, interrupted ones run again. Test rows
are used only by ``fit --config <sweep>/best_config.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import optuna
from jsonargparse import ArgumentError
from jsonargparse.typing import PositiveInt
from optuna.trial import FrozenTrial, TrialState

from dragon_lightning.arguments import AtLeastTwo, Seed
from dragon_lightning.checkpoints.io import plain_values
from dragon_lightning.errors import DragonError, DragonInputError
from dragon_lightning.gates.outputs import OutputFolder
from dragon_lightning.messages import input_error_message
from dragon_lightning.quiet import quiet_lightning
from dragon_lightning.registry import CONTINUES_IN
from dragon_lightning.search.refit import RefitOptions, SeedPlan, refit_outputs, refit_with_seeds
from dragon_lightning.search.results import write_outputs
from dragon_lightning.search.runs import SearchCLI, check_search, check_settings, with_options
from dragon_lightning.search.space import SearchSpace, read_space
from dragon_lightning.search.storage import open_database, open_storage
from dragon_lightning.search.study import SweepSettings, open_study
from dragon_lightning.search.trials import CONFIGS_OWN, finished, requeue_interrupted
from dragon_lightning.search.workers import run_workers

PROG = "dragon-lightning sweep"
OUTPUTS = ("trials.csv", "best_config.yaml", "optimization_history.png", "param_importances.png")


def default_sweep_dir(checked: SearchCLI, space: SearchSpace) -> Path:
    config = Path(str(checked.config.config[-1])).stem if checked.config.get("config") else "defaults"
    return checked.root_dir / "sweeps" / f"{config}-{space.path.stem}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepOptions(RefitOptions):
    """sweep's own options

    Args:
        space: YAML file mapping fit option keys to distributions (configs/sweeps/)
        n_trials: trials the study should have in total; a rerun adds the missing ones
        folds: score each trial over this many stratified folds, as its refit trains: the mean of each
            fold's score after the folds' median kept epochs, as cv reports it (default: one split,
            scored at its best epoch)
        repeats: with --folds: cut the rows into folds this many times, as cv --repeats does, and score
            each trial over every fold of every draw (repeated cross-validation)
        workers: processes that run trials side by side on this machine
        storage: an Optuna database URL (postgresql://..., mysql://...) shared by machines; default: a
            journal file in the sweep folder
        study_name: the study's name in the storage (default: the sweep folder's name)
        prune: stop trials whose validation metric is worse than the median of earlier trials at the
            same epoch (or fold); false: run every trial to the end
        heartbeat: with --storage: seconds between a running trial's heartbeats; a trial whose machine
            stays silent for twice as long is run again by another
        seed: seeds the sampler (worker i uses seed + i; with --storage, mixed with the machine and process)
        output_dir: the sweep folder (default: sweeps/<config>-<space> under --trainer.default_root_dir);
            a folder holding files of the names a sweep writes that dragon-lightning did not write is
            refused before any trial
    """

    space: str
    n_trials: PositiveInt = 20
    folds: AtLeastTwo | None = None
    repeats: PositiveInt = 1
    workers: PositiveInt = 1
    storage: str | None = None
    study_name: str | None = None
    prune: bool = True
    heartbeat: PositiveInt = 60
    seed: Seed = 0
    output_dir: Path | None = None


class SweepCLI(SearchCLI):
    Options = SweepOptions
    space: SearchSpace

    def check_options(self, options: SweepOptions) -> None:
        if options.repeats > 1 and not options.folds:
            raise DragonInputError(f"--repeats {options.repeats} draws folds several times: add --folds K")
        self.space = read_space(options.space)
        if options.storage is not None:  # a bad URL, a missing driver or a server that is down: one line, nothing written
            open_database(options.storage, options.heartbeat)
        if options.output_dir is not None:  # before the config's checks write anything
            OutputFolder(options.output_dir, "--output_dir").claim([*OUTPUTS, *refit_outputs(options.refit_seeds)])


DESCRIPTION = (
    "Search a config's options with Optuna (TPE sampler, median pruner). Each trial is a fit scored on "
    "validation data (its monitored metric), one run folder per trial. The same command again continues "
    "the study. Writes trials.csv, best_config.yaml (train and test it with 'dragon-lightning fit --config "
    "<sweep>/best_config.yaml') and Optuna's plots. Every fit option applies to every trial; "
    "sweep's own options (--space, --n_trials, --workers, --output_dir...) are listed last, and one YAML file (--config) "
    "can hold them too."
)


def sweep_command(args: list[str]) -> FrozenTrial | None:
    quiet_lightning()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    checked = check_search(args, SweepCLI, PROG, DESCRIPTION)
    own: SweepOptions = checked.options
    space = checked.space
    check_space(checked, space)
    plan = SeedPlan.for_refit(checked.settings, own.refit_seeds, PROG) if own.refit else None  # before any trial runs
    sweep_dir = own.output_dir or default_sweep_dir(checked, space)
    OutputFolder(sweep_dir, "--output_dir").claim([*OUTPUTS, *refit_outputs(own.refit_seeds)])
    sweep_dir.mkdir(parents=True, exist_ok=True)
    settings = SweepSettings(
        fit_settings=checked.settings,
        space_path=str(space.path),
        sweep_dir=str(sweep_dir),
        storage_url=own.storage,
        study_name=own.study_name or sweep_dir.name,
        objective=checked.objective,
        folds=own.folds,
        repeats=own.repeats,
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
    baseline = enqueue_the_configs_own(study, checked, space)
    remaining = own.n_trials - len(finished(study))
    print(
        f"sweep in {sweep_dir}: {len(finished(study))} trials done, {max(remaining, 0)} to run"
        + (f" ({again} interrupted, run again)" if again else "")
        + f"; {settings.objective.direction} {settings.objective.metric}",
        flush=True,
    )
    CONTINUES_IN.set(lambda: "the same command again continues the study")
    if remaining > 0:
        run_workers(settings, min(own.workers, remaining))
    best = write_outputs(settings, space)
    if best is None:
        print(f"no trial completed; trials.csv in {sweep_dir}")
    else:
        print(
            f"best trial {best.number}: {settings.objective.metric} {best.value:.4f}; "
            f"dragon-lightning fit --config {sweep_dir / 'best_config.yaml'}",
            flush=True,
        )
        verdict = against_the_configs_own(open_study(settings, 0), best, settings.objective.direction, baseline)
        if verdict:
            print(verdict, flush=True)
        if plan is not None:
            epochs = best.user_attrs.get("epochs") or checked.config.trainer.max_epochs
            refit_with_seeds(plan, with_options(checked.settings, best.params), epochs, OutputFolder(sweep_dir, "--output_dir"))
    return best


def enqueue_the_configs_own(study: optuna.Study, checked: SearchCLI, space: SearchSpace) -> str | None:
    """The config's own settings as a trial of the study, scored as every trial is, so that the best
    is weighed against what the config already does; it runs once, whichever machines ask.
    Returns why not, when the space cannot draw them."""
    own = space.encoded({key: plain_values(checked.config.get(key)) for key in space.distributions})
    if not space.holds(own):
        return f"the config's own settings ({own}) lie outside the space"
    study.enqueue_trial(own, user_attrs={CONFIGS_OWN: True}, skip_if_exists=True)
    return None


def against_the_configs_own(study: optuna.Study, best: FrozenTrial, direction: str, outside: str | None) -> str | None:
    """One line weighing the best trial against the config's own settings under the same scoring."""
    if outside is not None:
        return f"not compared with the config: {outside}"
    own = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get(CONFIGS_OWN)]
    if not own:
        return None
    value = own[0].value
    assert value is not None and best.value is not None
    if best.value > value if direction == "maximize" else best.value < value:
        return f"the best trial beats the config's own settings (trial {own[0].number}): {best.value:.4f} against {value:.4f}"
    return (
        f"the config's own settings (trial {own[0].number}) score {value:.4f}, as well as the best trial: "
        "the search found nothing better than the config"
    )


def check_space(checked: SearchCLI, space: SearchSpace) -> None:
    """Every bound and choice of the space must make a config that ``fit`` accepts, before any trial;
    a refusal names the key and the value."""
    for key, value in space.extremes():
        try:
            check_settings(with_options(checked.settings, {key: value}), PROG)
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
        # A running trial on another machine holds only the parameters it has suggested so far.
        expected = space.distributions if trial.state.is_finished() else trial.distributions
        changed = sorted(set(trial.distributions) ^ set(expected)) or sorted(
            key for key, distribution in trial.distributions.items() if space.distributions.get(key) != distribution
        )
        if trial.distributions and changed:
            raise DragonInputError(
                f"{space.path}: differs from the space the study {study.study_name!r} was run with ({', '.join(changed)}); "
                "give another --output_dir or --study_name for a new study"
            )
