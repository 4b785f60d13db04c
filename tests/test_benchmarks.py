"""The results table runs the CLI's own code path, so its numbers are what `dragon-lightning fit` gives."""

import importlib.util
import json
import shutil

import pandas as pd
import pytest
import torch
from clihelpers import ROOT, config, in_root, run

from dragon_lightning.cli import build_cli


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_numbers_equal_the_cli_for_the_same_seed(tmp_path):
    reproduce = load_benchmark("reproduce_tutorial")
    table = reproduce.run_config("configs/fire_logistic.yaml", 3, None, tmp_path / "table")
    cli = run(
        "fit",
        "--config",
        config("fire_logistic.yaml"),
        "--seed_everything",
        "3",
        "--trainer.default_root_dir",
        str(tmp_path / "cli"),
        "--data.data_dir",
        str(tmp_path / "data"),
    )
    for metric in ("test/acc", "test/detection_rate", "test/false_positive_rate"):
        assert table[metric] == float(cli.trainer.callback_metrics[metric]), metric


def test_the_table_script_writes_markdown_and_json(tmp_path, capsys):
    reproduce = load_benchmark("reproduce_tutorial")
    output = tmp_path / "table.json"
    reproduce.main(["--draws", "1", "--first-draw", "7", "--configs", "configs/color_perceptron.yaml", "--json", str(output)])
    printed = capsys.readouterr().out
    assert "| color | configs/color_perceptron.yaml |" in printed
    for peer in ("MLPClassifier (10,20,1000)", "SVC (RBF, C and gamma by 5-fold CV)", "HistGradientBoostingClassifier"):
        assert f"| color | scikit-learn {peer} on train+val |" in printed, peer
    rows = {row["method"]: row for row in json.loads(output.read_text())["rows"]}
    assert rows["configs/color_perceptron.yaml"]["draws"] == 1
    assert json.loads(output.read_text())["first_draw"] == 7
    for rows_used in ("train", "train+val"):
        assert 0.8 < rows[f"scikit-learn LogisticRegression on {rows_used}"]["test/acc"]["mean"] <= 1


def test_the_throughput_script_times_all_four_loops(tmp_path, capsys, monkeypatch):
    throughput = load_benchmark("throughput")
    output = tmp_path / "throughput.json"
    monkeypatch.setattr(
        "sys.argv",
        [
            "throughput.py",
            "--n",
            "20000",
            "--batch-sizes",
            "256",
            "--epochs",
            "1",
            "--tutorial-rows",
            "50",
            "--json",
            str(output),
        ],
    )
    throughput.main()
    row = json.loads(output.read_text())["rows"][0]
    rates = [row[key] for key in ("a_dragon_lightning", "b_plain_pytorch", "c_sklearn", "d_tutorial_loop")]
    assert row["batch_size"] == 256
    lightning, plain, sklearn, tutorial = rates
    assert 0.05 < lightning / plain < 20 and 0.05 < sklearn / plain < 20, "minibatch loops timed on the same rows"
    assert tutorial < plain, "one dragon per step is the slow way"
    assert f"| 256 | {rates[0]:,.0f} | {rates[1]:,.0f} |" in capsys.readouterr().out


def test_the_inference_script_times_all_three_ways(tmp_path, capsys):
    inference = load_benchmark("inference_throughput")
    result = inference.main(["--rows", "2000", "--repeats", "1", "--config", "configs/fire_logistic.yaml"])
    assert set(result["rows_per_second"]) == {"onnxruntime", "predict_proba", "predict command"}
    rates = result["rows_per_second"]
    assert rates["predict command"] < rates["onnxruntime"], "the command also reads and writes the CSV"
    assert result["max_abs_difference"] <= 1e-5
    assert "| predict command |" in capsys.readouterr().out


def test_the_step_cost_script_times_every_piece_against_the_bare_trainer(capsys):
    step_cost = load_benchmark("step_cost")
    result = step_cost.main(["--n", "4000", "--epochs", "2", "--repeats", "1"])
    rows = result["rows"]
    assert [row["variant"] for row in rows] == [name for name, _, _ in step_cost.VARIANTS]
    assert rows[0]["vs_bare"] == 1.0 and rows[0]["vs_bare_within_turns"] == {"median": 1.0, "low": 1.0, "high": 1.0}
    assert all(row["batches_trained"] == 2 * result["steps_per_epoch"] for row in rows), "every variant trains every batch"
    assert set(result["bookkeeping_us"]) == {"input layer", "predicted classes and training tally"}
    assert "| the whole fit command |" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_the_serve_load_script_drives_both_servers_with_wrk_without_errors(capsys):
    serve_load = load_benchmark("serve_load")
    result = serve_load.main(["--seconds", "1", "--concurrency", "4", "--batching", "on"])
    rows = result["rows"]
    assert [row["model"] for row in rows] == ["checkpoint", "onnx"]
    assert all(row["requests"] > 0 and row["socket_errors"] == 0 and row["non_2xx"] == 0 for row in rows)
    assert all(0 < row["p50"] <= row["p95"] <= row["p99"] for row in rows)
    assert all(row["cpu_ms"] > 0 for row in rows), "answering costs the server CPU time"
    assert "| onnx | on | 4 |" in capsys.readouterr().out


def test_the_choosing_script_pairs_every_candidate_with_the_config_on_the_same_folds(capsys):
    choose = load_benchmark("choose_by_repeated_cv")
    rows = choose.main(
        ["--configs", "configs/fire_logistic.yaml", "--candidates", "input noise 0.1", "--folds", "2", "--repeats", "2",
         "--extra", "--trainer.max_epochs", "2"]
    )  # fmt: skip
    config, candidate = rows
    assert (config["candidate"], candidate["candidate"]) == ("the config", "input noise 0.1")
    assert config["val/loss difference"] == 0 and config["val/loss standard error"] == 0
    assert candidate["val/loss difference"] != 0, "noise changes the weights"
    assert candidate["val/loss difference"] == pytest.approx(candidate["val/loss"] - config["val/loss"])
    assert "| configs/fire_logistic.yaml | input noise 0.1 |" in capsys.readouterr().out
    table = pd.DataFrame({"val/loss": [0.1], "val/loss at refit epochs": [0.2], "val/acc": [0.9]})
    assert choose.judged(table, "refit")[["val/loss", "val/acc"]].values.tolist() == [[0.2, 0.9]], "as the refit trains"
    assert choose.judged(table, "kept")[["val/loss", "val/acc"]].values.tolist() == [[0.1, 0.9]]


def test_the_peers_are_scored_on_the_rows_cv_validates_and_paired_with_the_baseline(tmp_path, capsys):
    choose = load_benchmark("choose_by_repeated_cv")
    config = "configs/fire_recommended.yaml"
    cli = build_cli(
        ["--config", str(ROOT / config), "--data.n_folds", "2", "--data.fold", "1", "--data.fold_draw", "1", *in_root(tmp_path)],
        run=False,
    )
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    peers_rows = choose.fold_data(config, None, 2, 1, 1).splits
    for split in ("train", "val"):
        assert torch.equal(peers_rows[split][0], cli.datamodule.splits[split][0])
    seeded = build_cli(  # --data-seeds: another draw of the data, the same for both
        ["--config", str(ROOT / config), "--data.n_folds", "2", "--data.fold", "1", "--seed_everything", "7", *in_root(tmp_path)],
        run=False,
    ).datamodule
    seeded.prepare_data()
    seeded.setup("fit")
    assert torch.equal(choose.fold_data(config, None, 2, 1, 0, seed=7).splits["val"][0], seeded.splits["val"][0])
    assert not torch.equal(seeded.splits["val"][0], peers_rows["val"][0])
    draws = choose.over_seeds([pd.DataFrame({"repeat": [0, 1], "fold": [0, 0]})] * 2, repeats=2)
    assert draws["repeat"].tolist() == [0, 1, 2, 3], "each seed's draws count after the last seed's"
    rows = choose.main(
        ["--configs", config, "--candidates", "final weights", "--folds", "2", "--repeats", "2", "--peers",
         "--baseline", "final weights", "--extra", "--trainer.max_epochs", "1"]
    )  # fmt: skip
    by_name = {row["candidate"]: row for row in rows}
    final = by_name["final weights"]
    assert final["val/acc difference"] == 0
    assert "scikit-learn SVC (RBF, C and gamma by 5-fold CV)" in by_name
    for row in rows:
        assert 0.5 < row["val/acc"] <= 1
        assert row["val/acc difference"] == pytest.approx(row["val/acc"] - final["val/acc"])
    output = capsys.readouterr().out
    assert "minus final weights on the same folds" in output
    assert "| configs/fire_recommended.yaml | scikit-learn HistGradientBoostingClassifier |" in output


def test_the_recipe_ceiling_classifies_nearly_every_dragon(capsys):
    """A wrong shift or toe table would put a dragon's features in another class's place: accuracy near chance."""
    ceiling = load_benchmark("bayes_limit")
    results = ceiling.main(["--draws", "2"])
    assert all(0.9 < accuracy <= 1 for values in results.values() for accuracy in values)
    assert "| color |" in capsys.readouterr().out
