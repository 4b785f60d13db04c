"""Two CPU processes under Lightning DDP train, test, and count every test row exactly once."""

import subprocess
import sys

import pytest

from clihelpers import config, run
from test_cli import read_events


@pytest.mark.slow
def test_ddp_test_accuracy_equals_single_process_on_the_same_checkpoint(tmp_path):
    # 53 test dragons per color: an odd test set, which a padding sampler would have to pad.
    data = ["--data.test_fraction", "0.33", "--data.data_dir", str(tmp_path / "data")]
    command = [sys.executable, "-m", "dragon_lightning", "fit", "--config", config("color_mlp.yaml"), *data]
    command += ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    command += ["--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false"]
    command += ["--trainer.default_root_dir", str(tmp_path)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "lightning_logs" / "version_0"
    ddp_accuracy = read_events(run_dir)["scalars"]["test/acc"][-1]

    best = next(p for p in (run_dir / "checkpoints").iterdir() if p.name != "last.ckpt")
    single = run(
        "test", "--config", config("color_mlp.yaml"), "--ckpt_path", str(best), *data,
        "--trainer.default_root_dir", str(tmp_path / "single"),
    )
    test_rows = len(single.datamodule.splits["test"][1])
    assert test_rows % 2 == 1, "an odd test set: padding would count a row twice"
    assert ddp_accuracy == pytest.approx(float(single.trainer.callback_metrics["test/acc"]), abs=1e-7)
