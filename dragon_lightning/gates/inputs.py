"""The one way to open a file a user hands in: CSVs, configs, search spaces, checkpoints, journals and
ONNX models, and every path jsonargparse would read as a config.

A device (``/dev/zero``), a FIFO (what ``<(cat file)`` gives) or a socket would make a reader hang or
grow without bound, and a huge regular file would fill memory: each kind of input has a size bound,
checked with ``stat`` before the file is opened. Text must be UTF-8; YAML is read with the safe loader,
and its aliases may not expand a small file into millions of nodes; an ONNX model may not name other
files to read. Every refusal is one
:class:`DragonInputError` line naming the path and the option it came from.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from dragon_lightning.errors import DragonInputError, first_line, named

MiB = 2**20


@dataclass(frozen=True)
class InputKind:
    """What a file is for, and the most bytes such a file may hold."""

    what: str
    max_bytes: int


CONFIG = InputKind("config file", 4 * MiB)
SPACE = InputKind("search space file", 1 * MiB)
CSV = InputKind("CSV file", 2048 * MiB)
CHECKPOINT = InputKind("checkpoint file", 1024 * MiB)
JOURNAL = InputKind("study journal", 1024 * MiB)
ONNX = InputKind("ONNX model file", 1024 * MiB)
RUN_RECORD = InputKind("run record", 1 * MiB)
OUTPUT_MANIFEST = InputKind("dragon-lightning manifest", 16 * MiB)

MAX_YAML_NODES = 100_000
"""A YAML document may hold at most this many values once its aliases are expanded (a 700-byte file
of nested aliases expands to billions)."""


def path_problem(error: OSError | UnicodeError, path: str | os.PathLike, option: str | None) -> DragonInputError:
    """An operating-system refusal of a path name, as one line naming the option."""
    if isinstance(error, UnicodeError):
        return DragonInputError(f"{named(os.fsdecode(path), option)}: not a valid file name in this file system's encoding")
    if error.errno == errno.ENAMETOOLONG:
        return DragonInputError(f"{named(str(path)[:80] + '...', option)}: file name too long for this file system")
    return DragonInputError(f"{named(path, option)}: {os.strerror(error.errno or 0).lower()}")


def stat_path(path: str | os.PathLike, option: str | None = None, strict: bool = True) -> os.stat_result | None:
    """``os.stat`` of ``path`` (following links), ``None`` where nothing is; a name the file system
    cannot take is one line naming the option (``strict``), or ``None`` for a value that is perhaps
    no path at all."""
    if not strict:
        try:
            return stat_path(path, option)
        except DragonInputError:
            return None
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR):
            return None
        raise path_problem(error, path, option) from None
    except (UnicodeError, ValueError) as error:  # ValueError: an embedded NUL byte
        raise path_problem(UnicodeError(str(error)), path, option) from None


def open_input(path: str | os.PathLike, kind: InputKind, option: str | None = None) -> Path:
    """``path`` checked as an input of ``kind``: a readable regular file (a link to one is fine) within
    the kind's size bound. Returns it as a ``Path``; nothing is read (:func:`opened` reads)."""
    path = Path(path)
    status = stat_path(path, option)
    if status is None:
        raise DragonInputError(f"{named(path, option)}: no such {kind.what}")
    _check_status(status, path, kind, option)
    if not os.access(path, os.R_OK):
        raise DragonInputError(f"{named(path, option)}: permission denied")
    return path


def _check_status(status: os.stat_result, path: Path, kind: InputKind, option: str | None) -> None:
    if stat.S_ISDIR(status.st_mode):
        raise DragonInputError(f"{named(path, option)}: is a directory, expected a {kind.what}")
    if not stat.S_ISREG(status.st_mode):
        raise DragonInputError(
            f"{named(path, option)}: not a regular file (a device, FIFO or socket); give a {kind.what} on disk"
        )
    if status.st_size > kind.max_bytes:
        raise DragonInputError(
            f"{named(path, option)}: {status.st_size / MiB:,.1f} MiB, more than a {kind.what} may hold "
            f"({kind.max_bytes / MiB:,.0f} MiB)"
        )


@contextlib.contextmanager
def opened(path: str | os.PathLike, kind: InputKind, option: str | None = None) -> Iterator[BinaryIO]:
    """The file, open for binary reading, after :func:`open_input`'s checks, which are made again on what
    was opened: a file swapped for a FIFO or a larger one after the check is refused, not read. (Opened
    without blocking, so that a FIFO cannot hang the open itself.)"""
    path = open_input(path, kind, option)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise path_problem(error, path, option) from None
    with os.fdopen(descriptor, "rb") as file:
        _check_status(os.fstat(descriptor), path, kind, option)
        os.set_blocking(descriptor, True)
        yield file


def read_bytes(path: str | os.PathLike, kind: InputKind, option: str | None = None) -> bytes:
    """The whole file, read once through :func:`opened` (and never more than the bound, should the file
    grow meanwhile)."""
    with opened(path, kind, option) as file:
        data = file.read(kind.max_bytes + 1)
    if len(data) > kind.max_bytes:
        raise DragonInputError(f"{named(path, option)}: grew beyond {kind.max_bytes / MiB:,.0f} MiB while being read")
    return data


ONNX_CHECKSUM = "sha256"
"""The metadata entry in which ``export`` writes :func:`onnx_checksum`."""


def onnx_checksum(model: Any) -> str:
    """SHA-256 of an ONNX model (graph, weights, opsets and metadata: everything that decides or labels
    its answers) without its own checksum entry."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for entry in [entry for entry in copy.metadata_props if entry.key == ONNX_CHECKSUM]:
        copy.metadata_props.remove(entry)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def read_onnx(path: str | os.PathLike, option: str | None = None) -> bytes:
    """An ONNX model's bytes, parsed once with ``onnx`` to refuse a model whose tensors name other files
    to read (external data: a name inside the file must not decide what is read), and one that no longer
    matches the checksum ``export`` wrote into it (a file without one, from an earlier export or another
    program, is read as it is)."""
    data = read_bytes(path, ONNX, option)
    try:
        import onnx
    except ImportError:
        raise DragonInputError(
            f"{named(path, option)}: reading ONNX needs onnx: pip install 'dragon-lightning[export]'"
        ) from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:  # protobuf's DecodeError and onnx's own share no base class worth naming
        raise DragonInputError(f"{named(path, option)}: not an ONNX model ({first_line(error)})") from None
    if external := _external_files(model):
        raise DragonInputError(
            f"{named(path, option)}: keeps tensor data in other files ({', '.join(external)}), which are not read; "
            "export writes one self-contained file"
        )
    recorded = next((entry.value for entry in model.metadata_props if entry.key == ONNX_CHECKSUM), None)
    if recorded is not None and recorded != onnx_checksum(model):
        raise DragonInputError(
            f"{named(path, option)}: its graph or metadata do not match the checksum export wrote with them "
            "(the file was altered or damaged); refused"
        )
    return data


def _external_files(model: Any) -> list[str]:
    """The files an ONNX model's tensors name for their data, in its graph, nested graphs and functions."""
    from onnx.external_data_helper import uses_external_data

    def graph_tensors(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        yield from node_tensors(graph.node)

    def node_tensors(nodes: Any) -> Iterator[Any]:
        for node in nodes:
            for attribute in node.attribute:
                yield from (attribute.t, *attribute.tensors)
                for graph in (attribute.g, *attribute.graphs):
                    yield from graph_tensors(graph)

    tensors = [*graph_tensors(model.graph), *(t for function in model.functions for t in node_tensors(function.node))]
    return sorted(
        {next((e.value for e in t.external_data if e.key == "location"), t.name) for t in tensors if uses_external_data(t)}
    )


def read_text(path: str | os.PathLike, kind: InputKind, option: str | None = None) -> str:
    """The file as UTF-8 text; where it is not UTF-8, the line is named."""
    data = read_bytes(path, kind, option)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DragonInputError(f"{named(path, option)}: line {line}: not UTF-8 text (byte 0x{data[error.start]:02x})") from None


def load_yaml(text: str, where: str) -> Any:
    """Safe YAML (no tags that build Python objects) whose aliases expand to at most
    :data:`MAX_YAML_NODES` values; problems name ``where`` and the line."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            _refuse_expansion(node, where)
            return loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or first_line(error)
        raise DragonInputError(f"{where}: {line}not valid YAML ({problem})") from None
    except RecursionError:
        raise _too_deep(where) from None


def _too_deep(where: str) -> DragonInputError:
    return DragonInputError(f"{where}: nests lists or mappings too deep to read; refused")


def check_yaml_expansion(text: str, where: str) -> None:
    """Refuse inline YAML whose aliases expand too far, or that nests too deep to read; text that is
    not YAML is left to its parser."""
    try:
        with contextlib.suppress(yaml.YAMLError):
            _refuse_expansion(yaml.compose(text, Loader=yaml.SafeLoader), where)
    except RecursionError:
        raise _too_deep(where) from None


def bounded(load: Callable[[str], Any]) -> Callable[[str], Any]:
    """``load`` (jsonargparse's YAML loader) refusing YAML whose aliases expand too far, or that nests
    too deep, before it builds anything: installed for every value and config file jsonargparse reads,
    so the bound holds wherever a value comes from (the command line, a config, a search space's
    choice, settings handed over from Python)."""

    def bounded_load(text: str) -> Any:
        check_yaml_expansion(text, "a YAML value")
        return load(text)

    return bounded_load


def _refuse_expansion(node: yaml.Node | None, where: str) -> None:
    if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
        raise DragonInputError(
            f"{where}: expands to more than {MAX_YAML_NODES:,} values through its aliases (&name, *name); refused"
        )


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values under ``node`` with every alias counted each time it is used (shared nodes computed once)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a node that refers to itself counts once
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value)
    sizes[id(node)] = min(total, MAX_YAML_NODES + 1)
    return sizes[id(node)]


def read_yaml_mapping(path: str | os.PathLike, kind: InputKind, option: str | None = None) -> dict:
    """A YAML file of options: through :func:`read_text` and :func:`load_yaml`, and a mapping."""
    content = load_yaml(read_text(path, kind, option), named(path, option))
    if not isinstance(content, dict):
        raise DragonInputError(
            f"{named(path, option)}: expected a mapping of options (e.g. 'trainer: {{max_epochs: 10}}'), got {type(content).__name__}"
        )
    return content


# Options whose value is a file of another kind than a config (the last part of the option's name).
FILE_OPTIONS = {"csv_path": CSV, "predict_csv": CSV, "ckpt_path": CHECKPOINT, "space": SPACE}
# Options that name places to write: the output gate checks them.
OUTPUT_OPTIONS = {"output", "output_path", "output_dir", "save_dir", "dirpath", "default_root_dir", "data_dir"}
# Without a known option, a file's suffix tells its kind; any other file may be read as a config.
FILE_SUFFIXES = {".csv": CSV, ".ckpt": CHECKPOINT, ".pt": CHECKPOINT, ".pth": CHECKPOINT, ".journal": JOURNAL, ".onnx": ONNX}
CONFIG_SUFFIXES = {".yaml", ".yml", ".json"}
CONFIG_OPTIONS = {"--config", "-c"}
MAX_CONFIG_DEPTH = 8


def check_argument_files(args: Sequence[str]) -> None:
    """The gate every command's arguments pass before parsing: each value that names something on disk,
    on the command line or inside a config file it names (recursively, as jsonargparse resolves them),
    must be a folder or a regular file within its kind's bound, and YAML that may be parsed (config
    files, inline values) must be safe and bounded; a ``--config`` must be a mapping."""
    for option, value in _option_values(args):
        _check_value(option, value, (Path.cwd(),), depth=0, seen=set())


def _option_values(args: Sequence[str]) -> Iterator[tuple[str | None, str]]:
    index = 0
    while index < len(args):
        arg = args[index]
        if arg.startswith("--") and "=" in arg:
            option, value = arg.split("=", 1)
            yield option, value
        elif arg.startswith("-") and index + 1 < len(args) and not args[index + 1].startswith("--"):
            yield arg, args[index + 1]
            index += 1
        elif not arg.startswith("-") and index > 0:  # positional values (a command's runs); not the command
            yield None, arg
        index += 1


def _last_name(option: str | None) -> str:
    return (option or "").lstrip("-").rsplit(".", 1)[-1]


def _reads_or_writes_files(option: str | None) -> bool:
    """Whether an option's value is a file or folder: a config, a file option, an output place, or a
    command's positional value (the runs ``compare`` reads)."""
    return option is None or option in CONFIG_OPTIONS or _last_name(option) in {*FILE_OPTIONS, *OUTPUT_OPTIONS, "config"}


def _check_value(option: str | None, value: Any, bases: Sequence[Path], depth: int, seen: set) -> None:
    if isinstance(value, str) and "://" in value and _reads_or_writes_files(option):
        # jsonargparse would open it with fsspec, past this gate (file:// names a FIFO as well as a path does).
        raise DragonInputError(f"{named(value[:80], option)}: a URL; dragon-lightning reads and writes local paths only")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_value(f"{option}.{key}" if option else f"--{key}", item, bases, depth, seen)
        return
    if isinstance(value, list):
        for item in value:
            _check_value(option, item, bases, depth, seen)
        return
    if not isinstance(value, str) or not value or value == "-" or "://" in value:
        return
    if _last_name(option) in OUTPUT_OPTIONS:
        return
    on_disk = False
    for base in dict.fromkeys(bases):
        path = Path(os.path.expanduser(value))
        path = path if base == Path.cwd() else base / path  # as typed, where typed relative to the working folder
        status = stat_path(path, option, strict=_last_name(option) in FILE_OPTIONS)
        if status is None or stat.S_ISDIR(status.st_mode):
            continue
        on_disk = True
        kind = FILE_OPTIONS.get(_last_name(option)) or FILE_SUFFIXES.get(path.suffix.lower()) or CONFIG
        open_input(path, kind, option)
        if kind is not CONFIG or (status.st_dev, status.st_ino) in seen or depth >= MAX_CONFIG_DEPTH:
            continue
        seen.add((status.st_dev, status.st_ino))
        if option in CONFIG_OPTIONS or path.suffix.lower() in CONFIG_SUFFIXES:
            content = (
                read_yaml_mapping(path, kind, option)
                if option in CONFIG_OPTIONS
                else load_yaml(read_text(path, kind, option), named(path, option))
            )
            # jsonargparse resolves a nested config's paths from its folder; the data module from the working one.
            nested = None if option in CONFIG_OPTIONS else option
            _check_value(nested, content, (path.parent, Path.cwd()), depth + 1, seen)
        else:  # a file jsonargparse might still parse as YAML
            check_yaml_expansion(read_bytes(path, kind, option).decode("utf-8", "replace"), named(path, option))
    if not on_disk and "*" in value:  # inline YAML that jsonargparse will parse: its aliases are bounded too
        check_yaml_expansion(value, option or "an argument")
