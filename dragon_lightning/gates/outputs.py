"""The one way to write into a place a user named: atomic, never over a file this project did not write,
and refused before any work.

Every file is written to a hidden temporary file beside its target and renamed, so a reader (or a
crash, Ctrl-C, a full disk) never leaves half a file under the real name. Each folder keeps a small
manifest, :data:`MANIFEST`, of the files dragon-lightning wrote there (name, size, modification
time): only those, unchanged since, are replaced. A file of the user's with a name the project
writes is refused in one line before the command starts its work (:meth:`OutputFolder.claim`), and
again at the moment of writing should it appear meanwhile. The manifest names a file or folder
before it appears, so a command killed at any point can run again in the same folder.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import glob
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from dragon_lightning.errors import DragonError, DragonInputError, named, os_reason
from dragon_lightning.gates.inputs import OUTPUT_MANIFEST, read_bytes, stat_path

MANIFEST = ".dragon-lightning-files.json"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
ABANDONED_AFTER = 24 * 3600
"""A temporary file of ours untouched for this many seconds was left by a writer that was killed
outright (SIGKILL, a power cut), which no ``finally`` outlives: no write in progress leaves its file
unmodified that long, so the next write of the same file removes it."""


class DiskFull(DragonError, OSError):
    """Writing failed for want of space; what was there before is whole."""


class NotWritten(DragonError, OSError):
    """The file system refused a file (a folder gone, a file system that takes no files)."""


def require_writable_dir(path: str | os.PathLike, option: str | None = None, try_file: bool = True) -> None:
    """``path`` must be a folder, or creatable as one, where files can be written (``try_file``: where a
    file can be made; without, only a file in the way is refused)."""
    path = Path(path)
    existing = next((candidate for candidate in (path, *path.parents) if stat_path(candidate, option)), Path("."))
    if not existing.is_dir():
        where = "is" if existing == path else f"lies under {existing}, which is"
        raise DragonInputError(f"{named(path, option)}: {where} a file, expected a folder to write into")
    if not try_file:
        return
    try:  # a file made and gone at once: permissions alone say nothing for root or a special file system
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise DragonInputError(f"{named(path, option)}: {existing} is not writable ({os_reason(error)})") from None


def require_writable_file(path: str | os.PathLike, option: str | None = None, try_file: bool = True) -> None:
    """``path`` must be writable as a regular file: not a folder or special file, in a usable folder."""
    path = Path(path)
    status = stat_path(path, option)
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise DragonInputError(f"{named(path, option)}: is a directory, expected a file path to write")
    if status is not None and not stat.S_ISREG(status.st_mode):
        raise DragonInputError(f"{named(path, option)}: not a regular file (a device, FIFO or socket)")
    require_writable_dir(path.parent, option=None if option is None else f"{option} (its folder)", try_file=try_file)


NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(
    path: str | os.PathLike,
    write: Callable[[Path], object],
    *,
    overwrite: bool = True,
    before_rename: Callable[[Path], object] = lambda tmp: None,
) -> bool:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then ``before_rename(tmp)``, then rename it
    to ``path``; if nothing stood under ``path`` when the writing began, it takes the name without
    replacing anything (a file that appeared meanwhile is kept and this one refused).

    With ``overwrite=False`` an existing ``path`` is kept: identical content is accepted (returns False,
    nothing changes) and different content raises :class:`DragonInputError` instead of clobbering it.
    Returns True when ``path`` was (re)written. A full disk, or any other failure to write, is one line
    (:class:`DiskFull`, :class:`NotWritten`), with the previous file whole.
    """
    path = Path(path)
    require_writable_file(path, try_file=False)  # the folder was tried before any work; a refusal now is NotWritten
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(path)
        # Hidden, and ending in the real suffix: some writers (torch.export) insist on it.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as error:
        raise NotWritten(f"{path}: not written ({os_reason(error)})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    existed = path.exists()  # before the writing: a file that appears during it is not ours to replace
    try:
        write(tmp)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual permissions
        if existed and not overwrite:
            if filecmp.cmp(tmp, path, shallow=False):
                return False
            raise DragonInputError(f"{path}: exists with different content; move it away or choose another path")
        before_rename(tmp)
        if existed:
            os.replace(tmp, path)
            return True
        try:
            _create(tmp, path)
        except FileExistsError:  # another writer took the name meanwhile: the same content is the same file
            if filecmp.cmp(tmp, path, shallow=False):
                return False
            raise DragonInputError(
                f"{path}: a file appeared under this name while it was written; it is kept and the new file was not written"
            ) from None
        return True
    except OSError as error:
        if error.errno in DISK_FULL:
            raise DiskFull(
                f"{path}: not written, the disk is full ({os.strerror(error.errno)}); what was there is unchanged"
            ) from None
        raise NotWritten(f"{path}: not written ({os_reason(error)}); what was there is unchanged") from None
    finally:
        tmp.unlink(missing_ok=True)


def _remove_abandoned(path: Path) -> None:
    """Remove the temporary files beside ``path`` that killed writers of it left (:data:`ABANDONED_AFTER`)."""
    now = time.time()
    for left in path.parent.glob(f".{glob.escape(path.name)}.*.tmp{glob.escape(path.suffix)}"):
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove: left as it is
            status = left.lstat()
            if stat.S_ISREG(status.st_mode) and now - status.st_mtime > ABANDONED_AFTER:
                left.unlink()


def _create(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path``, which was free when checked: a hard link raises ``FileExistsError``
    if a file took the name since (a rename would replace it), so a file that appears meanwhile is never lost."""
    try:
        os.link(tmp, path)
    except OSError as error:
        if error.errno not in NO_HARD_LINKS:  # FileExistsError among them
            raise
        os.replace(tmp, path)  # a file system without hard links: the rename, as before


class OutputFolder:
    """A folder a user named for output (``option``), written only through :meth:`write`."""

    def __init__(self, path: str | os.PathLike, option: str | None = None) -> None:
        self.path = Path(path)
        self.option = option
        require_writable_dir(self.path, option)

    def _manifest(self) -> dict[str, list[int]]:
        """The folder's manifest, read through the input gate: it lies in a folder the user named, so a
        FIFO or a huge file under its name is refused in one line, not read. Text that is not a JSON
        mapping records nothing."""
        path = self.path / MANIFEST
        if stat_path(path, self.option) is None:
            return {}
        try:
            entries = json.loads(read_bytes(path, OUTPUT_MANIFEST, self.option))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def ours(self, name: str, manifest: dict | None = None) -> bool:
        """Whether ``name`` is absent, or a file (or folder) this project wrote and nobody changed since."""
        status = stat_path(self.path / name, self.option)
        if status is None:
            return True
        recorded = (manifest if manifest is not None else self._manifest()).get(name)
        if stat.S_ISDIR(status.st_mode):
            return recorded == "folder"
        return _stamp(status) in _stamps(recorded)

    def claim(
        self, names: Iterable[str], replace: bool | None = None, remedy: str = "move them away or choose another folder"
    ) -> dict:
        """Before any work: refuse unless every one of ``names`` may be written. ``replace``: ``None``
        replaces only files this project wrote there; ``True`` whatever is there (the user said so);
        ``False`` nothing (a file the user names and has not allowed us to replace). ``remedy`` tells
        the user what to do instead. Returns the manifest (read in every case: writing updates it)."""
        manifest = self._manifest()
        if replace:
            for name in names:
                require_writable_file(self.path / name, self.option)
            return manifest
        if replace is False:
            taken = sorted(name for name in names if stat_path(self.path / name, self.option) is not None)
            if taken:
                raise DragonInputError(f"{named(self.path / taken[0], self.option)}: exists; {remedy} (nothing was written)")
            return manifest
        theirs = sorted({name for name in names if not self.ours(name, manifest)})
        if theirs:
            raise DragonInputError(
                f"{named(self.path, self.option)}: already holds {', '.join(theirs)}, which dragon-lightning did not "
                f"write; {remedy} (nothing was written)"
            )
        return manifest

    def claim_folder(self, name: str) -> Path:
        """A subfolder the project fills (a run's folder): refused if the user's, recorded as ours."""
        self._record(name, "folder", self.claim([name]))
        folder = self.path / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write(
        self,
        name: str,
        write: Callable[[Path], object],
        replace: bool | None = None,
        remedy: str = "move it away or choose another folder",
    ) -> Path:
        """Write file ``name`` atomically (see :func:`write_atomically`) and record it as ours; what may
        be replaced is as for :meth:`claim`."""
        manifest = self.claim([name], replace=replace, remedy=remedy)
        target = self.path / name
        status = stat_path(target, self.option)
        # Until the rename, the file standing under the name is the earlier one, if ours; after, the new one.
        kept = [_stamp(status)] if status is not None and _stamp(status) in _stamps(manifest.get(name)) else []
        write_atomically(target, write, before_rename=lambda tmp: self._record(name, [*kept, _stamp(tmp.stat())], manifest))
        return target

    def _record(self, name: str, entry, manifest: dict | None = None) -> None:
        manifest = self._manifest() if manifest is None else manifest
        if manifest.get(name) == entry:
            return
        manifest[name] = entry
        text = json.dumps(manifest, indent=0, sort_keys=True)
        write_atomically(self.path / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _stamp(status: os.stat_result) -> list[int]:
    """What identifies a file as the one written: its size and modification time (a rename keeps both)."""
    return [status.st_size, status.st_mtime_ns]


def _stamps(recorded: object) -> list[list[int]]:
    """The stamps a manifest entry accepts: a list of them, or one stamp alone, as earlier manifests hold it."""
    if not isinstance(recorded, list) or not recorded:
        return []
    return (
        [recorded] if all(isinstance(part, int) for part in recorded) else [part for part in recorded if isinstance(part, list)]
    )


def write_output_file(
    path: str | os.PathLike,
    write: Callable[[Path], object],
    replace: bool | None = None,
    option: str | None = None,
    remedy: str = "move it away or choose another path",
) -> Path:
    """Write one file through its folder's :class:`OutputFolder`."""
    path = Path(path)
    return OutputFolder(path.parent, option).write(path.name, write, replace=replace, remedy=remedy)
