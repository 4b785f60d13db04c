"""Hostile and odd input through the real CLI: a checkpoint never runs code, special files never hang,
and every refusal is one line, exit status 2, with no file created or changed."""

import os
import signal
import stat
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch

from clihelpers import config, expect_one_line_error, files_under, last_checkpoint, run
from dragon_lightning.data import DragonDataModule

COLOR_MLP = config("color_mlp.yaml")


class RunsACommand:
    """A pickle that runs a shell command when it is loaded without ``weights_only``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real color MLP checkpoint (one epoch)."""
    root = tmp_path_factory.mktemp("trained")
    cli = run(
        "fit", "--config", COLOR_MLP, "--trainer.max_epochs", "1", "--test_after_fit", "false",
        "--figures.enabled", "false", "--trainer.default_root_dir", str(root), "--data.data_dir", str(root / "data"),
    )
    return last_checkpoint(cli)


def edited_checkpoint(trained: Path, target: Path, edit) -> Path:
    checkpoint = torch.load(trained, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, target)
    return target


@contextmanager
def hang_guard(seconds: int = 30):
    """Fail instead of hanging the suite if a check regresses and a FIFO is opened."""

    def give_up(signum, frame):
        raise TimeoutError("the command hung on a special file")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("command", ["fit", "test", "predict"])
@pytest.mark.parametrize("where", ["bare object", "inside a real checkpoint"])
def test_a_checkpoint_that_would_run_code_is_refused_and_the_code_never_runs(command, where, trained, scratch, capfd):
    marker = scratch.parent / f"ran-{command}-{where.replace(' ', '-')}"
    hostile = scratch / "hostile.ckpt"
    if where == "bare object":
        torch.save(RunsACommand(marker), hostile)
    else:
        edited_checkpoint(trained, hostile, lambda c: c["hyper_parameters"].__setitem__("dropout", RunsACommand(marker)))
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n6,170\n")
    args = [command, "--config", COLOR_MLP, "--ckpt_path", str(hostile), "--data.predict_csv", "dragons.csv"]
    expect_one_line_error(
        capfd, scratch, files_under(scratch), args, f"{hostile}: refused: it would build the Python object posix.system"
    )
    assert not marker.exists(), "the checkpoint's command ran"


@pytest.mark.parametrize("name", ["color_mlp.yaml", "color_perceptron.yaml", "fire_logistic.yaml"])
def test_our_own_checkpoints_load_as_data_and_test_and_predict(name, tmp_path):
    common = ["--config", config(name), "--figures.enabled", "false", "--trainer.default_root_dir", str(tmp_path)]
    fitted = run("fit", *common, "--trainer.max_epochs", "2", "--data.data_dir", "null")
    checkpoint = last_checkpoint(fitted)
    assert torch.load(checkpoint, weights_only=True)["state_dict"]
    tested = run("test", *common, "--ckpt_path", str(checkpoint), "--data.data_dir", "null")
    assert float(tested.trainer.callback_metrics["test/acc"]) > 0.3
    dragons = tmp_path / "dragons.csv"
    dragons.write_text("numberToes,bodyLength\n6,170\n")
    output = tmp_path / "predictions.csv"
    run("predict", *common, "--ckpt_path", str(checkpoint), "--data.predict_csv", str(dragons),
        "--predictions.output_path", str(output))
    assert len(pd.read_csv(output)) == 1


def test_a_datamodule_built_in_python_keeps_paths_as_plain_strings(tmp_path):
    """Checkpoints store the DataModule's hyperparameters: a Path would not load with weights_only=True."""
    data = DragonDataModule(data_dir=tmp_path / "data", csv_path=Path("dragons.csv"))
    assert data.hparams["data_dir"] == str(tmp_path / "data") and data.hparams["csv_path"] == "dragons.csv"
    torch.save({"hparams": dict(data.hparams)}, tmp_path / "h.pt")
    torch.load(tmp_path / "h.pt", weights_only=True)


def special_file(kind: str, folder: Path) -> str:
    if kind == "fifo":
        os.mkfifo(folder / "pipe")
        return str(folder / "pipe")
    return "/dev/null"


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("option", ["--data.csv_path", "--data.predict_csv", "--config", "--ckpt_path"])
def test_special_files_are_refused_without_reading_them(option, kind, trained, scratch, capfd):
    path = special_file(kind, scratch)
    command = "predict" if option in ("--data.predict_csv", "--ckpt_path") else "fit"
    args = [command, "--config", COLOR_MLP]
    if option != "--ckpt_path":
        args += ["--ckpt_path", str(trained)] if command == "predict" else []
    args += [option, path]
    with hang_guard():
        expect_one_line_error(capfd, scratch, files_under(scratch), args, f"{path}: not a regular file")


NO_GPU = not torch.cuda.is_available()
OPTION_CASES = {
    "negative seed": (["--seed_everything", "-1"], "--seed_everything must lie between 0 and 4294967295, got -1"),
    "seed too large": (["--seed_everything", str(2**32)], f"--seed_everything must lie between 0 and 4294967295, got {2**32}"),
    "negative data seed": (["--data.seed", "-3"], "--data.seed must lie between 0 and 4294967295, got -3"),
    "data seed too large": (["--data.seed", str(2**40)], f"--data.seed must lie between 0 and 4294967295, got {2**40}"),
    "epochs below -1": (["--trainer.max_epochs", "-2"], "--trainer.max_epochs must be at least -1, got -2"),
    "negative steps": (["--trainer.max_steps", "-5"], "--trainer.max_steps must be at least -1, got -5"),
    "validation share above 1": (["--trainer.limit_val_batches", "1.5"], "--trainer.limit_val_batches: a share of the batches"),
    "negative learning rate": (["--model.init_args.optimizer.init_args.lr", "-0.1"], "--model.init_args.optimizer: Invalid learning rate: -0.1"),
    "bad Adam betas": (["--model.init_args.optimizer.init_args.betas", "[1.5, 0.9]"], "--model.init_args.optimizer: Invalid beta parameter"),
    "best checkpoint alias": (["--ckpt_path", "best"], "--ckpt_path best: Lightning's name for a checkpoint"),
    "hpc checkpoint alias": (["--ckpt_path", "hpc"], "--ckpt_path hpc: Lightning's name for a checkpoint"),
    "registry checkpoint alias": (["--ckpt_path", "registry"], "--ckpt_path registry: Lightning's name for a checkpoint"),
    "typo in a model option": (["--model.init_args.hiden_sizes", "[3]"], "--model.init_args.hiden_sizes: not an option of MLPClassifier"),
    "bad activation": (["--model.init_args.activation", "gelu"], "--model.init_args.activation: Expected a typing.Literal"),
    "impossible split of generated dragons": (["--data.test_fraction", "0.99"], "the val split would be empty"),
    "too many dragons": (["--data.n_dragons", str(10**12)], "--data.n_dragons must lie between 1 and 100,000,000"),
    **({"no GPU": (["--trainer.accelerator", "gpu"], "--trainer.accelerator gpu: PyTorch finds no GPU")} if NO_GPU else {}),
}


@pytest.mark.parametrize("case", OPTION_CASES)
def test_bad_option_is_one_line_and_writes_nothing(case, scratch, capfd):
    options, message = OPTION_CASES[case]
    args = ["fit", "--config", COLOR_MLP, *options]  # generated data goes to ./data: nothing may appear there
    expect_one_line_error(capfd, scratch, files_under(scratch), args, message)


def a_file(folder: Path) -> Path:
    (folder / "notes.txt").write_text("mine\n")
    return folder / "notes.txt"


OUTPUT_CASES = {
    "root dir is a file": (lambda f: ["--trainer.default_root_dir", str(a_file(f))], "is a file, expected a folder"),
    "data dir is a file": (lambda f: ["--data.data_dir", str(a_file(f))], "is a file, expected a folder"),
    "data dir under a file": (lambda f: ["--data.data_dir", str(a_file(f) / "data")], "which is a file"),
    "checkpoint dir is a file": (lambda f: ["--checkpoint.dirpath", str(a_file(f))], "--checkpoint.dirpath"),
}


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_an_unusable_output_location_is_refused_before_training(case, scratch, capfd):
    make_options, message = OUTPUT_CASES[case]
    options = make_options(scratch)
    expect_one_line_error(capfd, scratch, files_under(scratch), ["fit", "--config", COLOR_MLP, *options], options[0], message)


@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_an_unusable_predictions_path_is_refused_before_predicting(where, trained, scratch, capfd):
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n6,170\n")
    output = scratch / "out" if where == "a directory" else a_file(scratch) / "predictions.csv"
    if where == "a directory":
        output.mkdir()
    args = ["predict", "--config", COLOR_MLP, "--ckpt_path", str(trained), "--data.predict_csv", "dragons.csv",
            "--predictions.output_path", str(output)]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "--predictions.output_path")


HYPERPARAMETER_CASES = {
    "unknown key": (lambda c: c["hyper_parameters"].__setitem__("tree_depth", 3), [], "its hyperparameters tree_depth are not options"),
    "invalid value": (
        lambda c: c["hyper_parameters"].__setitem__("activation", "gelu"), [],
        "a hyperparameter this version does not accept: --model.init_args.activation",
    ),
    "config disagrees": (
        lambda c: None, ["--model.init_args.hidden_sizes", "[64, 64]"],
        "the config asks for --model.init_args.hidden_sizes [64, 64] (the checkpoint has [10, 20, 1000])",
    ),
}


@pytest.mark.parametrize("case", HYPERPARAMETER_CASES)
def test_checkpoint_hyperparameters_this_version_cannot_use_are_named(case, trained, scratch, capfd):
    edit, options, message = HYPERPARAMETER_CASES[case]
    checkpoint = edited_checkpoint(trained, scratch / "other.ckpt", edit)
    args = ["test", "--config", COLOR_MLP, "--ckpt_path", str(checkpoint), *options]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, f"{checkpoint}: ", message)


CONFIG_CASES = {
    "not YAML": ("trainer:\n  max_epochs: 3\n bad: [\n", "line 3: not valid YAML"),
    "not a mapping": ("- fit\n- test\n", "expected a mapping of options"),
    "a Python tag": ("trainer: !!python/object/apply:os.system ['touch ran']\n", "line 1: not valid YAML"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_a_bad_config_file_is_named_with_its_line(case, scratch, capfd):
    content, message = CONFIG_CASES[case]
    (scratch / "bad.yaml").write_text(content)
    args = ["fit", "--config", "bad.yaml"]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "--config bad.yaml: ", message)
    assert not (scratch / "ran").exists()


HEADER = "testScore,bodyLength,mountainRange,color,diet,breathesFire"
ROWS = [f"{i % 100},{180 + i % 40},Julian,{('Blue', 'Red', 'Yellow')[i % 3]},Omnivore,{i % 2}" for i in range(60)]
CSV_CASES = {
    "not UTF-8": (f"{HEADER}\n{ROWS[0]}\n{ROWS[1]}\n50,200,Julian,Blue,Omnivore\xff,1\n".encode("latin-1"), "line 4: not UTF-8 text"),
    "a quoted line break before the bad row": (
        f"{HEADER},note\n" + "\n".join(f"{row}," for row in ROWS[:2]) + '\n1,2,Julian,Blue,Omnivore,1,"two\nlines"\n'
        + "5,long,Julian,Red,Omnivore,0,\n" + "\n".join(f"{row}," for row in ROWS[2:]) + "\n",
        "line 6, column 'bodyLength': 'long' is not a number",
    ),
    "beyond float32": (f"{HEADER}\n{ROWS[0]}\n50,1e39,Julian,Blue,Omnivore,1\n", "line 3, column 'bodyLength': 1e+39 is too large"),
}


@pytest.mark.parametrize("case", CSV_CASES)
def test_csv_problems_name_the_physical_line(case, scratch, capfd):
    content, message = CSV_CASES[case]
    path = scratch / "dragons.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    args = ["fit", "--config", COLOR_MLP, "--data.csv_path", str(path)]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, f"{path}: ", message)


PREDICT_CASES = {
    "beyond float32": ("numberToes,bodyLength\n6,170\n6,-1e300\n", "line 3, column 'bodyLength': -1e+300 is too large"),
    "our column names taken": ("numberToes,bodyLength,p_Red,predicted\n6,170,x,y\n", "already has the column(s) predicted, p_Red"),
}


@pytest.mark.parametrize("case", PREDICT_CASES)
def test_predict_refuses_rows_it_cannot_score_and_keeps_the_users_columns(case, trained, scratch, capfd):
    content, message = PREDICT_CASES[case]
    (scratch / "dragons.csv").write_text(content)
    args = ["predict", "--config", COLOR_MLP, "--ckpt_path", str(trained), "--data.predict_csv", "dragons.csv",
            "--predictions.output_path", "out.csv"]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "dragons.csv: ", message)


def test_predict_never_writes_empty_probabilities(trained, scratch, capfd):
    """Known only once the model has run: the Trainer has printed its start-up lines, the error ends them."""
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n6,170\n7,180\n")
    broken = edited_checkpoint(trained, scratch / "nan.ckpt", lambda c: c["state_dict"]["net.0.weight"].fill_(float("nan")))
    before = files_under(scratch)
    with pytest.raises(SystemExit) as exit_info:
        run("predict", "--config", COLOR_MLP, "--ckpt_path", str(broken), "--data.predict_csv", "dragons.csv",
            "--predictions.output_path", "out.csv", "--trainer.logger", "false")
    assert exit_info.value.code == 2
    last_line = capfd.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("dragon-lightning: error: dragons.csv: line 2: the model gives no finite probabilities")
    assert files_under(scratch) == before


def test_without_a_logger_no_config_file_is_written_over_the_users(scratch):
    mine = scratch / "config.yaml"
    mine.write_text(Path(COLOR_MLP).read_text())
    before = mine.read_bytes()
    run("fit", "--config", str(mine), "--trainer.logger", "false", "--trainer.max_epochs", "1",
        "--figures.enabled", "false", "--test_after_fit", "false")
    assert mine.read_bytes() == before
    assert not list(scratch.rglob("config.yaml"))[1:], "no other config.yaml either: the run has no folder"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_follow_the_umask(umask, trained, scratch):
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n6,170\n")
    previous = os.umask(umask)
    try:
        run("predict", "--config", COLOR_MLP, "--ckpt_path", str(trained), "--data.predict_csv", "dragons.csv",
            "--predictions.output_path", "out.csv", "--trainer.logger", "false")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((scratch / "out.csv").stat().st_mode) == 0o666 & ~umask
