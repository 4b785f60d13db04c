"""Several minibatches per training step: the updates of one minibatch per step, with Lightning's
fixed per-step cost shared."""

import pytest
import torch

from clihelpers import config, last_weights, run


def fit(root, name, minibatches_per_step, *options):
    return run(
        "fit", "--config", config(name), "--trainer.max_epochs", "3", "--figures.enabled", "false",
        "--test_after_fit", "false", "--data.minibatches_per_step", str(minibatches_per_step), *options,
        "--trainer.default_root_dir", str(root), "--data.data_dir", "null",
    )


@pytest.mark.parametrize("name", ["color_mlp.yaml", "fire_logistic.yaml"])
def test_grouped_minibatches_train_exactly_as_single_ones(name, tmp_path):
    single, grouped = (fit(tmp_path / str(k), name, k) for k in (1, 4))
    assert single.model.automatic_optimization and not grouped.model.automatic_optimization
    assert grouped.trainer.num_training_batches < single.trainer.num_training_batches
    assert grouped.trainer.global_step == single.trainer.global_step > 0, "one optimizer step per minibatch"
    expected, weights = last_weights(single), last_weights(grouped)
    assert all(torch.equal(expected[name], weights[name]) for name in expected)
    metrics, expected_metrics = grouped.trainer.callback_metrics, single.trainer.callback_metrics
    for metric in ("train/acc", "val/acc", "val/loss"):
        assert float(metrics[metric]) == float(expected_metrics[metric]), metric
    assert float(metrics["train/loss"]) == pytest.approx(float(expected_metrics["train/loss"]), rel=1e-6)


def test_max_steps_stops_inside_a_group(tmp_path):
    single, grouped = (fit(tmp_path / str(k), "color_mlp.yaml", k, "--trainer.max_steps", "7") for k in (1, 5))
    assert grouped.trainer.global_step == single.trainer.global_step == 7
    expected, weights = last_weights(single), last_weights(grouped)
    assert all(torch.equal(expected[name], weights[name]) for name in expected)
