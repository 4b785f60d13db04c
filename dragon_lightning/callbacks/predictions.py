"""Write ``predict`` results as a CSV: the input rows, the predicted class and one probability per class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dragon_lightning.data.csv_io import line_of_row
from dragon_lightning.errors import DragonInputError
from dragon_lightning.gates.outputs import write_output_file
from dragon_lightning.schema import prediction_columns


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` in the run's log folder (or ``output_path``), atomically.

    Columns: the input CSV's columns, ``predicted`` (class name), ``p_<class>`` per class, and
    ``outside_training_range``, true for rows whose features lie far outside the training data,
    where a prediction is an extrapolation.
    """

    def __init__(self, output_path: Path | None = None, overwrite: bool = False) -> None:
        """
        Args:
            output_path: where to write the predictions CSV. Unset: ``predictions.csv`` in the run's
                log folder.
            overwrite: replace an existing file at ``output_path``. Off: the CLI refuses to start unless
                the file is one dragon-lightning wrote there, and a file that appears meanwhile is kept.
        """
        super().__init__(write_interval="epoch")
        self.output_path = output_path
        self.overwrite = overwrite

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        """Stop on SIGTERM after this batch, before anything is written: Lightning's handler sets the
        flag its training and evaluation loops read, and its predict loop never does."""
        super().on_predict_batch_end(trainer, pl_module, *args, **kwargs)
        if trainer.received_sigterm:
            raise SIGTERMException

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        if trainer.received_sigterm:  # after the last batch: the command stops with nothing written
            raise SIGTERMException
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning when a run starts
        probabilities = torch.cat([batch["probabilities"] for batch in predictions]).float().cpu().numpy()
        predicted = torch.cat([batch["predicted"] for batch in predictions]).cpu().numpy()
        if (unusable := np.flatnonzero(~np.isfinite(probabilities).all(axis=1))).size:
            raise DragonInputError(
                f"{datamodule.predict_csv}: line {line_of_row(Path(datamodule.predict_csv), unusable[0])}: the model gives "
                "no finite probabilities for these features; nothing was written"
            )
        table = datamodule.predict_table.copy()
        predicted_column, *probability_columns, outside_column = prediction_columns(pl_module.class_names)
        table[predicted_column] = np.asarray(pl_module.class_names, dtype=object)[predicted]
        for index, column in enumerate(probability_columns):
            table[column] = probabilities[:, index]
        table[outside_column] = torch.cat([batch["outside_training_range"] for batch in predictions]).cpu().numpy()
        path = Path(self.output_path or Path(trainer.log_dir or ".") / "predictions.csv")
        replace = self.overwrite if self.output_path else None  # a path the user named is theirs unless they say so
        written = write_output_file(
            path,
            lambda tmp: table.to_csv(tmp, index=False),
            replace=replace,
            option="--predictions.output_path",
            remedy="choose another file or pass --predictions.overwrite true",
        )
        bar = trainer.progress_bar_callback  # prints above its bar, not glued to it
        (bar.print if bar is not None else print)(f"predictions: {written}")
