"""The one way to load a checkpoint: data only, class paths from an allow-list, bounded, checksummed,
read once.

A checkpoint is a pickle inside a zip file, and unpickling can run code. Here it is:

- read once through the input gate (a regular file within :data:`~dragon_lightning.gates.inputs.CHECKPOINT`'s
  bound), its zip entries summed before anything is inflated and each checked against its CRC-32;
- unpickled with ``weights_only=True``: tensors and plain values only;
- refused unless every class it names is one of dragon-lightning's own models, by exact class path,
  before anything is imported (LightningCLI would otherwise import the module a checkpoint names);
- refused when what decides its answers (weights, fitted features, the model's class and the model's
  and the data's hyperparameters: class names, threshold, activation, sizes) no longer matches the
  SHA-256 checksum the model wrote with them (:mod:`dragon_lightning.models.checksum`);
- brought to this version's layout (the feature statistics that earlier versions kept beside the
  weights become the model's ``inputs`` layer).

Lightning's own restore of the same file (``--ckpt_path``) goes through :func:`load_checkpoint` too
(``AtomicCheckpointIO``) and gets the copy already read and checked.
"""

from __future__ import annotations

import io
import os
import pickle
import stat
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch.serialization import get_unsafe_globals_in_checkpoint

from dragon_lightning.checkpoints.callback import recorded_best
from dragon_lightning.errors import DragonInputError, named
from dragon_lightning.gates.inputs import CHECKPOINT, read_bytes, stat_path
from dragon_lightning.models import MODELS
from dragon_lightning.models.base import INJECTED
from dragon_lightning.models.checksum import CHECKPOINT_KEY, DATA_STATE_KEY, recorded_checksum, state_checksum
from dragon_lightning.models.inputs import migrate_legacy_statistics


def class_path(model: type) -> str:
    """A model's class path as configs and checkpoints name it (``dragon_lightning.models.MLPClassifier``)."""
    return f"dragon_lightning.models.{model.__name__}"


ALLOWED_CLASS_PATHS = {
    path: model for model in MODELS for path in (class_path(model), f"{model.__module__}.{model.__qualname__}")
}
"""The exact class paths a checkpoint may name: dragon-lightning's models, as the package exports them
and where they are defined."""
MODEL_NAMES = {model.__name__: model for model in MODELS}

# ckpt_path values that Lightning resolves itself rather than reading a file ("registry" also as a prefix).
LIGHTNING_CHECKPOINT_ALIASES = ("hpc", "registry")


_verified: dict[tuple, dict] = {}
"""The last checkpoint read and checked, by file identity, for Lightning's restore of the same file."""


def _identity(path: Path) -> tuple | None:
    status = stat_path(path)
    return None if status is None else (os.path.realpath(path), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


SHORTCUTS = ("last", "best")


RUNS = Path("lightning_logs")
"""Where Lightning's loggers put a run's folder (``version_N``) unless they are given another ``name``."""


def resolve_shortcut(
    path: str,
    runs: str | os.PathLike = RUNS,
    option: str | None = "--ckpt_path",
    version: str | None = None,
    dirpath: str | None = None,
) -> str:
    """``path`` as given, or for ``last`` the ``last.ckpt`` of the newest run (highest ``version_N``) under
    ``runs``, or of the run folder ``version`` there where the logger names its own, or in ``dirpath``
    where the run's checkpoints have a folder of their own (``--checkpoint.dirpath``); for ``best`` the
    checkpoint that run's ``fit`` kept as its best and tested: what every command that takes
    ``--ckpt_path`` accepts, and ``load_model``."""
    if path not in SHORTCUTS:
        return path
    if dirpath is not None:
        last = Path(dirpath) / "last.ckpt"
        if not last.is_file():
            raise DragonInputError(f"{named(path, option)}: --checkpoint.dirpath {dirpath} holds no last.ckpt")
        return str(last) if path == "last" else str(tested_checkpoint(last, same_folder=True))
    if version is None:
        numbered = {
            int(run.name.removeprefix("version_")): run
            for run in Path(runs).glob("version_*")
            if run.name.removeprefix("version_").isdigit() and (run / "checkpoints" / "last.ckpt").is_file()
        }
        if not numbered:
            raise DragonInputError(f"{named(path, option)}: no run under {runs} has checkpoints/last.ckpt")
        run = numbered[max(numbered)]
    else:
        run = Path(runs) / version
        if not (run / "checkpoints" / "last.ckpt").is_file():
            raise DragonInputError(f"{named(path, option)}: the run {run} has no checkpoints/last.ckpt")
    last = run / "checkpoints" / "last.ckpt"
    return str(last) if path == "last" else str(tested_checkpoint(last))


def tested_checkpoint(last: Path, same_folder: bool = False) -> Path:
    """The checkpoint a run's ``fit`` kept as its best and tested, as the run's ``last.ckpt`` records it,
    found by file name beside ``last`` (``same_folder``: a ``--checkpoint.dirpath``), else by run folder
    and file name beside the run (a resumed run's best may lie in the folder of the run it resumed): the
    path written in the file is never opened as written."""
    recorded = recorded_best(checkpoint_from_bytes(read_checkpoint(last, option=None), last, option=None))
    kept = None if recorded is None else Path(recorded)
    if same_folder:
        runs = last.parent
        found = None if kept is None else runs / kept.name
    else:
        runs = last.parent.parent.parent
        beside = kept is not None and kept.parent.name == "checkpoints" and kept.parent.parent.name not in ("", ".", "..")
        found = runs / kept.parent.parent.name / "checkpoints" / kept.name if kept is not None and beside else None
    if found is not None and (status := stat_path(found, strict=False)) is not None and stat.S_ISREG(status.st_mode):
        return found
    raise DragonInputError(
        f"{last}: records no best checkpoint under {runs}"
        + (f" ({named(recorded[:80], None)} is not there)" if recorded else "")
        + "; give the checkpoint file"
    )


def load_checkpoint(
    path: str | os.PathLike | None, option: str | None = "--ckpt_path", weights_alone: bool = False
) -> dict | None:
    """The checkpoint at ``path`` as checked data (``None`` for no path); ``option`` is where the path
    came from, for messages. Every problem is one :class:`DragonInputError` line naming the file.
    ``weights_alone`` also accepts a bare mapping of named tensors: how Lightning hands a model's weights
    from the processes it spawned to the one that started them."""
    if path is None:
        return None
    identity = _identity(Path(path))
    if identity is not None and identity in _verified:
        return _verified.pop(identity)
    checkpoint = checkpoint_from_bytes(read_checkpoint(path, option), path, option, weights_alone)
    _verified.clear()
    if identity is not None:
        _verified[identity] = checkpoint
    return checkpoint


def read_checkpoint(path: str | os.PathLike, option: str | None = "--ckpt_path") -> bytes:
    """A checkpoint file's bytes, through the input gate: a name of Lightning's or a run's folder is
    refused saying what to give instead."""
    if str(path) in LIGHTNING_CHECKPOINT_ALIASES or str(path).startswith("registry"):
        raise DragonInputError(
            f"--ckpt_path {path}: Lightning's name for a checkpoint of a cluster's saved state or a model "
            "registry, which this command has none of; give a checkpoint file, last or best"
        )
    path = Path(path)
    for kept in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):  # a run's folder, or its checkpoints/
        if (status := stat_path(kept, option, strict=False)) is not None and stat.S_ISREG(status.st_mode):
            raise DragonInputError(f"{named(path, option)}: is a folder; give a checkpoint file, such as {kept}")
    return read_bytes(path, CHECKPOINT, option)


def checkpoint_from_bytes(
    data: bytes, path: str | os.PathLike, option: str | None = "--ckpt_path", weights_alone: bool = False
) -> dict:
    """A checkpoint file's bytes (:func:`read_checkpoint`) as checked data (see :func:`load_checkpoint`;
    ``path`` names them in messages)."""
    path = Path(path)
    _check_archive(data, path, option)
    checkpoint = _unpickle(data, path, weights_alone)
    check_class_paths(checkpoint, path)
    check_checksum(checkpoint, path)
    migrate_legacy_statistics(checkpoint, "inputs")
    return checkpoint


def _check_archive(data: bytes, path: Path, option: str | None) -> None:
    """A zip checkpoint (torch's format) may not inflate beyond the bound, summed from its directory
    before anything is inflated, and each entry must match the CRC-32 the archive recorded for it, which
    torch's reader never checks: a byte damaged anywhere in the pickle or the tensors is refused, the
    checksum's own entry included (a damaged key would make the file one written before checksums)."""
    if not data.startswith(b"PK"):
        return  # the legacy format: plain pickle, already bounded by the file size
    corrupt = f"{named(path, option)}: not a readable checkpoint (truncated or corrupt zip archive)"
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        inflated = sum(entry.file_size for entry in archive.infolist())
    except Exception:  # a damaged directory raises BadZipFile, NotImplementedError (a version byte), ValueError...
        raise DragonInputError(corrupt) from None
    if inflated > CHECKPOINT.max_bytes:
        raise DragonInputError(
            f"{named(path, option)}: would inflate to {inflated / 2**20:,.0f} MiB, more than a checkpoint may hold "
            f"({CHECKPOINT.max_bytes / 2**20:,.0f} MiB)"
        )
    try:
        damaged = archive.testzip()  # reads each entry up to its recorded size: bounded by the sum above
    except Exception:
        raise DragonInputError(corrupt) from None
    if damaged is not None:
        raise DragonInputError(
            f"{named(path, option)}: damaged: its entry {damaged} does not match the CRC-32 the archive recorded"
        )


def _named_tensors(mapping: dict) -> bool:
    return all(isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in mapping.items())


def _unsafe_objects(data: bytes) -> list[str]:
    """The objects beyond tensors and plain values that a checkpoint's pickle would build, found by
    PyTorch's static scan without running anything (a file in the format before PyTorch 1.6, which the
    scan does not read, gives none)."""
    try:
        return get_unsafe_globals_in_checkpoint(io.BytesIO(data))
    except Exception:  # not torch's zip format, or too damaged to scan: only the refusal itself is known
        return []


def _unpickle(data: bytes, path: Path, weights_alone: bool = False) -> dict:
    try:
        with warnings.catch_warnings():  # e.g. about the pickle protocol of a file that is then refused
            warnings.simplefilter("ignore")
            checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not (unsafe := _unsafe_objects(data)):
            raise DragonInputError(f"{path}: not a readable checkpoint (truncated or corrupt: UnpicklingError)") from None
        raise DragonInputError(
            f"{path}: refused: it would build the Python object {unsafe[0]}, and loading it could run code; "
            "dragon-lightning checkpoints hold only tensors and plain values"
        ) from None
    except Exception as error:  # any other failure means the file is not a usable checkpoint
        raise DragonInputError(f"{path}: not a readable checkpoint (truncated or corrupt: {type(error).__name__})") from None
    if weights_alone and isinstance(checkpoint, dict) and "state_dict" not in checkpoint and _named_tensors(checkpoint):
        return checkpoint
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise DragonInputError(f"{path}: not a Lightning checkpoint (it has no state_dict)")
    sections = ("state_dict", "hyper_parameters", "datamodule_hyper_parameters", CHECKPOINT_KEY, DATA_STATE_KEY)
    if not all(isinstance(checkpoint.get(key, {}), dict) for key in sections):
        raise DragonInputError(f"{path}: not a Lightning checkpoint (its state_dict or hyperparameters are not mappings)")
    if not _named_tensors(checkpoint["state_dict"]):
        raise DragonInputError(f"{path}: not a Lightning checkpoint (its state_dict holds more than named tensors)")
    return checkpoint


def check_class_paths(checkpoint: dict, path: str | os.PathLike) -> None:
    """The model class the checkpoint names must be one of :data:`ALLOWED_CLASS_PATHS`, exactly, and its
    hyperparameters plain values (no class paths, no optimizer or scheduler): nothing a file says may
    choose a module to import."""
    class_path = checkpoint.get("hyper_parameters", {}).get("_class_path")
    name = checkpoint.get(CHECKPOINT_KEY, {}).get("model")
    for where, value, allowed in (("_class_path", class_path, ALLOWED_CLASS_PATHS), ("model", name, MODEL_NAMES)):
        if value is not None and (not isinstance(value, str) or value not in allowed):
            raise DragonInputError(
                f"{path}: names the class {value!r} ({where}), which is not one of dragon-lightning's models "
                f"({', '.join(MODEL_NAMES)}); refused before importing anything"
            )
    for key, value in checkpoint.get("hyper_parameters", {}).items():
        if key in ("_class_path", "_instantiator"):
            continue
        if key in INJECTED or not _plain(value):
            raise DragonInputError(
                f"{path}: its hyperparameter {key} is not a plain value (numbers, text, lists of them); "
                "dragon-lightning checkpoints name no classes in their hyperparameters; refused"
            )


def _plain(value: Any) -> bool:
    """Numbers, text, and lists or mappings of them; a mapping naming a ``class_path`` is not plain."""
    if isinstance(value, (list, tuple)):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return "class_path" not in value and all(isinstance(key, str) and _plain(item) for key, item in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def model_class(checkpoint: dict, path: str | os.PathLike) -> type:
    """The model class an allow-listed checkpoint holds (by its class path, or by our own entry)."""
    class_path = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if class_path is not None:
        return ALLOWED_CLASS_PATHS[class_path]
    name = checkpoint.get(CHECKPOINT_KEY, {}).get("model")
    if name in MODEL_NAMES:
        return MODEL_NAMES[name]
    raise DragonInputError(f"{path}: holds no dragon-lightning model; not a dragon-lightning checkpoint")


def check_checksum(checkpoint: dict, path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose weights, fitted features, hyperparameters or model name changed after
    they were written, by the newest checksum it holds (an earlier version's covers less; checkpoints of
    versions before any checksum load as they are)."""
    recorded = recorded_checksum(checkpoint)
    if recorded is None:
        return
    key, checksum = recorded
    if checksum != state_checksum(checkpoint, key):
        raise DragonInputError(
            f"{path}: its weights, fitted features, class or hyperparameters do not match the checksum written with them "
            "(the file was altered or damaged); refused"
        )
