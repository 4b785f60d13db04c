"""``AtomicCheckpointIO``: Lightning's checkpoint plugin for every run, so that each save goes through the
output gate and each load (Lightning's restore included) through :mod:`.files`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins import TorchCheckpointIO

from dragon_lightning.checkpoints.files import load_checkpoint
from dragon_lightning.gates.outputs import OutputFolder

TUNER_CHECKPOINTS = (".lr_find_", ".scale_batch_size_")
"""Lightning's tuner saves the model under these names in the working folder before it tries learning
rates or batch sizes, and restores and deletes it right after."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint (the model has stamped its checksum) through the output gate (a temporary
    file beside it, then renamed: Ctrl-C or a full disk in the middle of a save leaves the previous
    ``last.ckpt`` whole; a file of the user's with the same name is never replaced). Load through the
    checkpoint gate, whatever the caller asks for."""

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        checkpoint = load_checkpoint(path, option=None, weights_alone=True)
        assert checkpoint is not None
        return checkpoint

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if "state_dict" not in checkpoint:  # Lightning handing weights between its processes, in its own temporary folder
            return super().save_checkpoint(checkpoint, path, storage_options)
        for section in ("hyper_parameters", "datamodule_hyper_parameters"):
            if section in checkpoint:
                checkpoint[section] = plain_values(checkpoint[section])
        if "://" in str(path):  # remote storage: no local rename
            return super().save_checkpoint(checkpoint, path, storage_options)
        if Path(path).name.startswith(TUNER_CHECKPOINTS):  # restored and deleted at once: no record in the user's folder
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        OutputFolder(path.parent).write(
            path.name, lambda tmp: super(AtomicCheckpointIO, self).save_checkpoint(checkpoint, tmp, storage_options)
        )


def plain_values(value: Any) -> Any:
    """jsonargparse's restricted numbers (``PositiveInt``...) as the ``int`` or ``float`` they are, in
    lists and mappings too: the weights-only loader accepts nothing else."""
    if isinstance(value, dict):
        return {key: plain_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_values(item) for item in value] if isinstance(value, list) else tuple(map(plain_values, value))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return int(value) if isinstance(value, int) else float(value)
