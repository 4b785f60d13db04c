"""Training throughput: dragon-lightning's Trainer path against a hand-written loop, scikit-learn and
the tutorial's one-dragon-per-step loop, on the same generated dragons, measured side by side.

    python benchmarks/throughput.py --n 1000000 --batch-sizes 256 4096 --json throughput.json

(a) ``dragon-lightning fit`` in-process with configs/color_mlp.yaml (its callbacks, TensorBoard
logger, progress bar, Lightning's automatic optimization), timing each epoch's training batches;
(b) a plain PyTorch loop: the same standardized tensors, network, Adam and batch size;
(c) scikit-learn's ``MLPClassifier(hidden_layer_sizes=(10, 20, 1000))``, one epoch, same batch size;
(d) the tutorial's loop, one dragon per Adam step, ``--tutorial-rows`` dragons per run.
Rates are training samples per second. (b) and (d) run after every Lightning epoch, in the same
process, so a burst of load from other work on the machine hits all three alike; each figure is the
best of ``--epochs`` runs after one warm-up run (load from elsewhere only ever slows a run down, so
the fastest run is the least disturbed one, as with ``timeit``). (c) is the best of two passes.
``--fused`` runs Adam's fused implementation in (a), (b) and (d); ``--compile`` compiles (a)'s network
with ``torch.compile`` (its first epoch, the warm-up, includes the compilation and is reported), while
(b) stays eager.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from dragon_lightning.commands import cli_main
from dragon_lightning.data import DragonDataModule
from dragon_lightning.models import MLPClassifier

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = (10, 20, 1000)
LR = 0.003


class EpochTimer(L.Callback):
    """Wall time of each epoch's training batches (validation and epoch-end work excluded); after each
    epoch, one timed run of every loop in :data:`PAIRED_LOOPS`."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.samples: list[int] = []
        self.paired_rates: dict[str, list[float]] = {name: [] for name in PAIRED_LOOPS}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started, self._samples = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += len(batch[1])
        if batch_idx + 1 == trainer.num_training_batches:
            if trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self._started)
            self.samples.append(self._samples)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        with torch.enable_grad():
            for name, loop in PAIRED_LOOPS.items():
                self.paired_rates[name].append(loop())


PAIRED_LOOPS: dict[str, Callable[[], float]] = {}
"""Loops timed between Lightning epochs (set while (a) runs): each call runs once, returns samples/s."""


def paired_rates(
    features: torch.Tensor, labels: torch.Tensor, n: int, batch_size: int, args: argparse.Namespace, root: Path
) -> dict[str, float]:
    """(a), with (b) and (d) taking turns with its epochs: the best run of each after a warm-up run."""
    # The CLI loads EpochTimer from the module ``throughput`` (this file imported, not ``__main__``).
    timer_module = importlib.import_module("throughput")
    timer_module.PAIRED_LOOPS = {
        "b_plain_pytorch": plain_loop(features, labels, batch_size, args.fused),
        "d_tutorial_loop": tutorial_loop(features, labels, args.tutorial_rows, args.fused),
    }
    options = ["--data.n_dragons", str(n), "--data.batch_size", str(batch_size), "--test_after_fit", "false"]
    options += ["--trainer.max_epochs", str(args.epochs + 1), "--trainer.accelerator", args.accelerator]
    options += ["--trainer.default_root_dir", str(root), "--data.data_dir", str(root / "data")]
    options += ["--trainer.callbacks+=throughput.EpochTimer"]
    if args.compile:
        options += ["--model.init_args.compile", "true"]
    if args.fused:
        options += ["--model.init_args.optimizer.init_args.fused", "true"]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cli = cli_main(["fit", "--config", str(ROOT / "configs/color_mlp.yaml"), *options])
    finally:
        timer_module.PAIRED_LOOPS = {}
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, timer_module.EpochTimer))
    lightning = [samples / seconds for samples, seconds in zip(timer.samples[1:], timer.seconds[1:])]
    paired = {name: max(rates[1:]) for name, rates in timer.paired_rates.items()}
    return {"a_dragon_lightning": max(lightning), **paired, "a_first_epoch_seconds": timer.seconds[0]}


def training_tensors(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    data = DragonDataModule(task="color", n_dragons=n, seed=42)
    data.setup("fit")
    features, labels = data.splits["train"]
    features = (features - features.mean(dim=0)) / features.std(dim=0)  # what the model's input layer does
    return features.to(device), labels.to(device)


def plain_loop(features: torch.Tensor, labels: torch.Tensor, batch_size: int, fused: bool) -> Callable[[], float]:
    """The loop a user would write by hand (shuffle, slice, forward, backward, step), one epoch per call."""
    torch.manual_seed(0)
    net = MLPClassifier(num_classes=3, hidden_sizes=HIDDEN).net.to(features.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, fused=fused or None)

    def epoch() -> float:
        started = time.perf_counter()
        order = torch.randperm(len(labels), device=features.device)
        x, y = features[order], labels[order]
        for start in range(0, len(y), batch_size):
            optimizer.zero_grad()
            F.cross_entropy(net(x[start : start + batch_size]), y[start : start + batch_size]).backward()
            optimizer.step()
        if features.device.type == "cuda":
            torch.cuda.synchronize()
        return len(labels) / (time.perf_counter() - started)

    return epoch


def sklearn_rate(features: torch.Tensor, labels: torch.Tensor, batch_size: int, epochs: int = 2) -> float:
    """``partial_fit`` passes over all rows in minibatches; the best of ``epochs`` passes."""
    from sklearn.neural_network import MLPClassifier as SklearnMLP

    x, y = features.cpu().numpy(), labels.cpu().numpy()
    model = SklearnMLP(HIDDEN, batch_size=batch_size, learning_rate_init=LR, random_state=0)
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.partial_fit(x[:batch_size], y[:batch_size], classes=np.arange(3))  # warm-up
        for _ in range(epochs):
            started = time.perf_counter()
            model.partial_fit(x, y)
            rates.append(len(y) / (time.perf_counter() - started))
    return max(rates)


def tutorial_loop(features: torch.Tensor, labels: torch.Tensor, rows: int, fused: bool) -> Callable[[], float]:
    """One dragon per forward, backward and Adam step, as the tutorial trains; ``rows`` dragons per call."""
    torch.manual_seed(0)
    net = MLPClassifier(num_classes=3, hidden_sizes=HIDDEN).net.to(features.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4, fused=fused or None)
    x, y = features[:rows], labels[:rows]

    def run() -> float:
        started = time.perf_counter()
        for i in range(rows):
            optimizer.zero_grad()
            F.cross_entropy(net(x[i : i + 1]), y[i : i + 1]).backward()
            optimizer.step()
        if features.device.type == "cuda":
            torch.cuda.synchronize()
        return rows / (time.perf_counter() - started)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="dragons to generate (training is 48%%)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--accelerator", default="cpu", help="cpu, gpu or auto")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs of (a), each followed by a run of (b) and (d)")
    parser.add_argument("--tutorial-rows", type=int, default=1000, help="dragons per timed run of the one-per-step loop")
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network of (a)")
    parser.add_argument("--fused", action="store_true", help="Adam's fused implementation in (a), (b) and (d)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))  # so the CLI can load throughput.EpochTimer
    sys.argv = sys.argv[:1]  # the CLI gets its arguments from paired_rates, not from this command line

    device = torch.device("cuda" if args.accelerator in ("gpu", "cuda") else "cpu")
    features, labels = training_tensors(args.n, device)
    print(f"{len(labels):,} training rows on {device}, MLP 2-{'-'.join(map(str, HIDDEN))}-3, Adam", file=sys.stderr)
    results = {
        "n_dragons": args.n,
        "training_rows": len(labels),
        "device": str(device),
        "fused_adam": args.fused,
        "compiled": args.compile,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as root:
        for batch_size in args.batch_sizes:
            rates = paired_rates(features, labels, args.n, batch_size, args, Path(root) / str(batch_size))
            if not args.skip_sklearn:
                rates["c_sklearn"] = sklearn_rate(features, labels, batch_size)
            results["rows"].append({"batch_size": batch_size, **rates})
            print(f"batch {batch_size}: {', '.join(f'{k} {v:,.0f}/s' for k, v in rates.items())}", file=sys.stderr)

    print("| batch size | (a) dragon-lightning | (b) plain PyTorch | (c) scikit-learn | (d) tutorial loop | a/b | a/c | a/d |")
    print("|---|---|---|---|---|---|---|---|")
    for row in results["rows"]:
        a, b, c, d = (row.get(k) for k in ("a_dragon_lightning", "b_plain_pytorch", "c_sklearn", "d_tutorial_loop"))
        c_text, ac = (f"{c:,.0f}", f"{a / c:.2f}") if c else ("-", "-")
        print(f"| {row['batch_size']} | {a:,.0f} | {b:,.0f} | {c_text} | {d:,.0f} | {a / b:.2f} | {ac} | {a / d:.0f} |")
    print("samples per second of training: best of the timed runs; (a), (b) and (d) take turns")
    for row in results["rows"]:
        print(f"batch size {row['batch_size']}: (a)'s first epoch, warm-up included, took {row['a_first_epoch_seconds']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
