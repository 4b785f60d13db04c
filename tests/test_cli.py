"""End to end through LightningCLI: fit, test, predict, logs and configs, as a user runs them."""

import io
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import lightning
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from clihelpers import (
    ROOT,
    config,
    expect_one_line_error,
    files_under,
    in_root,
    last_checkpoint,
    last_weights,
    predict_args,
    run,
    short_fit,
)
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dragon_lightning
from dragon_lightning.checkpoints.files import resolve_shortcut
from dragon_lightning.commands import cli_main
from dragon_lightning.errors import DragonInputError
from dragon_lightning.inference import load_model
from dragon_lightning.registry import COMMANDS

# Fit configs; configs/sweeps/ holds search spaces.
CONFIGS = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name != "sweeps")


def read_events(run_dir: Path) -> dict[str, set]:
    """Scalar values per tag, image tags and hparams-plugin tags, from every event file of a run."""
    found: dict = {"scalars": {}, "images": set(), "hparams": set()}
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
        accumulator.Reload()
        tags = accumulator.Tags()
        for tag in tags["scalars"]:
            found["scalars"].setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
        found["images"] |= set(tags["images"])
        found["hparams"] |= set(_plugin_tags(accumulator, "hparams"))
    return found


def _plugin_tags(accumulator: EventAccumulator, plugin: str) -> list[str]:
    try:
        return list(accumulator.PluginTagToContent(plugin))
    except KeyError:
        return []


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cli = short_fit(
        "color_mlp.yaml",
        3,
        *in_root(root),
    )
    return root, cli


def test_fit_logs_curves_checkpoints_config_and_test_metrics(fitted):
    root, cli = fitted
    run_dir = root / "lightning_logs" / "version_0"
    assert (run_dir / "config.yaml").is_file()
    assert type(cli.trainer.strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2
    events = read_events(run_dir)
    for curve in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert len(events["scalars"][curve]) == 3, curve
    for metric in ("test/acc", "test/loss", "test/balanced_acc", "test/recall_Blue", "test/recall_Red"):
        assert metric in events["scalars"], metric
    assert events["scalars"]["test/acc"][-1] == pytest.approx(float(cli.trainer.callback_metrics["test/acc"]))
    assert "_hparams_/experiment" in events["hparams"], "HPARAMS tab needs hparams written with metrics"
    pictures = {"truth_vs_predictions", "decision_regions", "confusion_matrix", "learning_curves"}
    assert events["images"] == {f"figures/{name}" for name in (*pictures, "boundary_over_training")}
    files = {path.name for path in (run_dir / "figures").iterdir() if not path.name.startswith(".")}  # not the manifest
    assert files == {f"{name}.png" for name in pictures} | {"boundary_over_training.gif"}, "and the same as files"
    logged = logged_image(run_dir, "figures/confusion_matrix")
    with Image.open(run_dir / "figures" / "confusion_matrix.png") as saved:
        drawn = np.asarray(saved.convert("RGB"), dtype=float)
    assert logged.shape == drawn.shape and np.abs(logged - drawn).mean() < 2, "TensorBoard shows the file's picture"
    assert (root / "data" / "dragons_n480_seed42.csv").is_file()


def logged_image(run_dir: Path, tag: str) -> np.ndarray:
    """The last image logged under ``tag``, decoded, as RGB."""
    found = []
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        found += accumulator.Images(tag) if tag in accumulator.Tags()["images"] else []
    with Image.open(io.BytesIO(found[-1].encoded_image_string)) as image:
        return np.asarray(image.convert("RGB"), dtype=float)


def test_saved_config_reproduces_the_run(fitted):
    root, cli = fitted
    saved = root / "lightning_logs" / "version_0" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["seed_everything"] == 42
    again = run("fit", "--config", str(saved))
    assert float(again.trainer.callback_metrics["test/acc"]) == float(cli.trainer.callback_metrics["test/acc"])
    original = torch.load(root / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    rerun = last_weights(again)
    assert all(torch.equal(original[name], rerun[name]) for name in original)


@pytest.mark.parametrize(
    "options, progress_bar, lr_monitor",
    [
        ([], 10, True),
        (["--trainer.enable_progress_bar", "false"], None, True),
        (["--trainer.logger", "false"], 10, False),
        (["--trainer.callbacks+=TQDMProgressBar", "--trainer.callbacks.refresh_rate", "1"], 1, True),
        (["--trainer.callbacks", "TQDMProgressBar"], 1, True),
    ],
    ids=["defaults", "no progress bar", "no logger", "the user's progress bar", "one callback, not a list"],
)
def test_default_callbacks_join_the_trainer_and_give_way_to_the_config(options, progress_bar, lr_monitor, tmp_path):
    from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar

    from dragon_lightning.cli import build_cli

    cli = build_cli(["--config", config("color_mlp.yaml"), "--trainer.default_root_dir", str(tmp_path), *options], run=False)
    bars = [c for c in cli.trainer.callbacks if isinstance(c, TQDMProgressBar)]
    assert [bar.refresh_rate for bar in bars] == ([progress_bar] if progress_bar else [])
    assert any(isinstance(c, LearningRateMonitor) for c in cli.trainer.callbacks) == lr_monitor
    chose_a_bar = any("TQDMProgressBar" in option for option in options)
    assert ("TQDMProgressBar" in str(cli.config.trainer.callbacks)) == chose_a_bar, "config.yaml keeps the user's choice"


@pytest.mark.parametrize("version, shown", [("repeat_1_fold_2", "repeat_1_fold_2"), (None, 0)], ids=["a cv fold", "version_N"])
def test_the_progress_bar_names_the_runs_version_whole(version, shown, tmp_path):
    """Lightning's bar shows a text version's last four characters: every cv fold read ``v_num=ld_2``."""
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from dragon_lightning.callbacks import RunProgressBar

    bar = RunProgressBar()
    trainer = L.Trainer(logger=TensorBoardLogger(tmp_path, name="", version=version), callbacks=[bar], enable_checkpointing=False)
    assert bar.get_metrics(trainer, None)["v_num"] == shown


def test_a_restored_checkpoint_tests_the_same_and_predicts(fitted, tmp_path):
    root, cli = fitted
    best = cli.trainer.checkpoint_callback.best_model_path
    tested = run(
        "test",
        "--config",
        config("color_mlp.yaml"),
        "--ckpt_path",
        best,
        "--trainer.default_root_dir",
        str(tmp_path),
        "--data.data_dir",
        str(root / "data"),
    )
    assert float(tested.trainer.callback_metrics["test/acc"]) == float(cli.trainer.callback_metrics["test/acc"])

    dragons = tmp_path / "new_dragons.csv"
    dragons.write_text("name,numberToes,bodyLength\nSmaug,4,130\nPuff,22,260\nGiant,500,9000\n")
    output = tmp_path / "out" / "predictions.csv"
    run(
        *predict_args(config("color_mlp.yaml"), best, str(dragons), str(output)),
        "--trainer.default_root_dir",
        str(tmp_path),
    )
    predictions = pd.read_csv(output)
    assert predictions["name"].tolist() == ["Smaug", "Puff", "Giant"]
    assert set(predictions["predicted"]) <= {"Blue", "Red", "Yellow"}
    probabilities = predictions[["p_Blue", "p_Red", "p_Yellow"]]
    assert probabilities.sum(axis=1).round(5).eq(1).all()
    assert predictions["predicted"].tolist() == probabilities.idxmax(axis=1).str.removeprefix("p_").tolist()
    assert predictions["outside_training_range"].tolist() == [False, False, True]


def test_an_evaluation_under_other_checkpoint_options_is_quiet_and_leaves_the_warning_filters_as_they_were(fitted, tmp_path):
    """validate, test and predict restore no training state: Lightning's advice to add the callbacks a
    checkpoint was trained with does not apply. The command's own filters end with it."""
    root, cli = fitted
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outer = list(warnings.filters)
        run(
            "validate",
            "--config",
            config("color_mlp.yaml"),
            "--ckpt_path",
            cli.trainer.checkpoint_callback.best_model_path,
            *["--checkpoint.monitor", "val/acc", "--checkpoint.mode", "max"],  # another ranking than the checkpoint's
            *["--trainer.default_root_dir", str(tmp_path), "--data.data_dir", str(root / "data")],
        )
        assert warnings.filters == outer
    assert not [w for w in caught if "callbacks used to create the checkpoint" in str(w.message)]
    assert warnings.filters == filters


def test_a_run_without_a_seed_is_seeded_0_whatever_ran_before_it_in_the_process(tmp_path, monkeypatch):
    """Lightning's default seeds a run with the seed an earlier run left in ``PL_GLOBAL_SEED`` (a
    notebook's previous cell), and warns "No seed found" otherwise; a run without one takes 0, quietly."""
    from dragon_lightning.cli import build_cli

    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="No seed found")
        cli = build_cli(["--trainer.default_root_dir", str(tmp_path), "--data.data_dir", "null"], run=False)
    assert (cli.config.seed_everything, cli.datamodule.seed) == (0, 0)


@pytest.fixture(scope="module")
def fire_fitted(tmp_path_factory):
    """A fire run under another seed and size than the defaults, on generated dragons."""
    root = tmp_path_factory.mktemp("fire_runs")
    return root, short_fit("fire_logistic.yaml", 2, *in_root(root), "--seed_everything", "7", "--data.n_dragons", "600")


def test_a_checkpoint_alone_is_evaluated_on_the_rows_its_run_held_out(fire_fitted, scratch):
    """``test --ckpt_path`` with no config takes the model class and the data's draw (task, seed,
    size, fractions) from the checkpoint, so it tests on the run's own test rows; an option given wins."""
    _, fitted = fire_fitted
    best = fitted.trainer.checkpoint_callback.best_model_path
    tested = run("test", "--ckpt_path", best)
    assert type(tested.model).__name__ == "LogisticRegression"
    assert (tested.datamodule.task, tested.datamodule.seed, tested.datamodule.hparams.n_dragons) == ("fire", 7, 600)
    assert torch.equal(tested.datamodule.splits["test"][0], fitted.datamodule.splits["test"][0])
    assert float(tested.trainer.callback_metrics["test/loss"]) == pytest.approx(
        float(fitted.trainer.callback_metrics["test/loss"])
    )
    assert run("test", "--ckpt_path", best, "--data.seed", "8").datamodule.seed == 8
    assert run("test", "--ckpt_path", best, "--model.init_args.threshold", "0.9").model.hparams.threshold == 0.9


def test_best_names_the_checkpoint_the_newest_run_tested(fire_fitted, scratch, capfd):
    """``--ckpt_path best`` is what ``fit`` tested (its metrics again), found through the run's
    ``last.ckpt`` (a resumed run's best may lie in an earlier run's folder); a recorded path is looked
    up under the runs, never opened as written."""
    root, fitted = fire_fitted
    tested = run("test", "--ckpt_path", "best", "--trainer.default_root_dir", str(root))
    assert Path(tested.trainer.ckpt_path).resolve() == Path(fitted.tested_checkpoint).resolve()
    assert float(tested.trainer.callback_metrics["test/loss"]) == pytest.approx(
        float(fitted.trainer.callback_metrics["test/loss"])
    )
    last = torch.load(last_checkpoint(fitted), weights_only=True)
    runs = Path("lightning_logs")  # under the working folder, scratch
    (runs / "version_0" / "checkpoints").mkdir(parents=True)
    (runs / "version_0" / "checkpoints" / "epoch003.ckpt").write_bytes(b"the resumed run's best")
    for recorded, found in [
        ("/elsewhere/lightning_logs/version_0/checkpoints/epoch003.ckpt", runs / "version_0" / "checkpoints" / "epoch003.ckpt"),
        ("/etc/passwd", None),
        ("lightning_logs/version_0/checkpoints/../../../secret.ckpt", None),
        ("lightning_logs/version_0/../checkpoints/epoch003.ckpt", None),  # a run folder named ".."
        ("lightning_logs/version_0/checkpoints/" + "x" * 5000 + ".ckpt", None),  # a name too long for the file system
    ]:
        states = {key: {**state, "best_model_path": recorded} for key, state in last["callbacks"].items()}
        (runs / "version_1" / "checkpoints").mkdir(parents=True, exist_ok=True)
        torch.save({**last, "callbacks": states}, runs / "version_1" / "checkpoints" / "last.ckpt")
        if found is not None:
            assert resolve_shortcut("best") == str(found)
        else:
            with pytest.raises(DragonInputError, match=r"last.ckpt: records no best checkpoint under lightning_logs"):
                resolve_shortcut("best")


def test_last_and_best_look_where_the_run_puts_its_checkpoints(fire_fitted, scratch, capfd):
    """A logger with its own ``name`` keeps its runs in ``root/name/version_N``, one with its own
    ``version`` in ``root/name/version``, and ``--checkpoint.dirpath`` puts a run's checkpoints in a
    folder of their own: ``--ckpt_path last`` and ``best`` look there, as Lightning writes them (a
    resume with ``last`` took an earlier run's under ``lightning_logs``, or none)."""
    _, fitted = fire_fitted
    for folder in ("version_0", "version_3", "mine"):  # the best checkpoint's run, a later run, a named one
        shutil.copytree(last_checkpoint(fitted).parent.parent, scratch / "experiments" / folder)
    logger = ["--trainer.default_root_dir", str(scratch), "--trainer.logger.init_args.name", "experiments"]
    best = Path(fitted.tested_checkpoint).name
    assert (
        Path(run("test", "--ckpt_path", "best", *logger).trainer.ckpt_path)
        == scratch / "experiments" / "version_0" / "checkpoints" / best
    )
    assert (
        Path(run("test", "--ckpt_path", "last", *logger).trainer.ckpt_path)
        == scratch / "experiments" / "version_3" / "checkpoints" / "last.ckpt"
    )
    named = [*logger, "--trainer.logger.init_args.version", "mine"]
    assert (
        Path(run("test", "--ckpt_path", "last", *named).trainer.ckpt_path)
        == scratch / "experiments" / "mine" / "checkpoints" / "last.ckpt"
    )
    shutil.copytree(last_checkpoint(fitted).parent, scratch / "own")
    own = ["--trainer.default_root_dir", str(scratch), "--checkpoint.dirpath", str(scratch / "own")]
    assert Path(run("test", "--ckpt_path", "best", *own).trainer.ckpt_path) == scratch / "own" / best
    assert Path(run("test", "--ckpt_path", "last", *own).trainer.ckpt_path) == scratch / "own" / "last.ckpt"
    capfd.readouterr()
    missing = f"--ckpt_path last: the run {scratch / 'experiments' / 'other'} has no checkpoints/last.ckpt"
    other = ["test", "--ckpt_path", "last", *logger, "--trainer.logger.init_args.version", "other"]
    assert expect_one_line_error(capfd, scratch, files_under(scratch), other).endswith(missing)


def test_load_model_takes_best_and_last_as_the_commands_do(fire_fitted, monkeypatch):
    root, fitted = fire_fitted
    monkeypatch.chdir(root)
    assert load_model("best").path.resolve() == Path(fitted.tested_checkpoint).resolve()
    assert load_model("last").path.resolve() == last_checkpoint(fitted).resolve()
    monkeypatch.chdir(root / "data")
    with pytest.raises(DragonInputError, match=r"^best: no run under lightning_logs has checkpoints/last.ckpt$"):
        load_model("best")


def test_a_checkpoint_trained_on_a_csv_is_not_evaluated_on_generated_rows(fire_fitted, scratch, capfd):
    root, _ = fire_fitted
    (table,) = (root / "data").glob("*.csv")
    on_csv = short_fit("fire_logistic.yaml", 1, *in_root(scratch / "csv_run"), "--data.csv_path", str(table))
    capfd.readouterr()
    checkpoint = str(last_checkpoint(on_csv))
    expect_one_line_error(
        capfd,
        scratch,
        files_under(scratch),
        ["test", "--ckpt_path", checkpoint],
        f"was trained on the rows of {table}",
        "--data.csv_path",
    )
    assert run("test", "--ckpt_path", checkpoint, "--data.csv_path", str(table)).datamodule.csv_path == table


def test_a_run_names_its_folders_as_they_are_typed(scratch, capfd):
    """In the working folder (Lightning's own default root, "."), every line names its path the same
    way, without a leading ``./``: what a user copies into the next command."""
    short_fit("fire_logistic.yaml", 1, "--data.n_dragons", "300")
    printed = capfd.readouterr()
    lines = printed.out.splitlines()
    assert f".{os.sep}lightning_logs" not in printed.out + printed.err, "Lightning's lines too, as it is handed the paths"
    run_folder = Path("lightning_logs") / "version_0"
    assert f"run folder: {run_folder}" in lines
    assert any(line.startswith(f"testing {run_folder / 'checkpoints'}{os.sep}epoch000") for line in lines), lines
    assert lines[-1] == f"pictures: {run_folder / 'figures'}"
    header = (run_folder / "config.yaml").read_text().splitlines()[:2]
    assert f"# lightning.pytorch=={lightning.__version__}" in header, "config.yaml says which Lightning wrote it"


@pytest.mark.parametrize("progress_bar", [True, False])
def test_predict_says_where_the_predictions_went_on_a_line_of_its_own(progress_bar, fitted, tmp_path, capsys):
    _, cli = fitted
    dragons = tmp_path / "dragons.csv"
    dragons.write_text("numberToes,bodyLength\n4,130\n")
    output = tmp_path / "predictions.csv"
    args = predict_args(config("color_mlp.yaml"), cli.trainer.checkpoint_callback.best_model_path, str(dragons), str(output))
    cli_main([*args, "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", str(progress_bar).lower()])
    assert re.search(rf"(^|[\r\n])predictions: {re.escape(str(output))}\n", capsys.readouterr().out)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_trains_and_tests(name, tmp_path):
    cli = short_fit(
        name,
        2,
        *in_root(tmp_path),
    )
    assert 0.3 < float(cli.trainer.callback_metrics["test/acc"]) <= 1.0
    expected_task = "fire" if "fire_" in name else "color"
    assert cli.datamodule.task == expected_task


def test_help_explains_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "share of each class held out for testing" in text
    assert "--test_after_fit" in text and "--predictions.output_path" in text
    with pytest.raises(SystemExit):
        cli_main(["fit", "--model.help", "MLPClassifier"])
    text = " ".join(capsys.readouterr().out.split())  # help wraps its lines
    assert "width of each hidden layer" in text and "Sequence[PositiveInt]" in text
    assert "operating point of accuracy" in text and "OpenUnitInterval" in text, "the shared arguments, with their ranges"
    assert "type: PositiveInt" in cli_help(["fit", "--help"], capsys), "--data.batch_size shows its range"
    for model in ("LogisticRegression", "Perceptron"):
        assert "operating point of accuracy" in cli_help(["fit", "--model.help", model], capsys), model


def test_the_overview_the_version_and_a_mistyped_command_answer_before_pytorch_is_imported():
    """Answered from the registry: a newcomer's typo or ``--version`` costs no import of everything."""
    probe = (
        "import sys\n"
        "from dragon_lightning.commands import cli_main\n"
        "try:\n"
        "    cli_main(sys.argv[1:])\n"
        "finally:\n"
        "    print('torch imported' if 'torch' in sys.modules else 'torch not imported', file=sys.stderr)\n"
    )
    answers = {}
    for args in (["--help"], ["--version"], ["fitt", "--config", "x.yaml"], ["fit"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        assert done.stderr.endswith("torch not imported\n"), (args, done.stderr)
        answers[args[0]] = (done.returncode, done.stdout + done.stderr)
    assert answers["--help"][0] == 0 and all(command in answers["--help"][1] for command in COMMANDS)
    assert answers["--version"] == (0, f"dragon-lightning {dragon_lightning.__version__}\ntorch not imported\n")
    assert answers["fitt"][0] == 2
    assert answers["fitt"][1].splitlines()[0] == (
        "dragon-lightning: error: no command 'fitt'; the commands are " + ", ".join(COMMANDS) + " ('dragon-lightning --help')"
    )
    assert answers["fit"][0] == 2 and answers["fit"][1].splitlines()[0] == (
        "dragon-lightning: error: fit needs options, e.g. 'dragon-lightning fit --config configs/color_mlp.yaml' "
        "('dragon-lightning fit --help' lists them)"
    ), "a command typed alone shows a first run"


def cli_help(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        cli_main(args)
    return " ".join(capsys.readouterr().out.split())


def test_the_command_exits_cleanly(tmp_path):
    command = [sys.executable, "-m", "dragon_lightning", "fit", "--config", config("fire_logistic.yaml")]
    quiet = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    ok = subprocess.run([*command, *quiet], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    printed = ok.stdout + ok.stderr
    assert "GPU available" in printed and "TPU available" not in printed and "Tip:" not in printed, (
        "Lightning's lines about other products stay out"
    )
    assert "logging interval" not in printed, "no advice on per-step logging: every model logs once an epoch"
    bad = subprocess.run([*command, "--data.csv_path", "missing.csv"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "dragon-lightning: error: missing.csv: no such CSV file"


def test_perceptron_boundary_is_drawn_after_every_epoch_and_figures_can_be_turned_off(tmp_path):
    common = ["--trainer.max_epochs", "4", "--data.data_dir", str(tmp_path / "data")]
    run("fit", "--config", config("fire_perceptron.yaml"), "--trainer.default_root_dir", str(tmp_path / "on"), *common)
    steps = []
    for events in (tmp_path / "on/lightning_logs/version_0").glob("events.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        if "figures/boundary_over_training" in accumulator.Tags()["images"]:
            steps += [event.step for event in accumulator.Images("figures/boundary_over_training")]
    assert steps == [0, 1, 2, 3]
    run(
        "fit",
        "--config",
        config("fire_perceptron.yaml"),
        "--figures.enabled",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path / "off"),
        *common,
    )
    assert read_events(tmp_path / "off/lightning_logs/version_0")["images"] == set()
    assert not (tmp_path / "off/lightning_logs/version_0/figures").exists()
