"""The progress bar a run gets unless its config names one."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class RunProgressBar(TQDMProgressBar):
    """Lightning's progress bar, naming the run's version whole. Lightning shows the last four characters
    of a version that is text, so a ``cv`` fold's ``repeat_1_fold_2`` and ``fold_2`` both read
    ``v_num=ld_2``."""

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        version = trainer.logger.version if len(trainer.loggers) == 1 else None  # several: Lightning's joined versions stay
        if "v_num" in metrics and isinstance(version, str):
            metrics["v_num"] = version
        return metrics
