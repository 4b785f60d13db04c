"""Which config to train: folds in the data module, ``dragon-lightning cv`` and ``dragon-lightning sweep``."""

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from clihelpers import ROOT, config, expect_one_line_error, files_under, run, run_in_subprocess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightning.pytorch.callbacks import Callback
from optuna.trial import TrialState
from test_cli import read_events

from dragon_lightning.checkpoints.checks import check_resumable
from dragon_lightning.commands import cli_main
from dragon_lightning.data import DragonDataModule
from dragon_lightning.errors import DragonInputError, InvalidArgument
from dragon_lightning.search.cv import read_results
from dragon_lightning.search.runs import Objective, check_search, with_options
from dragon_lightning.search.space import read_space
from dragon_lightning.search.storage import open_storage
from dragon_lightning.search.study import SweepSettings, open_study
from dragon_lightning.search.sweep import SweepCLI, check_same_space, check_space, default_sweep_dir
from dragon_lightning.search.trials import CONFIGS_OWN, is_surplus

COLOR_SPACE = str(ROOT / "configs" / "sweeps" / "color_mlp.yaml")
SHORT = ["--trainer.max_epochs", "3"]
FIRE_SPACE = str(ROOT / "configs" / "sweeps" / "fire_logistic.yaml")
LR = "model.init_args.optimizer.init_args.lr"


def sweep_args(config_name: str, space: str | Path, output_dir: str | Path, *extra: str) -> list[str]:
    """``sweep`` of ``config_name`` over ``space`` into ``output_dir``, keeping generated tables in memory."""
    return ["sweep", "--config", config(config_name), "--space", str(space), "--output_dir", str(output_dir),
            "--data.data_dir", "null", *extra]  # fmt: skip


def test_folds_keep_the_test_split_and_partition_the_other_rows(real_csv):
    plain = DragonDataModule(task="color", csv_path=real_csv, seed=7)
    plain.setup("fit")
    rest = set(
        torch.cat([plain.splits["train"][0], plain.splits["val"][0]]).numpy().view([("", np.float32)] * 2).ravel().tolist()
    )
    validated = []
    for fold in range(4):
        data = DragonDataModule(task="color", csv_path=real_csv, seed=7, n_folds=4, fold=fold)
        data.setup("fit")
        assert torch.equal(data.splits["test"][0], plain.splits["test"][0]), "the test split never changes"
        val, val_labels = data.splits["val"]
        assert np.ptp(np.bincount(val_labels.numpy())) <= 1, "folds are stratified"
        validated.append(val)
    rows = torch.cat(validated)
    assert len(rows) == len(rest) and set(rows.numpy().view([("", np.float32)] * 2).ravel().tolist()) == rest


def fold_rows(draw: int, fold: int, seed: int = 3) -> tuple[set, set, np.ndarray]:
    """Validation and test rows (as feature tuples) and validation labels of one fold of one draw."""
    data = DragonDataModule(task="color", n_folds=4, fold=fold, fold_draw=draw, seed=seed, data_dir=None)
    data.setup("fit")
    as_set = lambda split: set(map(tuple, data.splits[split][0].numpy().tolist()))  # noqa: E731
    return as_set("val"), as_set("test"), data.splits["val"][1].numpy()


def test_repeated_folds_are_other_stratified_cuts_of_the_same_rows_and_the_same_for_the_same_seed():
    draws = {draw: [fold_rows(draw, fold) for fold in range(4)] for draw in (0, 1, 2)}
    tests = {frozenset(test) for folds in draws.values() for _, test, _ in folds}
    assert len(tests) == 1, "every draw keeps the test split"
    cuts = []
    for folds in draws.values():
        validated = [val for val, _, _ in folds]
        assert sum(map(len, validated)) == len(set().union(*validated)), "a draw's folds do not overlap"
        for _, _, labels in folds:
            counts = np.bincount(labels, minlength=3)
            assert counts.max() - counts.min() <= 2, "stratified: each fold holds every color alike"
        cuts.append({frozenset(val) for val in validated})
    assert cuts[0] != cuts[1] != cuts[2] != cuts[0], "each draw cuts other folds"
    again, _, labels = fold_rows(1, 2)
    assert again == draws[1][2][0] and np.array_equal(labels, draws[1][2][2]), "the same draw for the same seed"
    assert fold_rows(1, 2, seed=4)[0] != again, "another seed, other folds"


def test_cv_repeats_trains_every_fold_of_every_draw_and_reports_the_standard_error(tmp_path, capfd):
    """A whole cv run as one YAML file: its own options beside fit's, as a second --config."""
    cv_dir = tmp_path / "cv"
    whole_run = {"folds": 2, "repeats": 2, "output_dir": str(cv_dir), "trainer": {"max_epochs": 2}, "data": {"data_dir": None}}
    (tmp_path / "cv.yaml").write_text(yaml.safe_dump(whole_run))
    run("cv", "--config", config("fire_logistic.yaml"), "--config", str(tmp_path / "cv.yaml"))
    saved = yaml.safe_load((cv_dir / "repeat_1_fold_0" / "config.yaml").read_text())
    assert (saved["data"]["fold_draw"], saved["trainer"]["max_epochs"]) == (1, 2) and "repeats" not in saved, "fit's options only"
    table = pd.read_csv(cv_dir / "cv_results.csv")
    assert table[["repeat", "fold"]].values.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert sorted(p.name for p in cv_dir.iterdir() if p.is_dir()) == [f"repeat_{r}_fold_{f}" for r in (0, 1) for f in (0, 1)]
    draw_means = table.groupby("repeat")["val/loss"].mean()  # the config's monitored metric
    error = draw_means.std() / np.sqrt(2)
    expected = f"val/loss: mean {table['val/loss'].mean():.4f}, standard error {error:.4f} over 2 draws of 2 folds"
    assert expected in capfd.readouterr().out


def test_cv_paired_with_another_cv_subtracts_fold_by_fold_and_refuses_other_folds(tmp_path, capfd):
    def cv(folder: str, lr: str, *extra: str) -> None:
        common = ["--config", config("fire_logistic.yaml"), "--folds", "2", "--repeats", "2", "--trainer.max_epochs", "2"]
        run("cv", *common, "--output_dir", str(tmp_path / folder), "--data.data_dir", "null",
            "--model.init_args.optimizer.init_args.lr", lr, *extra)  # fmt: skip

    cv("slow", "0.01")
    capfd.readouterr()
    cv("fast", "0.1", "--paired_with", str(tmp_path / "slow"), "--trainer.enable_progress_bar", "false")
    slow, fast = (pd.read_csv(tmp_path / name / "cv_results.csv") for name in ("slow", "fast"))
    differences = fast["val/loss"] - slow["val/loss"]  # the same (repeat, fold) rows, in the same order
    draws = differences.groupby(fast["repeat"]).mean()
    expected = (
        f"val/loss, this config minus {tmp_path / 'slow'}: {differences.mean():+.4f}, "
        f"standard error {draws.std() / np.sqrt(2):.4f}, paired over the same 4 folds"
    )
    printed = capfd.readouterr().out
    assert expected in printed
    assert "Epoch 1:" not in printed, "--trainer.enable_progress_bar false hides the folds' progress bars"
    at_refit = fast["val/loss at refit epochs"] - slow["val/loss at refit epochs"]
    assert f"val/loss at refit epochs, this config minus {tmp_path / 'slow'}: {at_refit.mean():+.4f}" in printed
    before = files_under(tmp_path)
    args = ["cv", "--config", config("fire_logistic.yaml"), "--folds", "3", "--output_dir", str(tmp_path / "other"),
            "--paired_with", str(tmp_path / "slow")]  # fmt: skip
    expect_one_line_error(
        capfd,
        tmp_path,
        before,
        args,
        f"--paired_with {tmp_path / 'slow' / 'cv_results.csv'}: holds no finite val/loss for each fold of 1 draw(s) of 3 folds",
    )
    # Edited results are refused before any fold trains: they failed only when the differences were taken.
    for edited in ("val/loss\n0,0,abc", "val/loss\n0,0,inf", "val/loss\n0,0,0.1\n0,0,0.2"):  # text, inf, a fold twice
        (tmp_path / "edited").mkdir(exist_ok=True)
        (tmp_path / "edited" / "cv_results.csv").write_text(f"repeat,fold,{edited}\n0,1,0.2\n")
        with pytest.raises(DragonInputError, match="holds no finite val/loss for each fold of 1 draw"):
            read_results(tmp_path / "edited", "val/loss", 2, 1)
    (tmp_path / "edited" / "cv_results.csv").write_text(
        "repeat,fold,val/loss,val/loss at refit epochs\n0,0,0.1,abc\n0,1,0.2,0.3\n"
    )
    assert "val/loss at refit epochs" not in read_results(tmp_path / "edited", "val/loss", 2, 1), (
        "an edited refit column is not paired"
    )


def test_fold_options_are_checked_and_recorded_for_resume():
    with pytest.raises(InvalidArgument, match="n_folds is not of type AtLeastTwo: 1 does not conform to restriction v>=2"):
        DragonDataModule(n_folds=1)
    with pytest.raises(InvalidArgument, match="fold must lie between 0 and 4"):
        DragonDataModule(n_folds=5, fold=5)
    with pytest.raises(DragonInputError, match="too few for 200 folds"):
        DragonDataModule(n_folds=200, data_dir=None).setup("fit")
    trained = {"datamodule_hyper_parameters": dict(DragonDataModule(n_folds=5, fold=1, data_dir=None).hparams)}
    with pytest.raises(DragonInputError, match=r"--data\.fold 1 \(now 2\)"):
        check_resumable(trained, "x.ckpt", dict(DragonDataModule(n_folds=5, fold=2, data_dir=None).hparams))


def test_cv_trains_every_fold_and_writes_their_validation_metrics(tmp_path, capfd):
    results = run("cv", "--config", config("color_mlp.yaml"), "--folds", "5", *SHORT, "--trainer.default_root_dir", str(tmp_path))
    cv_dir = tmp_path / "lightning_logs" / "cv_0"
    table = pd.read_csv(cv_dir / "cv_results.csv")
    assert table["fold"].tolist() == [0, 1, 2, 3, 4] and {"val/loss", "val/acc"} <= set(table.columns)
    assert not any(column.startswith("test/") for column in table.columns), "test rows are not touched"
    np.testing.assert_allclose(table["val/loss"], [run.result.metrics["val/loss"] for run in results.folds])
    printed = capfd.readouterr().out
    assert (
        f"val/loss: mean {table['val/loss'].mean():.4f}, standard deviation {table['val/loss'].std():.4f} over 5 folds" in printed
    )
    epochs = int(np.median(table["epochs"]) + 0.5)  # the refit's: every fold scored after them, not at its best
    at_refit = [run.result.after_epochs(epochs)["val/loss"] for run in results.folds]
    np.testing.assert_allclose(table["val/loss at refit epochs"], at_refit)
    assert f"as the refit trains (each fold's weights after {epochs} epochs" in printed
    assert f"val/loss at refit epochs: mean {np.mean(at_refit):.4f}, standard deviation" in printed
    for fold in range(5):
        training = printed.split(f"fold {fold}: training in {cv_dir / f'fold_{fold}'}")[1].split(f"fold {fold}: val/acc")[0]
        assert "Epoch 2: 100%" in training, "each fold shows its progress, one after another"
        assert f"v_num=fold_{fold}," in training, "its progress bar names the fold"
        saved = yaml.safe_load((cv_dir / f"fold_{fold}" / "config.yaml").read_text())
        assert (saved["data"]["n_folds"], saved["data"]["fold"]) == (5, fold), "each run records its fold"
    # A fold is a run folder like any other: compare finds its best checkpoint through its last.ckpt.
    (panel,) = run("compare", str(cv_dir / "fold_3"), "--output", str(tmp_path / "fold_3.png"))
    assert "fold_3" in panel.name and 0 < panel.accuracy <= 1


def test_a_runs_score_after_n_epochs_is_what_a_run_of_n_epochs_keeping_its_final_weights_scores(tmp_path):
    """What cv and a sweep judge a config by (the refit's epochs, final weights) is read from a longer
    run's validations, not trained again: it must be the score of the run that would be trained."""
    from dragon_lightning.search.runs import fit_and_validate

    settings = {**yaml.safe_load(Path(config("color_mlp.yaml")).read_text()), "trainer": {"max_epochs": 4}}
    settings = with_options(settings, {"data.data_dir": None, "data.n_folds": 2, "data.fold": 1})
    longer = fit_and_validate(tmp_path / "longer", settings)
    assert [entry["epoch"] for entry in longer.validations] == [0, 1, 2, 3]
    shorter = fit_and_validate(
        tmp_path / "shorter", with_options(settings, {"trainer.max_epochs": 2, "checkpoint.monitor": None})
    )
    assert longer.after_epochs(2) == pytest.approx(shorter.metrics, abs=1e-6)
    assert longer.after_epochs(2) != pytest.approx(longer.after_epochs(4), abs=1e-6), "the epochs matter"
    assert longer.after_epochs(10) == longer.after_epochs(4), "a run that stopped sooner: its last"


def test_cv_and_sweep_without_a_config_compare_runs_of_fits_defaults(tmp_path):
    """As ``fit`` alone trains the tutorial's MLP on color, ``cv`` and ``sweep`` alone compare its runs."""
    results = run(
        "cv", "--folds", "2", "--trainer.max_epochs", "1", "--data.n_dragons", "120", "--trainer.default_root_dir", str(tmp_path)
    )
    assert len(results.folds) == 2
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "cv_0" / "fold_1" / "config.yaml").read_text())
    assert (saved["model"]["class_path"], saved["data"]["task"]) == ("dragon_lightning.models.MLPClassifier", "color")
    checked = check_search(["--space", COLOR_SPACE, "--trainer.default_root_dir", str(tmp_path)], SweepCLI, "sweep", "")
    assert default_sweep_dir(checked, read_space(COLOR_SPACE)) == tmp_path / "sweeps" / "defaults-color_mlp"


def trials(sweep_dir: Path) -> pd.DataFrame:
    return pd.read_csv(sweep_dir / "trials.csv")


@pytest.mark.slow
def test_a_sweep_with_two_workers_continues_and_its_best_config_trains_and_tests(tmp_path, capfd):
    sweep_dir = tmp_path / "sweep"
    common = [
        "--config",
        config("color_mlp.yaml"),
        "--space",
        COLOR_SPACE,
        "--output_dir",
        str(sweep_dir),
        *SHORT,
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    best = run("sweep", *common, "--n_trials", "3", "--workers", "2")
    assert trials(sweep_dir)["state"].tolist() == ["COMPLETE"] * 3
    printed = capfd.readouterr().out
    assert sorted(line.split(":")[0] for line in printed.splitlines() if line.startswith("trial ")) == [
        "trial 0",
        "trial 1",
        "trial 2",
    ]
    for name in ("best_config.yaml", "optimization_history.png", "param_importances.png", "study.journal"):
        assert (sweep_dir / name).is_file(), name
    assert "_hparams_/experiment" in read_events(sweep_dir / "trial_0")["hparams"], "each trial has its HPARAMS row"
    assert best.value == trials(sweep_dir)["value"].min()

    run("sweep", *common, "--n_trials", "4")
    table = trials(sweep_dir)
    assert len(table) == 4 and table["number"].tolist() == [0, 1, 2, 3]
    assert table.filter(like="params_").iloc[3].tolist() != table.filter(like="params_").iloc[0].tolist(), "a rerun samples anew"

    tested = run("fit", "--config", str(sweep_dir / "best_config.yaml"), "--trainer.default_root_dir", str(tmp_path / "final"))
    assert 0 < float(tested.trainer.callback_metrics["test/acc"]) <= 1
    settings = yaml.safe_load((sweep_dir / "best_config.yaml").read_text())
    assert settings["data"]["batch_size"] == int(table.loc[table["value"].idxmin(), "params_data.batch_size"])


class InterruptOnce(Callback):
    """Ctrl-C in the first trial's second epoch, once per folder."""

    def on_train_epoch_start(self, trainer, pl_module):
        marker = Path("interrupted-once")
        if trainer.current_epoch == 1 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_an_interrupted_sweep_runs_its_interrupted_trial_again(tmp_path):
    args = sweep_args(
        "fire_logistic.yaml", FIRE_SPACE, "sweep", "--n_trials", "2", *SHORT, "--trainer.callbacks+=test_search.InterruptOnce"
    )
    stopped = run_in_subprocess(*args, cwd=tmp_path, timeout=300)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert (
        stopped.stderr.strip().splitlines()[-1]
        == "dragon-lightning: stopped by Ctrl-C; the same command again continues the study"
    )
    resumed = run_in_subprocess(*args, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "0 trials done, 2 to run (1 interrupted, run again)" in resumed.stdout
    table = trials(tmp_path / "sweep")
    assert table["state"].tolist() == ["FAIL", "COMPLETE", "COMPLETE"]
    params = table.filter(like="params_")
    assert params.iloc[1].tolist() == params.iloc[0].tolist(), "the interrupted trial's settings run again"
    assert table["user_attrs_retry_of"].iloc[1] == 0
    assert table["user_attrs_config_own"].iloc[1] is True, "the config's own settings, interrupted, stay marked so"
    assert (
        "the config's own settings (trial 1)" in resumed.stdout or "beats the config's own settings (trial 1)" in resumed.stdout
    )


def test_a_diverging_trial_fails_and_the_sweep_goes_on(tmp_path, capfd):
    space = tmp_path / "space.yaml"
    space.write_text("model.init_args.optimizer.init_args.lr: {type: categorical, choices: [1.0e+30]}\n")
    best = run(
        *sweep_args(
            "color_mlp.yaml", space, tmp_path / "sweep", "--n_trials", "2", *SHORT, "--trainer.default_root_dir", str(tmp_path)
        )
    )
    assert best is None
    table = trials(tmp_path / "sweep")
    assert table["state"].tolist() == ["FAIL", "FAIL"]
    assert table["user_attrs_diverged"].str.contains("training diverged").all()
    assert "no trial completed" in capfd.readouterr().out


@pytest.mark.parametrize(
    "space, config_name, message",
    [
        (
            "model.init_args.hiden_sizes: {type: categorical, choices: [[8]]}",
            "color_mlp.yaml",
            "--model.init_args.hiden_sizes: not an option of MLPClassifier",
        ),
        (
            "model.init_args.hidden_sizes: {type: categorical, choices: [[8]]}",
            "fire_logistic.yaml",
            "not an option of LogisticRegression",
        ),
        ("data.batch_size: {type: int, low: 64, high: 8}", "color_mlp.yaml", "data.batch_size: low must be below high"),
        ("data.batch_size: {type: int, low: 0, high: 8, log: true}", "color_mlp.yaml", "a log scale needs low above 0"),
        ("data.batch_size: {type: normal, low: 1, high: 8}", "color_mlp.yaml", "type float, int or categorical"),
        (
            "model.init_args.dropout: {type: float, low: 0.0, high: 1.5}",
            "color_mlp.yaml",
            "--model.init_args.dropout: Not of type ClosedOpenUnitInterval: 1.5 does not conform to restriction v>=0 and v<1",
        ),
    ],
)
def test_a_bad_space_is_one_line_before_any_trial(space, config_name, message, tmp_path, capfd):
    (tmp_path / "space.yaml").write_text(space + "\n")
    before = files_under(tmp_path)
    line = expect_one_line_error(
        capfd,
        tmp_path,
        before,
        sweep_args(config_name, tmp_path / "space.yaml", tmp_path / "sweep", "--trainer.default_root_dir", str(tmp_path)),
        message,
    )
    assert str(tmp_path / "space.yaml") in line


# Space files as a hand writes them: any option key, and any YAML where a distribution belongs.
SPACE_LEAF = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.booleans(),
    st.none(),
    st.sampled_from(["float", "int", "categorical", "1e-3"]),
)
SPACE_SPEC = st.recursive(
    SPACE_LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(["type", "low", "high", "log", "step", "choices"]), children, max_size=5),
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    document=st.one_of(
        st.dictionaries(st.sampled_from(["data.batch_size", "model.init_args.lr", "-x", ""]), SPACE_SPEC), SPACE_SPEC
    )
)
def test_any_space_file_is_read_or_refused_in_one_line(document, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        read_space(path)
    except DragonInputError as error:
        assert "\n" not in str(error) and str(path) in str(error), str(error)
    # a list as a distribution's type raised TypeError (unhashable)


def test_a_space_says_log_with_a_boolean(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text('model.init_args.lr: {type: float, low: 0.001, high: 0.1, log: "no"}\n')  # was read as a log scale
    with pytest.raises(DragonInputError, match=r"model\.init_args\.lr: log must be true or false, got 'no'"):
        read_space(path)


@pytest.mark.parametrize("space", sorted((ROOT / "configs" / "sweeps").glob("*.yaml")), ids=lambda path: path.name)
def test_the_shipped_spaces_fit_their_configs(space):
    checked = check_search(
        ["--config", config(space.name), "--space", str(space), "--data.data_dir", "null"], SweepCLI, "sweep", ""
    )
    check_space(checked, read_space(space))  # raises on any bound or choice the config refuses


def test_sweep_and_cv_explain_their_own_options(capsys):
    for command, option in (("sweep", "--n_trials"), ("cv", "--folds")):
        with pytest.raises(SystemExit) as done:
            cli_main([command, "--help"])
        assert done.value.code == 0
        help_text = capsys.readouterr().out
        assert option in help_text and "--trainer.max_epochs" in help_text, "its own options and fit's, in one parser"


def quick_sweep(folder: Path, trials: int, *extra: str):
    return run(
        *sweep_args("fire_logistic.yaml", FIRE_SPACE, folder, "--n_trials", str(trials), "--trainer.max_epochs", "2", *extra)
    )


def test_a_sweep_weighs_its_best_against_the_configs_own_settings(tmp_path, capfd):
    best = quick_sweep(tmp_path / "sweep", 3, "--trainer.default_root_dir", str(tmp_path))
    table = trials(tmp_path / "sweep")
    own = table[table["user_attrs_config_own"].fillna(False).astype(bool)]
    assert len(own) == 1, "the config's own settings are one trial, scored as the others"
    assert own.iloc[0][["params_model.init_args.optimizer.init_args.lr", "params_data.batch_size"]].tolist() == [0.05, 16]
    printed = capfd.readouterr().out
    if best.user_attrs.get("config_own") or best.value <= float(own.iloc[0]["value"]):
        assert "as well as the best trial: the search found nothing better than the config" in printed
    else:
        assert f"the best trial beats the config's own settings (trial {own.iloc[0]['number']})" in printed
    outside = tmp_path / "outside.yaml"
    outside.write_text("data.batch_size: {type: int, low: 32, high: 64}\n")  # the config's 16 is not in it
    run(*sweep_args("fire_logistic.yaml", outside, tmp_path / "other", "--n_trials", "1", "--trainer.max_epochs", "1"))
    assert "not compared with the config: the config's own settings ({'data.batch_size': 16}) lie outside the space" in (
        capfd.readouterr().out
    )
    layers = tmp_path / "layers.yaml"  # a list choice, as the study stores it: the config's own is one of them
    layers.write_text("model.init_args.hidden_sizes: {type: categorical, choices: [[8], [10, 20, 1000]]}\n")
    run(*sweep_args("color_mlp.yaml", layers, tmp_path / "layers", "--n_trials", "1", "--trainer.max_epochs", "1"))
    first = trials(tmp_path / "layers").iloc[0]
    assert bool(first["user_attrs_config_own"]) and first["params_model.init_args.hidden_sizes"] == "[10, 20, 1000]"


def test_the_configs_own_settings_run_once_when_machines_that_start_together_each_enqueued_them(tmp_path):
    """Optuna's ``skip_if_exists`` is no lock: two machines starting a shared study at the same moment
    can each enqueue the config's own settings. The second copy ends before it trains, uncounted."""
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    study = optuna.create_study(study_name="sweep", storage=open_storage(str(sweep_dir), None), direction="minimize")
    own = {"model.init_args.optimizer.init_args.lr": 0.05, "data.batch_size": 16}
    for _ in range(2):  # what two machines racing past skip_if_exists leave in the study
        study.enqueue_trial(own, user_attrs={CONFIGS_OWN: True})
    quick_sweep(sweep_dir, 3, "--trainer.default_root_dir", str(tmp_path))
    table = trials(sweep_dir)
    ran = table[table["state"] == "COMPLETE"]
    assert len(ran) == 3 and ran["user_attrs_config_own"].fillna(False).astype(bool).sum() == 1
    assert table.loc[table["number"] == 1, "user_attrs_surplus"].item() is True
    assert not (sweep_dir / "trial_1").exists(), "the second copy never trained"


def test_a_retry_of_the_configs_own_settings_runs_and_a_second_copy_does_not():
    """Optuna's retry of a trial whose machine died copies its attributes, the mark of the config's own
    settings included: it is the one copy that runs, not a second."""
    distributions = read_space(FIRE_SPACE).distributions
    own = {"model.init_args.optimizer.init_args.lr": 0.05, "data.batch_size": 16}
    study = optuna.create_study()
    marked = {"params": own, "distributions": distributions, "user_attrs": {CONFIGS_OWN: True}}
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, **marked))  # its machine stopped beating
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, **marked, system_attrs={"retry_history": [0]}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, **marked))  # a second machine's copy
    retry, copy = study.ask(), study.ask()
    assert (retry.number, copy.number) == (1, 2)
    assert not is_surplus(retry, 10) and is_surplus(copy, 10)


def test_a_sweep_with_repeats_scores_each_trial_as_cv_repeats_scores_its_settings(tmp_path, capfd):
    best = quick_sweep(tmp_path / "sweep", 1, "--folds", "2", "--repeats", "2", "--trainer.default_root_dir", str(tmp_path))
    kept = best.user_attrs["kept_epochs_score"]
    line = f"trial {best.number}: val/loss {best.value:.4f} as the refit trains ({kept:.4f} at each fold's best epoch)"
    assert line in capfd.readouterr().out
    trial_dir = tmp_path / "sweep" / f"trial_{best.number}"
    assert sorted(p.name for p in trial_dir.iterdir()) == [f"repeat_{r}_fold_{k}" for r in (0, 1) for k in (0, 1)]
    cv_dir = tmp_path / "cv"
    run("cv", "--config", str(tmp_path / "sweep" / "best_config.yaml"), "--folds", "2", "--repeats", "2",
        "--output_dir", str(cv_dir), "--trainer.enable_progress_bar", "false")  # fmt: skip
    table = pd.read_csv(cv_dir / "cv_results.csv")
    at_refit = table["val/loss at refit epochs"].mean()  # as the refit trains: what both judge by
    assert best.value == pytest.approx(at_refit, abs=1e-7), "the same folds of the same draws, the same runs"
    assert best.user_attrs["kept_epochs_score"] == pytest.approx(table["val/loss"].mean(), abs=1e-7)
    assert (
        "(the mean over 2 folds of 2 draws after their median kept epochs)"
        in (tmp_path / "sweep" / "best_config.yaml").read_text()
    )
    args = sweep_args("fire_logistic.yaml", FIRE_SPACE, tmp_path / "other", "--repeats", "2")
    capfd.readouterr()
    expect_one_line_error(capfd, tmp_path, files_under(tmp_path), args, "--repeats 2 draws folds several times: add --folds K")


def test_sweep_refit_trains_the_best_settings_on_every_non_test_row_for_the_epochs_it_kept(tmp_path):
    sweep_dir = tmp_path / "sweep"
    best = quick_sweep(sweep_dir, 2, "--refit", "true", "--refit_seeds", "2", "--trainer.default_root_dir", str(tmp_path))
    first = yaml.safe_load((sweep_dir / "refit" / "config.yaml").read_text())
    for folder in ("refit", "refit_seed_1"):  # each seed's refit trains the best settings
        saved = yaml.safe_load((sweep_dir / folder / "config.yaml").read_text())
        assert saved["trainer"]["max_epochs"] == best.user_attrs["epochs"]
        assert (saved["data"]["val_fraction"], saved["checkpoint"]["monitor"]) == (0, None)
        assert (saved["seed_everything"], saved["data"]["seed"]) == (
            first["seed_everything"] + (folder != "refit"),
            first["data"]["seed"],
        )
        for key, value in best.params.items():
            section, *path = key.split(".")
            chosen = saved[section]
            for part in path:
                chosen = chosen[part]
            assert chosen == value, key
        assert list((sweep_dir / folder / "figures").glob("confusion_matrix.png")), "tested at the end"
    assert list((sweep_dir / "refit_ensemble" / "figures").glob("confusion_matrix.png")), "the seed ensemble, tested"


def test_a_journal_cut_short_is_repaired_and_a_garbage_line_is_named(tmp_path, capfd):
    sweep_dir = tmp_path / "sweep"
    quick_sweep(sweep_dir, 1)
    journal = sweep_dir / "study.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 4, "worker_id": "cut-sh')  # a write that a crash cut short
    quick_sweep(sweep_dir, 2)
    assert "its last line was cut short by an interrupted write; removed it" in capfd.readouterr().out
    assert trials(sweep_dir)["state"].tolist() == ["COMPLETE", "COMPLETE"]
    capfd.readouterr()
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join([lines[0], b"garbage", *lines[1:]]))
    args = sweep_args("fire_logistic.yaml", FIRE_SPACE, sweep_dir, "--n_trials", "3")
    expect_one_line_error(capfd, tmp_path, files_under(tmp_path), args, f"{journal}: line 2: not a record of an Optuna study")


@pytest.mark.parametrize(
    "record, message",
    [
        ("[" * 100_000, "line 1: not a record of an Optuna study"),  # RecursionError in json.loads
        ('{"op_code": 0}', "not a journal Optuna can replay (KeyError: 'study_name')"),
        ('{"op_code": "x"}', "not a journal Optuna can replay (AssertionError"),
    ],
)
def test_a_journal_optuna_cannot_replay_is_one_line_naming_it(record, message, tmp_path):
    journal = tmp_path / "study.journal"
    journal.write_text(record + "\n")
    with pytest.raises(DragonInputError, match=re.escape(f"{journal}: {message}")):
        open_storage(str(tmp_path), None)
    assert journal.read_text() == record + "\n", "left as it was"


def test_a_changed_space_is_refused_on_an_existing_study(tmp_path, capfd):
    sweep_dir = tmp_path / "sweep"
    quick_sweep(sweep_dir, 1)
    other = tmp_path / "other.yaml"
    other.write_text("model.init_args.optimizer.init_args.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}\n")
    args = sweep_args("fire_logistic.yaml", other, sweep_dir, "--n_trials", "2")
    capfd.readouterr()
    expect_one_line_error(
        capfd, tmp_path, files_under(tmp_path), args, f"{other}: differs from the space the study 'sweep' was run with"
    )


def test_a_trial_another_machine_is_still_drawing_does_not_count_as_another_space(tmp_path):
    """Machines sharing a study see each other's running trials with only the parameters suggested so far."""
    space = read_space(FIRE_SPACE)
    settings = SweepSettings({}, FIRE_SPACE, str(tmp_path), None, "shared", Objective("val/acc", "max"), None, 0, None)
    study = open_study(settings, 0)
    drawing = study.ask()
    lr = space.distributions[LR]
    drawing.suggest_float(LR, lr.low, lr.high, log=lr.log)
    check_same_space(settings, space)
    study.tell(drawing, 0.5)  # finished with one of the space's two keys: another space
    with pytest.raises(DragonInputError, match="differs from the space the study 'shared' was run with"):
        check_same_space(settings, space)


SEARCH_OPTION_CASES = {
    "negative seed": (["--seed", "-1"], "--seed: Not of type Seed: -1 does not conform to restriction v>=0 and v<=4294967295"),
    "seed too large": (["--seed", str(2**40)], "--seed: Not of type Seed: 1099511627776 does not conform"),
    "no trials": (["--n_trials", "0"], "--n_trials: Not of type PositiveInt: 0 does not conform to restriction v>0"),
    "a heartbeat of 0": (["--heartbeat", "0"], "--heartbeat: Not of type PositiveInt: 0 does not conform to restriction v>0"),
    "unknown scheme": (["--storage", "redis://127.0.0.1/0"], "--storage redis://127.0.0.1/0: unsupported scheme 'redis'"),
    "not a URL": (["--storage", "postgresql://"], "--storage postgresql://: "),
    "missing driver": (["--storage", "mysql://user:s3cret@127.0.0.1:1/db"], "the database driver is not installed"),
    "unreachable path": (["--storage", "sqlite:////no/such/folder/study.db"], "cannot open the study database"),
    "a line break in the URL": (["--storage", "\n://x"], "--storage \\n://...: not a database URL"),  # was two lines
    "a port in words": (
        ["--storage", "postgresql://user:s3cret@127.0.0.1:abc/db"],
        "--storage postgresql://...: not a database URL",
    ),
    "a password as a query parameter": (
        ["--storage", "postgresql://user@127.0.0.1:1/db?password=s3cret"],
        "--storage postgresql://user@127.0.0.1:1/db?password=***: cannot open the study database",
    ),
    "no server, a one-letter password": (
        ["--storage", "postgresql://user:p@127.0.0.1:1/db"],
        "--storage postgresql://user:***@127.0.0.1:1/db: cannot open the study database (connection failed: "
        'connection to server at "127.0.0.1", port 1 failed',
    ),
    "bad choice": (
        ["--space", "SPACE:model.init_args.hidden_sizes: {type: categorical, choices: [[8], [0]]}"],
        "model.init_args.hidden_sizes: [0]: --model.init_args.hidden_sizes: Not of type PositiveInt: 0 does not conform to restriction v>0",
    ),
    "monitor never logged": (["--checkpoint.monitor", "val/f1"], "--checkpoint.monitor val/f1: the model never logs it"),
    "a training metric": (
        ["--checkpoint.monitor", "train/loss"],
        "train/loss: dragon-lightning {command} compares runs on validation metrics",
    ),
    "no validation rows": (
        ["--data.val_fraction", "0", "--checkpoint.monitor", "null"],
        "--data.val_fraction 0 holds no validation rows",
    ),
}
CV_CASES = ("monitor never logged", "a training metric")  # cv validates on its folds whatever val_fraction is


@pytest.mark.parametrize("command, case", [("sweep", case) for case in SEARCH_OPTION_CASES] + [("cv", case) for case in CV_CASES])
def test_search_options_are_one_line_before_any_run(command, case, tmp_path, capfd):
    options, message = SEARCH_OPTION_CASES[case]
    message = message.format(command=command)
    if options[0] == "--space":
        (tmp_path / "space.yaml").write_text(options[1].removeprefix("SPACE:") + "\n")
        options = ["--space", str(tmp_path / "space.yaml")]
    space = [] if command == "cv" or "--space" in options else ["--space", COLOR_SPACE]
    args = [
        command,
        "--config",
        config("color_mlp.yaml"),
        *space,
        *options,
        "--output_dir",
        str(tmp_path / "out"),
        "--data.data_dir",
        "null",
    ]
    line = expect_one_line_error(capfd, tmp_path, files_under(tmp_path), args, message)
    assert "s3cret" not in line, "a password never shows"


@pytest.mark.slow
def test_sweep_workers_stop_when_their_parent_is_killed(tmp_path):
    import subprocess
    import sys
    import time

    environment = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    options = ["--n_trials", "20", "--workers", "2", "--trainer.max_epochs", "200"]
    command = [sys.executable, "-m", "dragon_lightning", *sweep_args("color_mlp.yaml", COLOR_SPACE, "sweep", *options)]
    errors = (tmp_path / "sweep.err").open("w")
    parent = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.DEVNULL, stderr=errors)

    def children() -> list[int]:
        found = []
        for status in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = status.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent.pid and fields[0] != "Z":
                found.append(int(status.parent.name))
        return found

    deadline = time.monotonic() + 120
    while not list((tmp_path / "sweep").glob("trial_*")) and time.monotonic() < deadline:
        time.sleep(0.5)
    workers = children()
    assert workers, f"the sweep started its workers; it said: {(tmp_path / 'sweep.err').read_text()[-2000:]}"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [
            pid
            for pid in workers
            if Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        ]
    assert not alive, f"workers {alive} outlived their parent"


@pytest.mark.parametrize(
    "edit",
    [
        {"epochs": "abc"},
        {"epochs": 10**12},
        {"epochs": True},
        {"training_seconds": float("nan")},
        {"metrics": {"val/acc": "high"}},
        {"run_dir": ["not", "a", "path"]},
        {"validations": [{"epoch": 0, "loss": "low", "acc": 0.9}]},
        {"validations": {"epoch": 0}},
    ],
    ids=[
        "words",
        "a huge count",
        "a boolean",
        "NaN seconds",
        "a metric in words",
        "a list for a path",
        "a validation in words",
        "validations not a list",
    ],
)
def test_a_fold_record_edited_by_hand_is_not_reused(edit, tmp_path):
    """cv reuses a finished fold's recorded result (its epochs decide how long a refit trains): a record
    with a field of the wrong type or range is no record, and the fold runs again."""
    from dragon_lightning.search.cv import FOLD_RESULT, finished_fold

    settings = {"data": {"fold": 1, "csv_path": tmp_path / "dragons.csv"}}
    result = {"run_dir": str(tmp_path), "metrics": {"val/acc": 0.9}, "training_seconds": 1.5, "epochs": 7, "checkpoint": ""}
    recorded = {"data": {"fold": 1, "csv_path": str(tmp_path / "dragons.csv")}}
    (tmp_path / FOLD_RESULT).write_text(json.dumps({"settings": recorded, "result": result}))
    assert finished_fold(tmp_path, settings).epochs == 7, "the record as written is reused"
    assert finished_fold(tmp_path, {"data": {**settings["data"], "fold": 2}}) is None, "other settings: run again"
    (tmp_path / FOLD_RESULT).write_text(json.dumps({"settings": recorded, "result": {**result, **edit}}))
    assert finished_fold(tmp_path, settings) is None


@pytest.mark.slow
def test_a_database_server_that_never_answers_is_one_line_within_seconds(tmp_path):
    import socket

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql://user:s3cret@127.0.0.1:{silent.getsockname()[1]}/db"
        args = ["sweep", "--config", config("color_mlp.yaml"), "--space", COLOR_SPACE, "--storage", url,
                "--output_dir", str(tmp_path / "out"), "--data.data_dir", "null"]  # fmt: skip
        refused = run_in_subprocess(*args, cwd=tmp_path, timeout=120)  # a hang fails here
    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()[-1]
    assert "cannot open the study database (connection timeout expired)" in line and "s3cret" not in line
    assert not (tmp_path / "out").exists()


def test_a_run_s_settings_change_by_option_name_on_a_copy():
    """A sub-run's options are data: dotted option names set nested values, and the settings they
    start from stay as they were (every fold starts from the same parsed config)."""
    settings = {"data": {"fold": 0, "seed": 3}, "model": {"class_path": "MLPClassifier", "init_args": {"dropout": 0.0}}}
    changed = with_options(settings, {"data.fold": 2, "model.init_args.dropout": 0.1, "trainer.max_epochs": 5})
    assert changed == {
        "data": {"fold": 2, "seed": 3},
        "model": {"class_path": "MLPClassifier", "init_args": {"dropout": 0.1}},
        "trainer": {"max_epochs": 5},
    }
    assert settings["data"]["fold"] == 0 and settings["model"]["init_args"]["dropout"] == 0.0
    no_logger = with_options({"trainer": {"logger": False}}, {"trainer.logger.init_args.save_dir": "runs"})
    assert no_logger == {"trainer": {"logger": {"init_args": {"save_dir": "runs"}}}}, "a run folder needs a logger"
