"""Interrupted runs continue where they stopped and end exactly where an uninterrupted run ends."""

import os
import signal
from pathlib import Path

import pytest
import torch
from clihelpers import Finished, assert_resumes_to, config, finished, in_root, run, run_in_subprocess
from lightning.pytorch.callbacks import Callback

COMMON = [
    "--config",
    config("color_mlp.yaml"),
    "--trainer.max_epochs",
    "12",
    "--checkpoint.every_n_train_steps",
    "5",
    "--figures.enabled",
    "false",
    "--trainer.enable_progress_bar",
    "false",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Finished:
    root = tmp_path_factory.mktemp("uninterrupted")
    return finished(run("fit", *COMMON, *in_root(root)))


class SignalAtStep(Callback):
    """Ctrl-C, or a scheduler's SIGTERM, arriving in the middle of an epoch (at a known step, so that
    the test does not race a fast machine)."""

    def __init__(self, signum: int, step: int = 42):
        self.signum, self.step = signum, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_killed_fit_resumes_to_the_same_weights(signum, uninterrupted, tmp_path):
    finished_process = run_in_subprocess(
        "fit",
        *COMMON,
        "--trainer.callbacks+=test_resume.SignalAtStep",
        "--trainer.callbacks.init_args.signum",
        str(int(signum)),
        *in_root(tmp_path),
        cwd=tmp_path,
        timeout=120,
    )
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert finished_process.returncode == 128 + signum
    stopped_by = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    assert finished_process.stderr.strip().splitlines()[-1] == (
        f"dragon-lightning: stopped by {stopped_by}; continue with the same command and --ckpt_path {last}"
    )
    assert torch.load(last, weights_only=True)["global_step"] == 40, "the save before the signal"
    assert_resumes_to(uninterrupted, tmp_path, *COMMON)


def test_a_run_stopped_before_its_first_last_ckpt_names_no_checkpoint_to_continue_from(tmp_path, capsys):
    """``--ckpt_path last`` would take an earlier run's ``last.ckpt``: a run stopped before writing its own
    says only that it stopped."""
    options = ["--config", config("color_mlp.yaml"), "--trainer.max_epochs", "1", "--figures.enabled", "false"]
    run("fit", *options, *in_root(tmp_path))  # an earlier run, with its last.ckpt
    with pytest.raises(SystemExit) as stopped:
        run("fit", *options, "--trainer.callbacks+=test_resume.SignalAtStep", "--trainer.callbacks.signum", "15",
            "--trainer.callbacks.step", "2", *in_root(tmp_path))  # fmt: skip
    assert stopped.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip().splitlines()[-1] == "dragon-lightning: stopped by SIGTERM"


class FailAtStep(Callback):
    """A bug in the middle of an epoch."""

    def __init__(self, step: int = 37):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated failure inside a step")


def fail_at(step: int, root, *options: str) -> int:
    """Run ``fit`` until a failure at optimizer step ``step``; the step of the ``last.ckpt`` it left."""
    with pytest.raises(RuntimeError, match="simulated failure"):
        run(
            "fit",
            *COMMON,
            *options,
            "--trainer.callbacks+=test_resume.FailAtStep",
            "--trainer.callbacks.init_args.step",
            str(step),
            *in_root(root),
        )
    return torch.load(root / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)["global_step"]


@pytest.mark.parametrize(
    ("options", "last_saved_step"),
    [
        ([], 35),
        (["--checkpoint.every_n_train_steps", "1"], 37),
        (["--checkpoint.every_n_train_steps", "0", "--checkpoint.train_time_interval", "0:00:00"], 37),
    ],
    ids=["every 5 steps", "every step", "on a timer"],
)
def test_an_exception_inside_a_step_leaves_a_checkpoint_to_resume_from(options, last_saved_step, uninterrupted, tmp_path):
    assert fail_at(37, tmp_path, *options) == last_saved_step, "saved in the middle of an epoch"
    assert_resumes_to(uninterrupted, tmp_path, *COMMON, *options)


def test_a_run_resumed_after_its_best_epoch_tests_that_best_checkpoint(tmp_path):
    """The resumed run gets a new folder; the best checkpoint of the stopped run must still compete."""
    by_accuracy = ["--checkpoint.monitor", "val/acc", "--checkpoint.mode", "max"]
    root = tmp_path / "uninterrupted"
    uninterrupted = finished(run("fit", *COMMON, *by_accuracy, *in_root(root)))
    best_step = uninterrupted.best_checkpoint["global_step"]
    assert best_step < 12 * 15, "the best epoch must not be the last for this to test anything"
    assert fail_at(best_step + 7, tmp_path, *by_accuracy) > best_step
    assert_resumes_to(uninterrupted, tmp_path, *COMMON, *by_accuracy)


@pytest.mark.parametrize(
    "options", [[], ["--trainer.check_val_every_n_epoch", "2"]], ids=["validating every epoch", "every second"]
)
def test_every_epoch_end_leaves_a_resume_point_and_only_validated_weights_are_ranked(options, tmp_path):
    """Lightning writes last.ckpt at an epoch end only when the monitored metric improves, and with
    every_n_train_steps ranks weights by the previous validation's score."""
    trainer = run(
        "fit",
        *COMMON,
        *options,
        "--trainer.callbacks+=test_resume.CheckLastAtEachEpoch",
        "--test_after_fit",
        "false",
        *in_root(tmp_path),
    ).trainer
    checker = next(c for c in trainer.callbacks if isinstance(c, CheckLastAtEachEpoch))
    assert checker.epochs_checked == 11
    assert checker.epochs_without_improvement > 0, "some epoch must not improve for this to test anything"
    best = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert best["global_step"] % 15 == 0, "the best checkpoint holds weights from an epoch end, as validated"


@pytest.mark.parametrize("every_n_epochs", [0, 3])
def test_best_checkpoints_are_ranked_every_n_epochs_beside_step_saves(every_n_epochs, tmp_path):
    run(
        "fit",
        *COMMON,
        "--trainer.max_epochs",
        "6",
        "--checkpoint.every_n_epochs",
        str(every_n_epochs),
        "--checkpoint.save_top_k",
        "-1",
        "--test_after_fit",
        "false",
        *in_root(tmp_path),
    )
    saved = sorted(path.name for path in (tmp_path / "lightning_logs/version_0/checkpoints").glob("*.ckpt"))
    ranked = [f"epoch{epoch:03d}" for epoch in range(6) if every_n_epochs and (epoch + 1) % every_n_epochs == 0]
    assert [name[: len("epoch000")] for name in saved if name != "last.ckpt"] == ranked
    assert "last.ckpt" in saved


class CheckLastAtEachEpoch(Callback):
    """At each epoch start, last.ckpt holds the weights the previous epoch ended with."""

    epochs_checked = epochs_without_improvement = 0
    best_model_path = ""

    def on_train_epoch_start(self, trainer, pl_module):
        checkpoint = trainer.checkpoint_callback
        if trainer.current_epoch > 0:
            saved = torch.load(Path(checkpoint.dirpath) / "last.ckpt", weights_only=True)
            assert saved["global_step"] == trainer.global_step
            self.epochs_checked += 1
            self.epochs_without_improvement += checkpoint.best_model_path == self.best_model_path
        self.best_model_path = checkpoint.best_model_path


def test_a_diverging_run_stops_with_a_clear_message_and_no_nan_checkpoint(tmp_path, capfd):
    with pytest.raises(SystemExit) as exit_info:
        run(
            "fit",
            "--config",
            config("color_mlp.yaml"),
            "--data.standardize",
            "false",
            "--model.init_args.optimizer",
            "torch.optim.SGD",
            "--model.init_args.optimizer.init_args.lr",
            "1e10",
            "--checkpoint.every_n_train_steps",
            "1",
            *in_root(tmp_path),
        )
    assert exit_info.value.code == 2
    message = capfd.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("dragon-lightning: error: training diverged: the loss became NaN or infinite at epoch 0, batch")
    checkpoints = list(tmp_path.rglob("*.ckpt"))
    assert checkpoints, "step saves ran before the loss went bad"
    for checkpoint in checkpoints:
        state = torch.load(checkpoint, weights_only=True)["state_dict"]
        assert all(torch.isfinite(tensor).all() for tensor in state.values()), checkpoint


def test_an_interrupted_checkpoint_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    import lightning.fabric.plugins.io.torch_io as torch_io

    from dragon_lightning.checkpoints import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def write_half_then_interrupt(checkpoint, target):
        Path(target).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch_io, "_atomic_save", write_half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".dragon-lightning")] == ["last.ckpt"]
