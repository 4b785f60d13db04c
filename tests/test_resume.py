"""Interrupted runs continue where they stopped and end exactly where an uninterrupted run ends."""

import signal
import subprocess
import sys
import time

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from clihelpers import config, run

COMMON = [
    "--config", config("color_mlp.yaml"), "--trainer.max_epochs", "12", "--checkpoint.every_n_train_steps", "5",
    "--figures.enabled", "false", "--trainer.enable_progress_bar", "false", "--data.minibatches_per_step", "1",
]


def final_weights(cli) -> dict[str, torch.Tensor]:
    return torch.load(cli.trainer.checkpoint_callback.last_model_path, weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    cli = run("fit", *COMMON, "--trainer.default_root_dir", str(root), "--data.data_dir", str(root / "data"))
    return final_weights(cli), float(cli.trainer.callback_metrics["test/acc"])


def assert_resumes_to(uninterrupted, root, *options: str) -> None:
    weights, accuracy = uninterrupted
    resumed = run(
        "fit", *COMMON, *options, "--ckpt_path", "last",
        "--trainer.default_root_dir", str(root), "--data.data_dir", str(root / "data"),
    )
    resumed_weights = final_weights(resumed)
    assert all(torch.equal(weights[name], resumed_weights[name]) for name in weights)
    assert float(resumed.trainer.callback_metrics["test/acc"]) == accuracy


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_killed_fit_resumes_to_the_same_weights(signum, uninterrupted, tmp_path):
    command = [sys.executable, "-m", "dragon_lightning", "fit", *COMMON, "--trainer.max_epochs", "400"]
    command += ["--trainer.default_root_dir", str(tmp_path), "--data.data_dir", str(tmp_path / "data")]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not (last.exists() and torch.load(last, weights_only=False)["global_step"] >= 30):  # written atomically
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    interrupted_at = torch.load(last, weights_only=False)["global_step"]
    assert 30 <= interrupted_at < 12 * 15, "stopped part-way through the 12 epochs"
    assert_resumes_to(uninterrupted, tmp_path)


class FailAtStep(Callback):
    """A bug in the middle of an epoch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= 37:
            raise RuntimeError("simulated failure inside a step")


@pytest.mark.parametrize(
    ("minibatches_per_step", "every_n_train_steps", "last_saved_step"),
    [(1, 5, 35), (4, 1, 38)],  # 15 minibatches per epoch: groups end at steps 30, 34, 38, 42, 45
)
def test_an_exception_inside_a_step_leaves_a_checkpoint_to_resume_from(
    minibatches_per_step, every_n_train_steps, last_saved_step, uninterrupted, tmp_path
):
    options = ["--data.minibatches_per_step", str(minibatches_per_step)]
    options += ["--checkpoint.every_n_train_steps", str(every_n_train_steps)]
    with pytest.raises(RuntimeError, match="simulated failure"):
        run(
            "fit", *COMMON, *options, "--trainer.callbacks+=test_resume.FailAtStep",
            "--trainer.default_root_dir", str(tmp_path), "--data.data_dir", str(tmp_path / "data"),
        )
    last = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)
    assert last["global_step"] == last_saved_step, "saved in the middle of an epoch"
    assert_resumes_to(uninterrupted, tmp_path, *options)


def test_a_diverging_run_stops_with_a_clear_message_and_no_nan_checkpoint(tmp_path, capfd):
    messages = []
    for minibatches_per_step in (1, 4):
        root = tmp_path / str(minibatches_per_step)
        with pytest.raises(SystemExit) as exit_info:
            run(
                "fit", "--config", config("color_mlp.yaml"), "--data.standardize", "false",
                "--model.init_args.optimizer", "torch.optim.SGD", "--model.init_args.optimizer.init_args.lr", "1e10",
                "--data.minibatches_per_step", str(minibatches_per_step),
                "--trainer.default_root_dir", str(root), "--data.data_dir", str(tmp_path / "data"),
            )
        assert exit_info.value.code == 2
        messages.append(capfd.readouterr().err.strip().splitlines()[-1])
        for checkpoint in root.rglob("*.ckpt"):
            state = torch.load(checkpoint, weights_only=False)["state_dict"]
            assert all(torch.isfinite(tensor).all() for tensor in state.values()), checkpoint
    assert messages[0].startswith("dragon-lightning: error: training diverged: the loss became NaN or infinite at epoch 0, batch")
    assert messages[1] == messages[0], "a group names the same first bad minibatch"


def test_an_interrupted_checkpoint_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    import lightning.fabric.plugins.io.torch_io as torch_io

    from dragon_lightning.checkpoints import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def write_half_then_interrupt(checkpoint, target):
        open(target, "wb").write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch_io, "_atomic_save", write_half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert torch.equal(torch.load(path, weights_only=False)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
