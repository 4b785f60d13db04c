"""Every labelled dragon: the refit on all non-test rows for the folds' median epochs, and fold ensembles
through test, predict, load_model and onnxruntime."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from clihelpers import config, expect_one_line_error, files_under, in_root, run, short_fit

from dragon_lightning import load_model
from dragon_lightning.checkpoints.files import load_checkpoint
from dragon_lightning.data import DragonDataModule
from dragon_lightning.errors import DragonInputError
from dragon_lightning.search.ensemble import write_ensemble

FOLDS = 3
CV = [
    "cv",
    "--config",
    config("fire_logistic.yaml"),
    "--folds",
    str(FOLDS),
    "--trainer.max_epochs",
    "6",
    "--trainer.enable_progress_bar",
    "false",
]


def rows_of(features: torch.Tensor, labels: torch.Tensor) -> set:
    return {(float(a), float(b), int(y)) for (a, b), y in zip(features.tolist(), labels.tolist())}


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, real_csv):
    """``cv --refit true --ensemble true`` on the real file, once for the module."""
    root = tmp_path_factory.mktemp("cv")
    results = run(
        *CV,
        "--refit",
        "true",
        "--ensemble",
        "true",
        "--data.csv_path",
        str(real_csv),
        "--output_dir",
        str(root / "cv"),
        "--trainer.default_root_dir",
        str(root),
    )
    return root / "cv", results


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory, real_csv):
    """``cv --refit true --refit_seeds 2`` of a small color MLP (whose seed draws its first weights), once."""
    root = tmp_path_factory.mktemp("seeds")
    results = run(
        "cv", "--config", config("color_mlp.yaml"), "--folds", "2", "--trainer.max_epochs", "3",
        "--model.hidden_sizes", "[8]", "--trainer.enable_progress_bar", "false", "--refit", "true", "--refit_seeds", "2",
        "--data.csv_path", str(real_csv), "--output_dir", str(root / "cv"), "--trainer.default_root_dir", str(root),
    )  # fmt: skip
    return root / "cv", results


def test_the_refit_trains_on_exactly_the_non_test_rows_for_the_median_kept_epochs(cv_run, real_csv):
    cv_dir, results = cv_run
    table = pd.read_csv(cv_dir / "cv_results.csv")
    assert table["epochs"].tolist() == [run.result.epochs for run in results.folds]
    epochs = int(np.median(table["epochs"]) + 0.5)
    saved = yaml.safe_load((cv_dir / "refit" / "config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == epochs and saved["data"]["val_fraction"] == 0
    assert saved["checkpoint"]["monitor"] is None
    plain = DragonDataModule(task="fire", csv_path=real_csv, seed=saved["data"]["seed"])
    plain.setup("fit")
    refit_data = DragonDataModule(**{k: v for k, v in saved["data"].items() if k in ("task", "csv_path", "seed", "val_fraction")})
    refit_data.setup("fit")
    train = refit_data.splits["train"]
    assert len(train[1]) == len(plain.splits["train"][1]) + len(plain.splits["val"][1])
    assert rows_of(*train) == rows_of(*plain.splits["train"]) | rows_of(*plain.splits["val"]), "every non-test row, no other"
    assert torch.equal(refit_data.splits["test"][0], plain.splits["test"][0])
    checkpoint = load_checkpoint(cv_dir / "refit" / "checkpoints" / "last.ckpt", option=None)
    batches = -(-len(train[1]) // saved["data"]["batch_size"])
    assert (checkpoint["epoch"] + 1, checkpoint["global_step"]) == (epochs, epochs * batches), "trained that many epochs on them"
    mean = train[0].double().mean(dim=0).float()
    torch.testing.assert_close(checkpoint["state_dict"]["inputs.mean"], mean), "its scaling is fitted on those rows"


def members_of(ensemble_dir: Path) -> list[Path]:
    checkpoint = load_checkpoint(ensemble_dir / "checkpoints" / "ensemble.ckpt", option=None)
    return [Path(path) for path in checkpoint["dragon_lightning"]["members"]]


@pytest.mark.parametrize(
    "made_by, ensemble, members",
    [
        ("cv_run", "ensemble", [f"fold_{k}" for k in range(FOLDS)] + ["refit"]),
        ("seeds_run", "refit_ensemble", ["refit", "refit_seed_1"]),
    ],
    ids=["the folds and the refit", "the refit's seeds"],
)
def test_the_ensemble_averages_its_members_through_predict_load_model_and_onnx(made_by, ensemble, members, request, tmp_path):
    cv_dir, _ = request.getfixturevalue(made_by)
    path = cv_dir / ensemble / "checkpoints" / "ensemble.ckpt"
    found = members_of(cv_dir / ensemble)
    assert [member.parent.parent.name for member in found] == members
    ensemble = load_model(path)
    features, _ = ensemble.test_split()
    far = np.array([[5.0, -400.0], [40.0, 900.0]], dtype=np.float32)  # far outside: probabilities near 0 and 1
    points = np.concatenate([features, far])
    mean = np.mean([load_model(member).probabilities(points) for member in found], axis=0)
    np.testing.assert_allclose(ensemble.probabilities(points), mean, atol=1e-6, rtol=0)
    assert ensemble.outside_training_range(far).all() and not ensemble.outside_training_range(features).any()

    pd.DataFrame(points, columns=["numberToes", "bodyLength"]).to_csv(tmp_path / "dragons.csv", index=False)
    # No config: the checkpoint says it holds an ensemble, and of which task.
    run("predict", "--ckpt_path", str(path), "--data.predict_csv", str(tmp_path / "dragons.csv"),
        "--predictions.output_path", str(tmp_path / "predictions.csv"), "--trainer.logger", "false")  # fmt: skip
    predicted = pd.read_csv(tmp_path / "predictions.csv")
    np.testing.assert_allclose(predicted[[f"p_{name}" for name in ensemble.classes_]].to_numpy(), mean, atol=1e-6, rtol=0)

    pytest.importorskip("onnxruntime")
    import onnxruntime

    run("export", "--ckpt_path", str(path), "--output", str(tmp_path / "ensemble.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "ensemble.onnx"), providers=["CPUExecutionProvider"])
    onnx_probabilities, onnx_classes = session.run(["probabilities", "predicted"], {"features": points})
    np.testing.assert_allclose(onnx_probabilities, mean, atol=1e-6, rtol=0)
    assert (load_model(path).classes_[onnx_classes] == load_model(path).predict(points)).all()


def test_the_refits_seeds_train_the_same_rows_into_different_weights_and_their_ensemble_is_tested(seeds_run):
    cv_dir, results = seeds_run
    first, second = (yaml.safe_load((cv_dir / name / "config.yaml").read_text()) for name in ("refit", "refit_seed_1"))
    assert second["seed_everything"] == first["seed_everything"] + 1
    assert second["data"] == first["data"], "the same rows: only the weights' seed differs"
    weights = [
        load_checkpoint(cv_dir / name / "checkpoints" / "last.ckpt", option=None)["state_dict"]
        for name in ("refit", "refit_seed_1")
    ]
    assert weights[0].keys() == weights[1].keys()
    assert any(not torch.equal(weights[0][key], weights[1][key]) for key in weights[0] if not key.startswith("inputs."))
    assert results.seed_ensemble_test is not None and 0.5 < results.seed_ensemble_test["test/acc"] <= 1
    assert (cv_dir / "refit_ensemble" / "config.yaml").is_file()


@pytest.fixture(scope="module")
def fold_seeds_run(tmp_path_factory, real_csv):
    """``cv --seeds 2`` of a small color MLP (whose seed draws its first weights), once."""
    root = tmp_path_factory.mktemp("fold_seeds")
    results = run(
        "cv", "--config", config("color_mlp.yaml"), "--folds", "2", "--seeds", "2", "--trainer.max_epochs", "3",
        "--model.hidden_sizes", "[8]", "--trainer.enable_progress_bar", "false", "--data.csv_path", str(real_csv),
        "--output_dir", str(root / "cv"), "--trainer.default_root_dir", str(root),
    )  # fmt: skip
    return root / "cv", results


def test_cv_with_seeds_scores_each_fold_as_the_mean_of_its_seeds_models_on_its_validation_rows(fold_seeds_run):
    cv_dir, results = fold_seeds_run
    table = pd.read_csv(cv_dir / "cv_results.csv")
    assert len(results.folds) == len(table) == 2
    for fold, fold_run in enumerate(results.folds):
        names = [f"fold_{fold}", f"fold_{fold}_seed_1"]
        assert [Path(member).parent.parent.name for member in fold_run.members] == names
        first, second = (yaml.safe_load((cv_dir / name / "config.yaml").read_text()) for name in names)
        assert second["seed_everything"] == first["seed_everything"] + 1
        assert second["data"] == first["data"], "the same rows: only the weights' seed differs"
        data = DragonDataModule(**first["data"])
        data.setup("validate")
        features, labels = (tensor.numpy() for tensor in data.splits["val"])
        mean = np.mean([load_model(member).probabilities(features) for member in fold_run.members], axis=0)
        assert table.loc[fold, "val/acc"] == pytest.approx((mean.argmax(axis=1) == labels).mean(), abs=1e-6)
        assert table.loc[fold, "val/loss"] == pytest.approx(-np.log(mean[np.arange(len(labels)), labels]).mean(), abs=1e-5)
        assert fold_run.result.metrics == {name: table.loc[fold, name] for name in ("val/loss", "val/acc")}
        assert (cv_dir / f"fold_{fold}_seeds" / "result.json").is_file()


def test_the_ensemble_run_tests_on_the_test_rows_and_draws_its_pictures(cv_run):
    cv_dir, _ = cv_run
    ensemble_dir = cv_dir / "ensemble"
    assert {"decision_regions.png", "confusion_matrix.png", "roc_curve.png"} <= {
        p.name for p in (ensemble_dir / "figures").iterdir()
    }
    saved = yaml.safe_load((ensemble_dir / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "dragon_lightning.models.FoldEnsemble"
    assert [member["model"] for member in saved["model"]["init_args"]["members"]] == ["LogisticRegression"] * (FOLDS + 1)


def test_an_interrupted_cv_ensemble_resumes_to_the_same_result(cv_run, real_csv, tmp_path):
    """SIGTERM while the last fold trains; the same command again reuses the finished folds and builds the
    same ensemble as the uninterrupted run."""
    cv_dir, _ = cv_run
    args = [
        *CV,
        "--ensemble",
        "true",
        "--refit",
        "true",
        "--data.csv_path",
        str(real_csv),
        "--output_dir",
        "cv",
        "--trainer.default_root_dir",
        ".",
    ]
    command = [sys.executable, "-m", "dragon_lightning", *args]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (tmp_path / "cv" / f"fold_{FOLDS - 2}" / "result.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, "interrupted before the end"
    assert stderr.strip().splitlines()[-1] == (
        "dragon-lightning: stopped by SIGTERM; continue with the same command and --output_dir cv: the finished folds are kept"
    )
    assert not (tmp_path / "cv" / "ensemble").exists()
    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"fold {FOLDS - 2}: finished earlier, reused" in resumed.stdout
    again = load_model(tmp_path / "cv" / "ensemble" / "checkpoints" / "ensemble.ckpt")
    first = load_model(cv_dir / "ensemble" / "checkpoints" / "ensemble.ckpt")
    features, _ = first.test_split()
    np.testing.assert_allclose(again.probabilities(features), first.probabilities(features), atol=1e-6, rtol=0)


def test_monitoring_without_validation_rows_is_one_line(scratch, capfd):
    args = ["fit", "--config", config("color_mlp.yaml"), "--data.val_fraction", "0"]
    expect_one_line_error(
        capfd,
        scratch,
        files_under(scratch),
        args,
        "--checkpoint.monitor val/loss: --data.val_fraction 0 leaves no validation rows",
    )


def test_an_ensemble_of_one_fold_is_one_line(scratch, capfd):
    args = ["cv", "--config", config("fire_logistic.yaml"), "--folds", "1", "--ensemble", "true", "--output_dir", "out"]
    expect_one_line_error(
        capfd, scratch, files_under(scratch), args, "--folds: Not of type AtLeastTwo: 1 does not conform to restriction v>=2"
    )


@pytest.mark.parametrize("command", [["cv"], ["sweep", "--space", config("sweeps/fire_logistic.yaml")]], ids=["cv", "sweep"])
def test_refit_seeds_without_a_refit_is_one_line(command, scratch, capfd):
    args = [*command, "--config", config("fire_logistic.yaml"), "--refit_seeds", "3", "--output_dir", "out"]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "--refit_seeds 3 trains refits: add --refit true")


def test_an_ensemble_of_different_tasks_is_refused_naming_the_member(cv_run, tmp_path):
    cv_dir, _ = cv_run
    color = short_fit(
        "color_mlp.yaml",
        1,
        *in_root(tmp_path),
        "--test_after_fit",
        "false",
    )
    color_checkpoint = Path(color.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    before = files_under(tmp_path)
    with pytest.raises(DragonInputError, match=f"{color_checkpoint}: predicts .* an ensemble needs members of one task"):
        write_ensemble([members_of(cv_dir / "ensemble")[0], color_checkpoint], tmp_path / "ensemble.ckpt")
    assert files_under(tmp_path) == before, "nothing written"
