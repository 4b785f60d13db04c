"""Fill TensorBoard's HPARAMS tab: the run's settings beside its final metrics."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger


class HyperparametersWithMetrics(Callback):
    """After testing, record the model's and data's hyperparameters with the val and test metrics.

    TensorBoard shows a run in HPARAMS only when its hyperparameters are written together with
    metric names; Lightning writes them alone at the start of a run (``default_hp_metric=False``).
    """

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record_hyperparameters(trainer, pl_module)


def record_hyperparameters(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """Write the run's HPARAMS row (TensorBoard only): settings beside the latest val and test metrics."""
    if not isinstance(trainer.logger, TensorBoardLogger):
        return
    metrics = {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith(("val/", "test/")) and value.numel() == 1
    }
    params = {"model": _settings(pl_module.hparams), "model_class": type(pl_module).__name__}
    datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning when a run starts
    if datamodule is not None:
        params["data"] = _settings(datamodule.hparams)
    trainer.logger.log_hyperparams(params, metrics, step=trainer.global_step)


def _settings(hparams) -> dict:
    """The user's settings, without LightningCLI's bookkeeping entries (``_class_path``, ``_instantiator``)."""
    return {name: value for name, value in dict(hparams).items() if not name.startswith("_")}
