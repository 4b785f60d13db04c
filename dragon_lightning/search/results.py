"""What a sweep leaves in its folder: trials.csv, best_config.yaml and Optuna's plots."""

from __future__ import annotations

import warnings

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from dragon_lightning.figures.drawing import STYLE
from dragon_lightning.gates.outputs import OutputFolder
from dragon_lightning.search.runs import as_plain_data, with_options
from dragon_lightning.search.space import SearchSpace
from dragon_lightning.search.study import SweepSettings, open_study


def write_outputs(settings: SweepSettings, space: SearchSpace) -> FrozenTrial | None:
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
    config = as_plain_data(with_options(settings.fit_settings, best.params))
    draws = f" of {settings.repeats} draws" if settings.repeats > 1 else ""
    over = (
        f"the mean over {settings.folds} folds{draws} after their median kept epochs"
        if settings.folds
        else "the validation split"
    )
    header = f"# Best trial {best.number} of the sweep in {folder.path}: {settings.objective.metric} {best.value:.4f} ({over}).\n"
    text = header + yaml.safe_dump(config, sort_keys=False)
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
