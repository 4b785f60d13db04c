import lightning as L
import numpy as np
import pytest
import torch

from dragon_lightning.data import DragonDataModule, generate_dragons, tutorial_features
from dragon_lightning.data.batches import TensorBatches
from dragon_lightning.data.features import TOES
from dragon_lightning.models import MLPClassifier
from dragon_lightning.models.inputs import migrate_legacy_statistics


def test_features_follow_the_tutorials_recipe():
    table = generate_dragons(48_000, seed=0)
    features, labels = tutorial_features(table, "fire", seed=0)
    fire = labels == 1
    toes, length = features[:, 0], features[:, 1]
    assert set(np.unique(toes)) <= set(TOES)
    assert abs((toes[fire] == 5).mean() - 0.3) < 0.01 and abs((toes[~fire] == 22).mean() - 0.3) < 0.01
    raw = table["bodyLength"].to_numpy(np.float32)
    np.testing.assert_allclose(length - raw, np.where(fire, -30, 30), atol=1e-3)

    color_features, color_labels = tutorial_features(table, "color", seed=0)
    np.testing.assert_array_equal(color_labels, table["color"].cat.codes)
    shift = color_features - features
    assert np.abs(shift[color_labels == 0] - [-3, 0]).max() < 1e-3
    assert np.abs(shift[color_labels == 1] - [7, -50]).max() < 1e-3
    assert np.abs(shift[color_labels == 2] - [0, 30]).max() < 1e-3


def make(tmp_path, **kwargs):
    data = DragonDataModule(data_dir=tmp_path, seed=kwargs.pop("seed", 0), **kwargs)
    data.prepare_data()
    data.setup("fit")
    return data


def test_splits_are_disjoint_stratified_and_seeded(tmp_path):
    data = make(tmp_path, task="color")
    sizes = {name: len(split[1]) for name, split in data.splits.items()}
    assert sizes == {"test": 192, "val": 57, "train": 231}
    for _, labels in data.splits.values():
        shares = torch.bincount(labels, minlength=3) / len(labels)
        assert (shares - 1 / 3).abs().max() < 0.01
    _, labels = tutorial_features(data.load_table(), "color", 0)
    rows = [set(indices.tolist()) for indices in vars(data.split_indices(labels)).values()]
    assert sum(map(len, rows)) == len(labels) and set.union(*rows) == set(range(len(labels))), "every row in exactly one split"
    again = make(tmp_path, task="color")
    assert torch.equal(again.splits["test"][0], data.splits["test"][0])
    other = make(tmp_path, task="color", seed=1)
    assert not torch.equal(other.splits["test"][0], data.splits["test"][0])


def fitted_model(data: DragonDataModule) -> MLPClassifier:
    """A model after one training step on ``data``: what the data module handed its input layer."""
    model = MLPClassifier(num_classes=data.num_classes, class_names=data.class_names, hidden_sizes=[4])
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    return model


def test_the_model_standardizes_with_the_training_split_statistics(tmp_path):
    data = make(tmp_path)
    model = fitted_model(data)
    train = model.inputs(data.splits["train"][0])
    torch.testing.assert_close(train.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(train.std(0), torch.ones(2), atol=1e-5, rtol=0)
    assert model.inputs(data.splits["test"][0]).mean(0).abs().max() > 1e-4
    features = data.splits["train"][0]
    torch.testing.assert_close(model.inputs.low, features.min(0).values)
    torch.testing.assert_close(model.inputs.high, features.max(0).values)
    raw = fitted_model(make(tmp_path, standardize=False))
    assert torch.equal(raw.inputs(raw_rows := data.splits["train"][0]), raw_rows)


def test_the_statistics_travel_in_the_weights_and_old_checkpoints_migrate(tmp_path):
    data = make(tmp_path)
    model = fitted_model(data)
    restored = MLPClassifier(num_classes=3, hidden_sizes=[4])
    restored.load_state_dict(model.state_dict())
    features = torch.tensor([[7.0, 180.0]])
    torch.testing.assert_close(restored(features), model(features))
    # The layout of earlier versions: the statistics beside the weights, under the data module's entry.
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("inputs.")}
    legacy = {
        "state_dict": state,
        "DragonDataModule": {
            "task": "color",
            "feature_mean": model.inputs.mean.clone(),
            "feature_std": model.inputs.std.clone(),
            "feature_min": model.inputs.low.clone(),
            "feature_max": model.inputs.high.clone(),
        },
    }
    migrate_legacy_statistics(legacy, "inputs")
    old = MLPClassifier(num_classes=3, hidden_sizes=[4])
    old.load_state_dict(legacy["state_dict"])
    torch.testing.assert_close(old(features), model(features))


def test_generated_table_is_written_once_and_never_clobbered(tmp_path):
    path = make(tmp_path).generated_csv_path
    written = path.read_bytes()
    make(tmp_path)  # a second run with the same size and seed
    assert path.read_bytes() == written
    path.write_text("someone else's file\n")
    with pytest.raises(ValueError, match="exists with different content"):
        make(tmp_path)
    assert path.read_text() == "someone else's file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_batches_are_slices_of_whole_tensors():
    features, labels = torch.arange(20.0).reshape(10, 2), torch.arange(10)
    batches = list(TensorBatches(features, labels, 4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), features)


def test_a_resumed_loader_starts_at_the_next_batch():
    labels = torch.arange(30)
    features = labels[:, None].float()
    loader = TensorBatches(features, labels, 3, shuffle=True, seed=1)
    iterator = iter(loader)
    next(iterator), next(iterator)
    state = loader.state_dict()
    assert state["batches"] == 2
    resumed = TensorBatches(features, labels, 3, shuffle=True, seed=1)
    resumed.load_state_dict(state)
    rest = torch.cat([batch[1] for batch in resumed])
    everything = torch.cat([b[1] for b in TensorBatches(features, labels, 3, shuffle=True, seed=1)])
    assert torch.equal(rest, everything[6:])


def test_shuffled_epochs_differ_and_depend_only_on_seed_and_epoch():
    """Lightning names each epoch before it starts (``set_epoch``, as for a DistributedSampler)."""
    labels = torch.arange(50)
    loader = TensorBatches(labels[:, None].float(), labels, 50, shuffle=True, seed=3)
    first = next(iter(loader))[1]
    loader.sampler.set_epoch(1)
    second = next(iter(loader))[1]
    assert not torch.equal(first, second)
    assert loader.state_dict() == {"epoch": 1, "batches": 1}
    fresh = TensorBatches(labels[:, None].float(), labels, 50, shuffle=True, seed=3)
    fresh.sampler.set_epoch(1)
    assert torch.equal(next(iter(fresh))[1], second)
    assert torch.equal(next(iter(TensorBatches(labels[:, None].float(), labels, 50, shuffle=True, seed=3)))[1], first)


def test_a_loader_restored_from_an_epoch_end_starts_the_next_epoch_whole():
    """A checkpoint written at the end of epoch 0 holds the loader at its last batch; Lightning does not
    restore a loader's state there (the epoch is complete) but names epoch 1, whose order is drawn anew."""
    labels = torch.arange(30)
    loader = TensorBatches(labels[:, None].float(), labels, 10, shuffle=True, seed=3)
    list(loader)
    loader.sampler.set_epoch(1)
    epoch_1 = torch.cat([batch[1] for batch in loader])
    resumed = TensorBatches(labels[:, None].float(), labels, 10, shuffle=True, seed=3)
    resumed.load_state_dict({"epoch": 0, "batches": 3})
    resumed.sampler.set_epoch(1)
    assert torch.equal(torch.cat([batch[1] for batch in resumed]), epoch_1)


@pytest.mark.parametrize("n", [10, 11, 13])
def test_ranks_see_their_own_rows(n):
    labels = torch.arange(n)
    evaluation = [TensorBatches(labels[:, None].float(), labels, 3, rank=r, world_size=2) for r in range(2)]
    seen = torch.cat([b[1] for loader in evaluation for b in loader])
    assert sorted(seen.tolist()) == list(range(n)), "every test row exactly once across ranks"
    training = [
        TensorBatches(labels[:, None].float(), labels, 3, rank=r, world_size=2, shuffle=True, drop_uneven=True) for r in range(2)
    ]
    assert len(training[0]) == len(training[1])
    rows = [torch.cat([b[1] for b in loader]) for loader in training]
    assert not set(rows[0].tolist()) & set(rows[1].tolist())
