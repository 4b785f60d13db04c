"""What every dragon classifier shares: outputs, loss, metrics per stage, optimizer and scheduler, and
prediction.

A binary task has one output (the logit of the positive class, predicted when above 0); a
multiclass task has one output per class (predicted by argmax, the first on ties). Losses work on
logits: the tutorial's ``log(softmax(...))`` underflows to ``-inf`` on raw features.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from jsonargparse.typing import NonNegativeFloat, OpenUnitInterval
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics import ConfusionMatrix, MeanMetric, Metric, MetricCollection
from torchmetrics.classification import BinaryROC

from dragon_lightning.arguments import ClassCount, ClosedOpenUnitInterval, FeatureCount, check_arguments
from dragon_lightning.errors import InvalidArgument, TrainingDiverged
from dragon_lightning.models.checksum import CHECKPOINT_KEY, stamp_checksum
from dragon_lightning.models.inputs import Standardize, migrate_legacy_statistics
from dragon_lightning.models.metrics import TrainingTally, accuracy_collection, score_collection, test_collection

STAGES = ("train", "val", "test")
DATA_LINKED = ("num_features", "num_classes", "class_names")
"""Arguments the data decides: under the CLI they are linked from the data module, never set by the user."""
INJECTED = ("optimizer", "scheduler")
"""Arguments built from the config (classes and their settings), never saved in a checkpoint."""
MAX_PARAMETERS = 25_000_000
"""The most weights a model may have, an ensemble's members together (100 MB in float32, 300 MB with
Adam's state): far beyond any dragon's needs, and refused before a layer is allocated."""


def decide(logits: torch.Tensor, logit_threshold: float) -> torch.Tensor:
    """The class index of each row, the one rule every prediction follows (``predict``, ``load_model``,
    ``serve``, the exported graph): with one logit, class 1 where it exceeds ``logit_threshold`` (the
    threshold's logit); with several, the largest (the first on ties)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > logit_threshold).long()
    return logits.argmax(dim=1)


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """One probability column per class: a single logit is the positive class's (sigmoid), several
    are softmaxed."""
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - positive, positive], dim=1)
    return logits.softmax(dim=1)


class DragonClassifier(L.LightningModule):
    """Base class: subclasses build the network in ``forward`` and may replace ``loss`` and
    ``configure_optimizers``. Training is Lightning's automatic optimization: ``training_step``
    returns the loss, and Lightning runs backward, clipping, accumulation, the optimizer and the
    scheduler."""

    derived_arguments: tuple[str, ...] = ()
    """Arguments a subclass computes from its own and hands on: not hyperparameters of its own."""

    def __init__(
        self,
        num_features: FeatureCount = 2,
        num_classes: ClassCount = 2,
        class_names: Sequence[str] | None = None,
        threshold: OpenUnitInterval = 0.5,
    ) -> None:
        """
        Args:
            num_features: inputs per dragon (linked from the data under the CLI).
            num_classes: classes of the task (linked from the data under the CLI).
            class_names: names for logs and figures (linked from the data under the CLI).
            threshold: probability of ``fire`` above which a dragon is predicted to breathe fire: the
                operating point of accuracy, detection and false positive rates, predictions and
                figures (two classes only).
        """
        super().__init__()
        # Here, not in each subclass: Lightning collects the arguments of every __init__ on the way.
        self.save_hyperparameters(ignore=[*INJECTED, *self.derived_arguments])
        check_arguments(self, self.hparams)
        if num_classes > 2 and threshold != 0.5:
            raise InvalidArgument(
                self, "threshold", f"applies to two classes (fire); with {num_classes} the most probable class is predicted"
            )
        self.threshold = threshold
        # The decision p > threshold on the logit: exactly logit > 0 at 0.5.
        self.logit_threshold = math.log(threshold / (1 - threshold))
        self.num_features = num_features
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class_names given for {num_classes} classes")
        self.inputs = Standardize(num_features)
        """Raw features to the scale the network learns on; fitted by the data module on the training split."""
        self.example_input_array = torch.zeros(1, num_features)
        """One row, with which Lightning's model summary counts each layer's FLOPs and shapes (without, it says 0)."""
        self.metrics = torch.nn.ModuleDict(
            {
                # Training accuracy is the share of rows predicted right: tallied per step (torchmetrics'
                # own update costs a tenth of a small model's step), handed over per epoch.
                "train_metrics": MetricCollection({"acc": MeanMetric(nan_strategy="disable")}, prefix="train/"),
                "val_metrics": accuracy_collection(num_classes).clone(prefix="val/"),
                "test_metrics": test_collection(num_classes, self.class_names).clone(prefix="test/"),
                "test_scores": score_collection(num_classes).clone(prefix="test/"),
            }
        )
        self.test_summaries = torch.nn.ModuleDict(
            {
                "confusion": ConfusionMatrix(
                    task="binary" if num_classes == 2 else "multiclass", num_classes=num_classes, validate_args=False
                ),
                **({"roc": BinaryROC()} if num_classes == 2 else {}),
            }
        )
        self.test_summary: dict[str, Any] = {}
        """The last test's confusion counts (rows: true class) and, for two classes, ROC curve (false and
        true positive rates), over every process's rows: what the figures draw."""
        self.history: list[dict] = []
        """Each epoch's logged training and validation loss and accuracy (kept in checkpoints), as
        Keras' ``History``: what the learning-curves figure draws, whatever the logger."""
        # "disable": no NaN check (a host sync) per update; divergence is watched separately.
        self.losses = torch.nn.ModuleDict({f"{stage}_loss": MeanMetric(nan_strategy="disable") for stage in STAGES})
        self.tally = TrainingTally()

    def _collection(self, name: str) -> MetricCollection:
        return cast(MetricCollection, self.metrics[name])

    def _loss(self, stage: str) -> MeanMetric:
        return cast(MeanMetric, self.losses[f"{stage}_loss"])

    @property
    def num_outputs(self) -> int:
        return 1 if self.num_classes == 2 else self.num_classes

    @classmethod
    def weight_count(cls, options: Mapping[str, Any]) -> int:
        """The weights a model built with ``options`` would hold, from the options alone, so that a size
        is refused before anything is allocated."""
        classes = options.get("num_classes", 2)
        widths = [options.get("num_features", 2), *cls.hidden_widths(options), 1 if classes == 2 else classes]
        return sum((inputs + 1) * outputs for inputs, outputs in itertools.pairwise(widths))

    @classmethod
    def hidden_widths(cls, options: Mapping[str, Any]) -> Sequence[int]:
        """The widths of the layers between the inputs and the outputs (none for a linear model)."""
        return ()

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype))
        return F.cross_entropy(logits, labels)

    def predict_classes(self, logits: torch.Tensor) -> torch.Tensor:
        """The positive class where its probability exceeds ``threshold`` (binary), else the argmax."""
        return decide(logits, self.logit_threshold)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return class_probabilities(logits)

    @property
    def network(self) -> torch.nn.Module:
        """The module that maps standardized features to logits."""
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of raw ``[numberToes, bodyLength]`` rows (the units ``predict`` takes)."""
        return self.network(self.inputs(features))

    def setup(self, stage: str) -> None:
        """Before training, fit the input layer on the rows the data module hands over (its
        ``input_rows``; Lightning sets the data module up first). A resumed run then restores the same
        values from its checkpoint, which Lightning loads after this."""
        input_rows = getattr(getattr(self.trainer, "datamodule", None), "input_rows", None)
        if stage == "fit" and input_rows is not None:
            self.inputs.fit(*input_rows())

    def logits_module(self) -> torch.nn.Module:
        """Raw features to logits and nothing else (no metrics, no optimizer): what inference, export and
        ensembles hold."""
        return torch.nn.Sequential(self.inputs, self.network)

    def _shared_step(self, batch: Sequence[torch.Tensor], stage: str, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of a batch; the stage's loss and metrics accumulate on the way."""
        features, labels = batch
        logits = self(features)
        loss = self.loss(logits, labels)
        self.update_metrics(stage, self.predict_classes(logits.detach()), labels, loss.detach(), batch_idx)
        return loss, logits

    def update_metrics(
        self, stage: str, predicted: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor, batch_idx: int
    ) -> None:
        """Accumulate a batch; nothing leaves the device until the epoch ends. A training batch's loss is
        also watched for divergence."""
        if stage == "train":
            self.tally.add(batch_idx, loss, (predicted == labels).sum(), len(labels))
            return
        # One value per row rather than weight=len(labels): torchmetrics 1.9 drops the weight under
        # nan_strategy="disable" (Lightning-AI/torchmetrics#3434), and a short last batch then counts
        # as much as a full one.
        self._loss(stage).update(loss.expand(len(labels)))
        self._collection(f"{stage}_metrics").update(predicted, labels)

    def _stop_if_diverged(self) -> None:
        """Raise before anything (validation, a checkpoint) uses weights from a diverged step."""
        batch = self.tally.settle()
        if batch is not None:
            raise TrainingDiverged(
                f"training diverged: the loss became NaN or infinite at epoch {self.current_epoch}, batch {batch}; "
                "no checkpoint was saved from that point on. Lower the learning rate and run again"
            )

    def on_train_epoch_start(self) -> None:
        self.tally = TrainingTally()

    def on_validation_start(self) -> None:
        if self.trainer.training:
            self._stop_if_diverged()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._stop_if_diverged()
        checkpoint[CHECKPOINT_KEY] = {"model": type(self).__name__, "history": list(self.history)}
        stamp_checksum(checkpoint)  # the last hook of a save: every section it covers is in place

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        migrate_legacy_statistics(checkpoint, "inputs")
        saved = checkpoint.get(CHECKPOINT_KEY)
        self.history = list(saved.get("history", [])) if isinstance(saved, dict) else []

    def monitorable_metrics(self) -> list[str]:
        """The metrics logged each epoch while fitting: what a checkpoint or early stopping may monitor."""
        return [
            *(f"{stage}/loss" for stage in ("train", "val")),
            *(str(name) for name in self._collection("train_metrics")),
            *(str(name) for name in self._collection("val_metrics")),
        ]

    def _log_epoch(self, stage: str) -> None:
        """Log the epoch's loss and metrics, synced across processes by torchmetrics, then reset them."""
        collections = [self._collection(f"{stage}_metrics"), *([self._collection("test_scores")] if stage == "test" else [])]
        values = {f"{stage}/loss": self._loss(stage).compute()}
        for collection in collections:
            values.update(collection.compute())
        # Already identical on every rank; sync_dist only averages equal values (and tells Lightning so).
        self.log_dict(values, prog_bar=stage != "test", sync_dist=True)
        if stage != "test" and not self.trainer.sanity_checking:
            self._remember(stage, values)
        self._loss(stage).reset()
        for collection in collections:
            collection.reset()

    def _remember(self, stage: str, values: dict[str, torch.Tensor]) -> None:
        """Add the epoch's loss and accuracy to :attr:`history` (one host sync per epoch)."""
        entry = {"stage": stage, "epoch": self.current_epoch, "step": self.global_step}
        entry.update({name.split("/")[1]: float(values[name]) for name in (f"{stage}/loss", f"{stage}/acc")})
        self.history.append(entry)

    def on_train_epoch_end(self) -> None:
        self._stop_if_diverged()
        if rows := self.tally.rows:
            self._loss("train").update(self.tally.loss_sum / rows, weight=rows)
            self._collection("train_metrics")["acc"].update(self.tally.right / rows, weight=rows)
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        summaries = {name: cast(Metric, metric) for name, metric in self.test_summaries.items()}
        self.test_summary = {"confusion": summaries["confusion"].compute().cpu()}
        if "roc" in summaries:
            self.test_summary["roc"] = tuple(part.cpu() for part in summaries["roc"].compute()[:2])
        for metric in summaries.values():
            metric.reset()
        self._log_epoch("test")

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        return self._shared_step(batch, "train", batch_idx)[0]

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val", batch_idx)

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Returns the predicted classes and probabilities, for callbacks that look at the test set
        (the figures)."""
        _, logits = self._shared_step(batch, "test", batch_idx)
        probabilities = self.probabilities(logits)
        predicted = self.predict_classes(logits)
        cast(Metric, self.test_summaries["confusion"]).update(predicted, batch[1])
        if self.binary:  # scores, not decisions: the ROC area and curve
            self._collection("test_scores").update(probabilities[:, 1], batch[1])
            cast(Metric, self.test_summaries["roc"]).update(probabilities[:, 1], batch[1])
        return {"predicted": predicted, "probabilities": probabilities}

    def predict_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Class probabilities (one column per class), the predicted class index, and whether the row lies
        far outside the training data (an extrapolation)."""
        logits = self(batch[0])
        return {
            "probabilities": self.probabilities(logits),
            "predicted": self.predict_classes(logits),
            "outside_training_range": self.inputs.outside_training_range(batch[0]),
        }


class OptimizedClassifier(DragonClassifier):
    """A classifier trained by the optimizer (and scheduler) its config names."""

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        label_smoothing: ClosedOpenUnitInterval = 0.0,
        input_noise: NonNegativeFloat = 0.0,
        **kwargs,
    ) -> None:
        """
        Args:
            optimizer: the optimizer and its settings, e.g. ``torch.optim.Adam`` with ``lr: 2e-4`` (the
                tutorial's MLP); ``torch.optim.AdamW`` with ``weight_decay`` for weight decay.
            scheduler: a learning-rate scheduler, e.g. ``torch.optim.lr_scheduler.StepLR`` (unset: none).
                ``ReduceLROnPlateau`` follows ``val/loss``.
            label_smoothing: share of each training label spread evenly over the classes (0: none):
                softer targets, less confident probabilities. Validation and test losses stay plain.
            input_noise: standard deviation of Gaussian noise added to the standardized features of
                every training batch (0: none): a smoothness prior, close to what an RBF kernel assumes.
        """
        super().__init__(**kwargs)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.label_smoothing = label_smoothing
        self.input_noise = input_noise

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        standardized = self.inputs(features)
        if self.training and self.input_noise > 0:
            standardized = standardized + self.input_noise * torch.randn_like(standardized)
        return self.network(standardized)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """With ``label_smoothing``, the training loss on smoothed targets; otherwise the plain loss."""
        if not (self.training and self.label_smoothing > 0):
            return super().loss(logits, labels)
        if self.binary:
            targets = labels.to(logits.dtype) * (1 - self.label_smoothing) + self.label_smoothing / 2
            return F.binary_cross_entropy_with_logits(logits[:, 0], targets)
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def configure_optimizers(self):
        """The injected optimizer, and the scheduler if one is configured (``ReduceLROnPlateau``
        follows ``val/loss``); Lightning steps both."""
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler(optimizer), "monitor": "val/loss"}}
