"""A fold ensemble as a checkpoint: the members read through the checkpoint gate, their weights and
options written as one Lightning checkpoint of :class:`~dragon_lightning.models.FoldEnsemble` (with
its checksum, atomically), which every command then loads as it loads one model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L

from dragon_lightning.checkpoints import AtomicCheckpointIO
from dragon_lightning.checkpoints.files import class_path
from dragon_lightning.errors import DragonInputError
from dragon_lightning.inference import load_model
from dragon_lightning.models import FoldEnsemble
from dragon_lightning.models.checksum import CHECKPOINT_KEY, stamp_checksum

ENSEMBLE_CHECKPOINT = "ensemble.ckpt"
FOLD_OPTIONS = ("n_folds", "fold")
"""Data options of a member's fold, not of the ensemble (tested on the split without folds)."""


def write_ensemble(member_paths: Sequence[str | Path], path: Path, threshold: float = 0.5) -> Path:
    """Write the ensemble of the checkpoints at ``member_paths`` to ``path``; members of different tasks
    are refused, naming the first that differs."""
    if len(member_paths) < 2:
        raise DragonInputError(f"an ensemble needs at least two members, got {len(member_paths)}")
    members = [load_model(member) for member in member_paths]
    for member in members[1:]:
        if list(member.classes_) != list(members[0].classes_):
            raise DragonInputError(
                f"{member.path}: predicts {list(member.classes_)}, but {members[0].path} predicts {list(members[0].classes_)}; "
                "an ensemble needs members of one task"
            )
    ensemble = FoldEnsemble.of([member.classifier for member in members], threshold)
    data_options = {name: value for name, value in members[0].data_options.items() if name not in FOLD_OPTIONS}
    checkpoint = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": L.__version__,
        "state_dict": ensemble.state_dict(),
        "hyper_parameters": {"_class_path": class_path(FoldEnsemble), **ensemble.hparams},
        "datamodule_hyper_parameters": data_options,
        CHECKPOINT_KEY: {"model": FoldEnsemble.__name__, "history": [], "members": [str(p) for p in member_paths]},
    }
    stamp_checksum(checkpoint)  # written by hand, not by Lightning: no model hook stamps it
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    return path
