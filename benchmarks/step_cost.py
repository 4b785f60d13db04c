"""Our cost per training step above a bare LightningModule in a bare Trainer, piece by piece.

Every variant trains the MLP 2-10-20-1000-3 with Adam on the same generated color dragons and batch
size, through the same minibatch loader, in one process, and is timed on its training batches alone
(validation excluded): the best epoch after a warm-up one, repeated in turns so that load from
elsewhere on the machine hits every variant alike, each turn in another order. Beside the ratio of
the best epochs, each variant's ratio to the bare Trainer within every turn (minutes apart at most)
gives a median and a range: how far the machine's noise moves the figure. Each row adds one thing
to the row above:

    bare LightningModule, bare Trainer  (no logger, checkpoint, progress bar or summary)
    + dragon-lightning's MLPClassifier  (input layer, per-epoch metrics, divergence watch)
    + TensorBoard logger  (Lightning's default log_every_n_steps, as the configs leave it)
    + progress bar, redrawn every 10 steps
    + checkpoints (best by val/loss, last.ckpt at each epoch end)
    + learning-rate monitor
    + figures (boundary snapshots)
    the whole 'dragon-lightning fit --config configs/color_mlp.yaml'

    python benchmarks/step_cost.py --n 200000 --batch-size 256 --repeats 8
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from dragon_lightning.callbacks import TutorialFigures
from dragon_lightning.checkpoints.callback import ResumableCheckpoint
from dragon_lightning.commands import cli_main
from dragon_lightning.data import DragonDataModule
from dragon_lightning.models import MLPClassifier

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = (10, 20, 1000)
LR = 0.003


class EpochTimer(L.Callback):
    """Wall time of each epoch's training batches, and how many batches were trained in all."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.batches = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if batch_idx + 1 == trainer.num_training_batches:
            self.seconds.append(time.perf_counter() - self._started)


class BareMLP(L.LightningModule):
    """What a user would write: the network, cross-entropy, Adam; nothing logged."""

    def __init__(self) -> None:
        super().__init__()
        widths = [2, *HIDDEN, 3]
        layers: list[torch.nn.Module] = []
        for inputs, outputs in itertools.pairwise(widths):
            layers += [torch.nn.Linear(inputs, outputs), torch.nn.ReLU()]
        self.net = torch.nn.Sequential(*layers[:-1])

    def training_step(self, batch, batch_idx):
        features, labels = batch
        return F.cross_entropy(self.net(features), labels)

    def validation_step(self, batch, batch_idx):
        features, labels = batch
        F.cross_entropy(self.net(features), labels)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=LR)


def ours(data: DragonDataModule) -> MLPClassifier:
    return MLPClassifier(
        num_classes=3, class_names=data.class_names, hidden_sizes=HIDDEN, optimizer=lambda p: torch.optim.Adam(p, lr=LR)
    )


def trainer_run(
    model_factory: Callable[[DragonDataModule], L.LightningModule],
    data: DragonDataModule,
    epochs: int,
    root: Path,
    pieces: set[str],
) -> EpochTimer:
    timer = EpochTimer()
    callbacks: list[L.Callback] = [timer]
    if "progress" in pieces:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    if "checkpoints" in pieces:
        checkpoint = ResumableCheckpoint(monitor="val/loss", mode="min")
        callbacks += [checkpoint, *checkpoint.resume_points]
    if "lr_monitor" in pieces:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if "figures" in pieces:
        callbacks.append(TutorialFigures())
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        default_root_dir=root,
        callbacks=callbacks,
        logger=TensorBoardLogger(root, name="") if "logger" in pieces else False,
        enable_checkpointing="checkpoints" in pieces,
        enable_progress_bar="progress" in pieces,
        enable_model_summary=False,
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # as the whole command's below
        trainer.fit(model_factory(data), datamodule=data)
    return timer


def whole_command(n: int, batch_size: int, epochs: int, root: Path) -> EpochTimer:
    timer_module = importlib.import_module("step_cost")  # the CLI loads EpochTimer from this file as a module
    options = [
        "--data.n_dragons",
        str(n),
        "--data.batch_size",
        str(batch_size),
        "--test_after_fit",
        "false",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.accelerator",
        "cpu",
        "--data.seed",
        "0",
        "--model.init_args.optimizer.init_args.lr",
        str(LR),
        "--trainer.default_root_dir",
        str(root),
        "--data.data_dir",
        str(root / "data"),
        "--trainer.callbacks+=step_cost.EpochTimer",
    ]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cli = cli_main(["fit", "--config", str(ROOT / "configs/color_mlp.yaml"), *options])
    return next(c for c in cli.trainer.callbacks if isinstance(c, timer_module.EpochTimer))


def bookkeeping_microseconds(data: DragonDataModule, batch_size: int, steps: int = 3000) -> dict[str, float]:
    """The model's own work per training step beside the network, timed alone on real batches: the input
    layer, and the predicted classes with the training tally (its sums at each epoch's end included)."""
    model = ours(data)
    model.inputs.fit(data.splits["train"][0])
    features, labels = data.splits["train"][0][:batch_size], data.splits["train"][1][:batch_size]
    with torch.no_grad():
        logits = model(features)
        loss = model.loss(logits, labels)
    epoch = len(data.splits["train"][1]) // batch_size

    def input_layer(step: int) -> None:
        model.inputs(features)

    def tally(step: int) -> None:
        model.update_metrics("train", model.predict_classes(logits), labels, loss, step)
        if step % epoch == epoch - 1:
            model.tally.settle()

    timings = {}
    for name, piece in (("input layer", input_layer), ("predicted classes and training tally", tally)):
        started = time.perf_counter()
        for step in range(steps):
            piece(step)
        timings[name] = 1e6 * (time.perf_counter() - started) / steps
    return timings


VARIANTS: list[tuple[str, Callable | None, set[str]]] = [
    ("bare LightningModule, bare Trainer", lambda data: BareMLP(), set()),
    ("+ dragon-lightning's MLPClassifier", ours, set()),
    ("+ TensorBoard logger", ours, {"logger"}),
    ("+ progress bar (every 10 steps)", ours, {"logger", "progress"}),
    ("+ checkpoints (best, last.ckpt each epoch)", ours, {"logger", "progress", "checkpoints"}),
    ("+ learning-rate monitor", ours, {"logger", "progress", "checkpoints", "lr_monitor"}),
    ("+ figures (boundary snapshots)", ours, {"logger", "progress", "checkpoints", "lr_monitor", "figures"}),
    ("the whole fit command", None, set()),
]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="generated dragons (60%% of them train)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is the warm-up")
    parser.add_argument("--repeats", type=int, default=8, help="turns of every variant (8: each takes every place once)")
    parser.add_argument("--threads", type=int, help="PyTorch's CPU threads for every variant (default: PyTorch's own)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"PyTorch CPU threads: {torch.get_num_threads()}", file=sys.stderr)
    sys.path.insert(0, str(Path(__file__).parent))  # so the CLI can load step_cost.EpochTimer
    data = DragonDataModule(task="color", n_dragons=args.n, seed=0, data_dir=None, batch_size=args.batch_size)
    data.setup("fit")
    steps = -(-len(data.splits["train"][1]) // args.batch_size)
    turns: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
    batches: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for turn in range(args.repeats):
            # Each turn starts one variant later: a variant's place in a turn (after which other) costs
            # it as much as some pieces do, so every variant takes every place in turn.
            start = turn % len(VARIANTS)
            for index, (name, factory, pieces) in [*enumerate(VARIANTS)][start:] + [*enumerate(VARIANTS)][:start]:
                gc.collect()
                root = Path(tmp) / f"{turn}-{index}"
                if factory is None:
                    timer = whole_command(args.n, args.batch_size, args.epochs, root)
                else:
                    timer = trainer_run(factory, data, args.epochs, root, pieces)
                turns[name].append(min(timer.seconds[1:]))
                batches[name] = timer.batches
                print(f"[turn {turn + 1}/{args.repeats}] {name}: {turns[name][-1]:.3f} s", file=sys.stderr)
    bare = turns[VARIANTS[0][0]]
    rows = []
    for name, _, _ in VARIANTS:
        within_turns = [seconds / bare_seconds for seconds, bare_seconds in zip(turns[name], bare)]
        rows.append(
            {
                "variant": name,
                "seconds_per_epoch": min(turns[name]),
                "ms_per_step": 1000 * min(turns[name]) / steps,
                "vs_bare": min(turns[name]) / min(bare),
                "vs_bare_within_turns": {
                    "median": statistics.median(within_turns),
                    "low": min(within_turns),
                    "high": max(within_turns),
                },
                "batches_trained": batches[name],
            }
        )
    print(f"{args.n:,} dragons, batch size {args.batch_size}, {steps} steps an epoch; best epoch of {args.repeats} turns\n")
    print("| variant | s per epoch | ms per step | vs bare Trainer | within a turn: median (range) |\n|---|---|---|---|---|")
    for row in rows:
        turn = row["vs_bare_within_turns"]
        print(
            f"| {row['variant']} | {row['seconds_per_epoch']:.3f} | {row['ms_per_step']:.3f} | {row['vs_bare']:.2f} "
            f"| {turn['median']:.2f} ({turn['low']:.2f} to {turn['high']:.2f}) |"
        )
    bookkeeping = bookkeeping_microseconds(data, args.batch_size)
    print("\nthe model's own bookkeeping per step, timed alone: " + ", ".join(f"{k} {v:.0f} µs" for k, v in bookkeeping.items()))
    result = {"n": args.n, "batch_size": args.batch_size, "steps_per_epoch": steps, "rows": rows, "bookkeeping_us": bookkeeping}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
