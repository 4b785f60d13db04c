"""Which config to train: folds in the data module, ``dragon-lightning cv`` and ``dragon-lightning sweep``."""

import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from clihelpers import ROOT, config, expect_one_line_error, files_under, run, run_in_subprocess
from dragon_lightning.checkpoints import check_resumable
from dragon_lightning.cli import cli_main
from dragon_lightning.data import DragonDataModule
from dragon_lightning.errors import DragonInputError, InvalidArgument
from dragon_lightning.search.runs import check_config
from dragon_lightning.search.space import read_space
from dragon_lightning.search.sweep import check_space
from test_cli import read_events

COLOR_SPACE = str(ROOT / "configs" / "sweeps" / "color_mlp.yaml")
SHORT = ["--trainer.max_epochs", "3"]


def test_folds_keep_the_test_split_and_partition_the_other_rows(real_csv):
    plain = DragonDataModule(task="color", csv_path=real_csv, seed=7)
    plain.setup("fit")
    rest = set(torch.cat([plain.splits["train"][0], plain.splits["val"][0]]).numpy().view([("", np.float32)] * 2).ravel().tolist())
    validated = []
    for fold in range(4):
        data = DragonDataModule(task="color", csv_path=real_csv, seed=7, n_folds=4, fold=fold)
        data.setup("fit")
        assert torch.equal(data.splits["test"][0], plain.splits["test"][0]), "the test split never changes"
        (train, _), (val, val_labels) = data.splits["train"], data.splits["val"]
        assert np.ptp(np.bincount(val_labels.numpy())) <= 1, "folds are stratified"
        assert torch.allclose(data.feature_mean, train.double().mean(dim=0).float()), "scaling is fitted on the fold's training rows"
        validated.append(val)
    rows = torch.cat(validated)
    assert len(rows) == len(rest) and set(rows.numpy().view([("", np.float32)] * 2).ravel().tolist()) == rest


def test_fold_options_are_checked_and_recorded_for_resume():
    with pytest.raises(InvalidArgument, match="n_folds must be at least 2"):
        DragonDataModule(n_folds=1)
    with pytest.raises(InvalidArgument, match="fold must lie between 0 and 4"):
        DragonDataModule(n_folds=5, fold=5)
    with pytest.raises(DragonInputError, match="too few for 200 folds"):
        DragonDataModule(n_folds=200, data_dir=None).setup("fit")
    trained = {"datamodule_hyper_parameters": dict(DragonDataModule(n_folds=5, fold=1, data_dir=None).hparams)}
    with pytest.raises(DragonInputError, match="--data.fold 1 \\(now 2\\)"):
        check_resumable(trained, "x.ckpt", dict(DragonDataModule(n_folds=5, fold=2, data_dir=None).hparams))


def test_cv_trains_every_fold_and_writes_their_validation_metrics(tmp_path, capfd):
    results = run("cv", "--config", config("color_mlp.yaml"), "--folds", "5", *SHORT, "--trainer.default_root_dir", str(tmp_path))
    cv_dir = tmp_path / "lightning_logs" / "cv_0"
    table = pd.read_csv(cv_dir / "cv_results.csv")
    assert table["fold"].tolist() == [0, 1, 2, 3, 4] and {"val/loss", "val/acc"} <= set(table.columns)
    assert not any(column.startswith("test/") for column in table.columns), "test rows are not touched"
    np.testing.assert_allclose(table["val/loss"], [r.metrics["val/loss"] for r in results])
    printed = capfd.readouterr().out
    assert f"val/loss: mean {table['val/loss'].mean():.4f}, standard deviation {table['val/loss'].std():.4f} over 5 folds" in printed
    for fold in range(5):
        saved = yaml.safe_load((cv_dir / f"fold_{fold}" / "config.yaml").read_text())
        assert (saved["data"]["n_folds"], saved["data"]["fold"]) == (5, fold), "each run records its fold"


def trials(sweep_dir: Path) -> pd.DataFrame:
    return pd.read_csv(sweep_dir / "trials.csv")


@pytest.mark.slow
def test_a_sweep_with_two_workers_continues_and_its_best_config_trains_and_tests(tmp_path, capfd):
    sweep_dir = tmp_path / "sweep"
    common = ["--config", config("color_mlp.yaml"), "--space", COLOR_SPACE, "--output_dir", str(sweep_dir), *SHORT,
              "--trainer.default_root_dir", str(tmp_path)]
    best = run("sweep", *common, "--n_trials", "3", "--workers", "2")
    assert trials(sweep_dir)["state"].tolist() == ["COMPLETE"] * 3
    printed = capfd.readouterr().out
    assert sorted(line.split(":")[0] for line in printed.splitlines() if line.startswith("trial ")) == ["trial 0", "trial 1", "trial 2"]
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
    args = ["sweep", "--config", config("fire_logistic.yaml"), "--space", str(ROOT / "configs/sweeps/fire_logistic.yaml"),
            "--n_trials", "2", "--output_dir", "sweep", *SHORT, "--trainer.callbacks+=test_search.InterruptOnce"]
    stopped = run_in_subprocess(*args, cwd=tmp_path, timeout=300)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "run the same command again to continue" in stopped.stderr
    resumed = run_in_subprocess(*args, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "0 trials done, 2 to run (1 interrupted, run again)" in resumed.stdout
    table = trials(tmp_path / "sweep")
    assert table["state"].tolist() == ["FAIL", "COMPLETE", "COMPLETE"]
    params = table.filter(like="params_")
    assert params.iloc[1].tolist() == params.iloc[0].tolist(), "the interrupted trial's settings run again"
    assert table["user_attrs_retry_of"].iloc[1] == 0


def test_a_diverging_trial_fails_and_the_sweep_goes_on(tmp_path, capfd):
    space = tmp_path / "space.yaml"
    space.write_text("model.init_args.optimizer.init_args.lr: {type: categorical, choices: [1.0e+30]}\n")
    best = run("sweep", "--config", config("color_mlp.yaml"), "--space", str(space), "--n_trials", "2",
               "--output_dir", str(tmp_path / "sweep"), *SHORT, "--trainer.default_root_dir", str(tmp_path))
    assert best is None
    table = trials(tmp_path / "sweep")
    assert table["state"].tolist() == ["FAIL", "FAIL"]
    assert table["user_attrs_diverged"].str.contains("training diverged").all()
    assert "no trial completed" in capfd.readouterr().out


@pytest.mark.parametrize(
    "space, config_name, message",
    [
        ("model.init_args.hiden_sizes: {type: categorical, choices: [[8]]}", "color_mlp.yaml", "--model.init_args.hiden_sizes: not an option of MLPClassifier"),
        ("model.init_args.hidden_sizes: {type: categorical, choices: [[8]]}", "fire_logistic.yaml", "not an option of LogisticRegression"),
        ("data.batch_size: {type: int, low: 64, high: 8}", "color_mlp.yaml", "data.batch_size: low must be below high"),
        ("data.batch_size: {type: int, low: 0, high: 8, log: true}", "color_mlp.yaml", "a log scale needs low above 0"),
        ("data.batch_size: {type: normal, low: 1, high: 8}", "color_mlp.yaml", "type float, int or categorical"),
        ("model.init_args.dropout: {type: float, low: 0.0, high: 1.5}", "color_mlp.yaml", "--model.init_args.dropout must lie in [0, 1)"),
    ],
)
def test_a_bad_space_is_one_line_before_any_trial(space, config_name, message, tmp_path, capfd):
    (tmp_path / "space.yaml").write_text(space + "\n")
    before = files_under(tmp_path)
    line = expect_one_line_error(
        capfd, tmp_path, before,
        ["sweep", "--config", config(config_name), "--space", str(tmp_path / "space.yaml"), "--output_dir", str(tmp_path / "sweep"),
         "--data.data_dir", "null", "--trainer.default_root_dir", str(tmp_path)],
        message,
    )
    assert str(tmp_path / "space.yaml") in line


@pytest.mark.parametrize("space", sorted((ROOT / "configs" / "sweeps").glob("*.yaml")), ids=lambda path: path.name)
def test_the_shipped_spaces_fit_their_configs(space):
    checked = check_config(["--config", config(space.name), "--data.data_dir", "null"], "sweep")
    check_space(checked, read_space(space))  # raises on any bound or choice the config refuses


def test_sweep_and_cv_explain_their_own_options(capsys):
    for command, option in (("sweep", "--n_trials"), ("cv", "--folds")):
        with pytest.raises(SystemExit) as done:
            cli_main([command, "--help"])
        assert done.value.code == 0
        help_text = capsys.readouterr().out
        assert option in help_text and "dragon-lightning fit --help" in help_text
