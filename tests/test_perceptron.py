"""The perceptron rule against a plain numpy transcription of the tutorial's algorithm."""

import numpy as np
import pytest
import torch
from lightning import Trainer

from dragon_lightning.data.batches import TensorBatches
from dragon_lightning.models import LinearClassifier


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

    def __init__(self, features, labels, batch_size, minibatches_per_step=1):
        self.loader = TensorBatches(
            torch.from_numpy(features), torch.from_numpy(labels), batch_size, minibatches_per_step=minibatches_per_step
        )


def train(features, labels, num_classes, batch_size, online, epochs=50, tol=0.1, minibatches_per_step=1):
    model = LinearClassifier(
        num_features=2, num_classes=num_classes, minibatches_per_step=minibatches_per_step,
        rule="perceptron", lr=1.0, tol=tol, online=online,
    )
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
    trainer.fit(model, train_dataloaders=Rows(features, labels, batch_size, minibatches_per_step).loader)
    weights = torch.cat([model.linear.weight, model.linear.bias[:, None]], dim=1).detach().numpy()
    return weights, trainer.current_epoch


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize(
    ("batch_size", "online", "minibatches_per_step"), [(1, False, 1), (1000, True, 1), (7, True, 1), (1, False, 16), (7, True, 5)]
)
def test_same_weights_as_the_tutorials_numpy_perceptron(num_classes, batch_size, online, minibatches_per_step):
    features, labels = dragons_like(num_classes)
    expected, expected_epochs = tutorial_perceptron(features, labels, num_classes, epochs=30)
    weights, epochs = train(features, labels, num_classes, batch_size, online, 30, 0.1, minibatches_per_step)
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


def test_batch_rule_sums_the_rows_corrections_with_batch_start_weights():
    features, labels = dragons_like(2, n=40)
    weights, _ = train(features, labels, 2, batch_size=40, online=False, epochs=1, tol=None)
    x = np.c_[features.astype(np.float64), np.ones(len(features))]
    # Zero start: every row is predicted 0, so each fire row adds itself once.
    np.testing.assert_allclose(weights[0], x[labels == 1].sum(axis=0), rtol=1e-12)
