"""Two CPU processes under Lightning DDP train, test, and count every test row exactly once."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clihelpers import config, run, run_in_subprocess
from lightning.pytorch.callbacks import Callback
from test_cli import read_events


class SaveRankWeights(Callback):
    """Each process writes the weights it ended with."""

    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.state_dict(), Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.pt")


def ddp_fit(root: Path, *options: str) -> subprocess.CompletedProcess:
    result = run_in_subprocess(
        "fit",
        "--config",
        config("color_mlp.yaml"),
        *options,
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_epochs",
        "3",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(root),
        cwd=root,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "terminate called" not in result.stderr, "a rank aborted while the process group was torn down at exit"
    return result


@pytest.mark.slow
def test_ddp_ranks_agree_and_test_accuracy_equals_single_process_on_the_same_checkpoint(tmp_path):
    # 53 test dragons per color: an odd test set, which a padding sampler would have to pad.
    data = ["--data.test_fraction", "0.33", "--data.data_dir", str(tmp_path / "data")]
    ddp_fit(tmp_path, *data, "--trainer.callbacks+=test_ddp.SaveRankWeights")
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert all(torch.equal(ranks[0][name], ranks[1][name]) for name in ranks[0]), "gradients are synced every step"
    run_dir = tmp_path / "lightning_logs" / "version_0"
    ddp_accuracy = read_events(run_dir)["scalars"]["test/acc"][-1]
    pictures = {"truth_vs_predictions.png", "decision_regions.png", "confusion_matrix.png", "learning_curves.png"}
    assert {p.name for p in (run_dir / "figures").iterdir() if not p.name.startswith(".")} == pictures | {
        "boundary_over_training.gif"
    }

    best = next(p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
    single = run(
        "test",
        "--config",
        config("color_mlp.yaml"),
        "--ckpt_path",
        str(best),
        *data,
        "--trainer.default_root_dir",
        str(tmp_path / "single"),
    )
    test_rows = len(single.datamodule.splits["test"][1])
    assert test_rows % 2 == 1, "an odd test set: padding would count a row twice"
    assert ddp_accuracy == pytest.approx(float(single.trainer.callback_metrics["test/acc"]), abs=1e-7)


SPAWNED_FIT = """
import sys
from pathlib import Path

import torch
from dragon_lightning.cli import build_cli

if __name__ == "__main__":
    cli = build_cli(sys.argv[1:])
    last = torch.load(next(Path.cwd().rglob("last.ckpt")), weights_only=True)["state_dict"]  # rank 0's, at the end
    print("weights handed back:", all(torch.equal(last[name], value.cpu()) for name, value in cli.model.state_dict().items()))
"""


@pytest.mark.slow
def test_ddp_spawn_hands_the_trained_weights_back_to_the_process_that_started_it(tmp_path):
    """Lightning passes the spawned processes' weights back through the checkpoint plugin as a bare
    mapping of tensors: the checkpoint gate takes it from there (and only from there), as data."""
    script = tmp_path / "spawned_fit.py"
    script.write_text(SPAWNED_FIT)
    options = ["--trainer.strategy", "ddp_spawn", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    options += ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false", "--test_after_fit", "false"]
    options += ["--trainer.default_root_dir", str(tmp_path), "--data.data_dir", str(tmp_path / "data")]
    command = [sys.executable, str(script), "fit", "--config", config("color_mlp.yaml"), *options]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "weights handed back: True" in result.stdout


@pytest.mark.slow
def test_an_error_in_a_spawned_process_is_the_same_one_line(tmp_path):
    diverging = ["--data.standardize", "false", "--model.init_args.optimizer", "torch.optim.SGD"]
    diverging += ["--model.init_args.optimizer.init_args.lr", "1e10", "--trainer.enable_progress_bar", "false"]
    spawned = ["--trainer.strategy", "ddp_spawn", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    result = run_in_subprocess("fit", "--config", config("color_mlp.yaml"), *diverging, *spawned, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("dragon-lightning: error: training diverged: the loss became NaN")
    assert "Traceback" not in result.stderr
