"""Write files so that a reader never sees half of one and an existing different file is never lost."""

from __future__ import annotations

import filecmp
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from dragon_lightning.errors import DragonInputError
from dragon_lightning.paths import require_writable_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = True) -> bool:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    With ``overwrite=False`` an existing ``path`` is kept: identical content is accepted (returns False,
    nothing changes) and different content raises :class:`DragonInputError` instead of clobbering it.
    Returns True when ``path`` was (re)written.
    """
    path = Path(path)
    require_writable_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden, and ending in the real suffix: some writers (torch.export) insist on it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual permissions
        if path.exists() and not overwrite:
            if filecmp.cmp(tmp, path, shallow=False):
                return False
            raise DragonInputError(f"{path}: exists with different content; move it away or choose another path")
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)
