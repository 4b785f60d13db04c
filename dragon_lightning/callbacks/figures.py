"""``TutorialFigures``: the tutorial's pictures as files in the run folder, and in TensorBoard when it logs."""

from __future__ import annotations

import copy
import math
import uuid
from pathlib import Path

import lightning as L
import numpy as np
import torch
from jsonargparse.typing import PositiveInt
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary

from dragon_lightning.arguments import check_arguments
from dragon_lightning.figures import drawing as plots
from dragon_lightning.figures.painter import Painter, Picture, drawn, drawn_regions, gif_writer
from dragon_lightning.gates.outputs import OutputFolder
from dragon_lightning.models import DragonClassifier

PICTURES = ("truth_vs_predictions", "decision_regions", "confusion_matrix", "roc_curve", "learning_curves")
ANIMATION = "boundary_over_training.gif"
DEFAULT_SNAPSHOTS = 30
"""Snapshots of a run's boundary by default: an animation worth watching at a few percent of training time."""
FILES = (*(f"{name}.png" for name in PICTURES), ANIMATION)
"""Every file the figures callback may write into its folder."""


def snapshot_interval(max_epochs: int | None, every: int | None, max_images: int) -> int:
    """Epochs between boundary snapshots: ``every``, or spaced for :data:`DEFAULT_SNAPSHOTS` a run, and
    never more than ``max_images`` snapshots."""
    epochs = max_epochs if max_epochs and max_epochs > 0 else 1
    return max(every or math.ceil(epochs / DEFAULT_SNAPSHOTS), math.ceil(epochs / max_images))


def kept_epoch(trainer: L.Trainer, history: list[dict]) -> int | None:
    """The epoch whose weights the run kept: the first best of the monitored validation loss or
    accuracy (as the checkpoint callback ranks them), else the last epoch."""
    checkpoint = trainer.checkpoint_callback
    monitor = checkpoint.monitor if isinstance(checkpoint, ModelCheckpoint) else None
    validated = [entry for entry in history if entry["stage"] == "val"]
    if isinstance(checkpoint, ModelCheckpoint) and monitor in ("val/loss", "val/acc") and validated:
        values = np.array([entry[monitor.split("/")[1]] for entry in validated])
        best = int(np.argmin(values) if checkpoint.mode == "min" else np.argmax(values))
        return int(validated[best]["epoch"])
    trained = [entry["epoch"] for entry in history if entry["stage"] == "train"]
    return int(trained[-1]) if trained else None


class FirstRows:
    """The first ``limit`` rows seen, batch by batch (batches are shuffled or the split is: a random
    sample), as CPU tensors: features as float32, then any other columns."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.parts: list[tuple[torch.Tensor, ...]] = []

    def add(self, features: torch.Tensor, *columns: torch.Tensor) -> None:
        if self.count < self.limit:
            rows = slice(0, self.limit - self.count)
            self.parts.append((features[rows].float().cpu(), *(column[rows].cpu() for column in columns)))
            self.count += len(self.parts[-1][0])

    def arrays(self) -> list[np.ndarray]:
        return [torch.cat(column).numpy() for column in zip(*self.parts)]


class TutorialFigures(Callback):
    """Draws on rank 0, whatever the logger, into ``figures/`` in the run's folder:

    - ``truth_vs_predictions.png``: the test set by true and by predicted class, side by side;
    - ``decision_regions.png``: the model's regions and boundaries over the test set;
    - ``confusion_matrix.png``: test counts per true and predicted class;
    - ``roc_curve.png`` (``fire``): the test ROC curve with the decision threshold marked;
    - ``learning_curves.png``: training and validation loss and accuracy per epoch;
    - ``boundary_over_training.gif``: the regions over the training set as training goes, one frame per
      snapshot (the tutorial's redrawn perceptron boundary).

    With a TensorBoard logger the same pictures are also logged as images (the snapshots as one
    series for the step slider). All axes are in the original units, also when the model sees
    standardized features. The pictures are drawn by a :class:`~dragon_lightning.figures.painter.Painter`:
    in a worker process beside training where a core is spare; ``fit`` and ``test`` return once their
    files are written.
    """

    def __init__(
        self,
        enabled: bool = True,
        save_dir: Path | None = None,
        boundary_every_n_epochs: PositiveInt | None = None,
        max_boundary_images: PositiveInt = 60,
        max_points: PositiveInt = 2000,
        frame_ms: PositiveInt = 250,
    ) -> None:
        """
        Args:
            enabled: draw the figures (off: ``--figures.enabled false``; a ``--trainer.fast_dev_run`` draws none).
            save_dir: folder for the picture files. Unset: ``figures/`` in the run's log folder.
            boundary_every_n_epochs: epochs between boundary snapshots while training. Unset: spaced
                for about 30 snapshots a run (every epoch on shorter runs).
            max_boundary_images: at most this many snapshots per run (spaced further apart on long runs).
            max_points: dragons drawn in a scatter plot; larger sets show a random sample of this
                size (the confusion matrix and the ROC curve always count every test dragon).
            frame_ms: how long the animation shows each snapshot, in milliseconds.
        """
        check_arguments(self, locals())
        self.enabled = enabled
        self.save_dir = save_dir
        self.boundary_every_n_epochs = boundary_every_n_epochs
        self.max_boundary_images = max_boundary_images
        self.max_points = max_points
        self.frame_ms = frame_ms
        self.figure_dir = Path("figures")
        self._painter = Painter()
        self._training_sample = FirstRows(max_points)
        self._training_sample_arrays: list[np.ndarray] | None = None
        """The snapshots' rows: features, labels."""
        self._snapshots_key = ""
        self._frames: list[bytes] = []
        self._test_sample = FirstRows(max_points)

    def setup(self, trainer: L.Trainer, pl_module: DragonClassifier, stage: str) -> None:
        """Settle where the files go: ``save_dir``, or ``figures/`` in the run's log folder (asked on
        every process: under DDP ``trainer.log_dir`` is a collective call)."""
        if self.enabled:
            self.figure_dir = Path(self.save_dir or Path(trainer.log_dir or trainer.default_root_dir) / "figures")

    def drawing(self, trainer: L.Trainer) -> bool:
        """Whether this process draws: the first one, when enabled, and not in a ``fast_dev_run``, which
        writes nothing to keep (Lightning turns its loggers and checkpoints off for it too)."""
        return self.enabled and trainer.is_global_zero and not trainer.fast_dev_run  # type: ignore[attr-defined]  # set in Trainer.__init__, untyped

    def _publish(self, trainer: L.Trainer, name: str, step: int, picture: Picture) -> None:
        """Write ``name``.png (when the picture has a file) and, with a TensorBoard logger, log it as
        ``figures/<name>`` at ``step``."""
        if picture.png is not None:
            OutputFolder(self.figure_dir, "--figures.save_dir" if self.save_dir else None).write(f"{name}.png", picture.write_png)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                height, width, channels = picture.shape
                encoded = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=picture.palette)
                # What SummaryWriter.add_image writes, encoded as the palette PNG rather than by its resampling RGB encoder.
                logger.experiment._get_file_writer().add_summary(
                    Summary(value=[Summary.Value(tag=f"figures/{name}", image=encoded)]), step
                )

    def _draw(self, trainer: L.Trainer, name: str, task, *args) -> None:
        """Have the painter draw ``task(*args)``, then publish it as ``name`` at this epoch."""
        step = trainer.current_epoch
        self._painter.submit(lambda picture: self._publish(trainer, name, step, picture), task, *args)

    def on_train_batch_end(self, trainer, pl_module: DragonClassifier, outputs, batch, batch_idx) -> None:
        """Keep the first training rows for the snapshots' scatter."""
        if self.drawing(trainer):
            self._training_sample.add(*batch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: DragonClassifier) -> None:
        epoch = trainer.current_epoch
        last = trainer.should_stop or (trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs)
        due = (
            last
            or (epoch + 1) % snapshot_interval(trainer.max_epochs, self.boundary_every_n_epochs, self.max_boundary_images) == 0
        )
        # No snapshot without a training batch (limit_train_batches: 0).
        if not (self.drawing(trainer) and due and self._training_sample.parts):
            return
        if self._training_sample_arrays is None:
            self._training_sample_arrays = self._training_sample.arrays()
            self._snapshots_key = uuid.uuid4().hex
        # A copy of the weights, a few kilobytes; training's modules keep their device and mode.
        weights = copy.deepcopy(pl_module.logits_module()).cpu().eval()
        # Counted as the learning curves count: epochs trained, from 1.
        title = f"training set after {epoch + 1} epoch{'s' if epoch else ''}"

        def frame(picture: Picture) -> None:  # the GIF is written at the end
            self._frames.append(picture.palette)
            self._publish(trainer, "boundary_over_training", epoch, picture)

        features, labels = self._training_sample_arrays
        args = (self._snapshots_key, features, labels, pl_module.class_names, weights, pl_module.logit_threshold, title)
        self._painter.submit(frame, drawn_regions, *args)
        self._painter.deliver()

    def on_fit_end(self, trainer: L.Trainer, pl_module: DragonClassifier) -> None:
        """Draw the learning curves, wait for the snapshots and write their animation: the fit's pictures
        are all on disk when ``fit`` returns."""
        if self.drawing(trainer):
            if pl_module.history:
                curves = (pl_module.history, kept_epoch(trainer, pl_module.history))
                self._draw(trainer, "learning_curves", drawn, plots.learning_curves, *curves)
            self._painter.close()
            if self._frames:
                folder = OutputFolder(self.figure_dir, "--figures.save_dir" if self.save_dir else None)
                folder.write(ANIMATION, gif_writer(self._frames, self.frame_ms))
        self._training_sample_arrays, self._frames = None, []
        self._training_sample = FirstRows(self.max_points)

    def on_exception(self, trainer: L.Trainer, pl_module: DragonClassifier, exception: BaseException) -> None:
        """A run that stops (Ctrl-C, SIGTERM, an error) drops the pictures not yet drawn."""
        self._painter.close(cancel=True)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: DragonClassifier) -> None:
        self._test_sample = FirstRows(self.max_points)

    def on_test_batch_end(self, trainer, pl_module: DragonClassifier, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        """Keep the first test dragons for the scatter plots (the model counts every one of them into its
        confusion matrix and ROC curve)."""
        if outputs is not None and self.drawing(trainer):
            self._test_sample.add(*batch, outputs["predicted"])

    def on_test_end(self, trainer: L.Trainer, pl_module: DragonClassifier) -> None:
        if not (self.drawing(trainer) and self._test_sample.parts):
            return
        names = pl_module.class_names
        counts = pl_module.test_summary["confusion"].numpy()
        features, labels, predicted = self._test_sample.arrays()
        shown = f"{len(labels):,} of {counts.sum():,} test dragons" if len(labels) < counts.sum() else "test set"
        caption = f"{shown}; accuracy {counts.trace() / counts.sum():.3f}"
        weights = copy.deepcopy(pl_module.logits_module()).cpu()  # in eval mode for test
        self._draw(
            trainer, "truth_vs_predictions", drawn, plots.truth_and_predictions, features, labels, predicted, names, caption
        )
        regions = (features, labels, names, weights, pl_module.logit_threshold, caption)
        self._draw(trainer, "decision_regions", drawn_regions, None, *regions)
        self._draw(trainer, "confusion_matrix", drawn, plots.confusion_matrix, counts, names)
        if "roc" in pl_module.test_summary:
            self._draw(trainer, "roc_curve", drawn, plots.roc_curve, *self._roc_curve(trainer, counts, pl_module))
        self._painter.close()
        self._test_sample = FirstRows(self.max_points)

    def _roc_curve(self, trainer: L.Trainer, counts: np.ndarray, pl_module: DragonClassifier) -> tuple:
        """:func:`~dragon_lightning.figures.drawing.roc_curve`'s arguments: the curve, its area and the
        model's operating point."""
        negatives, positives = counts.sum(axis=1)
        operating_point = (counts[0, 1] / max(negatives, 1), counts[1, 1] / max(positives, 1))
        auroc = float(trainer.callback_metrics["test/auroc"])  # the model logs it from the same scores
        false_positive_rate, true_positive_rate = (part.numpy() for part in pl_module.test_summary["roc"])
        return false_positive_rate, true_positive_rate, auroc, operating_point, pl_module.threshold, pl_module.class_names[1]
