"""The README's shell blocks run as written, in order, in a fresh folder that holds the project's configs
and examples: what a newcomer types, command after command, with epochs and trials made small.

``dragon-lightning`` lines run in this process through the console entry's own function (each in a
process of its own would spend most of its time importing PyTorch again); other lines run as typed."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clihelpers import ROOT
from conftest import REAL_CSV

from dragon_lightning.commands import cli_main

NOT_RUN = {
    "make test": "the suite itself",
    "make notebook": "opens a browser",
    "tensorboard": "a server that runs until stopped",
    "...": "a placeholder, not a command",
}
SMALL = {
    "fit": ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"],
    "cv": ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false", "--folds", "2"],
    "sweep": ["--trainer.max_epochs", "2", "--n_trials", "2", "--folds", "2"],
}
"""Appended to the README's commands: the same options, later on the line, win."""


def readme_commands() -> list[str]:
    """Every line of every ``bash`` block, continuation lines joined, in the README's order."""
    blocks = re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.MULTILINE | re.DOTALL)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def as_run(line: str) -> list[str] | None:
    """The argv a README line runs here, or ``None`` for a line that is not run (see :data:`NOT_RUN`)."""
    if any(marker in line for marker in NOT_RUN):
        return None
    if line.startswith("make run"):  # the Makefile's own command, in the venv it sets up
        recipe = re.search(r"^run:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
        assert recipe is not None
        line = recipe.group(1).replace("$(BIN)/", "")
    if "path/to/2020-10-21-dragon-data.csv" in line:
        if not REAL_CSV.exists():
            return None
        line = line.replace("path/to/2020-10-21-dragon-data.csv", str(REAL_CSV))
    words = shlex.split(line, comments=True)
    if words[0] == "dragon-lightning":
        if "--help" not in words and not any(word.endswith(".help") for word in words):
            words += SMALL.get(words[1], [])
    elif words[0] == "python":
        words[0] = sys.executable
    return words


def test_the_readme_has_the_commands_a_newcomer_runs():
    lines = readme_commands()
    assert lines[0].startswith("make run") and sum(as_run(line) is not None for line in lines) >= 15


def run_line(argv: list[str], folder: Path, capfd) -> tuple[int, str]:
    """Run one README line in ``folder``: its exit status and what it wrote to stderr."""
    if argv[0] != "dragon-lightning":
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(argv, cwd=folder, env=environment, capture_output=True, text=True, timeout=600)
        return done.returncode, done.stderr
    capfd.readouterr()
    try:
        cli_main(argv[1:])
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
    return status, capfd.readouterr().err


@pytest.mark.slow
def test_every_readme_command_runs_in_order_in_a_fresh_folder(tmp_path, monkeypatch, capfd):
    for folder in ("configs", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    for line in readme_commands():
        argv = as_run(line)
        if argv is None:
            continue
        status, errors = run_line(argv, tmp_path, capfd)
        assert status == 0, f"{line}\n{errors[-3000:]}"
