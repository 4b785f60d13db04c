"""The checksum a model writes into each of its checkpoints, however the checkpoint is saved (the CLI, a
plain ``Trainer``, ``ModelCheckpoint``): SHA-256 over everything that decides its answers, so that a
damaged or altered file is refused when it is loaded rather than answering differently.

Each generation of the checksum has its own key and covers what it names; a checkpoint is checked
against the newest key it holds, so checkpoints of earlier versions keep loading.
"""

from __future__ import annotations

import hashlib
import json

import torch

CHECKPOINT_KEY = "dragon_lightning"
"""Checkpoint entry naming the model class, so a checkpoint from a plain ``Trainer`` can be loaded too;
it holds the checksum."""
DATA_STATE_KEY = "DragonDataModule"
"""Where Lightning keeps the data module's state: the SHA-256 of the rows it was trained on, and in
checkpoints of earlier versions the feature statistics (before they moved into the model)."""
SECTIONS = ("state_dict", DATA_STATE_KEY, "hyper_parameters", "datamodule_hyper_parameters")
COVERED_BY = {
    "checksum": (*SECTIONS, f"{CHECKPOINT_KEY}/model"),
    "sha256": SECTIONS,
    "state_sha256": ("state_dict", DATA_STATE_KEY),
}
"""What each generation's checksum covers, newest first: whole sections, or one entry of a section
(``section/name``). The newest adds the model's class name, which decides the class a checkpoint
without LightningCLI's ``_class_path`` is loaded as; the oldest covers the weights and fitted features."""
CHECKSUM_KEY = next(iter(COVERED_BY))


def state_checksum(checkpoint: dict, key: str = CHECKSUM_KEY) -> str:
    """SHA-256 over what ``key``'s generation covers, in key order: any change to a tensor's values,
    shape or type, to a hyperparameter or to the model's name changes it."""
    digest = hashlib.sha256()
    for covered in COVERED_BY[key]:
        section, _, only = covered.partition("/")
        for name, value in sorted((checkpoint.get(section) or {}).items()):
            if only and name != only:
                continue
            digest.update(f"{section}/{name}".encode())
            if isinstance(value, torch.Tensor):
                tensor = value.detach().cpu().contiguous()
                digest.update(f"{tensor.dtype}{list(tensor.shape)}".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                digest.update(json.dumps(value, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def stamp_checksum(checkpoint: dict) -> None:
    """Record the newest checksum in a checkpoint about to be written (its other sections complete)."""
    entry = checkpoint.setdefault(CHECKPOINT_KEY, {})
    if isinstance(entry, dict):
        entry[CHECKSUM_KEY] = state_checksum(checkpoint)


def recorded_checksum(checkpoint: dict) -> tuple[str, str] | None:
    """The newest checksum a checkpoint holds, with its key; ``None`` for one written before checksums."""
    entry = checkpoint.get(CHECKPOINT_KEY) or {}
    return next(((key, entry[key]) for key in COVERED_BY if entry.get(key) is not None), None)
