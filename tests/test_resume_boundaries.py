"""A run stopped at an epoch's boundary resumes to exactly the weights and test accuracy of a run never
stopped: SIGINT, SIGTERM or SIGKILL just after the epoch's ``last.ckpt``, during validation, and just
after validation, for the MLP (with step saves, dropout and input noise) and for the online perceptron."""

import itertools
import os
import signal

import pytest
import torch
from clihelpers import assert_resumes_to, config, finished, in_root, run, start_in_subprocess
from lightning.pytorch.callbacks import Callback

MODELS = {
    # Dropout and input noise draw from PyTorch's random state, which the resumed run must take up again.
    "mlp": [
        *["--config", config("color_mlp.yaml"), "--trainer.max_epochs", "3", "--checkpoint.every_n_train_steps", "5"],
        *["--model.init_args.dropout", "0.2", "--model.init_args.input_noise", "0.1"],
    ],
    "online perceptron": [
        "--config",
        config("tutorial/color_perceptron.yaml"),
        "--trainer.max_epochs",
        "4",
        "--trainer.check_val_every_n_epoch",
        "1",
    ],
}
QUIET = ["--figures.enabled", "false", "--trainer.enable_progress_bar", "false"]
POINTS = ("after the epoch's last.ckpt", "during validation", "after validation")


class SignalAtBoundary(Callback):
    """Sends ``signum`` to its own process at ``point`` of epoch ``epoch`` (not in the sanity check).

    "after validation" is the epoch end before its ``last.ckpt``: this callback's ``on_train_epoch_end``
    runs after validation and its ranked checkpoint, and before the callbacks that write ``last.ckpt``.
    """

    def __init__(self, signum: int, point: str, epoch: int = 1):
        self.signum, self.point, self.epoch = signum, point, epoch

    def _send_at(self, trainer, point: str) -> None:
        if point == self.point and trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            os.kill(os.getpid(), self.signum)

    def on_train_epoch_start(self, trainer, pl_module):
        self._send_at(trainer, "after the epoch's last.ckpt")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self._send_at(trainer, "during validation")

    def on_train_epoch_end(self, trainer, pl_module):
        self._send_at(trainer, "after validation")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return {
        model: finished(run("fit", *options, *QUIET, *in_root(tmp_path_factory.mktemp("whole"))))
        for model, options in MODELS.items()
    }


def signal_options(signum: int, point: str) -> list[str]:
    return [
        "--trainer.callbacks+=test_resume_boundaries.SignalAtBoundary",
        "--trainer.callbacks.init_args.signum",
        str(int(signum)),
        "--trainer.callbacks.init_args.point",
        point,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_run_stopped_at_an_epoch_boundary_resumes_exactly(signum, model, point, uninterrupted, tmp_path):
    ctrl_c = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as stopped:
        run("fit", *MODELS[model], *QUIET, *signal_options(signum, point), *in_root(tmp_path))
    assert stopped.value.code == 128 + signum
    # Lightning ignores a second Ctrl-C while it shuts down, then restores the handler: in a notebook the next
    # cell still stops on one.
    assert signal.getsignal(signal.SIGINT) is ctrl_c
    assert_resumes_to(uninterrupted[model], tmp_path, *MODELS[model], *QUIET)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A run SIGKILLed at each point for each model, the processes started together (most of their time
    is Python's start-up), each in a folder of its own."""
    started = {}
    for model, point in itertools.product(MODELS, POINTS):
        root = tmp_path_factory.mktemp("killed")
        args = ["fit", *MODELS[model], *QUIET, *signal_options(signal.SIGKILL, point), *in_root(root)]
        started[model, point] = root, start_in_subprocess(*args, cwd=root)
    yield {case: (root, process.wait(timeout=300)) for case, (root, process) in started.items()}


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("model", MODELS)
def test_a_run_killed_at_an_epoch_boundary_resumes_exactly(model, point, uninterrupted, killed):
    root, returncode = killed[model, point]
    assert returncode == -signal.SIGKILL
    last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] <= 1, "stopped in the middle of the run"
    assert_resumes_to(uninterrupted[model], root, *MODELS[model], *QUIET)


def test_the_random_state_a_checkpoint_holds_is_taken_up_and_an_edited_one_is_ignored(tmp_path):
    from dragon_lightning.checkpoints.callback import RANDOM_STATE, ResumableCheckpoint

    callback = ResumableCheckpoint(dirpath=tmp_path)
    torch.manual_seed(3)
    saved = callback.state_dict()
    expected = torch.rand(4)
    torch.manual_seed(4)
    callback.load_state_dict(saved)
    assert torch.equal(torch.rand(4), expected), "the draws go on where the checkpoint left them"
    before = torch.get_rng_state()
    for edited in (torch.zeros(7, dtype=torch.uint8), torch.zeros_like(before, dtype=torch.float32), "not a tensor"):
        callback.load_state_dict({**saved, RANDOM_STATE: edited})
        assert torch.equal(torch.get_rng_state(), before), edited
