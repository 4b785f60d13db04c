"""Pictures as files in every run, whatever the logger; the fire threshold and ROC; ``compare``."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from clihelpers import config, expect_one_line_error, files_under, in_root, run, run_in_subprocess
from lightning.pytorch.callbacks import Callback
from PIL import Image
from sklearn.metrics import roc_auc_score

from dragon_lightning import load_model
from dragon_lightning.commands import cli_main
from dragon_lightning.figures import painter
from dragon_lightning.figures.painter import spare_core

CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"
PICTURES = {"truth_vs_predictions.png", "decision_regions.png", "confusion_matrix.png", "learning_curves.png"}


def fit_fire(root, *options):
    return run(
        "fit",
        "--config",
        config("fire_logistic.yaml"),
        "--trainer.default_root_dir",
        str(root),
        "--data.data_dir",
        str(root.parent / "data"),
        *options,
    )


def test_a_csv_logger_run_keeps_every_picture_the_roc_and_an_animation(tmp_path, capsys):
    run(
        "fit",
        "--config",
        config("fire_perceptron.yaml"),
        "--trainer.logger",
        CSV_LOGGER,
        "--trainer.max_epochs",
        "5",
        *in_root(tmp_path),
    )
    run_dir = tmp_path / "lightning_logs" / "version_0"
    figures = run_dir / "figures"
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"pictures: {figures}", "the run says where they are"
    assert {path.name for path in figures.iterdir() if not path.name.startswith(".")} == PICTURES | {
        "roc_curve.png",
        "boundary_over_training.gif",
    }
    for name in PICTURES | {"roc_curve.png"}:
        with Image.open(figures / name) as image:
            assert image.format == "PNG" and min(image.size) >= 300, name
    with Image.open(figures / "boundary_over_training.gif") as animation:
        assert animation.n_frames == 5 and animation.info["loop"] == 0  # one frame per epoch, looping
    assert not list(run_dir.glob("events.out.tfevents.*"))
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert 0.5 < metrics["test/auroc"].dropna().iloc[-1] <= 1


def test_a_fast_dev_run_draws_no_pictures(tmp_path, capsys):
    """Lightning writes no logs or checkpoints for a ``fast_dev_run``; the pictures went to
    ``figures/`` under the working folder, where nothing else of the run was."""
    run("fit", "--config", config("color_mlp.yaml"), "--trainer.fast_dev_run", "true", "--data.data_dir", "null",
        "--trainer.default_root_dir", str(tmp_path))  # fmt: skip
    assert files_under(tmp_path) == {}
    assert "pictures:" not in capsys.readouterr().out


def test_learning_curves_come_from_the_models_history_which_checkpoints_keep(tmp_path):
    cli = fit_fire(tmp_path / "runs", "--trainer.logger", CSV_LOGGER, "--trainer.max_epochs", "4", "--test_after_fit", "false")
    history = cli.model.history
    assert [entry["epoch"] for entry in history if entry["stage"] == "train"] == [0, 1, 2, 3]
    assert [entry["epoch"] for entry in history if entry["stage"] == "val"] == [0, 1, 2, 3]
    logged = pd.read_csv(tmp_path / "runs/lightning_logs/version_0/metrics.csv")
    np.testing.assert_allclose([e["loss"] for e in history if e["stage"] == "train"], logged["train/loss"].dropna(), rtol=1e-6)
    np.testing.assert_allclose([e["acc"] for e in history if e["stage"] == "val"], logged["val/acc"].dropna(), rtol=1e-6)
    saved = torch.load(tmp_path / "runs/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert saved["dragon_lightning"]["history"] == history
    resumed = fit_fire(
        tmp_path / "runs",
        "--trainer.max_epochs",
        "6",
        "--test_after_fit",
        "false",
        "--ckpt_path",
        "last",
        "--trainer.logger",
        CSV_LOGGER,
    )
    assert [entry["epoch"] for entry in resumed.model.history if entry["stage"] == "train"] == [0, 1, 2, 3, 4, 5]


def test_save_dir_moves_the_files_and_a_file_in_its_way_is_refused(tmp_path, capfd):
    fit_fire(tmp_path / "runs", "--trainer.max_epochs", "2", "--figures.save_dir", str(tmp_path / "slides"))
    assert {path.name for path in (tmp_path / "slides").iterdir() if not path.name.startswith(".")} >= PICTURES | {
        "roc_curve.png"
    }
    assert not (tmp_path / "runs/lightning_logs/version_0/figures").exists()
    (tmp_path / "blocked").write_text("a file, not a folder")
    before, _ = files_under(tmp_path), capfd.readouterr()
    expect_one_line_error(
        capfd,
        tmp_path,
        before,
        [
            "fit",
            "--config",
            config("fire_logistic.yaml"),
            "--figures.save_dir",
            str(tmp_path / "blocked"),
            "--trainer.default_root_dir",
            str(tmp_path / "runs"),
            "--data.data_dir",
            str(tmp_path / "data"),
        ],
        f"--figures.save_dir {tmp_path / 'blocked'}: is a file",
    )


def test_a_higher_threshold_trades_detections_for_fewer_false_alarms(tmp_path):
    # Two epochs leave the model unsure about enough dragons for the threshold to matter.
    common = ["--trainer.max_epochs", "2", "--trainer.logger", "false", "--checkpoint.monitor", "null"]
    default = fit_fire(tmp_path / "a", *common).trainer.callback_metrics
    strict_cli = fit_fire(tmp_path / "b", *common, "--model.init_args.threshold", "0.9")
    strict = strict_cli.trainer.callback_metrics
    assert strict["test/detection_rate"] < default["test/detection_rate"]
    assert strict["test/false_positive_rate"] <= default["test/false_positive_rate"]
    assert strict["test/auroc"] == default["test/auroc"], "AUROC scores the probabilities, not the decision"

    retested = run(
        "test",
        "--config",
        config("fire_logistic.yaml"),
        "--ckpt_path",
        str(next((tmp_path / "a").rglob("last.ckpt"))),
        "--model.init_args.threshold",
        "0.9",
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path / "retest"),
    ).trainer.callback_metrics
    for metric in ("test/acc", "test/detection_rate", "test/false_positive_rate"):
        assert retested[metric] == strict[metric], "a trained model's threshold can be changed without training again"

    checkpoint = next((tmp_path / "b").rglob("last.ckpt"))
    assert torch.load(checkpoint, weights_only=True)["hyper_parameters"]["threshold"] == 0.9
    model = load_model(checkpoint)
    features, labels = model.test_split()
    probabilities = model.predict_proba(features)["p_fire"].to_numpy()
    assert roc_auc_score(labels, probabilities) == pytest.approx(float(strict["test/auroc"]), abs=1e-6)
    predicted_fire = model.predict(features) == "fire"
    np.testing.assert_array_equal(predicted_fire, probabilities > 0.9)
    false_alarms = (predicted_fire & (labels == 0)).sum() / (labels == 0).sum()
    assert false_alarms == pytest.approx(float(strict["test/false_positive_rate"]))


def test_a_threshold_for_three_colors_is_refused(tmp_path, capfd):
    expect_one_line_error(
        capfd,
        tmp_path,
        files_under(tmp_path),
        [
            "fit",
            "--config",
            config("color_mlp.yaml"),
            "--model.init_args.threshold",
            "0.7",
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
        "--model.init_args.threshold applies to two classes",
    )


def test_compare_puts_runs_side_by_side_with_their_test_accuracy(tmp_path, capfd):
    fits = [
        fit_fire(tmp_path / name, "--trainer.max_epochs", "3", "--figures.enabled", "false", *options)
        for name, options in (
            ("logistic", ["--model.init_args.optimizer.init_args.lr", "0.02"]),
            ("perceptron", ["--model", "Perceptron"]),
        )
    ]
    runs = [str(next((tmp_path / name).glob("lightning_logs/version_0"))) for name in ("logistic", "perceptron")]
    capfd.readouterr()
    panels = cli_main(["compare", *runs, "--output", str(tmp_path / "both.png")])
    assert [panel.accuracy for panel in panels] == pytest.approx([float(f.trainer.callback_metrics["test/acc"]) for f in fits])
    assert [panel.name for panel in panels] == ["fire_logistic (lr=0.02)", "Perceptron (fire_logistic with --model)"]
    with Image.open(tmp_path / "both.png") as image:
        assert image.size[0] > 2 * image.size[1]  # two panels in a row
        pixels = np.asarray(image.convert("L"))
    for half in np.array_split(pixels, 2, axis=1):
        assert title_drawn(half), "every panel has its title"
    assert f"wrote {tmp_path / 'both.png'}" in capfd.readouterr().out
    before = files_under(tmp_path)
    expect_one_line_error(capfd, tmp_path, before, ["compare", *runs, "--output", str(tmp_path / "both.png")], "exists")
    expect_one_line_error(capfd, tmp_path, before, ["compare", str(tmp_path)], f"{tmp_path}: not a run folder")
    emptied = tmp_path / "emptied" / "lightning_logs" / "version_0"
    (emptied / "checkpoints").mkdir(parents=True)  # its tested checkpoint is found through its last.ckpt
    line = expect_one_line_error(
        capfd, tmp_path, files_under(tmp_path), ["compare", str(emptied)], "checkpoints/last.ckpt: no such checkpoint file"
    )
    assert "--ckpt_path" not in line, "compare has no such option"
    # A config.yaml edited by hand into another shape leaves the title to the config file alone.
    saved = Path(runs[0]) / "config.yaml"
    first_line = saved.read_text().splitlines()[0]
    for shape in ("- a list", "model: MLPClassifier", "model:\n  init_args: 5", "42"):
        saved.write_text(f"{first_line}\n{shape}\n")
        assert (
            cli_main(["compare", runs[0], "--output", str(tmp_path / "edited.png"), "--overwrite", "true"])[0].name
            == "fire_logistic"
        )


def test_a_training_snapshot_draws_the_same_pixels_as_a_whole_drawing():
    from dragon_lightning.figures import drawing as plots

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    features = np.array([[5, 170], [14, 120], [10, 260]])[labels] + rng.normal(size=(300, 2)) * [3, 25]
    regions = plots.DecisionRegions(features, labels, ["Blue", "Red", "Yellow"], grid_size=60)
    scaled = (regions.points - [10, 180]) / [5, 50]
    for step in (1.0, 2.0, 3.0):  # the boundaries move between snapshots, as in training
        snapshot = regions.draw(
            np.c_[-scaled[:, 0] * step, scaled[:, 0] - scaled[:, 1], scaled[:, 1] * step],
            f"training set after epoch {step:g}",
            boundary_lines=True,
        )
    np.testing.assert_array_equal(snapshot, plots.render(regions.figure))


def test_regions_scored_on_the_coarse_grid_are_the_linear_models_own_on_the_drawn_grid():
    """The model is scored on half the drawn resolution; for linear logits the interpolation is exact."""
    from dragon_lightning.figures import drawing as plots

    rng = np.random.default_rng(1)
    features = rng.uniform([2, 80], [30, 290], (200, 2))
    regions = plots.DecisionRegions(features, rng.integers(0, 3, 200), ["Blue", "Red", "Yellow"], grid_size=80)
    weights, bias = np.array([[0.3, -1.0, 0.7], [0.02, 0.01, -0.03]]), np.array([0.5, 0.0, -0.5])
    assert len(regions.points) < 0.3 * regions.grid_x.size, "a fraction of the forward pass"
    drawn_grid = np.stack([regions.grid_x, regions.grid_y], axis=-1)
    np.testing.assert_allclose(
        regions.on_drawn_grid(regions.points @ weights + bias), drawn_grid @ weights + bias, rtol=1e-5, atol=1e-4
    )


def title_drawn(pixels: np.ndarray) -> bool:
    """Whether the band above a picture's axes holds dark text (a title), in a grayscale image: the axes
    begin at the first row that is mostly dark (the top of their frame)."""
    dark = pixels < 128
    frame_top = int(np.argmax(dark.mean(axis=1) > 0.55))
    return frame_top > 0 and int(dark[: frame_top - 2].sum()) > 100


def test_every_titled_picture_shows_its_title_in_the_saved_file(tmp_path):
    fit_fire(tmp_path, "--trainer.max_epochs", "3")
    figures = tmp_path / "lightning_logs" / "version_0" / "figures"
    for name in (
        "decision_regions.png",
        "confusion_matrix.png",
        "roc_curve.png",
        "truth_vs_predictions.png",
        "learning_curves.png",
    ):
        with Image.open(figures / name) as image:
            assert title_drawn(np.asarray(image.convert("L"))), name
    with Image.open(figures / "boundary_over_training.gif") as animation:
        assert animation.n_frames == 3, "a snapshot every epoch on a short run"
        for frame in range(animation.n_frames):
            animation.seek(frame)
            assert title_drawn(np.asarray(animation.convert("L"))), f"frame {frame}"


@pytest.mark.parametrize("epochs", [120, 1500, 25])
def test_the_default_animation_has_enough_frames_to_watch(epochs):
    """The shipped MLP (120 epochs), the tutorial's perceptron (1500) and MLP (25): 20 to 60 frames."""
    from dragon_lightning.callbacks.figures import snapshot_interval

    frames = epochs // snapshot_interval(epochs, None, 60)
    assert 20 <= frames <= 60


@pytest.mark.parametrize("epochs", [120, 1500])
def test_the_learning_curves_legend_fits_inside_the_picture(epochs):
    """Nothing drawn at the right edge: the legend, the kept epoch's label the longest, is not clipped."""
    from dragon_lightning.figures import drawing as plots

    history = [
        {"stage": stage, "epoch": epoch, "step": (epoch + 1) * 10, "loss": 1 / (epoch + 1), "acc": 0.5 + epoch / (3 * epochs)}
        for epoch in range(epochs)
        for stage in ("train", "val")
    ]
    pixels = plots.learning_curves(history, kept_epoch=epochs - 2)
    assert (pixels[:, -4:, :3] > 200).all()


def test_the_animation_counts_epochs_trained_as_the_learning_curves_do(tmp_path, monkeypatch):
    from dragon_lightning.figures.painter import Painter, drawn_regions

    titles = []
    submit = Painter.submit

    def noting_the_title(self, then, task, *args):
        if task is drawn_regions:
            titles.append(args[-1])
        return submit(self, then, task, *args)

    monkeypatch.setattr(Painter, "submit", noting_the_title)
    fit_fire(tmp_path, "--trainer.max_epochs", "2", "--test_after_fit", "false")
    assert titles[:2] == ["training set after 1 epoch", "training set after 2 epochs"]


@pytest.fixture
def one_thread():
    """PyTorch's thread count of the painter's worker: other counts sum in another order."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_a_picture_drawn_in_the_worker_is_the_one_drawn_in_place(monkeypatch, one_thread):
    torch.manual_seed(0)
    weights = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    features = np.random.default_rng(0).normal(size=(200, 2)) * [3, 10] + [10, 50]
    labels = np.arange(200) % 3
    pictures = {}
    for spare in (True, False):
        monkeypatch.setattr(painter, "spare_core", lambda spare=spare: spare)
        drawing = painter.Painter()
        for key in ("run", None):  # a snapshot (TensorBoard and the animation) and a picture with its file
            args = (key, features, labels, ["Blue", "Red", "Yellow"], weights, 0.0, "title")
            drawing.submit(lambda picture, at=(spare, key): pictures.setdefault(at, picture), painter.drawn_regions, *args)
        assert (drawing._pool is not None) == spare
        drawing.close()
    assert pictures[True, "run"] == pictures[False, "run"] and pictures[True, "run"].png is None
    assert pictures[True, None] == pictures[False, None] and pictures[True, None].png is not None


class StopWhileDrawing(Callback):
    """A signal once the painter has snapshots to draw (at a known epoch, so that the test does not race),
    noting the processes this run has started."""

    def __init__(self, signum: int, epoch: int = 3):
        self.signum, self.epoch = signum, epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            Path("children.json").write_text(json.dumps([child.pid for child in multiprocessing.active_children()]))
            os.kill(os.getpid(), self.signum)


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_run_stopped_while_its_pictures_are_drawn_leaves_no_half_file_and_no_drawing_process(signum, tmp_path):
    stopped = run_in_subprocess(
        "fit",
        "--config",
        config("fire_perceptron.yaml"),
        "--trainer.max_epochs",
        "8",
        "--trainer.callbacks+=test_figures.StopWhileDrawing",
        "--trainer.callbacks.init_args.signum",
        str(int(signum)),
        *in_root(tmp_path),
        cwd=tmp_path,
        timeout=120,
    )
    assert stopped.returncode != 0, stopped.stderr[-2000:]
    painters = json.loads((tmp_path / "children.json").read_text())
    assert len(painters) == (1 if spare_core() else 0), "the snapshots are drawn in one worker process, where a core is spare"
    assert not any(running(pid) for pid in painters), "and it ends with the run"
    written = [path.name for path in (tmp_path / "lightning_logs").rglob("*") if ".tmp" in path.name]
    assert written == [], "no temporary file is left"


INHERITS_A_WAITING_SESSION = """
import gc, time
import numpy as np, onnxruntime
from onnx import TensorProto, helper
from dragon_lightning.figures import painter

square = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 256])]
graph = helper.make_graph([helper.make_node("MatMul", ["x", "x"], ["y"])], "g", square,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 256])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
gc.disable()  # the session becomes garbage that the parent has not collected when the worker is forked
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 2
session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
for _ in range(100):
    session.run(None, {"x": np.ones((256, 256), dtype=np.float32)})
cycle = [session]
cycle.append(cycle)
del session, cycle
time.sleep(1)  # its thread pool now waits on a condition variable
painter.spare_core = lambda: True
drawing, collected = painter.Painter(), []
gc.enable()
drawing.submit(collected.append, gc.collect)
drawing.close()
print("collected", collected)
"""


def test_a_worker_never_finalizes_what_it_inherits(tmp_path):
    """A forked worker that collected an onnxruntime session left as garbage in the parent (as a notebook
    or a test that used one leaves it) hung forever in its finalizer, and with it the run's end."""
    pytest.importorskip("onnxruntime")
    (tmp_path / "inherits.py").write_text(INHERITS_A_WAITING_SESSION)
    process = subprocess.Popen(
        [sys.executable, "inherits.py"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("the worker hung finalizing what it inherited") from None
    assert process.returncode == 0, err[-2000:]
    assert "collected [0]" in out, "nothing inherited is collected in the worker"
