"""``dragon-lightning lr_find``: Lightning's learning-rate finder on a config, its plot kept as a PNG."""

from __future__ import annotations

import numpy as np
from lightning.pytorch.tuner import Tuner
from matplotlib.figure import Figure

from dragon_lightning.cli import DragonCLI, FitSetupCLI, build_cli
from dragon_lightning.errors import DragonError, DragonInputError
from dragon_lightning.gates.outputs import OutputFolder
from dragon_lightning.quiet import quiet_lightning

PLOT = "lr_find.png"
STEPS = 100
"""Learning rates the finder tries, one per optimizer step (Lightning's default)."""
DESCRIPTION = (
    "Run Lightning's learning-rate finder with every fit option: a short run that raises the learning "
    f"rate step by step ({STEPS} steps, which --trainer.max_epochs must allow) and records the smoothed training loss. "
    "Suggests a tenth of the rate where that "
    "loss is lowest (past it the loss climbs; a tenth of it still learns fast and stays stable, a rule "
    "of thumb that holds up on small data, where the steepest fall Lightning suggests is noisy). "
    "Writes the curve, with the suggestion marked, to lr_find.png in the run's folder."
)


class LrFindCLI(FitSetupCLI):
    """``fit``'s set-up, and what the finder needs, checked before the Trainer exists."""

    def _check_inputs(self) -> None:
        super()._check_inputs()
        if not self.model.automatic_optimization:
            raise DragonInputError("lr_find needs an optimizer that Lightning runs; --model.init_args.online true has none")
        if self.config.trainer.fast_dev_run:
            raise DragonInputError("lr_find: --trainer.fast_dev_run leaves the finder no steps to try; drop it")
        self._check_room_for_the_finder()
        if self.config.trainer.logger is False:  # no run folder: the plot goes where the user said
            OutputFolder(self.config.trainer.default_root_dir or ".", "--trainer.default_root_dir").claim([PLOT])

    def _check_room_for_the_finder(self) -> None:
        """The finder takes :data:`STEPS` optimizer steps, one learning rate each, within the Trainer's
        limits: a first try's small ``--trainer.max_epochs`` would end it at rates too small to learn,
        and its suggestion would be noise (Lightning calls that a diverging loss)."""
        trainer = self.config.trainer
        batches, limit = len(self.datamodule.train_dataloader()), trainer.limit_train_batches
        if limit is not None:
            batches = int(batches * limit) if isinstance(limit, float) else min(batches, limit)
        per_epoch = -(-batches // trainer.accumulate_grad_batches)
        epochs = -1 if trainer.max_epochs is None else trainer.max_epochs  # None: Lightning's 1000, or max_steps
        limits = {"max_steps": trainer.max_steps, "max_epochs": epochs * per_epoch}
        for name, steps in limits.items():
            if 0 <= steps < STEPS:
                needed = f" ({per_epoch} an epoch; at least {-(-STEPS // per_epoch)} epochs)" if name == "max_epochs" else ""
                raise DragonInputError(
                    f"lr_find: --trainer.{name} {trainer[name]} allows {steps} optimizer steps{needed}, and the finder "
                    f"tries {STEPS} learning rates, one a step; raise it or leave it out"
                )


def find_learning_rate(args: list[str]) -> DragonCLI:
    """Run ``Tuner.lr_find`` with the config and options in ``args`` (those of ``fit``); print the
    suggestion and write ``lr_find.png`` in the run's folder (without a logger: in
    ``--trainer.default_root_dir``, never over a file of the user's)."""
    quiet_lightning()
    cli = build_cli(args, run=False, cli_class=LrFindCLI, prog="dragon-lightning lr_find", description=DESCRIPTION)
    logged = cli.trainer.log_dir if cli.trainer.logger is not None else None
    folder = OutputFolder(logged or cli.trainer.default_root_dir, None if logged else "--trainer.default_root_dir")
    # update_attr=False: the learning rate lives in the injected optimizer, not on the model.
    finder = Tuner(cli.trainer).lr_find(cli.model, datamodule=cli.datamodule, num_training=STEPS, update_attr=False)
    assert finder is not None  # None only on processes other than rank 0, and lr_find runs in one
    suggestion = suggest(finder.results["lr"], finder.results["loss"])
    figure = draw(finder.results["lr"], finder.results["loss"], suggestion)
    path = folder.write(PLOT, lambda tmp: figure.savefig(tmp, format="png"))
    tried = len(finder.results["lr"])
    print(f"suggested learning rate: {suggestion:.3g} (a tenth of where the smoothed loss is lowest, of {tried} rates tried)")
    print(f"loss against learning rate: {path}")
    return cli


SKIP_BEGIN, SKIP_END = 10, 1
"""Points of the finder's curve left out, as Lightning's own suggestion does: the first smoothed losses
rest on a step or two, and the last is where the loss blew up."""


def considered(rates: list[float], losses: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The points of the curve the suggestion is chosen from (and the only ones drawn): finite losses,
    without the :data:`SKIP_BEGIN` first and :data:`SKIP_END` last."""
    rates_array = np.asarray(rates, dtype=float)[SKIP_BEGIN:-SKIP_END]
    losses_array = np.asarray(losses, dtype=float)[SKIP_BEGIN:-SKIP_END]
    finite = np.isfinite(losses_array)
    return rates_array[finite], losses_array[finite]


def suggest(rates: list[float], losses: list[float]) -> float:
    """A tenth of the learning rate where the finder's smoothed loss is lowest."""
    rates_array, losses_array = considered(rates, losses)
    if not len(losses_array):
        raise DragonError("lr_find: the loss was never finite over the range tried; no learning rate to suggest")
    return float(rates_array[np.argmin(losses_array)] / 10)


def draw(rates: list[float], losses: list[float], suggestion: float) -> Figure:
    """The curve the rule reads, its lowest point and the suggestion, so that picture and rule agree."""
    rates_array, losses_array = considered(rates, losses)
    figure = Figure(figsize=(6, 4), dpi=100)
    ax = figure.subplots()
    ax.plot(rates_array, losses_array, color="#1f77b4")
    ax.set_xscale("log")
    ax.axvline(suggestion * 10, color="#7f7f7f", linestyle=":", label=f"lowest smoothed loss: {suggestion * 10:.3g}")
    ax.axvline(suggestion, color="#d62728", linestyle="--", label=f"suggested, a tenth of it: {suggestion:.3g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.legend()
    ax.set_title("training loss against the learning rate")
    figure.tight_layout()
    return figure
