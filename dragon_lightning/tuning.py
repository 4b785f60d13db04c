"""``dragon-lightning lr_find``: Lightning's learning-rate finder on a config, its plot kept as a PNG."""

from __future__ import annotations


from lightning.pytorch.tuner import Tuner
from matplotlib.figure import Figure

from dragon_lightning.cli import DragonCLI, FitSetupCLI, build_cli, quiet_lightning
from dragon_lightning.errors import DragonError, DragonInputError
from dragon_lightning.gates.outputs import OutputFolder

PLOT = "lr_find.png"


class LrFindCLI(FitSetupCLI):
    """``fit``'s set-up, and what the finder needs, checked before the Trainer exists."""

    def _check_inputs(self) -> None:
        super()._check_inputs()
        if not self.model.automatic_optimization:
            raise DragonInputError("lr_find needs an optimizer that Lightning runs; --model.init_args.online true has none")
        if self.config.trainer.fast_dev_run:
            raise DragonInputError("lr_find: --trainer.fast_dev_run leaves the finder no steps to try; drop it")
        if self.config.trainer.logger is False:  # no run folder: the plot goes where the user said
            OutputFolder(self.config.trainer.default_root_dir or ".", "--trainer.default_root_dir").claim([PLOT])


def find_learning_rate(args: list[str]) -> DragonCLI:
    """Run ``Tuner.lr_find`` with the config and options in ``args`` (those of ``fit``); print the
    suggestion and write ``lr_find.png`` in the run's folder (without a logger: in
    ``--trainer.default_root_dir``, never over a file of the user's)."""
    quiet_lightning()
    cli = build_cli(args, run=False, cli_class=LrFindCLI, prog="dragon-lightning lr_find")
    logged = cli.trainer.log_dir if cli.trainer.logger is not None else None
    folder = OutputFolder(logged or cli.trainer.default_root_dir, None if logged else "--trainer.default_root_dir")
    # update_attr=False: the learning rate lives in the injected optimizer, not on the model.
    finder = Tuner(cli.trainer).lr_find(cli.model, datamodule=cli.datamodule, update_attr=False)
    suggestion = finder.suggestion()
    if suggestion is None:
        raise DragonError("lr_find: the loss never fell steadily over the range tried; no learning rate to suggest")
    figure = Figure(figsize=(6, 4), dpi=100)
    finder.plot(suggest=True, ax=figure.subplots())
    figure.tight_layout()
    path = folder.write(PLOT, lambda tmp: figure.savefig(tmp, format="png"))
    print(f"suggested learning rate: {suggestion:.3g}")
    print(f"loss against learning rate: {path}")
    return cli
