"""Running the real CLI in-process, as a user would from a shell, inside a scratch folder."""

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from dragon_lightning.commands import cli_main

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def config(name: str) -> str:
    return str(ROOT / "configs" / name)


def run(*args: str):
    return cli_main([*args, *QUIET] if args[0] in ("fit", "validate", "test", "predict") else list(args))


def short_fit(config_name: str, epochs: int, *options: str):
    """``fit`` of one of the project's configs for ``epochs`` epochs, with ``options`` on top."""
    return run("fit", "--config", config(config_name), "--trainer.max_epochs", str(epochs), *options)


def in_root(root: Path) -> list[str]:
    """Options that keep a command's run folders under ``root`` and its generated table in ``root/data``."""
    return ["--trainer.default_root_dir", str(root), "--data.data_dir", str(root / "data")]


def predict_args(config_path, checkpoint, dragons, output) -> list[str]:
    """``predict`` of the CSV ``dragons`` with ``checkpoint`` under ``config_path``, into ``output``."""
    return ["predict", "--config", str(config_path), "--ckpt_path", str(checkpoint), "--data.predict_csv", str(dragons),
            "--predictions.output_path", str(output)]  # fmt: skip


def _in_subprocess(args: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of ``python -m dragon_lightning ARGS``, able to import the tests' callbacks."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return [sys.executable, "-m", "dragon_lightning", *args], environment


def run_in_subprocess(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """``python -m dragon_lightning ARGS`` in a process of its own, to its end."""
    command, environment = _in_subprocess(args)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def start_in_subprocess(*args: str, cwd: Path) -> subprocess.Popen:
    """``python -m dragon_lightning ARGS`` started in a process of its own, its output discarded."""
    command, environment = _in_subprocess(args)
    return subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def last_checkpoint(cli) -> Path:
    """The run's ``last.ckpt``. Not ``checkpoint_callback.last_model_path``: testing the best checkpoint
    after ``fit`` restores the callback's state as it was when that checkpoint was written, and if it
    was the run's first save, ``last_model_path`` goes back to empty."""
    return Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"


def last_weights(cli) -> dict[str, torch.Tensor]:
    return torch.load(last_checkpoint(cli), weights_only=True)["state_dict"]


def expect_one_line_error(capfd, folder: Path, before: dict, args: list[str], *messages: str) -> str:
    """Run the CLI on bad input: exit status 2, one line naming the problem, no file under ``folder``
    created or changed. Returns the line."""
    with pytest.raises(SystemExit) as exit_info:
        run(*args)
    assert exit_info.value.code == 2
    captured = capfd.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("dragon-lightning: error: ")
    for message in messages:
        assert message in lines[0]
    assert files_under(folder) == before, "bad input must not create or change files"
    return lines[0]


class Finished(NamedTuple):
    """What a ``fit`` ended with: the weights of its ``last.ckpt``, its best checkpoint's (none when
    nothing is monitored), its test accuracy."""

    last_weights: dict[str, torch.Tensor]
    best_checkpoint: dict
    test_accuracy: float


def finished(cli) -> Finished:
    best_path = cli.trainer.checkpoint_callback.best_model_path
    best = torch.load(best_path, weights_only=True) if best_path else {}
    return Finished(last_weights(cli), best, float(cli.trainer.callback_metrics["test/acc"]))


def assert_resumes_to(uninterrupted: Finished, root: Path, *options: str) -> None:
    """``fit OPTIONS --ckpt_path last`` under ``root`` ends bit for bit as ``uninterrupted`` did."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = finished(run("fit", *options, "--ckpt_path", "last", *in_root(root)))
    # The stopped run's checkpoints are carried over: Lightning's warning that they are not would mislead.
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    for ended, expected in (
        (resumed.last_weights, uninterrupted.last_weights),
        (resumed.best_checkpoint.get("state_dict", {}), uninterrupted.best_checkpoint.get("state_dict", {})),
    ):
        assert expected.keys() == ended.keys()
        assert all(torch.equal(expected[name], ended[name]) for name in expected)
    assert resumed.test_accuracy == uninterrupted.test_accuracy
