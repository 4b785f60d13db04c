"""Lightning's own training features, used from the CLI on the shipped configs: schedulers and the
learning-rate monitor, clipping, accumulation, early stopping, step limits, validation inside epochs,
and the learning-rate finder."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from clihelpers import config, expect_one_line_error, files_under, last_checkpoint, run
from lightning import Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.model_summary import ModelSummary
from test_cli import read_events

from dragon_lightning.data.batches import TensorBatches
from dragon_lightning.models import LogisticRegression, MLPClassifier, Perceptron
from dragon_lightning.models.metrics import TrainingTally
from dragon_lightning.tuning import SKIP_BEGIN, draw, suggest

QUICK = ["--figures.enabled", "false", "--test_after_fit", "false"]


def fit(root: Path, *options: str, name: str = "color_mlp.yaml"):
    return run(
        "fit",
        "--config",
        config(name),
        *QUICK,
        *options,
        "--trainer.default_root_dir",
        str(root),
        "--data.data_dir",
        "null",
    )


def logged(root: Path, tag: str) -> list[float]:
    return read_events(root / "lightning_logs" / "version_0")["scalars"][tag]


def test_a_step_scheduler_in_a_config_halves_the_logged_learning_rate_every_5_epochs(tmp_path):
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(
        "model:\n  init_args:\n    scheduler:\n      class_path: torch.optim.lr_scheduler.StepLR\n"
        "      init_args: {step_size: 5, gamma: 0.5}\n"
    )
    cli = fit(tmp_path, "--config", str(schedule), "--trainer.max_epochs", "12")
    assert cli.trainer.num_training_batches == 15, "the progress bar counts minibatches"
    assert logged(tmp_path, "lr-Adam") == pytest.approx([0.003] * 5 + [0.0015] * 5 + [0.00075] * 2)


def test_reduce_on_plateau_follows_the_validation_loss(tmp_path):
    fit(
        tmp_path,
        "--trainer.max_epochs",
        "6",
        "--model.init_args.scheduler",
        "torch.optim.lr_scheduler.ReduceLROnPlateau",
        # Ask for a halving of val/loss every epoch: it cannot keep up, so the rate falls.
        "--model.init_args.scheduler.init_args.threshold",
        "0.5",
        "--model.init_args.scheduler.init_args.patience",
        "0",
    )
    rates = logged(tmp_path, "lr-Adam")
    assert rates[0] == pytest.approx(0.003) and rates[-1] < rates[0]
    assert all(later <= earlier for earlier, later in itertools.pairwise(rates))


class WeightChange(Callback):
    """The largest change of any weight over the run."""

    def on_train_start(self, trainer, pl_module):
        self.start = {name: p.detach().clone() for name, p in pl_module.named_parameters()}

    def on_train_end(self, trainer, pl_module):
        self.largest = max(float((p.detach() - self.start[name]).abs().max()) for name, p in pl_module.named_parameters())


def weight_change(cli) -> float:
    return next(c for c in cli.trainer.callbacks if isinstance(c, WeightChange)).largest


def test_clipping_bounds_every_update_and_accumulation_counts_optimizer_steps(tmp_path):
    sgd = [
        "--model.init_args.optimizer",
        "torch.optim.SGD",
        "--model.init_args.optimizer.init_args.lr",
        "0.1",
        "--trainer.max_epochs",
        "1",
        "--trainer.callbacks+=test_trainer_features.WeightChange",
    ]
    free = fit(tmp_path / "free", *sgd)
    clipped = fit(tmp_path / "clipped", *sgd, "--trainer.gradient_clip_val", "0.001", "--trainer.accumulate_grad_batches", "3")
    assert free.trainer.global_step == 15 and clipped.trainer.global_step == 5
    assert weight_change(clipped) <= 5 * 0.1 * 0.001 * (1 + 1e-5) < weight_change(free) / 10


def test_early_stopping_ends_the_run_and_the_best_checkpoint_is_tested(tmp_path):
    cli = run(
        "fit",
        "--config",
        config("color_mlp.yaml"),
        "--figures.enabled",
        "false",
        "--trainer.max_epochs",
        "300",
        "--model.init_args.optimizer.init_args.lr",
        "0.03",
        "--trainer.callbacks+=EarlyStopping",
        "--trainer.callbacks.monitor",
        "val/loss",
        "--trainer.callbacks.patience",
        "3",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--data.data_dir",
        "null",
    )
    assert cli.trainer.current_epoch < 299, "stopped early"
    best = cli.trainer.checkpoint_callback.best_model_path
    assert best and cli.trainer.ckpt_path == best
    assert "test/acc" in cli.trainer.callback_metrics


def test_max_steps_and_validation_inside_epochs(tmp_path):
    cli = fit(tmp_path, "--trainer.max_steps", "37", "--trainer.val_check_interval", "5")
    assert cli.trainer.global_step == 37
    # 15 batches an epoch: validation after batches 5, 10 and 15 of epochs 0 and 1, then 5 of epoch 2 (step 35).
    assert len(logged(tmp_path, "val/loss")) == 7


def test_lr_find_prints_a_suggestion_and_writes_its_plot(tmp_path, capsys):
    run(
        "lr_find",
        "--config",
        config("color_mlp.yaml"),
        "--trainer.default_root_dir",
        str(tmp_path),
        "--data.data_dir",
        "null",
        "--trainer.enable_progress_bar",
        "false",
    )
    output = capsys.readouterr()
    lines = [line for line in output.out.splitlines() if line.startswith("suggested learning rate: ")]
    assert len(lines) == 1
    suggestion = float(lines[0].split(": ")[1].split()[0])
    assert 1e-4 < suggestion < 1e-1, "near the config's own 3e-3, not Lightning's noisy steepest fall"
    tried = int(lines[0].rsplit(" of ", 1)[1].split()[0])
    assert tried >= 90, "every rate tried (fewer only where the loss blew up at the end)"
    assert "weights_only" not in output.err, "the finder's own checkpoint loads as data, through the gate"
    plot = tmp_path / "lightning_logs" / "version_0" / "lr_find.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [path.name for path in tmp_path.iterdir()] == ["lightning_logs"], "nothing left beside the run folder"


@pytest.mark.parametrize(
    "options, message",
    [
        (["--trainer.max_epochs", "2"], "--trainer.max_epochs 2 allows 30 optimizer steps (15 an epoch; at least 7 epochs)"),
        (
            ["--trainer.max_epochs", "12", "--trainer.accumulate_grad_batches", "4"],
            "allows 48 optimizer steps (4 an epoch; at least 25 epochs)",
        ),
        (
            ["--trainer.max_epochs", "20", "--trainer.limit_train_batches", "0.25"],
            "allows 60 optimizer steps (3 an epoch; at least 34 epochs)",
        ),
        (["--trainer.max_steps", "50"], "--trainer.max_steps 50 allows 50 optimizer steps, and the finder tries 100"),
        (["--trainer.max_epochs", "0"], "--trainer.max_epochs 0 allows 0 optimizer steps"),
    ],
)
def test_lr_find_refuses_limits_that_would_cut_the_finder_short(options, message, scratch, capfd):
    args = ["lr_find", "--config", config("color_mlp.yaml"), *options]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, message)


def test_the_lr_find_plot_shows_the_curve_its_suggestion_is_read_from():
    rates = list(np.logspace(-6, 0, 100))
    losses = [0.1] * SKIP_BEGIN + list(np.linspace(1.0, 0.5, 60)) + list(np.linspace(0.5, 3.0, 100 - 60 - SKIP_BEGIN))
    suggestion = suggest(rates, losses)  # the first, lowest points rest on a step or two: left out
    curve = draw(rates, losses, suggestion).axes[0].lines[0]
    lowest = curve.get_xdata()[np.argmin(curve.get_ydata())]
    assert lowest == pytest.approx(10 * suggestion) and min(curve.get_xdata()) == pytest.approx(rates[SKIP_BEGIN])


def test_lr_find_refuses_the_online_perceptron(tmp_path, capfd):
    with pytest.raises(SystemExit) as exit_info:
        run("lr_find", "--config", config("tutorial/fire_perceptron.yaml"), "--trainer.default_root_dir", str(tmp_path))
    assert exit_info.value.code == 2
    assert "lr_find needs an optimizer that Lightning runs" in capfd.readouterr().err


def runs_compiled(network: torch.nn.Module) -> bool:
    """Whether a forward pass of ``network`` goes through torch.compile (its hooks run while Dynamo traces)."""
    seen: list[bool] = []
    handle = network[0].register_forward_pre_hook(lambda module, args: seen.append(torch.compiler.is_compiling()))
    with torch.no_grad():
        network(torch.zeros(3, 2))
    handle.remove()
    return any(seen)


def test_a_compiled_network_trains_and_its_checkpoint_loads_uncompiled(tmp_path):
    compiled = fit(tmp_path, "--model.init_args.compile", "true", "--trainer.max_epochs", "1")
    assert runs_compiled(compiled.model.net), "the network runs through torch.compile"
    checkpoint = torch.load(last_checkpoint(compiled), weights_only=True)
    plain = MLPClassifier(num_classes=3)
    plain.load_state_dict(checkpoint["state_dict"])  # strict: the keys stay net.0.weight, ...
    assert not runs_compiled(plain.net)


def test_lr_find_help_names_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run("lr_find", "--help")
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: dragon-lightning lr_find") and "--model.help" in help_text


def test_lr_find_suggests_a_tenth_of_the_lowest_smoothed_loss():
    from dragon_lightning.tuning import SKIP_BEGIN, suggest

    rates = [1e-9] * SKIP_BEGIN + [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    losses = [0.1] * SKIP_BEGIN + [2.0, 1.5, 0.9, 0.4, float("nan"), 0.01]  # the warm-up and the blow-up are left out
    assert suggest(rates, losses) == pytest.approx(1e-3)


class LossBeforeEachStep(Callback):
    """The model's loss and rows predicted right on each training batch, just before its step."""

    def __init__(self) -> None:
        self.loss_sum = self.right = self.rows = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        features, labels = batch
        with torch.no_grad():
            logits = pl_module(features)
        self.loss_sum += float(pl_module.loss(logits, labels)) * len(labels)
        self.right += float((pl_module.predict_classes(logits) == labels).sum())
        self.rows += len(labels)


def test_training_metrics_count_each_batch_once_as_it_was_before_its_step_even_under_lbfgs(tmp_path):
    cli = fit(
        tmp_path,
        "--model.init_args.optimizer",
        "torch.optim.LBFGS",
        "--model.init_args.optimizer.init_args.max_iter",
        "5",
        "--data.batch_size",
        "64",
        "--trainer.max_epochs",
        "1",
        "--trainer.callbacks+=test_trainer_features.LossBeforeEachStep",
        name="fire_logistic.yaml",
    )
    before = next(c for c in cli.trainer.callbacks if isinstance(c, LossBeforeEachStep))
    assert before.rows == len(cli.datamodule.splits["train"][1])
    assert logged(tmp_path, "train/loss")[-1] == pytest.approx(before.loss_sum / before.rows, rel=1e-5)
    assert logged(tmp_path, "train/acc")[-1] == pytest.approx(before.right / before.rows, rel=1e-6)


def test_the_training_tally_sums_in_bounded_memory_and_names_the_first_diverged_batch():
    tally = TrainingTally()
    for batch in range(3000):
        tally.add(batch, torch.tensor(float(batch % 7)), torch.tensor(batch % 3), 10)
        tally.add(batch, torch.tensor(99.0), torch.tensor(0), 10)  # a closure optimizer's second evaluation
        assert len(tally.pending) < TrainingTally.most_pending
    assert tally.settle() is None
    assert tally.rows == 30_000
    assert float(tally.loss_sum) == 10 * sum(batch % 7 for batch in range(3000))
    assert float(tally.right) == sum(batch % 3 for batch in range(3000))
    diverged = TrainingTally()
    for batch in range(3000):
        diverged.add(batch, torch.tensor(float("inf") if batch in (1500, 2500) else 1.0), torch.tensor(1), 1)
    assert diverged.settle() == 1500


@pytest.mark.parametrize(
    "name, options, reason",
    [
        ("tutorial/fire_perceptron.yaml", ["--model.init_args.tol", "1e9"], "the perceptron's tol"),
        (
            "color_mlp_plateau.yaml",
            ["--trainer.callbacks.init_args.patience", "1", "--trainer.callbacks.init_args.min_delta", "100"],
            "EarlyStopping: val/loss did not improve in 1 checks",
        ),
    ],
    ids=["tol", "EarlyStopping"],
)
def test_a_run_that_stops_early_says_so_and_why(name, options, reason, tmp_path, capsys):
    fit(tmp_path, *options, "--trainer.max_epochs", "30", name=name)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("stopped early")]
    assert len(lines) == 1 and " of 30 epochs: " in lines[0] and reason in lines[0], lines


@pytest.mark.parametrize("num_classes", [2, 3])
def test_label_smoothing_softens_the_training_targets_only(num_classes):
    model = MLPClassifier(num_classes=num_classes, hidden_sizes=[4], label_smoothing=0.2)
    logits = torch.randn(6, 1 if num_classes == 2 else num_classes)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    if num_classes == 2:
        smoothed = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels * 0.8 + 0.1)
        plain = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    else:
        one_hot = torch.nn.functional.one_hot(labels, 3) * 0.8 + 0.2 / 3
        smoothed = -(one_hot * logits.log_softmax(dim=1)).sum(dim=1).mean()
        plain = torch.nn.functional.cross_entropy(logits, labels)
    model.train()
    torch.testing.assert_close(model.loss(logits, labels), smoothed)
    model.eval()  # validation and test report the plain loss
    torch.testing.assert_close(model.loss(logits, labels), plain)


@pytest.mark.parametrize("batch_size", [7, 64])
def test_the_evaluation_loss_is_the_mean_over_rows_whatever_the_batches(batch_size):
    """A short last batch counts by its rows: validation and test losses, which choose checkpoints and
    score folds, do not depend on the evaluation batch size."""
    torch.manual_seed(0)
    model = MLPClassifier(num_classes=3, hidden_sizes=[8])
    features, labels = torch.randn(100, 2) * 10 + 100, torch.randint(0, 3, (100,))
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.test(model, TensorBatches(features, labels, batch_size), verbose=False)
    with torch.no_grad():
        expected = float(model.loss(model(features), labels))
    assert metrics["test/loss"] == pytest.approx(expected, rel=1e-6)


def test_input_noise_perturbs_training_batches_only():
    torch.manual_seed(0)
    model = MLPClassifier(num_classes=3, hidden_sizes=[8], input_noise=0.5)
    features = torch.tensor([[7.0, 150.0], [10.0, 200.0]])
    model.train()
    assert not torch.equal(model(features), model(features)), "a new draw of noise every batch"
    model.eval()
    torch.testing.assert_close(model(features), model.logits_module()(features))
    model.input_noise = 0.0
    model.train()
    torch.testing.assert_close(model(features), model.logits_module()(features))


def test_the_regularizers_are_options_of_a_fit(tmp_path):
    options = ["--model.init_args.label_smoothing", "0.1", "--model.init_args.input_noise", "0.2", "--trainer.max_epochs", "2"]
    cli = fit(tmp_path, *options)
    assert (cli.model.label_smoothing, cli.model.input_noise) == (0.1, 0.2)
    assert float(cli.trainer.callback_metrics["val/acc"]) > 0.5


def test_stochastic_weight_averaging_runs_from_the_command_line_and_its_run_config_trains_again(tmp_path):
    """Lightning's SWA callback defaults to a torch.device: config.yaml holds it as text, and the run's
    own config.yaml trains again as written."""
    swa = ["--trainer.callbacks+=StochasticWeightAveraging", "--trainer.callbacks.swa_lrs", "0.001"]
    fit(tmp_path / "first", *swa, "--trainer.max_epochs", "2", name="fire_recommended.yaml")
    saved = tmp_path / "first" / "lightning_logs" / "version_0" / "config.yaml"
    assert "device: cpu" in saved.read_text()
    again = run("fit", "--config", str(saved), "--trainer.default_root_dir", str(tmp_path / "again"))
    assert any(type(callback).__name__ == "StochasticWeightAveraging" for callback in again.trainer.callbacks)


@pytest.mark.parametrize(
    "model_class, num_classes, multiply_adds",
    [
        (MLPClassifier, 3, 2 * 10 + 10 * 20 + 20 * 1000 + 1000 * 3),  # the tutorial's 2-10-20-1000-3
        (LogisticRegression, 2, 2 * 1),
        (Perceptron, 3, 2 * 3),
    ],
)
def test_the_model_summary_counts_each_layers_flops_and_shapes(model_class, num_classes, multiply_adds):
    """Lightning's summary, printed at the start of every fit, measures a model on its example row:
    without one it showed 0 FLOPs and no shapes."""
    summary = ModelSummary(model_class(num_classes=num_classes), max_depth=1)
    assert summary.total_flops == 2 * multiply_adds
    outputs = 1 if num_classes == 2 else num_classes
    shapes = [(given, out) for given, out in zip(summary.in_sizes, summary.out_sizes) if out != "?"]
    assert shapes[0] == ([1, 2], [1, 2]) and shapes[-1] == ([1, 2], [1, outputs])  # the input layer, the network
