"""The tutorial notebook: its paired plain-text source in sync, and a run top to bottom on a fresh kernel."""

import re

import pytest
from clihelpers import ROOT

NOTEBOOK = ROOT / "notebooks" / "dragon_tutorial.ipynb"
SOURCE = ROOT / "notebooks" / "dragon_tutorial.py"


def test_the_notebook_and_its_percent_source_are_in_sync_and_kept_without_outputs():
    jupytext = pytest.importorskip("jupytext")
    notebook, source = jupytext.read(NOTEBOOK), jupytext.read(SOURCE)
    assert [(c.cell_type, c.source) for c in notebook.cells] == [(c.cell_type, c.source) for c in source.cells], (
        "run: jupytext --sync notebooks/dragon_tutorial.py"
    )
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in notebook.cells if c.cell_type == "code")


def test_the_notebook_uses_only_the_public_api():
    private = re.findall(
        r"dragon_lightning(?:\.\w+)*\._(?!_)\w+|from dragon_lightning\S* import [^\n]*\b_(?!_)\w+", SOURCE.read_text()
    )
    assert not private


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_with_its_pictures_and_results_table(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("DRAGON_NOTEBOOK_NO_SERVERS", "1")  # no TensorBoard server in the tests
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    kinds = [kind for output in outputs for kind in output.get("data", {})]
    assert kinds.count("image/png") >= 3, "the scatter, the regions and the confusion matrix"
    assert kinds.count("image/gif") == 3, "the boundary moving over training, for three runs"
    tables = [output["data"]["text/html"] for output in outputs if "text/html" in output.get("data", {})]
    results = next(table for table in tables if "scikit-learn, same rows" in table)
    assert results.count("<tr") == 5 and "tutorial printed" in results, "four methods and a header"
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    difference = float(re.search(r"largest difference from load_model: (\S+)", printed).group(1))
    assert difference <= 1e-5
    assert "same classes as load_model: True" in printed
    assert not list(ROOT.glob("notebooks/dragon_tutorial_runs")), "runs go to the working folder, not the checkout"
    assert (tmp_path / "dragon_tutorial_runs" / "cv_color_mlp" / "ensemble" / "checkpoints" / "ensemble.ckpt").is_file()


def test_make_notebook_runs_jupyterlab_with_the_venv_first_on_path():
    """The kernel inherits JupyterLab's PATH: with the venv's bin first, %tensorboard finds tensorboard."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("no make")
    recipe = subprocess.run(["make", "-n", "notebook"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    launch = next(line for line in recipe.splitlines() if "jupyter lab" in line)
    assert f'PATH="{ROOT / ".venv" / "bin"}:' in launch
