"""The perceptron rule against a plain numpy transcription of the tutorial's algorithm."""

import numpy as np
import pytest
import torch
from lightning import Trainer

from dragon_lightning.data.batches import TensorBatches
from dragon_lightning.models import Perceptron


def tutorial_perceptron(features, labels, num_classes, lr=1.0, epochs=50, tol=0.1):
    """The tutorial's loop: zero start, constant input 1 as bias, per-row updates where wrong."""
    x = np.c_[features.astype(np.float64), np.ones(len(features))]
    outputs = 1 if num_classes == 2 else num_classes
    weights = np.zeros((outputs, x.shape[1]))
    for epoch in range(epochs):
        rate = lr / (epoch + 1)
        moved = 0.0
        for row, label in zip(x, labels):
            activation = weights @ row
            if outputs == 1:
                target, predicted = np.array([label]), np.array([int(activation[0] > 0)])
            else:
                target, predicted = np.eye(outputs)[label], np.eye(outputs)[int(np.argmax(activation))]
            update = rate * np.outer(target - predicted, row)
            weights += update
            moved += np.abs(update).sum()
        if moved < tol:
            return weights, epoch + 1
    return weights, epochs


def dragons_like(num_classes, n=120, seed=0):
    """Overlapping classes on raw-feature scales, so the rule keeps correcting for many epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    toes = rng.choice([5, 6, 7, 8, 9, 10, 22], n) + 3 * labels
    length = rng.normal(200, 20, n) - 25 * labels
    return np.stack([toes, length], axis=1).astype(np.float32), labels


class Rows:
    """A datamodule-free fixture: the same rows, in the same order, every epoch."""

    def __init__(self, features, labels, batch_size):
        self.loader = TensorBatches(torch.from_numpy(features), torch.from_numpy(labels), batch_size)


def train(features, labels, num_classes, batch_size, online, epochs=50, tol=0.1):
    model = Perceptron(num_features=2, num_classes=num_classes, lr=1.0, tol=tol, online=online)
    trainer = Trainer(
        max_epochs=epochs,
        precision="64-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, train_dataloaders=Rows(features, labels, batch_size).loader)
    weights = torch.cat([model.linear.weight, model.linear.bias[:, None]], dim=1).detach().numpy()
    assert model.automatic_optimization != online, "only the online rule optimizes manually"
    return weights, trainer.current_epoch


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize(("batch_size", "online"), [(1, False), (1000, True), (7, True)])
def test_same_weights_as_the_tutorials_numpy_perceptron(num_classes, batch_size, online):
    """Batch size 1 through SGD on the perceptron criterion; chunks and the whole split row by row."""
    features, labels = dragons_like(num_classes)
    expected, expected_epochs = tutorial_perceptron(features, labels, num_classes, epochs=30)
    weights, epochs = train(features, labels, num_classes, batch_size, online, 30, 0.1)
    assert np.abs(expected).sum() > 0
    np.testing.assert_allclose(weights, expected, rtol=1e-12, atol=1e-9)
    assert epochs == expected_epochs


@pytest.mark.parametrize("num_classes", [2, 3])
def test_training_stops_once_an_epoch_moves_the_weights_less_than_tol(num_classes):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, num_classes, 60)
    features = np.stack([labels * 10.0 + rng.random(60), rng.random(60)], axis=1).astype(np.float32)
    expected, expected_epochs = tutorial_perceptron(features, labels, num_classes, epochs=200)
    weights, epochs = train(features, labels, num_classes, 1000, True, epochs=200)
    assert expected_epochs < 200, "separable data: the reference stops early"
    assert epochs == expected_epochs
    np.testing.assert_allclose(weights, expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_batch_rule_sums_the_rows_corrections_with_batch_start_weights(num_classes):
    features, labels = dragons_like(num_classes, n=40)
    x = np.c_[features.astype(np.float64), np.ones(len(features))]
    expected = np.zeros((1 if num_classes == 2 else num_classes, 3))
    for epoch in range(3):  # whole-split batches, lr 1/(epoch + 1), the rule written out
        activation = x @ expected.T
        if num_classes == 2:
            correction = (labels - (activation[:, 0] > 0))[:, None]
        else:
            correction = np.eye(num_classes)[labels] - np.eye(num_classes)[activation.argmax(axis=1)]
        expected += correction.T @ x / (epoch + 1)
    weights, _ = train(features, labels, num_classes, batch_size=40, online=False, epochs=3, tol=None)
    assert np.abs(expected).sum() > 0
    np.testing.assert_allclose(weights, expected, rtol=1e-12, atol=1e-9)
