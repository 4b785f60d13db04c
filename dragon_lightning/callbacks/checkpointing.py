"""Checkpoints a stopped run can continue from, ranked only by metrics of the weights they hold."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from dragon_lightning.errors import InvalidArgument


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` with three changes for runs that get interrupted and resumed.

    - ``last.ckpt`` is written at every epoch end, not only when the monitored metric improves, so a
      resumed run loses at most one epoch (or ``every_n_train_steps`` steps).
    - ``every_n_train_steps`` and ``train_time_interval`` add resume points: they write ``last.ckpt``
      only, while the best checkpoints are ranked right after validation (``every_n_epochs``); the
      three go together.
      Between validations the monitored metric belongs to older weights; Lightning would rank the
      step's weights by it, and would stop ranking at epoch ends. The step count is checked as a
      threshold crossed, so it also fires when ``accumulate_grad_batches`` makes several batches one
      optimizer step.
    - A run resumed from another run folder keeps ranking against that run's best checkpoints (while
      their files exist), so ``fit`` tests the same best checkpoint as a run that was never stopped.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        every_n_train_steps: Optional[int] = None,
        train_time_interval: Optional[timedelta] = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            every_n_epochs: epochs between rankings of the best checkpoints (0: none).
            every_n_train_steps: optimizer steps between resume points, which write ``last.ckpt``
                only (unset or 0: none; ``last.ckpt`` is written at every epoch end anyway).
            train_time_interval: time between resume points, e.g. ``0:30:00`` (unset: none).
        """
        if every_n_epochs < 0:
            raise InvalidArgument(self, "every_n_epochs", f"must be 0 or more, got {every_n_epochs}")
        if every_n_train_steps is not None and every_n_train_steps < 0:
            raise InvalidArgument(self, "every_n_train_steps", f"must be 0 or more, got {every_n_train_steps}")
        super().__init__(**kwargs)  # Lightning would refuse these three together
        self._every_n_epochs = every_n_epochs
        self._every_n_train_steps = every_n_train_steps or 0
        self._train_time_interval = train_time_interval

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._step_at_last_check = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        steps_due = self._steps_crossed(trainer)
        time_due = self._time_elapsed(trainer)
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch-end save follows, after validation
        if steps_due or time_due:
            self._save_resume_point(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_resume_point(trainer)  # after this epoch's validation, if it had one

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):  # also validates inside epochs
            self._save_resume_point(trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        moved = state_dict.get("dirpath", self.dirpath) != self.dirpath
        if moved and all(Path(path).is_file() for path in state_dict.get("best_k_models", {})):
            # Lightning would keep only best_model_path; the ranking goes on with the old files, which it
            # never deletes, as they lie outside this run's folder. This run's last.ckpt starts afresh.
            state_dict = {**state_dict, "dirpath": self.dirpath, "last_model_path": self.last_model_path}
        super().load_state_dict(state_dict)

    def _save_resume_point(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` (with ``save_last``) unless this step was saved already."""
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _steps_crossed(self, trainer: L.Trainer) -> bool:
        """Whether a multiple of ``every_n_train_steps`` was reached since the previous batch."""
        previous, self._step_at_last_check = self._step_at_last_check, trainer.global_step
        every = self._every_n_train_steps
        return every >= 1 and trainer.global_step // every > previous // every

    def _time_elapsed(self, trainer: L.Trainer) -> bool:
        """Whether ``train_time_interval`` has passed since the previous time-triggered save (rank 0's
        clock decides, so that all ranks save together)."""
        if self._train_time_interval is None:
            return False
        now = time.monotonic()
        due = trainer.strategy.broadcast(now - self._last_time_checked >= self._train_time_interval.total_seconds())
        if due:
            self._last_time_checked = now
        return due
