"""``dragon-lightning lr_find``: Lightning's learning-rate finder on a config, its plot kept as a PNG."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.tuner import Tuner
from matplotlib.figure import Figure

from dragon_lightning.atomic import write_atomically
from dragon_lightning.cli import DragonCLI, FitSetupCLI, build_cli
from dragon_lightning.errors import DragonError, DragonInputError


def find_learning_rate(args: list[str]) -> DragonCLI:
    """Run ``Tuner.lr_find`` with the config and options in ``args`` (those of ``fit``); print the
    suggestion and write ``lr_find.png`` in the run's folder."""
    cli = build_cli(args, run=False, cli_class=FitSetupCLI, prog="dragon-lightning lr_find")
    if not cli.model.automatic_optimization:
        raise DragonInputError("lr_find needs an optimizer that Lightning runs; --model.init_args.online true has none")
    # update_attr=False: the learning rate lives in the injected optimizer, not on the model.
    finder = Tuner(cli.trainer).lr_find(cli.model, datamodule=cli.datamodule, update_attr=False)
    suggestion = finder.suggestion()
    if suggestion is None:
        raise DragonError("lr_find: the loss never fell steadily over the range tried; no learning rate to suggest")
    figure = Figure(figsize=(6, 4), dpi=100)
    finder.plot(suggest=True, ax=figure.subplots())
    figure.tight_layout()
    path = Path(cli.trainer.log_dir or cli.trainer.default_root_dir) / "lr_find.png"
    write_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))
    print(f"suggested learning rate: {suggestion:.3g}")
    print(f"loss against learning rate: {path}")
    return cli
