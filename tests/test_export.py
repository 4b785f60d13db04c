"""Models that leave the run: ``load_model`` for Python and ``dragon-lightning export`` (ONNX, .pt2),
checked against what ``dragon-lightning predict`` writes for the same rows."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch
from clihelpers import ROOT, config, expect_one_line_error, files_under, predict_args, run

from dragon_lightning import export, load_model
from dragon_lightning.checkpoints.files import resolve_shortcut
from dragon_lightning.errors import DragonInputError

# Inside, at the edges of and far outside the training range, and repeated rows.
DRAGONS = "name,numberToes,bodyLength\nSmaug,4,130\nPuff,22,260\nGiant,500,9000\nTiny,-3,-40\nSmaug2,4,130\n"


@pytest.fixture(scope="module", params=["color_mlp.yaml", "fire_logistic.yaml"])
def trained(request, tmp_path_factory):
    """A short run of a config: its last checkpoint, and ``predict``'s output on :data:`DRAGONS`. The fire
    model decides at a threshold of 0.3, where the larger probability is not always the class."""
    root = tmp_path_factory.mktemp("run")
    common = ["--config", config(request.param), "--trainer.default_root_dir", str(root)]
    threshold = ["--model.init_args.threshold", "0.3"] if request.param.startswith("fire") else []
    run(
        "fit",
        *common,
        *threshold,
        "--trainer.max_epochs",
        "3",
        "--data.data_dir",
        str(root / "data"),
        "--test_after_fit",
        "false",
    )
    checkpoint = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    dragons = root / "dragons.csv"
    dragons.write_text(DRAGONS)
    predictions = root / "predictions.csv"
    run(*predict_args(config(request.param), checkpoint, dragons, predictions), "--trainer.default_root_dir", str(root))
    return checkpoint, pd.read_csv(dragons), pd.read_csv(predictions)


def probability_columns(table: pd.DataFrame) -> list[str]:
    return [column for column in table.columns if column.startswith("p_")]


def test_load_model_predicts_as_the_predict_command_does(trained):
    checkpoint, dragons, predicted = trained
    model = load_model(checkpoint)
    columns = probability_columns(predicted)
    assert [f"p_{name}" for name in model.classes_] == columns
    assert model.task in ("fire", "color") and len(model.classes_) in (2, 3)
    from_frame = model.predict_proba(dragons)
    assert list(from_frame.columns) == columns
    np.testing.assert_allclose(from_frame.to_numpy(), predicted[columns].to_numpy(), atol=1e-6)
    assert model.predict(dragons).tolist() == predicted["predicted"].tolist()
    from_array = model.predict_proba(dragons[["numberToes", "bodyLength"]].to_numpy())
    np.testing.assert_array_equal(from_array.to_numpy(), from_frame.to_numpy())


def test_load_model_keeps_a_frames_index_and_refuses_bad_rows(trained):
    model = load_model(trained[0])
    frame = pd.DataFrame({"bodyLength": [150.0, 200.0], "numberToes": [5, 9], "note": ["a", "b"]}, index=[10, 11])
    assert list(model.predict_proba(frame).index) == [10, 11]
    with pytest.raises(DragonInputError, match="X: missing column"):
        model.predict(frame.drop(columns="numberToes"))
    with pytest.raises(DragonInputError, match=r"X: row 1, column 'bodyLength': .*not a finite number"):
        model.predict(np.array([[5, 150], [6, np.inf]]))
    with pytest.raises(DragonInputError, match=r"expected shape \[N, 2\]"):
        model.predict(np.zeros(4))


def test_load_model_refuses_what_is_not_a_dragon_lightning_checkpoint(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"_class_path": "resnet.ResNet"}}, foreign)
    with pytest.raises(DragonInputError, match=f"{foreign}: names the class 'resnet.ResNet'"):
        load_model(foreign)
    odd = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": ["not", "a", "mapping"]}, odd)
    with pytest.raises(DragonInputError, match=f"{odd}: not a Lightning checkpoint"):
        load_model(odd)
    weights = tmp_path / "weights.pt"  # a bare state_dict: only Lightning's hand-over between its processes
    torch.save({"linear.weight": torch.zeros(1, 2)}, weights)
    with pytest.raises(DragonInputError, match=f"{weights}: not a Lightning checkpoint .it has no state_dict"):
        load_model(weights)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(DragonInputError, match=f"{text}: not a readable checkpoint"):
        load_model(text)


def test_export_onnx_runs_in_onnxruntime_as_predict_does_and_refuses_to_overwrite(trained, tmp_path, capfd):
    checkpoint, dragons, predicted = trained
    output = tmp_path / "model.onnx"
    report = run("export", "--ckpt_path", str(checkpoint), "--output", str(output))
    assert report.max_abs_difference <= 1e-5 and report.rows_checked > 2500
    assert f"wrote {output}" in capfd.readouterr().out
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    columns = probability_columns(predicted)
    assert [f"p_{name}" for name in json.loads(metadata["class_names"])] == columns
    assert json.loads(metadata["feature_names"]) == ["numberToes", "bodyLength"]
    assert metadata["task"] == load_model(checkpoint).task
    features = dragons[["numberToes", "bodyLength"]].to_numpy(dtype=np.float32)
    for rows in (slice(0, 1), slice(None)):  # the batch size is free
        probabilities, classes = session.run(["probabilities", "predicted"], {"features": features[rows]})
        np.testing.assert_allclose(probabilities, predicted[columns].to_numpy()[rows], atol=1e-5)
        assert list(np.array(json.loads(metadata["class_names"]))[classes]) == list(predicted["predicted"][rows])
    grid = export.check_points(load_model(checkpoint))  # the test split and a grid around the training range
    _, classes, outside = session.run(["probabilities", "predicted", "outside_training_range"], {"features": grid})
    assert list(load_model(checkpoint).classes_[classes]) == list(load_model(checkpoint).predict(grid)), (
        "the graph decides as predict does, the fire model's threshold of 0.3 included"
    )
    expected_outside = load_model(checkpoint).outside_training_range(grid)
    assert outside.tolist() == expected_outside.tolist() and 0 < expected_outside.sum() < len(grid), (
        "the graph flags extrapolations as predict does, and the grid holds rows of both kinds"
    )

    before = files_under(tmp_path)
    expect_one_line_error(
        capfd,
        tmp_path,
        before,
        ["export", "--ckpt_path", str(checkpoint), "--output", str(output)],
        f"--output {output}: exists",
        "--overwrite true",
    )
    run("export", "--ckpt_path", str(checkpoint), "--output", str(output), "--overwrite", "true")


def test_export_and_serve_take_last_for_the_newest_runs_last_checkpoint_and_export_names_its_file(
    trained, tmp_path, monkeypatch, capfd
):
    checkpoint, _, _ = trained
    runs = tmp_path / "lightning_logs"
    for version in (2, 10, 9):
        (runs / f"version_{version}" / "checkpoints").mkdir(parents=True)
        shutil.copy(checkpoint, runs / f"version_{version}" / "checkpoints" / "last.ckpt")
    (runs / "version_11").mkdir()  # a run that wrote no checkpoint
    monkeypatch.chdir(tmp_path)
    assert resolve_shortcut("last") == str(Path("lightning_logs") / "version_10" / "checkpoints" / "last.ckpt")
    report = run("export", "--ckpt_path", "last", "--format", "pt2")  # no --output: model.pt2 here
    assert report.path == Path("model.pt2") and report.path.is_file()
    (tmp_path / "export.yaml").write_text("ckpt_path: last\noutput: from_config.onnx\n")  # the options as a file
    assert run("export", "--config", "export.yaml").path == Path("from_config.onnx")
    capfd.readouterr()
    monkeypatch.chdir(tmp_path / "lightning_logs")
    expect_one_line_error(
        capfd, tmp_path, files_under(tmp_path), ["serve", "--ckpt_path", "last"], "--ckpt_path last: no run under lightning_logs"
    )


def test_export_pt2_loads_with_torch_export_and_carries_its_metadata(trained, tmp_path):
    checkpoint, dragons, predicted = trained
    output = tmp_path / "model.pt2"
    run("export", "--ckpt_path", str(checkpoint), "--output", str(output), "--format", "pt2")
    extra = {export.PT2_METADATA: ""}
    program = torch.export.load(output, extra_files=extra)
    assert json.loads(json.loads(extra[export.PT2_METADATA])["class_names"]) == list(load_model(checkpoint).classes_)
    features = torch.tensor(dragons[["numberToes", "bodyLength"]].to_numpy(dtype=np.float32))
    columns = probability_columns(predicted)
    probabilities, classes, outside = program.module()(features)
    np.testing.assert_allclose(probabilities.detach().numpy(), predicted[columns].to_numpy(), atol=1e-5)
    assert list(load_model(checkpoint).classes_[classes.numpy()]) == list(predicted["predicted"])
    assert outside.tolist() == predicted["outside_training_range"].tolist()


def test_an_export_that_disagrees_with_pytorch_writes_nothing(trained, tmp_path, capfd, monkeypatch):
    checkpoint = trained[0]
    real_writer = export.WRITERS["onnx"]

    def changed(output: int, change):
        """A writer whose file gives output number ``output`` changed by ``change``."""

        def writer(model, path):
            run_exported = real_writer(model, path)
            return lambda features: [change(a) if i == output else a for i, a in enumerate(run_exported(features))]

        return writer

    for writer, message in (
        (changed(0, lambda probabilities: probabilities + 1e-4), "differ from the PyTorch model's by up to 0.0001"),
        (changed(1, lambda classes: (classes + 1) % 2), "decides another class"),
        (changed(2, lambda outside: np.concatenate([~outside[:1], outside[1:]])), "marks other rows as outside"),
    ):
        monkeypatch.setitem(export.WRITERS, "onnx", writer)
        with pytest.raises(SystemExit) as stopped:
            run("export", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "model.onnx"))
        assert stopped.value.code == 2
        assert message in capfd.readouterr().err
        assert list(tmp_path.iterdir()) == [], "a failed check must leave no file, not even a temporary one"


def test_export_without_the_extra_says_what_to_install(trained, tmp_path, capfd, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    before = files_under(tmp_path)
    expect_one_line_error(
        capfd,
        tmp_path,
        before,
        ["export", "--ckpt_path", str(trained[0]), "--output", str(tmp_path / "m.onnx")],
        "needs onnxruntime",
        "pip install 'dragon-lightning[export]'",
    )


def test_the_onnx_example_classifies_three_dragons(trained, tmp_path):
    checkpoint = trained[0]
    model_file = tmp_path / "model.onnx"
    run("export", "--ckpt_path", str(checkpoint), "--output", str(model_file))
    example = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "onnx_inference.py"), str(model_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = example.stdout.splitlines()
    classes = load_model(checkpoint).classes_
    assert len(lines) == 4 and all(line.split(": ")[1].split(" (")[0] in classes for line in lines[1:])


@pytest.mark.slow
def test_the_python_api_example_trains_and_predicts(tmp_path):
    example = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python_api.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "test accuracy" in example.stdout
    table = example.stdout.splitlines()[-4:]
    assert table[0].split() == ["p_Blue", "p_Red", "p_Yellow", "predicted"]
    assert all(row.split()[-1] in ("Blue", "Red", "Yellow") for row in table[1:])
