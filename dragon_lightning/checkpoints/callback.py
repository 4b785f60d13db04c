"""Checkpoints a stopped run can continue from, ranked only by metrics of the weights they hold.

Built from Lightning's own ``ModelCheckpoint`` callbacks, several at once: one ranks the best
checkpoints right after validation, and with ``save_last`` one more per trigger writes ``last.ckpt``
(every epoch end, every N optimizer steps, every so often). One ``ModelCheckpoint`` may not combine
those triggers, and Lightning 2.6 writes ``last.ckpt`` at an epoch end only when the ranking saved.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from jsonargparse.typing import NonNegativeInt
from lightning.pytorch.callbacks import ModelCheckpoint

LAST = "last"
RANDOM_STATE = "torch_random_state"
CUDA_RANDOM_STATE = "cuda_random_states"


class ResumableCheckpoint(ModelCheckpoint):
    """The best checkpoints by the monitored metric (Lightning's ``ModelCheckpoint``), and with
    ``save_last`` the :attr:`resume_points` that write ``last.ckpt``:

    - at every epoch end (after that epoch's validation, if it has one), whether or not the metric
      improved, so a resumed run loses at most one epoch;
    - every ``every_n_train_steps`` optimizer steps and every ``train_time_interval``, if set. These
      write ``last.ckpt`` only: between validations the monitored metric belongs to older weights.

    A run resumed from another run folder keeps ranking against that run's best checkpoints (while
    their files exist), so ``fit`` tests the same best checkpoint as a run that was never stopped.

    Every checkpoint also holds PyTorch's random state as it was when it was written, which a resumed
    run takes up again: dropout and input noise then draw what the run that was never stopped drew.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        every_n_epochs: NonNegativeInt = 1,
        every_n_train_steps: NonNegativeInt | None = None,
        train_time_interval: timedelta | None = None,
        save_last: bool = True,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            dirpath: folder of the checkpoints. Unset: ``checkpoints/`` in the run's log folder.
            every_n_epochs: epochs between rankings of the best checkpoints (0: none).
            every_n_train_steps: optimizer steps between resume points, which write ``last.ckpt``
                only (unset or 0: none; ``last.ckpt`` is written at every epoch end anyway).
            train_time_interval: time between resume points, e.g. ``0:30:00`` (unset: none).
            save_last: write ``last.ckpt`` at the resume points (off: only the ranked checkpoints).
        """
        if kwargs.get("monitor") is None and kwargs.get("save_on_train_epoch_end") is None:
            # Nothing to rank by: the checkpoint kept is the latest epoch end's, the final weights, even
            # when validation runs every few epochs and the run stops between two.
            kwargs["save_on_train_epoch_end"] = True
        super().__init__(dirpath=dirpath, every_n_epochs=every_n_epochs, save_last=False, **kwargs)
        triggers: list[dict[str, Any]] = [{"every_n_epochs": 1, "save_on_train_epoch_end": True}]
        if every_n_train_steps:
            triggers.append({"every_n_train_steps": every_n_train_steps, "every_n_epochs": 0})
        if train_time_interval is not None:
            triggers.append({"train_time_interval": train_time_interval, "every_n_epochs": 0})
        self.resume_points = [
            ModelCheckpoint(dirpath=dirpath, filename=LAST, save_top_k=1, enable_version_counter=False, **trigger)
            for trigger in (triggers if save_last else [])
        ]
        """Callbacks that write ``last.ckpt``; the CLI adds them to the Trainer beside this one."""

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), RANDOM_STATE: torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state[CUDA_RANDOM_STATE] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        current = torch.get_rng_state()
        random_state = state_dict.pop(RANDOM_STATE, None)
        if isinstance(random_state, torch.Tensor) and (random_state.dtype, random_state.shape) == (current.dtype, current.shape):
            torch.set_rng_state(random_state)  # (a state of another shape, from an edited file: the weights still resume)
        cuda_states = state_dict.pop(CUDA_RANDOM_STATE, None)
        if (
            isinstance(cuda_states, list)
            and torch.cuda.is_available()
            and len(cuda_states) == torch.cuda.device_count()
            and all(isinstance(state, torch.Tensor) and state.dtype == torch.uint8 for state in cuda_states)
        ):
            torch.cuda.set_rng_state_all(cuda_states)
        moved = state_dict.get("dirpath", self.dirpath) != self.dirpath
        if moved and all(Path(path).is_file() for path in state_dict.get("best_k_models", {})):
            # Lightning would keep only best_model_path; the ranking goes on with the old files, which it
            # never deletes, as they lie outside this run's folder.
            state_dict = {**state_dict, "dirpath": self.dirpath, "last_model_path": self.last_model_path}
        super().load_state_dict(state_dict)


def recorded_best(checkpoint: dict) -> str | None:
    """The path of the best checkpoint a :class:`ResumableCheckpoint` had ranked when ``checkpoint`` was
    written (what ``fit`` then tests), as Lightning recorded it; ``None`` where it ranked none."""
    prefix = f"{ResumableCheckpoint.__qualname__}{{"  # Lightning's key: the class name, then its settings
    states = [state for key, state in (checkpoint.get("callbacks") or {}).items() if str(key).startswith(prefix)]
    path = states[0].get("best_model_path") if len(states) == 1 and isinstance(states[0], dict) else None
    return path if isinstance(path, str) and path else None
