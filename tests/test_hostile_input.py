"""Hostile and odd input through the real CLI: a checkpoint never runs code, special files never hang,
and every refusal is one line, exit status 2, with no file created or changed."""

import errno
import io
import json
import os
import re
import shutil
import signal
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from clihelpers import config, expect_one_line_error, files_under, in_root, last_checkpoint, predict_args, run, run_in_subprocess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightning.pytorch.callbacks import Callback

from dragon_lightning.data import DragonDataModule
from dragon_lightning.data.csv_io import read_feature_csv
from dragon_lightning.errors import DragonInputError, first_line, os_reason
from dragon_lightning.gates import inputs
from dragon_lightning.gates.outputs import MANIFEST, OutputFolder
from dragon_lightning.models import FoldEnsemble, LogisticRegression, MLPClassifier, Perceptron
from dragon_lightning.models.base import MAX_PARAMETERS
from dragon_lightning.models.checksum import CHECKSUM_KEY, COVERED_BY, stamp_checksum, state_checksum
from dragon_lightning.registry import COMMANDS as REGISTERED

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
        "fit",
        "--config",
        COLOR_MLP,
        "--trainer.max_epochs",
        "1",
        "--test_after_fit",
        "false",
        "--figures.enabled",
        "false",
        *in_root(root),
    )
    return last_checkpoint(cli)


def edited_checkpoint(trained: Path, target: Path, edit, checksum: bool = True) -> Path:
    """A copy of ``trained`` changed by ``edit``; with a matching checksum, as a script of the user's that
    edits it on purpose would write it, unless ``checksum`` is off."""
    checkpoint = torch.load(trained, weights_only=True)
    edit(checkpoint)
    if checksum:
        stamp_checksum(checkpoint)
    torch.save(checkpoint, target)
    return target


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
    from dragon_lightning import load_model

    loaded = load_model(checkpoint)
    features, labels = loaded.test_split()
    expected = float((loaded.predict(features) == loaded.classes_[labels]).mean())
    assert float(tested.trainer.callback_metrics["test/acc"]) == pytest.approx(expected, abs=1e-6), "test and load_model agree"
    dragons = tmp_path / "dragons.csv"
    dragons.write_text("numberToes,bodyLength\n6,170\n")
    output = tmp_path / "predictions.csv"
    run(*predict_args(config(name), checkpoint, dragons, output), *common[2:])
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
    expect_one_line_error(capfd, scratch, files_under(scratch), args, f"{path}: not a regular file")


@pytest.mark.parametrize(
    "swapped_for, refusal", [("fifo", "not a regular file"), ("larger file", "more than a CSV file may hold")]
)
@pytest.mark.parametrize("reader", ["csv", "bytes"])
def test_a_file_swapped_after_its_check_is_refused_not_read(reader, swapped_for, refusal, tmp_path, monkeypatch):
    """The gate checks again what it opened: a checked file replaced before the read (by a FIFO, which
    would hang the reader, or by a file over the bound) is one line."""
    checked = tmp_path / "checked.csv"
    checked.write_text("numberToes,bodyLength\n7,150\n")
    read = tmp_path / "dragons.csv"
    if swapped_for == "fifo":
        os.mkfifo(read)
    else:
        read.touch()
        os.truncate(read, inputs.CSV.max_bytes + 1)  # sparse: nothing is written to disk
    real_stat = inputs.stat_path
    # The check sees the file as it was; the read meets what replaced it.
    monkeypatch.setattr(inputs, "stat_path", lambda path, *args: real_stat(checked if Path(path) == read else path, *args))
    with pytest.raises(DragonInputError, match=f"^{read}: .*{refusal}"):
        read_feature_csv(read) if reader == "csv" else inputs.read_bytes(read, inputs.CSV)


NO_GPU = not torch.cuda.is_available()
OPTION_CASES = {
    "negative seed": (
        ["--seed_everything", "-1"],
        "--seed_everything: Not of type Seed: does not conform to restriction v>=0 and v<=4294967295 (given -1)",
    ),
    "seed too large": (
        ["--seed_everything", str(2**32)],
        f"--seed_everything: Not of type Seed: does not conform to restriction v>=0 and v<=4294967295 (given {2**32})",
    ),
    "negative data seed": (
        ["--data.seed", "-3"],
        "--data.seed: Not of type Seed: does not conform to restriction v>=0 and v<=4294967295 (given -3)",
    ),
    "data seed too large": (
        ["--data.seed", str(2**40)],
        f"--data.seed: Not of type Seed: does not conform to restriction v>=0 and v<=4294967295 (given {2**40})",
    ),
    "epochs below -1": (
        ["--trainer.max_epochs", "-2"],
        "--trainer: `max_epochs` must be a non-negative integer or -1. You passed in -2.",
    ),
    "negative steps": (["--trainer.max_steps", "-5"], "--trainer: `max_steps` must be a non-negative integer or -1"),
    "validation share above 1": (
        ["--trainer.limit_val_batches", "1.5"],
        "--trainer: You have passed invalid value 1.5 for limit_val_batches",
    ),
    "negative learning rate": (
        ["--model.init_args.optimizer.init_args.lr", "-0.1"],
        "--model.init_args.optimizer: Invalid learning rate: -0.1",
    ),
    "bad Adam betas": (
        ["--model.init_args.optimizer.init_args.betas", "[1.5, 0.9]"],
        "--model.init_args.optimizer: Invalid beta parameter",
    ),
    "best with no run": (["--ckpt_path", "best"], "--ckpt_path best: no run under lightning_logs has checkpoints/last.ckpt"),
    "hpc checkpoint alias": (["--ckpt_path", "hpc"], "--ckpt_path hpc: Lightning's name for a checkpoint"),
    "registry checkpoint alias": (["--ckpt_path", "registry"], "--ckpt_path registry: Lightning's name for a checkpoint"),
    "typo in a model option": (
        ["--model.init_args.hiden_sizes", "[3]"],
        "--model.init_args.hiden_sizes: not an option of MLPClassifier",
    ),
    "bad activation": (["--model.init_args.activation", "gelu"], "--model.init_args.activation: Expected a typing.Literal"),
    "impossible split of generated dragons": (["--data.test_fraction", "0.99"], "the val split would be empty"),
    "too many dragons": (
        ["--data.n_dragons", str(10**12)],
        "--data.n_dragons: Not of type DragonCount: 1000000000000 does not conform to restriction v>=1 and v<=30000000",
    ),
    **({"no GPU": (["--trainer.accelerator", "gpu"], "--trainer: No supported gpu backend found")} if NO_GPU else {}),
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


# Each command's place to write inside /proc, a folder that takes no files whoever runs the tests (root too).
REFUSING_FILE_SYSTEM = {
    "fit, run folder": lambda trained: ["fit", "--config", COLOR_MLP, "--trainer.default_root_dir", "/proc/runs"],
    "fit, figures": lambda trained: ["fit", "--config", COLOR_MLP, "--figures.save_dir", "/proc/figures"],
    "cv": lambda trained: ["cv", "--config", COLOR_MLP, "--folds", "2", "--trainer.default_root_dir", "/proc/cv"],
    "predict": lambda trained: predict_args(COLOR_MLP, str(trained), "dragons.csv", "/proc/predictions.csv"),
    "export": lambda trained: ["export", "--ckpt_path", str(trained), "--output", "/proc/model.onnx"],
    "compare": lambda trained: ["compare", str(trained), "--output", "/proc/comparison.png"],
}


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("case", REFUSING_FILE_SYSTEM)
def test_a_folder_the_file_system_refuses_is_one_line_before_any_work(case, trained, scratch, capfd):
    """Permissions say nothing for root or a special file system: the output gate tries a file there."""
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n6,170\n")
    args = REFUSING_FILE_SYSTEM[case](trained)
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "/proc is not writable")


def test_a_file_the_file_system_refuses_is_one_line_and_the_previous_file_stays(tmp_path):
    from dragon_lightning.gates.outputs import NotWritten, write_atomically

    target = tmp_path / "model.onnx"
    target.write_text("before")

    def failing_device(tmp: Path) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with pytest.raises(NotWritten, match=r"model.onnx: not written \(input/output error\); what was there is unchanged"):
        write_atomically(target, failing_device)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"] and target.read_text() == "before"


@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_an_unusable_predictions_path_is_refused_before_predicting(where, trained, scratch, capfd):
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n6,170\n")
    output = scratch / "out" if where == "a directory" else a_file(scratch) / "predictions.csv"
    if where == "a directory":
        output.mkdir()
    args = [
        *predict_args(COLOR_MLP, str(trained), "dragons.csv", str(output)),
    ]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "--predictions.output_path")


HYPERPARAMETER_CASES = {
    "unknown key": (
        lambda c: c["hyper_parameters"].__setitem__("tree_depth", 3),
        [],
        "its hyperparameters tree_depth are not options",
    ),
    "invalid value": (
        lambda c: c["hyper_parameters"].__setitem__("activation", "gelu"),
        [],
        "a setting this version does not accept: --model.init_args.activation",
    ),
    "config disagrees": (
        lambda c: None,
        ["--model.init_args.hidden_sizes", "[64, 64]"],
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
    "not UTF-8": (
        f"{HEADER}\n{ROWS[0]}\n{ROWS[1]}\n50,200,Julian,Blue,Omnivore\xff,1\n".encode("latin-1"),
        "line 4: not UTF-8 text",
    ),
    "a quoted line break before the bad row": (
        f"{HEADER},note\n"
        + "\n".join(f"{row}," for row in ROWS[:2])
        + '\n1,2,Julian,Blue,Omnivore,1,"two\nlines"\n'
        + "5,long,Julian,Red,Omnivore,0,\n"
        + "\n".join(f"{row}," for row in ROWS[2:])
        + "\n",
        "line 6, column 'bodyLength': 'long' is not a number",
    ),
    "beyond float32": (
        f"{HEADER}\n{ROWS[0]}\n50,1e39,Julian,Blue,Omnivore,1\n",
        "line 3, column 'bodyLength': 1e+39 is too large",
    ),
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
    "our column names taken": (
        "numberToes,bodyLength,p_Red,predicted\n6,170,x,y\n",
        "already has the column(s) predicted, p_Red",
    ),
    "a field beyond the csv module's limit": (
        "numberToes,bodyLength,note\n6,abc,x\n" + '7,170,"' + "y" * 200_000 + '"\n',
        "line 2, column 'bodyLength': 'abc' is not a number",
    ),
    "a field beyond the limit before the bad row": (
        'numberToes,bodyLength,note\n7,170,"' + "y" * 200_000 + '"\n6,abc,x\n',
        "line 2: a field longer than",
    ),
    "a known column twice once spaces go": (
        "numberToes, numberToes ,bodyLength\n6,6,170\n",
        "the column 'numberToes' appears 2 times",
    ),
}


@pytest.mark.parametrize("case", PREDICT_CASES)
def test_predict_refuses_rows_it_cannot_score_and_keeps_the_users_columns(case, trained, scratch, capfd):
    content, message = PREDICT_CASES[case]
    (scratch / "dragons.csv").write_text(content)
    args = [
        *predict_args(COLOR_MLP, str(trained), "dragons.csv", "out.csv"),
    ]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "dragons.csv: ", message)


def test_predict_never_writes_empty_probabilities(trained, scratch, capfd):
    """Known only once the model has run: the Trainer has printed its start-up lines, the error ends them."""
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n6,170\n7,180\n")
    broken = edited_checkpoint(trained, scratch / "nan.ckpt", lambda c: c["state_dict"]["net.0.weight"].fill_(float("nan")))
    before = files_under(scratch)
    with pytest.raises(SystemExit) as exit_info:
        run(
            *predict_args(COLOR_MLP, str(broken), "dragons.csv", "out.csv"),
            "--trainer.logger",
            "false",
        )
    assert exit_info.value.code == 2
    last_line = capfd.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("dragon-lightning: error: dragons.csv: line 2: the model gives no finite probabilities")
    assert files_under(scratch) == before


def test_without_a_logger_no_config_file_is_written_over_the_users(scratch):
    mine = scratch / "config.yaml"
    mine.write_text(Path(COLOR_MLP).read_text())
    before = mine.read_bytes()
    run(
        "fit",
        "--config",
        str(mine),
        "--trainer.logger",
        "false",
        "--trainer.max_epochs",
        "1",
        "--figures.enabled",
        "false",
        "--test_after_fit",
        "false",
    )
    assert mine.read_bytes() == before
    assert not list(scratch.rglob("config.yaml"))[1:], "no other config.yaml either: the run has no folder"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_follow_the_umask(umask, trained, scratch):
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n6,170\n")
    previous = os.umask(umask)
    try:
        run(
            *predict_args(COLOR_MLP, str(trained), "dragons.csv", "out.csv"),
            "--trainer.logger",
            "false",
        )
    finally:
        os.umask(previous)
    assert stat.S_IMODE((scratch / "out.csv").stat().st_mode) == 0o666 & ~umask


# --- The gates: every command's arguments, outputs, checkpoints and tables pass through one of them. ---

COMMANDS = list(REGISTERED)  # a command added to the registry is checked here without a word more


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["an option", "a group option", "a config inside a config"])
def test_every_command_refuses_a_special_file_anywhere_in_its_arguments(command, where, scratch, capfd):
    """The input gate sees every argument before any command parses it, also the paths jsonargparse
    would read as configs (``--data FILE``, a path inside a config)."""
    os.mkfifo(scratch / "pipe")
    if where == "an option":
        args = [command, "--config", COLOR_MLP, "--data.csv_path", "pipe"]
    elif where == "a group option":
        args = [command, "--config", COLOR_MLP, "--trainer", "pipe"]
    else:
        (scratch / "outer.yaml").write_text("data: pipe\n")
        args = [command, "--config", "outer.yaml"]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "pipe: not a regular file")


def test_an_oversized_config_is_refused_before_it_is_read(scratch, capfd):
    big = scratch / "big.yaml"
    with big.open("w") as file:
        file.write("# " + "x" * (8 * 2**20) + "\n")
    expect_one_line_error(
        capfd, scratch, files_under(scratch), ["fit", "--config", "big.yaml"], "big.yaml: ", "more than a config file may hold"
    )


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)
)


@pytest.mark.parametrize("where", ["config file", "inline value", "a search space's choice"])
def test_yaml_aliases_cannot_expand_a_small_input_without_bound(where, scratch):
    """A 700-byte YAML of nested aliases stands for 9**10 values: one line, exit 2, in bounded memory.
    A space's choice is text the space file holds, parsed as YAML only when a trial's settings are
    (jsonargparse's loader is bounded itself, wherever a value comes from)."""
    if where == "config file":
        (scratch / "bomb.yaml").write_text(ALIAS_BOMB)
        args = ["fit", "--config", "bomb.yaml"]
    elif where == "a search space's choice":
        choice = json.dumps("{" + ALIAS_BOMB.replace("\n", ", ") + "}")
        (scratch / "space.yaml").write_text(f"model.init_args.hidden_sizes: {{type: categorical, choices: [[8], {choice}]}}\n")
        args = ["sweep", "--config", COLOR_MLP, "--space", "space.yaml", "--output_dir", "out", "--data.data_dir", "null"]
    else:
        args = ["fit", "--config", COLOR_MLP, "--trainer.plugins", "{" + ALIAS_BOMB.replace("\n", ", ") + "}"]
    result = run_limited(args, cwd=scratch)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "expands to more than 100,000 values through its aliases" in result.stderr


def run_limited(args, cwd: Path, address_space: int = 8 * 2**30, file_size: int | None = None, timeout: float = 120):
    """The CLI in a subprocess under an address-space limit (and optionally a file-size limit, whose
    excess then fails a write as a full disk does)."""
    import resource
    import subprocess
    import sys

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    command = [sys.executable, "-m", "dragon_lightning", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, preexec_fn=limits)


@pytest.mark.parametrize("where", ["command line", "checkpoint"])
def test_impossible_network_shapes_are_refused_before_allocating(where, trained, scratch):
    if where == "command line":
        args = ["fit", "--config", COLOR_MLP, "--model.init_args.hidden_sizes", "[100000, 100000, 100000]"]
    else:
        edited_checkpoint(
            trained, scratch / "huge.ckpt", lambda c: c["hyper_parameters"].__setitem__("hidden_sizes", [100000] * 3)
        )
        args = [
            "test",
            "--config",
            COLOR_MLP,
            "--ckpt_path",
            "huge.ckpt",
            "--model.init_args.hidden_sizes",
            "[100000, 100000, 100000]",
        ]
    before = files_under(scratch)
    result = run_limited(args, cwd=scratch, address_space=4 * 2**30)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--model.init_args.hidden_sizes" in result.stderr and "refused before allocating" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert files_under(scratch) == before


MAXIMAL_MEMBER = {"model": "MLPClassifier", "options": {"num_classes": 3, "hidden_sizes": [4000, 5000]}}
SIZES = {
    "a linear model of 100 million inputs": (lambda: LogisticRegression(num_features=10**8), "num_features"),
    "8,000 classes": (lambda: Perceptron(num_classes=8000), "num_classes"),
    "100,000 hidden layers": (lambda: MLPClassifier(num_classes=3, hidden_sizes=[1] * 100_000), "hidden_sizes"),
    "16 maximal members": (lambda: FoldEnsemble([MAXIMAL_MEMBER] * 16), "members"),
    "a thousand tiny members": (lambda: FoldEnsemble([{"model": "LogisticRegression", "options": {}}] * 1000), "members"),
}


@pytest.mark.parametrize("case", SIZES)
def test_every_size_is_bounded_from_the_hyperparameters_before_anything_is_built(case, monkeypatch):
    from dragon_lightning.models import ensemble

    def no_member(index, spec):
        raise AssertionError("an ensemble built a member before checking the total")

    monkeypatch.setattr(ensemble, "_member", no_member)
    build, argument = SIZES[case]
    with pytest.raises(DragonInputError, match=f"^{argument} "):
        build()
    assert MAXIMAL_MEMBER["options"]["hidden_sizes"][0] * 5001 < MAX_PARAMETERS, "each member alone is within bounds"


def test_a_checkpoint_asking_for_thousands_of_classes_is_refused_by_load_model_and_commands(trained, scratch, capfd):
    def many_classes(checkpoint):
        checkpoint["hyper_parameters"].update(num_classes=8000, class_names=[f"c{i}" for i in range(8000)])

    edited = edited_checkpoint(trained, scratch / "classes.ckpt", many_classes)
    from dragon_lightning import load_model

    with pytest.raises(DragonInputError, match="num_classes"):
        load_model(edited)
    args = ["test", "--config", COLOR_MLP, "--ckpt_path", str(edited)]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "num_classes")


MARKER_MODULE = "import pathlib\npathlib.Path('IMPORTED').touch()\nfrom dragon_lightning.models import MLPClassifier\n"


@pytest.mark.parametrize("command", ["fit", "test", "predict", "export", "compare", "load_model"])
def test_a_checkpoint_never_chooses_the_module_that_is_imported(command, trained, scratch, capfd, monkeypatch):
    """A checkpoint that names ``evil.MLPClassifier`` beside a file ``evil.py`` in the working folder (on
    the import path, as ``python -m`` puts it): refused by the allow-list before anything is imported."""
    monkeypatch.syspath_prepend(str(scratch))
    (scratch / "evil.py").write_text(MARKER_MODULE)
    hostile = edited_checkpoint(
        trained, scratch / "hostile.ckpt", lambda c: c["hyper_parameters"].__setitem__("_class_path", "evil.MLPClassifier")
    )
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n6,170\n")
    if command == "load_model":
        from dragon_lightning import load_model

        with pytest.raises(DragonInputError, match=r"names the class 'evil\.MLPClassifier'"):
            load_model(hostile)
    else:
        args = {
            "export": ["export", "--ckpt_path", "hostile.ckpt", "--output", "m.onnx"],
            "compare": ["compare", "hostile.ckpt"],
        }.get(command, [command, "--config", COLOR_MLP, "--ckpt_path", "hostile.ckpt", "--data.predict_csv", "dragons.csv"])
        line = expect_one_line_error(capfd, scratch, files_under(scratch), args, "names the class 'evil.MLPClassifier'")
        assert line.endswith(
            "which is not one of dragon-lightning's models (Perceptron, LogisticRegression, "
            "MLPClassifier, FoldEnsemble); refused before importing anything"
        )
    assert "evil" not in sys.modules and not (scratch / "IMPORTED").exists(), "the module the checkpoint named was imported"


@pytest.mark.parametrize("draw, option", [({"n_dragons": 10**12}, "--data.n_dragons"), ({"task": "os.system"}, "--data.task")])
def test_a_checkpoints_draw_of_the_data_passes_the_options_types(draw, option, trained, scratch, capfd):
    """``test --ckpt_path`` alone takes the data's draw from the checkpoint, through the options' own
    types: a size no option may ask for is refused before anything is generated."""
    hostile = edited_checkpoint(trained, scratch / "draw.ckpt", lambda c: c["datamodule_hyper_parameters"].update(draw))
    args = ["test", "--ckpt_path", str(hostile)]
    expect_one_line_error(
        capfd, scratch, files_under(scratch), args, f"{hostile}: a setting this version does not accept: {option}"
    )


def test_a_class_path_hidden_in_the_hyperparameters_is_refused(trained, scratch, capfd):
    hostile = edited_checkpoint(
        trained,
        scratch / "hostile.ckpt",
        lambda c: c["hyper_parameters"].__setitem__("optimizer", {"class_path": "evil.Optimizer"}),
    )
    args = ["test", "--config", COLOR_MLP, "--ckpt_path", str(hostile)]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "its hyperparameter optimizer is not a plain value")


# Edits a script makes on purpose, checksum and all: values of the wrong type for the signatures they feed.
MISTYPED = {
    "an activation by number": (
        "hyper_parameters",
        {"activation": 0},
        "its hyperparameter activation: Expected a typing.Literal",
    ),
    "layer sizes as text": ("hyper_parameters", {"hidden_sizes": "abc"}, "its hyperparameter hidden_sizes: Expected a"),
    "a task by number": ("datamodule_hyper_parameters", {"task": 0}, "its data option task: Expected a typing.Literal"),
    "a split as text": ("datamodule_hyper_parameters", {"test_fraction": "half"}, "its data option test_fraction: "),
}


@pytest.mark.parametrize("edit", MISTYPED)
def test_a_checkpoint_edited_to_mistyped_values_is_one_line_wherever_it_is_loaded(edit, trained, scratch):
    """``load_model`` (and so ``export``, ``serve``, ``compare``) checks a checkpoint's values against the
    signatures' types as the command line does; they were a KeyError or TypeError traceback."""
    from dragon_lightning import load_model

    section, values, message = MISTYPED[edit]
    edited = edited_checkpoint(trained, scratch / "edited.ckpt", lambda checkpoint: checkpoint[section].update(values))
    with pytest.raises(DragonInputError) as refusal:
        load_model(edited).test_split()  # the data options are read when the test rows are drawn again
    assert str(refusal.value).startswith(f"{edited}: {message}") and "\n" not in str(refusal.value), str(refusal.value)


ALTERATIONS = {
    "a weight": lambda checkpoint: checkpoint["state_dict"]["net.0.weight"][0, 0].add_(0.5),
    "the feature scaling": lambda checkpoint: checkpoint["state_dict"]["inputs.mean"][1].add_(1.0),
    # What labels the answers: the same weights would name the wrong colors, or compute another function.
    "the class names": lambda checkpoint: checkpoint["hyper_parameters"]["class_names"].reverse(),
    "the activation": lambda checkpoint: checkpoint["hyper_parameters"].update(activation="tanh"),
    "the threshold": lambda checkpoint: checkpoint["hyper_parameters"].update(threshold=0.9),
    "the data's size": lambda checkpoint: checkpoint["datamodule_hyper_parameters"].update(n_dragons=481),
    # The class a checkpoint without LightningCLI's _class_path is built as.
    "the model's class": lambda checkpoint: checkpoint["dragon_lightning"].update(model="LogisticRegression"),
}


@pytest.mark.parametrize("edit", ALTERATIONS)
def test_an_altered_checkpoint_is_refused_by_its_checksum(edit, trained, scratch, capfd):
    def alter(checkpoint):
        ALTERATIONS[edit](checkpoint)

    altered = edited_checkpoint(trained, scratch / "altered.ckpt", alter, checksum=False)
    args = ["test", "--config", COLOR_MLP, "--ckpt_path", str(altered)]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "do not match the checksum written with them")
    from dragon_lightning import load_model

    with pytest.raises(DragonInputError, match="checksum"):
        load_model(altered)
    assert load_model(trained).classes_.tolist() == ["Blue", "Red", "Yellow"]  # the untouched one loads


def test_a_checkpoint_saved_by_a_plain_trainer_carries_the_checksum(tmp_path):
    """The model writes the checksum itself, so a checkpoint of the Python API's plain ``Trainer`` (no
    ``AtomicCheckpointIO``, no ``_class_path``: the model's name decides its class) is checked as the
    CLI's are."""
    import lightning as L

    from dragon_lightning import load_model

    data = DragonDataModule(task="fire", n_dragons=300, seed=0, data_dir=None)
    model = LogisticRegression(num_features=data.num_features, num_classes=data.num_classes, class_names=data.class_names)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=data)
    saved = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(saved)
    assert "_class_path" not in torch.load(saved, weights_only=True)["hyper_parameters"]
    assert load_model(saved).classes_.tolist() == data.class_names
    for name, alter in (
        ("weight", lambda c: c["state_dict"]["linear.weight"][0, 0].add_(0.5)),
        ("class", lambda c: c["dragon_lightning"].update(model="Perceptron")),
    ):
        with pytest.raises(DragonInputError, match="do not match the checksum"):
            load_model(edited_checkpoint(saved, tmp_path / f"altered_{name}.ckpt", alter, checksum=False))


@pytest.mark.parametrize("generation", [key for key in COVERED_BY if key != CHECKSUM_KEY])
def test_a_checkpoint_of_an_earlier_version_is_checked_by_the_checksum_it_holds(generation, trained, scratch):
    from dragon_lightning import load_model

    def earlier(checkpoint):
        entry = checkpoint["dragon_lightning"]
        del entry[CHECKSUM_KEY]
        entry[generation] = state_checksum(checkpoint, generation)

    written_then = edited_checkpoint(trained, scratch / f"{generation}.ckpt", earlier, checksum=False)
    assert load_model(written_then).classes_.tolist() == ["Blue", "Red", "Yellow"]
    altered = edited_checkpoint(written_then, scratch / f"{generation}_altered.ckpt", ALTERATIONS["a weight"], checksum=False)
    with pytest.raises(DragonInputError, match="do not match the checksum"):
        load_model(altered)


# Damage as a disk, a copy cut short or a careless edit leaves it: bytes changed, a tail lost, a run of zeros.
DAMAGE = st.one_of(
    st.tuples(
        st.just("bytes"), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=20)
    ),
    st.tuples(st.just("cut"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("zeros"), st.floats(0, 1, exclude_max=True), st.integers(1, 512)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=DAMAGE)
def test_a_damaged_checkpoint_answers_as_before_or_is_refused_in_one_line(damage, trained, tmp_path):
    """Whatever the damage, ``load_model`` refuses the file in one line or answers exactly as the intact
    checkpoint does: what decides an answer is covered by the checksum, and the rest (a zip header's
    date, the optimizer's state, the epoch) may change without changing one."""
    from dragon_lightning import load_model

    data = bytearray(trained.read_bytes())
    if damage[0] == "bytes":
        for where, value in damage[1]:
            data[int(where * len(data))] = value
    elif damage[0] == "cut":
        data = data[: int(damage[1] * len(data))]
    else:
        start = int(damage[1] * len(data))
        data[start : start + damage[2]] = bytes(len(data[start : start + damage[2]]))
    damaged = tmp_path / f"damaged_{abs(hash(str(damage)))}.ckpt"
    damaged.write_bytes(bytes(data))
    dragons = np.array([[4, 130], [12, 200], [22, 260], [7, 240]], dtype=np.float32)
    try:
        answers = load_model(damaged).predict_proba(dragons)
    except DragonInputError as error:
        assert "\n" not in str(error) and str(error).startswith(f"{damaged}: "), str(error)
        return
    np.testing.assert_array_equal(answers, load_model(trained).predict_proba(dragons))


@pytest.mark.parametrize("where", [CHECKSUM_KEY, "dragon_lightning", "epoch"])
def test_a_byte_damaged_in_a_checkpoints_keys_is_refused_by_the_archives_crc(where, trained, tmp_path):
    """torch reads a checkpoint's zip entries without checking their CRC-32: one byte changed in the
    checksum's key, or in the entry that holds it, made the file one written before checksums, which
    loads unchecked; one in a key nothing checks (the epoch's) loaded as if whole."""
    from dragon_lightning import load_model

    data = bytearray(trained.read_bytes())
    data[data.index(where.encode()) + 1] ^= 1
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(
        DragonInputError, match=rf"^{re.escape(str(damaged))}: damaged: its entry \S+/data.pkl does not match the CRC-32"
    ):
        load_model(damaged)


def test_a_checkpoint_whose_zip_directory_asks_for_a_newer_zip_version_is_refused_in_one_line(trained, tmp_path):
    """Python's zipfile raises NotImplementedError, not BadZipFile, for a version byte it does not know
    (one damaged byte, found by the test above)."""
    from dragon_lightning import load_model

    data = bytearray(trained.read_bytes())
    directory = data.index(b"PK\x01\x02")  # the first central directory entry
    data[directory + 6] = 64  # "version needed to extract": 6.4
    damaged = tmp_path / "newer_zip.ckpt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(DragonInputError, match=rf"^{re.escape(str(damaged))}: not a readable checkpoint \(truncated or corrupt"):
        load_model(damaged)


USER_FILE = b"the user's own file\n"
WRITING_INTO_MINE = [
    "figures.save_dir",
    "checkpoint.dirpath",
    "predictions.output_path",
    "lr_find folder",
    "cv --output_dir",
    "sweep --output_dir",
    "export --output",
    "compare --output",
]
NAMED_FILE_CASES = ("predictions.output_path", "export --output", "compare --output")
"""Where the user names the file itself: it is replaced only when told."""


def writing_into_mine(case: str, trained: Path, scratch: Path) -> tuple[str, list[str]]:
    """A command that writes into the folder ``mine`` in ``scratch`` for ``case``, and a file it writes there."""
    (scratch / "mine").mkdir()
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n6,170\n")
    quick = ["--trainer.max_epochs", "1", "--test_after_fit", "false", "--trainer.default_root_dir", "runs"]
    return {
        "figures.save_dir": ("decision_regions.png", ["fit", "--config", COLOR_MLP, *quick, "--figures.save_dir", "mine"]),
        "checkpoint.dirpath": ("last.ckpt", ["fit", "--config", COLOR_MLP, *quick, "--checkpoint.dirpath", "mine"]),
        "predictions.output_path": ("out.csv", predict_args(COLOR_MLP, str(trained), "dragons.csv", "mine/out.csv")),
        "lr_find folder": (
            "lr_find.png",
            ["lr_find", "--config", COLOR_MLP, "--trainer.logger", "false", "--trainer.default_root_dir", "mine"],
        ),
        "cv --output_dir": ("cv_results.csv", ["cv", "--config", COLOR_MLP, "--folds", "2", "--output_dir", "mine", *quick[:2]]),
        "sweep --output_dir": (
            "trials.csv",
            [
                "sweep",
                "--config",
                COLOR_MLP,
                "--space",
                config("sweeps/color_mlp.yaml"),
                "--n_trials",
                "1",
                "--output_dir",
                "mine",
                *quick[:2],
            ],
        ),
        "export --output": ("model.onnx", ["export", "--ckpt_path", str(trained), "--output", "mine/model.onnx"]),
        "compare --output": ("comparison.png", ["compare", str(trained), "--output", "mine/comparison.png"]),
    }[case]


@pytest.mark.parametrize("case", WRITING_INTO_MINE)
def test_a_users_file_in_an_output_folder_is_never_replaced(case, trained, scratch, capfd):
    name, args = writing_into_mine(case, trained, scratch)
    (scratch / "mine" / name).write_bytes(USER_FILE)
    message = (
        f"mine/{name}: exists; choose another"
        if case in NAMED_FILE_CASES
        else f"mine: already holds {name}, which dragon-lightning did not write"
    )
    expect_one_line_error(capfd, scratch, files_under(scratch), args, message)
    assert (scratch / "mine" / name).read_bytes() == USER_FILE


@pytest.mark.parametrize(
    "manifest, refusal", [("fifo", "not a regular file"), ("larger file", "more than a dragon-lightning manifest")]
)
@pytest.mark.parametrize("case", WRITING_INTO_MINE)
def test_a_manifest_that_is_no_manifest_is_refused_before_any_work_not_read(case, manifest, refusal, trained, scratch, capfd):
    """The list of files dragon-lightning wrote lies in a folder the user named: it is read through the
    input gate, so a FIFO under its name cannot hang a command nor a huge file fill its memory."""
    _, args = writing_into_mine(case, trained, scratch)
    path = scratch / "mine" / MANIFEST
    if manifest == "fifo":
        os.mkfifo(path)
    else:
        path.touch()
        os.truncate(path, inputs.OUTPUT_MANIFEST.max_bytes + 1)  # sparse: nothing is written to disk
    expect_one_line_error(capfd, scratch, files_under(scratch), args, f"mine/{MANIFEST}: ", refusal)


@pytest.mark.filterwarnings("ignore:Checkpoint directory")  # the second run's checkpoints land beside the first's, on purpose
class Killed(BaseException):
    """The process ending at this step (a signal, Ctrl-C): nothing after it runs."""


@pytest.mark.parametrize("earlier_run", [False, True])
def test_a_command_killed_at_any_step_of_writing_can_run_again_in_the_same_folder(earlier_run, tmp_path, monkeypatch):
    """The manifest names a folder or file before it appears, so what a killed command left is its own,
    whether it was writing into an empty folder or replacing what an earlier run wrote."""

    def command(text: str) -> None:  # as cv and sweep write: a run folder, then a results file
        folder = OutputFolder(tmp_path / "out", "--output_dir")
        folder.claim(["run", "results.csv"])
        folder.claim_folder("run")
        folder.write("results.csv", lambda tmp: tmp.write_text(text))

    def start() -> None:
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        if earlier_run:
            command("first")
        done.clear()

    done: list[str] = []
    kill_at: list[int] = []  # the step the process dies at, if any

    def counted(name: str, real):
        def step(*args, **kwargs):
            if kill_at and len(done) == kill_at[0]:
                raise Killed(name)
            real(*args, **kwargs)
            done.append(name)

        return step

    monkeypatch.setattr(os, "replace", counted("rename", os.replace))
    monkeypatch.setattr(Path, "mkdir", counted("mkdir", Path.mkdir))
    start()
    command("second")
    every_step = list(done)
    assert {"mkdir", "rename"} <= set(every_step)
    for step in range(len(every_step)):
        start()
        kill_at[:] = [step]
        with pytest.raises(Killed):
            command("second")
        kill_at.clear()
        command("second")
        assert (tmp_path / "out" / "results.csv").read_text() == "second", f"killed before step {step}, {every_step[step]}"


def test_files_this_project_wrote_are_replaced_on_a_second_run(scratch):
    """The manifest recognises our own output in a folder the user named: the same command twice succeeds."""
    for _ in range(2):
        run(
            "fit",
            "--config",
            COLOR_MLP,
            "--trainer.max_epochs",
            "1",
            "--figures.save_dir",
            "mine",
            "--trainer.logger",
            "false",
            "--data.data_dir",
            "null",
        )
    assert (scratch / "mine" / "decision_regions.png").stat().st_size > 0


@pytest.mark.parametrize("overwrite", ["false", "true"])
def test_export_never_writes_over_the_checkpoint_it_reads(overwrite, trained, scratch, capfd):
    own = scratch / "model.ckpt"
    own.write_bytes(trained.read_bytes())
    args = ["export", "--ckpt_path", str(own), "--output", str(own), "--format", "pt2", "--overwrite", overwrite]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "is the checkpoint being exported")


def test_export_format_and_file_name_must_agree(trained, scratch, capfd):
    args = ["export", "--ckpt_path", str(trained), "--output", "model.onnx", "--format", "pt2"]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "--output model.onnx: a .onnx name for --format pt2")


def test_a_full_disk_leaves_the_previous_last_checkpoint_whole(scratch):
    common = [
        "fit",
        "--config",
        COLOR_MLP,
        "--figures.enabled",
        "false",
        "--test_after_fit",
        "false",
        "--checkpoint.dirpath",
        "ckpts",
        "--trainer.logger",
        "false",
        "--data.data_dir",
        "null",
        "--trainer.enable_progress_bar",
        "false",
    ]
    first = run_in_subprocess(*common, "--trainer.max_epochs", "1", cwd=scratch, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    before = (scratch / "ckpts" / "last.ckpt").read_bytes()
    # The next checkpoint cannot be written whole: the write fails as on a full disk.
    result = run_limited(
        [*common, "--trainer.max_epochs", "3", "--ckpt_path", "ckpts/last.ckpt"], cwd=scratch, file_size=len(before) // 2
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("dragon-lightning: error: ")
    assert "the disk is full" in result.stderr.strip().splitlines()[-1]
    assert (scratch / "ckpts" / "last.ckpt").read_bytes() == before
    assert not [p.name for p in (scratch / "ckpts").iterdir() if p.name.startswith(".") and "tmp" in p.name]


TABLE_KINDS = {
    "text": pd.DataFrame({"numberToes": ["six"], "bodyLength": [170.0]}),
    "Python objects": pd.DataFrame({"numberToes": [object()], "bodyLength": [170.0]}),
    "datetimes": pd.DataFrame({"numberToes": pd.to_datetime(["2020-01-01"]), "bodyLength": [170.0]}),
    "categories": pd.DataFrame({"numberToes": pd.Categorical(["6"]), "bodyLength": [170.0]}),
    "complex numbers": pd.DataFrame({"numberToes": [6 + 1j], "bodyLength": [170.0]}),
    "booleans": pd.DataFrame({"numberToes": [True], "bodyLength": [170.0]}),
    "duplicate columns": pd.DataFrame([[6, 6, 170.0]], columns=["numberToes", "numberToes", "bodyLength"]),
    "infinity": pd.DataFrame({"numberToes": [6.0], "bodyLength": [float("inf")]}),
    "beyond float32": pd.DataFrame({"numberToes": [6.0], "bodyLength": [1e300]}),
}


@pytest.mark.parametrize("kind", TABLE_KINDS)
@pytest.mark.parametrize("method", ["predict_proba", "predict"])
def test_load_model_names_the_column_of_any_input_kind_it_cannot_use(kind, method, trained):
    from dragon_lightning import load_model

    model = load_model(trained)
    with pytest.raises(DragonInputError, match=r"^X: .*(column 'numberToes'|column 'bodyLength')") as error:
        getattr(model, method)(TABLE_KINDS[kind])
    assert "\n" not in str(error.value)
    as_text = pd.DataFrame({"numberToes": ["6", 7], "bodyLength": [170.0, 180]})  # numbers as text are numbers
    as_numbers = pd.DataFrame({"numberToes": [6, 7], "bodyLength": [170.0, 180.0]})
    np.testing.assert_array_equal(np.asarray(getattr(model, method)(as_text)), np.asarray(getattr(model, method)(as_numbers)))


NO_VALIDATION = ["--data.val_fraction", "0", "--checkpoint.monitor", "null"]
MORE_OPTION_CASES = {
    "negative devices": (["--trainer.devices", "-2"], "--trainer: `devices` selected with `CPUAccelerator` should be an int > 0"),
    "a precision plugin that is not installed": (
        ["--trainer.precision", "transformer-engine"],
        "--trainer: Requirement 'transformer_engine",
    ),
    "no time to train": (["--trainer.max_time", "00:00:00:00"], "--trainer.max_time 00:00:00:00: leaves no time to train"),
    "a negative batch limit (Lightning's refusal, its device line held back)": (
        ["--trainer.limit_train_batches", "-1"],
        "--trainer: You have passed invalid value -1",
    ),
    "validation every 0 batches": (
        ["--trainer.val_check_interval", "0"],
        "--trainer.val_check_interval: Not of type PositiveInt: does not conform to restriction v>0 (given 0)",
    ),
    "validation every 1.5 epochs": (
        ["--trainer.val_check_interval", "1.5"],
        "--trainer.val_check_interval: Not of type ShareOfAnEpoch: does not conform to restriction v>0 and v<=1",
    ),
    "a negative minimum of epochs": (
        ["--trainer.min_epochs", "-1"],
        "--trainer.min_epochs: Not of type NonNegativeInt: does not conform to restriction v>=0 (given -1)",
    ),
    "sanity checks below -1": (
        ["--trainer.num_sanity_val_steps", "-2"],
        "--trainer.num_sanity_val_steps: Not of type AtLeastMinusOne: does not conform to restriction v>=-1 (given -2)",
    ),
    "a monitor never logged": (["--checkpoint.monitor", "val/f1"], "--checkpoint.monitor val/f1: the model never logs it"),
    "early stopping on a metric never logged": (
        ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val/f1"],
        "--trainer.callbacks EarlyStopping: monitor val/f1: the model never logs it",
    ),
    "early stopping on validation without validation rows": (
        ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val/loss", *NO_VALIDATION],
        "--trainer.callbacks EarlyStopping: monitor val/loss: --data.val_fraction 0 leaves no validation rows",
    ),
    "a checkpoint setting Lightning refuses when it builds the callback": (
        ["--checkpoint.save_top_k", "-2"],
        "--checkpoint: Invalid value for save_top_k=-2. Must be >= -1",
    ),
    "a callback setting Lightning refuses when it builds the callback": (
        ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val/loss", "--trainer.callbacks.mode", "bad"],
        "--trainer.callbacks EarlyStopping: `mode` can be min, max, got bad",
    ),
    "a file name too long": (["--data.csv_path", "x" * 300 + ".csv"], "file name too long"),
}


@pytest.mark.parametrize("case", MORE_OPTION_CASES)
def test_options_lightning_accepts_but_cannot_honour(case, scratch, capfd):
    options, message = MORE_OPTION_CASES[case]
    expect_one_line_error(capfd, scratch, files_under(scratch), ["fit", "--config", COLOR_MLP, *options], message)


def test_lr_find_refuses_fast_dev_run_in_one_line(scratch, capfd):
    expect_one_line_error(
        capfd,
        scratch,
        files_under(scratch),
        ["lr_find", "--config", COLOR_MLP, "--trainer.fast_dev_run", "true"],
        "lr_find: --trainer.fast_dev_run leaves the finder no steps",
    )


def stopped_while_writing(folder: Path, temporary: str, *args: str) -> None:
    """``dragon-lightning ARGS`` in ``folder``, sent SIGTERM once the temporary file ``temporary`` (a glob)
    appears: it must say it stopped, with status 143."""
    import subprocess
    import time

    command = [sys.executable, "-m", "dragon_lightning", *args]
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(folder.glob(temporary)) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, "the file was written before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == "dragon-lightning: stopped by SIGTERM"


def test_sigterm_during_export_leaves_no_temporary_file(trained, scratch):
    stopped_while_writing(scratch, ".model.onnx.*", "export", "--ckpt_path", str(trained), "--output", "model.onnx")
    assert sorted(path.name for path in scratch.iterdir()) == [], "no temporary or partial file is left"


def test_sigterm_while_fit_writes_its_generated_table_leaves_no_temporary_file(scratch):
    """Before any Trainer runs, SIGTERM raises as well: the table being written is not left behind."""
    stopped_while_writing(scratch, "data/.dragons_*", "fit", "--config", COLOR_MLP, "--data.n_dragons", "1000000")
    assert [path.name for path in (scratch / "data").iterdir()] == [], "no temporary or partial table is left"


def test_a_temporary_file_that_a_killed_writer_left_is_removed_by_the_next_write_a_day_later(scratch):
    """SIGKILL ends a writer before any ``finally``: its hidden temporary file stays beside the target.
    The next write of the same file removes one untouched for a day, never a recent one (a write in
    progress, perhaps another process's) nor a file of another name."""
    from dragon_lightning.gates.outputs import ABANDONED_AFTER, write_atomically

    abandoned, in_progress = scratch / ".dragons.csv.k1ll3d.tmp.csv", scratch / ".dragons.csv.wr1t1n.tmp.csv"
    others = [scratch / ".other.csv.k1ll3d.tmp.csv", scratch / ".dragons.csv.notes"]
    for left in [abandoned, in_progress, *others]:
        left.write_text("half a table")
    day_ago = time.time() - ABANDONED_AFTER - 60
    for left in [abandoned, *others]:
        os.utime(left, (day_ago, day_ago))
    write_atomically(scratch / "dragons.csv", lambda tmp: tmp.write_text("numberToes,bodyLength\n6,170\n"))
    assert sorted(path.name for path in scratch.iterdir()) == sorted(
        ["dragons.csv", in_progress.name, *(left.name for left in others)]
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_ctrl_c_ends_a_command_with_one_line_below_any_progress_bar(trained, scratch, monkeypatch):
    """Ctrl-C outside a Trainer (here while ``export`` writes) is exit status 130 and one line, not a
    traceback; in a terminal it starts below the progress bar a Trainer may have left open."""
    import dragon_lightning.export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dragon_lightning.export, "export_model", interrupted)
    monkeypatch.setattr(sys, "stderr", Terminal())
    with pytest.raises(SystemExit) as stopped:
        run("export", "--ckpt_path", str(trained), "--output", str(scratch / "model.onnx"))
    assert stopped.value.code == 128 + signal.SIGINT
    assert sys.stderr.getvalue() == "\ndragon-lightning: stopped by Ctrl-C\n"


class SignalAtPredictBatch(Callback):
    """SIGTERM to its own process while predicting (at a known batch, so that the test does not race)."""

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_stops_predict_before_it_writes(trained, scratch):
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n" + "7,150\n" * 200)
    args = [
        *predict_args(COLOR_MLP, trained, "dragons.csv", "out.csv"),
        "--trainer.callbacks+=test_hostile_input.SignalAtPredictBatch",
    ]
    stopped = run_in_subprocess(*args, "--trainer.enable_progress_bar", "false", cwd=scratch, timeout=120)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1] == "dragon-lightning: stopped by SIGTERM"
    assert not (scratch / "out.csv").exists()


class SignalAfterTheLastStep(Callback):
    """SIGTERM to its own process in one of a stage's last hooks, after its last step: where Lightning's
    loops no longer look for one (its handler only records it)."""

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def _signal(self, hook: str) -> None:
        if hook == self.hook:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_end(self, trainer, pl_module):
        self._signal("on_train_end")

    def on_test_end(self, trainer, pl_module):
        self._signal("on_test_end")

    def on_predict_epoch_end(self, trainer, pl_module):
        self._signal("on_predict_epoch_end")


@pytest.mark.parametrize(
    "command, hook",
    [("fit", "on_train_end"), ("test", "on_test_end"), ("predict", "on_predict_epoch_end")],
)
def test_a_sigterm_after_a_stages_last_step_still_stops_the_command(command, hook, trained, scratch, capfd):
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n" + "7,150\n" * 20)
    args = {
        "fit": ["fit", "--config", COLOR_MLP, "--trainer.max_epochs", "1", "--figures.enabled", "false", *in_root(scratch)],
        "test": ["test", "--config", COLOR_MLP, "--ckpt_path", str(trained), *in_root(scratch)],
        "predict": predict_args(COLOR_MLP, trained, scratch / "dragons.csv", scratch / "out.csv"),
    }[command]
    with pytest.raises(SystemExit) as stopped:
        run(*args, "--trainer.callbacks+=test_hostile_input.SignalAfterTheLastStep", "--trainer.callbacks.hook", hook)
    assert stopped.value.code == 128 + signal.SIGTERM
    output = capfd.readouterr()
    assert output.err.strip().splitlines()[-1].startswith("dragon-lightning: stopped by SIGTERM")
    assert "testing" not in output.out  # fit does not go on to test
    assert "Received SIGTERM" not in output.err  # Lightning's note of it: the stop line says it
    assert not (scratch / "out.csv").exists()  # predict writes nothing


def test_export_of_a_checkpoint_with_zero_scaling_says_so(trained, scratch, capfd):
    flat = edited_checkpoint(trained, scratch / "flat.ckpt", lambda c: c["state_dict"]["inputs.std"].__setitem__(0, 0.0))
    args = ["export", "--ckpt_path", str(flat), "--output", "model.onnx"]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "its feature scaling has a standard deviation of 0")


def test_a_checkpoint_of_the_earlier_layout_loads_and_predicts_as_before(trained, scratch):
    """Before the standardization moved into the model, checkpoints kept its statistics beside the weights
    (Lightning's data module entry): the gate moves them into the model's input layer."""

    def earlier_layout(checkpoint):
        inputs = {name: checkpoint["state_dict"].pop(f"inputs.{name}") for name in ("mean", "std", "low", "high")}
        checkpoint["DragonDataModule"] = dict(
            task="color",
            feature_mean=inputs["mean"],
            feature_std=inputs["std"],
            feature_min=inputs["low"],
            feature_max=inputs["high"],
        )

    old = edited_checkpoint(trained, scratch / "old.ckpt", earlier_layout)
    assert "inputs.mean" not in torch.load(old, weights_only=True)["state_dict"]
    from dragon_lightning import load_model

    rows = np.array([[6.0, 170.0], [14.0, 120.0], [3.0, 260.0]], dtype=np.float32)
    np.testing.assert_array_equal(load_model(old).probabilities(rows), load_model(trained).probabilities(rows))
    tested = run(
        "test", "--config", COLOR_MLP, "--ckpt_path", str(old), "--trainer.logger", "false", "--figures.enabled", "false"
    )
    again = run(
        "test", "--config", COLOR_MLP, "--ckpt_path", str(trained), "--trainer.logger", "false", "--figures.enabled", "false"
    )
    assert float(tested.trainer.callback_metrics["test/acc"]) == float(again.trainer.callback_metrics["test/acc"])


def test_an_error_reported_in_one_line_keeps_its_first_line_or_names_its_class():
    assert first_line(ValueError("\n  bad value\nsecond line")) == "bad value"
    assert first_line(KeyError()) == "KeyError"
    assert os_reason(PermissionError(13, "Permission denied")) == "permission denied"
    assert os_reason(OSError("no strerror\nmore")) == "no strerror"


@pytest.mark.parametrize("command", ["predict", "lr_find", "cv", "sweep"])
def test_commands_that_run_in_one_process_refuse_several_before_any_work(command, trained, scratch, capfd):
    """Under ddp each process would run the whole command (two cv folders); under ddp_spawn its
    results would stay in the spawned processes."""
    dragons = scratch / "dragons.csv"
    dragons.write_text("numberToes,bodyLength\n6,170\n")
    own = {
        "predict": predict_args(COLOR_MLP, trained, dragons, scratch / "out.csv")[1:],
        "lr_find": ["--config", COLOR_MLP],
        "cv": ["--config", COLOR_MLP, "--folds", "2"],
        "sweep": ["--config", COLOR_MLP, "--space", config("sweeps/color_mlp.yaml")],
    }[command]
    several = ["--trainer.devices", "2", "--trainer.strategy", "ddp_spawn", "--trainer.accelerator", "cpu"]
    args = [command, *own, *several]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "runs each Trainer in one process; drop --trainer.devices")


@pytest.mark.parametrize("method", ["predict_proba", "predict", "decision_function"])
def test_load_model_pushes_any_number_of_rows_through_the_network_in_bounded_chunks(method, trained):
    from dragon_lightning import load_model
    from dragon_lightning.answering import CHUNK_ROWS

    model = load_model(trained)
    rows = 2 * CHUNK_ROWS + 5
    generator = np.random.default_rng(0)
    table = pd.DataFrame({"numberToes": generator.integers(2, 30, rows), "bodyLength": generator.uniform(80, 290, rows)})
    seen: list[int] = []
    model.module.logits.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    answers = getattr(model, method)(table)
    assert len(answers) == rows and max(seen) <= CHUNK_ROWS and sum(seen) == rows
    picked = [0, CHUNK_ROWS, rows - 1]  # the first row of each chunk and the last row
    alone = [np.asarray(getattr(model, method)(table.iloc[[i]]))[0] for i in picked]
    together = [np.asarray(answers)[i] for i in picked]
    if method == "predict":
        assert together == alone
    else:
        np.testing.assert_allclose(np.array(together, dtype=float), np.array(alone, dtype=float), atol=1e-6)


@pytest.mark.parametrize("writer", ["write_atomically", "an output folder"])
def test_a_file_that_appears_while_ours_is_written_is_kept(writer, tmp_path):
    """The check that nothing stands under the name comes before the writing; the final step itself
    must refuse to replace what appeared in between (a rename would)."""
    from dragon_lightning.gates.outputs import write_atomically, write_output_file

    target = tmp_path / "predictions.csv"

    def write_while_the_user_saves(tmp: Path) -> None:
        tmp.write_text("ours\n")
        target.write_bytes(USER_FILE)

    with pytest.raises(DragonInputError, match="a file appeared under this name while it was written"):
        if writer == "write_atomically":
            write_atomically(target, write_while_the_user_saves, overwrite=False)
        else:
            write_output_file(target, write_while_the_user_saves, option="--predictions.output_path")
    assert target.read_bytes() == USER_FILE
    assert [p.name for p in tmp_path.iterdir() if p.name != MANIFEST] == ["predictions.csv"], "no temporary file left"


URL_AND_NAME_CASES = {
    "a config as a file:// URL to a FIFO": (
        ["fit", "--config", "file://{scratch}/fifo.yaml"],
        "a URL; dragon-lightning reads and writes local paths only",
    ),
    "a config under an unknown scheme": (["fit", "--config", "x://y.yaml"], "--config x://y.yaml: a URL"),
    "a checkpoint folder as a file:// URL": (
        ["fit", "--config", COLOR_MLP, "--checkpoint.dirpath", "file://{scratch}/elsewhere"],
        "--checkpoint.dirpath file://",
    ),
    "a CSV as a URL": (
        ["predict", "--config", COLOR_MLP, "--data.predict_csv", "file:///etc/hostname"],
        "--data.predict_csv file:///etc/hostname: a URL",
    ),
    "a FIFO whose name has a line break": (
        ["fit", "--config", "{scratch}/new\nline.yaml"],
        "new\\nline.yaml: not a regular file",
    ),
    "a config nested 3,000 deep": (["fit", "--config", "{scratch}/deep.yaml"], "nests lists or mappings too deep to read"),
}


@pytest.mark.parametrize("case", URL_AND_NAME_CASES)
def test_urls_odd_names_and_deep_nesting_are_one_line(case, scratch, capfd):
    os.mkfifo(scratch / "fifo.yaml")
    os.mkfifo(scratch / "new\nline.yaml")
    (scratch / "deep.yaml").write_text("trainer: " + "[" * 3000 + "]" * 3000 + "\n")
    args, message = URL_AND_NAME_CASES[case]
    expect_one_line_error(capfd, scratch, files_under(scratch), [arg.format(scratch=scratch) for arg in args], message)
    assert not (scratch / "elsewhere").exists()


def test_a_manifest_nested_too_deep_records_nothing(tmp_path):
    (tmp_path / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    assert OutputFolder(tmp_path)._manifest() == {}


def test_the_same_content_written_meanwhile_by_another_process_is_accepted(tmp_path):
    """Two processes writing the same generated table at once (nodes on a shared disk): the second
    finds the first's file, the same bytes, and changes nothing."""
    from dragon_lightning.gates.outputs import write_atomically

    target = tmp_path / "dragons.csv"

    def write_as_the_other_process_does(tmp: Path) -> None:
        tmp.write_text("same\n")
        target.write_text("same\n")

    assert write_atomically(target, write_as_the_other_process_does, overwrite=False) is False
    assert target.read_text() == "same\n" and [p.name for p in tmp_path.iterdir()] == ["dragons.csv"]
