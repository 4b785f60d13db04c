"""Save each run's complete config beside its logs, and nowhere else."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback

from dragon_lightning.gates.outputs import OutputFolder

CONFIG_FILES_COMMENT = "# --config: "
"""First line of a saved config.yaml: the config files the run was started from (for titles)."""


class RunConfig(SaveConfigCallback):
    """Writes ``config.yaml`` into the run's own log folder (``lightning_logs/version_N``), atomically.

    Without a logger a run has no folder of its own and no config file is written: Lightning would
    write it to the working directory, replacing a ``config.yaml`` there, even the ``--config`` being
    run. A file there that dragon-lightning did not write is never replaced. Its first line names the ``--config`` files
    the run started from, as a comment.
    """

    def __init__(self, parser, config, config_filename: str = "config.yaml", multifile: bool = False, **_) -> None:
        super().__init__(parser, config, config_filename, overwrite=False, multifile=multifile, save_to_log_dir=False)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # trainer.log_dir is a collective call under DDP: every rank asks, rank 0 alone writes.
        self._log_dir = trainer.log_dir if trainer.logger is not None else None
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._log_dir is None:
            return
        text = self.parser.dump(self.config, skip_none=False)
        if self.config.get("config"):
            text = f"{CONFIG_FILES_COMMENT}{', '.join(str(path) for path in self.config.config)}\n{text}"
        OutputFolder(self._log_dir).write(self.config_filename, lambda tmp: tmp.write_text(text, encoding="utf-8"))
