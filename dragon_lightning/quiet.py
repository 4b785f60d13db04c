"""What dragon-lightning keeps out of a user's terminal: warnings and log lines with nothing to act on."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

NOT_OURS = ("💡 Tip:", "TPU available:", "HPU available:", "Received SIGTERM")
"""Lightning's start-up lines about other products and hardware this project does not use (the GPU line
stays), and its note of a SIGTERM (``[rank: 0] Received SIGTERM: 15``), which the line a stopped
command ends with says, with how to go on."""


class LeaveOut(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).split("] ", 1)[-1].startswith(NOT_OURS)  # after a "[rank: N] " prefix


def quiet_warnings(command: str | None = None) -> None:
    """Leave out log lines and warnings that say nothing a user can act on (in ``command``)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.signal_connector"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, LeaveOut) for f in logger.filters):
            logger.addFilter(LeaveOut())
    # The seed is recorded in the run's config.yaml; its log line would stand before any error message.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    # Lightning's own use of a PyTorch API that newer PyTorch deprecates.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    # The online perceptron applies its rule itself (manual optimization): it has no optimizer to return.
    warnings.filterwarnings("ignore", message=r"`LightningModule.configure_optimizers` returned `None`")
    # The prediction writer needs no batch indices: rows come back in the order of the CSV.
    warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
    # A run resumed into a new run folder: ResumableCheckpoint carries the stopped run's ranking of best
    # checkpoints over (while their files exist), and the callbacks that write last.ckpt have none to carry.
    warnings.filterwarnings("ignore", message="The dirpath has changed from")
    if command in ("validate", "test", "predict", "lr_find"):
        # An evaluation restores no training state: the callbacks a checkpoint was trained with add nothing
        # (nor to the learning-rate finder's own restore of the weights it started from).
        warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
    # Every model logs once an epoch; log_every_n_steps sets how often per-step values are written.
    warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than the logging interval")
    # --data.val_fraction 0 has no validation rows by choice: its empty validation list is the intention.
    warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")


def quiet_lightning() -> None:
    """Commands that run Trainers for their own ends (a search's many runs, the learning-rate finder):
    keep Lightning's start-up lines (accelerator, TPU, model summary) out of their output."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Hold(logging.Filter):
    """Keeps a handler's records back, for :func:`held_back_logs`."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


@contextlib.contextmanager
def held_back_logs() -> Iterator[None]:
    """Hold Lightning's log lines (the accelerator in use...) while the Trainer is built: shown once it
    exists, dropped when it refuses an option, so that its refusal is the one line a user sees."""
    holds: dict[logging.Handler, Hold] = {}
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in logger.handlers if not logger.propagate else logging.getLogger().handlers:
            holds.setdefault(handler, Hold())
    for handler, hold in holds.items():
        handler.addFilter(hold)
    built = False
    try:
        yield
        built = True
    finally:
        for handler, hold in holds.items():
            handler.removeFilter(hold)
            for record in hold.records if built else ():
                handler.handle(record)
