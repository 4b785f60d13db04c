"""Checks of the paths a user hands in: files to read must be regular files, places to write must be usable.

A device (``/dev/zero``), a FIFO (what ``<(cat file)`` gives) or a socket would make a reader hang or
grow without bound; a folder that is really a file, or a file that is really a folder, would fail only
after a run had already written part of its output. Each check raises one :class:`DragonInputError`
line naming the path and, when given, the option it came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from dragon_lightning.errors import DragonInputError


def _named(path: Path, option: Optional[str]) -> str:
    return f"{option} {path}" if option else str(path)


def require_regular_file(path: str | os.PathLike, what: str, option: Optional[str] = None) -> Path:
    """``path`` must exist and be a regular file (a symbolic link to one is fine)."""
    path = Path(path)
    if not path.exists():
        raise DragonInputError(f"{_named(path, option)}: no such {what}")
    if path.is_dir():
        raise DragonInputError(f"{_named(path, option)}: is a directory, expected a {what}")
    if not path.is_file():
        raise DragonInputError(
            f"{_named(path, option)}: not a regular file (a device, FIFO or socket); give a {what} on disk"
        )
    if not os.access(path, os.R_OK):
        raise DragonInputError(f"{_named(path, option)}: permission denied")
    return path


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def require_writable_dir(path: str | os.PathLike, option: Optional[str] = None) -> None:
    """``path`` must be a folder, or creatable as one, where files can be written."""
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "is" if existing == path else f"lies under {existing}, which is"
        raise DragonInputError(f"{_named(path, option)}: {where} a file, expected a folder to write into")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DragonInputError(f"{_named(path, option)}: {existing} is not writable")


def require_writable_file(path: str | os.PathLike, option: Optional[str] = None) -> None:
    """``path`` must be writable as a regular file: not a folder or special file, in a usable folder."""
    path = Path(path)
    if path.is_dir():
        raise DragonInputError(f"{_named(path, option)}: is a directory, expected a file path to write")
    if path.exists() and not path.is_file():
        raise DragonInputError(f"{_named(path, option)}: not a regular file (a device, FIFO or socket)")
    require_writable_dir(path.parent, option=None if option is None else f"{option} (its folder)")
