"""House rules that hold by construction: only Lightning's and PyTorch's public API, except where a
commented, minimal override says why; files read only through the input gate."""

import ast
import importlib
import inspect
import itertools
import pkgutil
import re

from clihelpers import ROOT

import dragon_lightning

PRIVATE_OVERRIDES = {("DragonCLI", "_parse_ckpt_path")}
"""LightningCLI 2.6 re-reads the checkpoint file and lets its ``_class_path`` choose the imported module;
the override applies the copy the checkpoint gate checked (see its docstring)."""

PRIVATE_USE = [
    re.compile(r"from (?:lightning|torch|jsonargparse)[\w.]* import [^\n]*\b_(?!_)\w+"),
    re.compile(r"\b(?:lightning|torch|L|F|nn)(?:\.\w+)*\._(?!_)\w+"),
    re.compile(r"\b(?:trainer|strategy|pl_module|fit_loop|parser)\._(?!_)\w+"),
    re.compile(r"\bfit_loop\b"),
]

FILE_READS = re.compile(
    r"(?<![\w.])open\(|(?<!\bos)\.open\((?!\s*io\.BytesIO\()|\.read_(?:text|bytes)\(|\bread_(?:csv|json|table|excel|parquet)\((?!\s*file\b)"
    r"|\b(?:torch|np|pickle|json|yaml)\.(?:safe_)?load\((?!\s*io\.BytesIO\()"
)
"""Ways to read a file by its path. Only the input gate opens files; pandas and torch read what it
opened (``file``, ``io.BytesIO(data)``), as PIL reads an encoded picture from memory."""
INPUT_GATE = "dragon_lightning/gates/inputs.py"


def package_modules():
    for info in pkgutil.walk_packages(dragon_lightning.__path__, "dragon_lightning."):
        if info.name.endswith(("serve_api",)):  # needs the serve extra's LitServe: read as text below
            continue
        yield importlib.import_module(info.name)


def test_no_private_lightning_or_torch_name_is_used():
    found = []
    for path in sorted((ROOT / "dragon_lightning").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if any(pattern.search(line) for pattern in PRIVATE_USE):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_private_methods_of_the_frameworks_are_overridden_only_where_said():
    overridden = set()
    for module in package_modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not cls.__module__.startswith("dragon_lightning"):
                continue
            framework = [base for base in cls.__mro__[1:] if base.__module__.startswith(("lightning", "torch", "jsonargparse"))]
            for name, member in vars(cls).items():
                private = name.startswith("_") and not name.startswith("__") and inspect.isfunction(member)
                if private and any(hasattr(base, name) for base in framework):
                    overridden.add((cls.__name__, name))
    assert overridden == PRIVATE_OVERRIDES


def test_every_file_is_read_through_the_input_gate():
    """A module that opens a file by its path itself would skip the gate's checks (a FIFO that hangs the
    reader, a file beyond its kind's bound): a command added later inherits them only through the gate."""
    found = []
    for path in sorted((ROOT / "dragon_lightning").rglob("*.py")):
        if path.relative_to(ROOT).as_posix() == INPUT_GATE:
            continue
        text = path.read_text()
        for match in FILE_READS.finditer(text):
            found.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group()}")
    assert not found, "\n".join(found)


def test_one_parsing_mechanism_and_no_sub_run_as_command_line_words():
    """Every command parses with jsonargparse (LightningCLI's parser), and the runs a command starts
    (folds, trials, refits, ensemble tests) receive their options as data: no ``argparse`` in the
    package, and no list of command-line words with a value after an option (``["--data.fold", "1"]``)."""
    found = []
    for path in sorted((ROOT / "dragon_lightning").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: imports argparse" for name in names if name == "argparse"]
            if isinstance(node, (ast.List, ast.Tuple)):
                words = node.elts
                for word, after in itertools.pairwise(words):
                    option = isinstance(word, ast.Constant) and isinstance(word.value, str) and word.value.startswith("--")
                    value = not (isinstance(after, ast.Constant) and isinstance(after.value, str) and after.value.startswith("-"))
                    if option and value:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not found, "\n".join(found)


def test_no_traceback_frame_is_read_to_word_an_error():
    """An error is worded where it is raised (or where jsonargparse builds the class that raised it),
    never by reading the frames of a traceback."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "dragon_lightning").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\bf_locals\b|\bwalk_tb\b|\btb_frame\b|\bimport traceback\b", line)
    ]
    assert not found, "\n".join(found)


REGEX_MODULES = {
    "messages.py": "jsonargparse's errors carry their option only in their text",
    "boundary.py": "a process Lightning spawned hands back its error only as traceback text",
    "search/storage.py": "masks a database password in a driver's message; reads nothing from it",
}
"""The modules that may use ``re``, and why: a pattern over another library's message breaks silently
when its wording changes, so each is a known exception and no new one joins them unnoticed."""


def test_only_the_known_modules_use_regular_expressions():
    found = sorted(
        str(path.relative_to(ROOT / "dragon_lightning"))
        for path in (ROOT / "dragon_lightning").rglob("*.py")
        if re.search(r"^\s*(?:import re\b|from re import)", path.read_text(), flags=re.MULTILINE)
    )
    assert found == sorted(REGEX_MODULES)
