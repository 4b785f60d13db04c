"""``DragonDataModule``: dragons generated or loaded, the tutorial's features, seeded stratified splits."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt
from lightning.pytorch.utilities import rank_zero_info

from dragon_lightning.arguments import AtLeastTwo, ClosedOpenUnitInterval, DragonCount, Seed, check_arguments
from dragon_lightning.data.batches import TensorBatches
from dragon_lightning.data.csv_io import read_dragon_csv, read_feature_csv, write_csv
from dragon_lightning.data.features import CLASS_NAMES, SplitIndices, stratified_folds, stratified_split, tutorial_features
from dragon_lightning.data.generator import generate_dragons
from dragon_lightning.errors import DragonInputError, InvalidArgument
from dragon_lightning.schema import FEATURE_COLUMNS, prediction_columns


class DragonDataModule(L.LightningDataModule):
    """Dragons for the tutorial's two tasks, as whole-split tensors served in minibatches.

    The table is generated (``csv_path`` unset) or read from a CSV of the same schema, turned into
    the tutorial's ``[numberToes, bodyLength]`` features, and split per class into train, validation
    and test. Batches hold raw features: when fitting, the model takes the training split from
    :meth:`input_rows` and fits its input layer on it once, keeping the statistics in its weights, so
    a restored model needs no data module to scale what it is given.
    """

    def __init__(
        self,
        task: Literal["fire", "color"] = "color",
        csv_path: Path | None = None,
        n_dragons: DragonCount = 480,
        data_dir: Path | None = Path("data"),
        seed: Seed | None = None,
        test_fraction: OpenUnitInterval = 0.4,
        val_fraction: ClosedOpenUnitInterval = 0.2,
        standardize: bool = True,
        batch_size: PositiveInt = 32,
        shuffle: bool = True,
        predict_csv: Path | None = None,
        n_folds: AtLeastTwo | None = None,
        fold: NonNegativeInt = 0,
        fold_draw: NonNegativeInt = 0,
    ) -> None:
        """
        Args:
            task: ``fire`` (does it breathe fire? binary) or ``color`` (Blue, Red or Yellow).
            csv_path: a CSV with the columns testScore, bodyLength, mountainRange, color, diet,
                breathesFire (extra columns are ignored). Unset: generate the dragons.
            n_dragons: how many dragons to generate (480, as the real file, gives 20 per cell).
            data_dir: where a generated table is written as CSV, named by size and seed; an existing
                different file there is never overwritten. Unset (``null``): keep it in memory only.
            seed: seeds the generated table, the toes draw and the split. Unset: 0, and under the CLI
                the run's ``seed_everything`` value, so one seed changes both the data draw and the model init.
            test_fraction: share of each class held out for testing (the tutorial's 0.4).
            val_fraction: share of the remaining rows of each class used for validation (unused
                with ``n_folds``). 0: no validation, every non-test row trains (a refit once settings
                and epochs are chosen); nothing may then monitor a ``val/`` metric.
            standardize: the model scales features to zero mean and unit variance, fitted on the
                training split. Off: the raw features, as the tutorial trains.
            batch_size: rows per optimizer step, and per evaluation step.
            shuffle: draw a new training order every epoch. Off: the same split order every epoch.
            predict_csv: dragons to predict, in the model's feature space (columns numberToes and
                bodyLength, after the tutorial's recipe); other columns are copied to the output.
            n_folds: cross-validation: cut the rows outside the test split into this many stratified
                folds (the test split stays as without folds). Unset: one validation split.
            fold: with ``n_folds``, the fold that validates (0 to n_folds - 1); the others train.
            fold_draw: with ``n_folds``, which random cut into folds (repeated cross-validation: each
                draw cuts the same non-test rows into other stratified folds; the test split is the same).
        """
        super().__init__()
        self.save_hyperparameters()
        check_arguments(self, self.hparams)
        if fold >= (n_folds or 1):
            raise InvalidArgument(self, "fold", f"must lie between 0 and {(n_folds or 1) - 1} for n_folds {n_folds}, got {fold}")
        seed = 0 if seed is None else seed
        self.hparams["seed"] = seed
        for name in ("csv_path", "data_dir", "predict_csv"):  # plain strings: checkpoints hold no Path objects
            self.hparams[name] = None if self.hparams[name] is None else str(self.hparams[name])
        self.task = task
        self.csv_path = csv_path
        self.predict_csv = predict_csv
        self.seed = seed
        self.class_names = list(CLASS_NAMES[task])
        self.num_classes = len(self.class_names)
        self.num_features = len(FEATURE_COLUMNS)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.predict_table: pd.DataFrame | None = None
        self.predict_features: torch.Tensor | None = None  # the table's [numberToes, bodyLength], unscaled
        self._generated: pd.DataFrame | None = None
        self._prepared = False
        self.rows_sha256: str | None = None
        """SHA-256 of every row's features and label, in the table's order, before the split: set up, and
        written into each checkpoint, so that a run resumes only on the rows it was trained on."""

    @property
    def generated_csv_path(self) -> Path:
        """Where ``prepare_data`` writes the generated table (needs ``data_dir``)."""
        return Path(self.hparams["data_dir"]) / f"dragons_n{self.hparams['n_dragons']}_seed{self.seed}.csv"

    def prepare_data(self) -> None:
        """Write the generated table to ``data_dir`` (once, atomically, never clobbering).

        The CLI calls it after every input check has passed, so bad input leaves no table behind.
        """
        if self._prepared or self.csv_path is not None or self.hparams["data_dir"] is None:
            return
        table = self._generated_table()
        if self.hparams["n_dragons"] >= 1_000_000:  # about 2 s of writing per million rows: say what is happening
            rank_zero_info(f"Writing {self.hparams['n_dragons']:,} generated dragons to {self.generated_csv_path}")
        write_csv(table, self.generated_csv_path, overwrite=False)
        self._prepared = True
        if self.splits:  # setup has already used it
            self._generated = None

    def _generated_table(self) -> pd.DataFrame:
        """The generated table, drawn once per process and kept until written and split."""
        if self._generated is None:
            self._generated = generate_dragons(self.hparams["n_dragons"], self.seed)
        return self._generated

    def load_table(self) -> pd.DataFrame:
        """The dragon table: the user's CSV, or the generated one (the same draw as on disk)."""
        if self.csv_path is not None:
            return read_dragon_csv(self.csv_path)
        table = self._generated_table()
        if self._prepared or self.hparams["data_dir"] is None:  # nothing else needs it
            self._generated = None
        return table

    @property
    def validates(self) -> bool:
        """Whether there are validation rows (``val_fraction`` above 0, or folds)."""
        return self.hparams["val_fraction"] > 0 or self.hparams["n_folds"] is not None

    @property
    def source(self) -> str:
        """Where the table comes from, for messages."""
        return str(self.csv_path) if self.csv_path is not None else f"{self.hparams['n_dragons']} generated dragons"

    def split_indices(self, labels: np.ndarray) -> SplitIndices:
        try:
            split = stratified_split(
                labels, self.hparams["test_fraction"], self.hparams["val_fraction"], self.seed, tuple(self.class_names)
            )
            if self.hparams["n_folds"] is None:
                return split
            return stratified_folds(
                labels,
                split,
                self.hparams["n_folds"],
                self.hparams["fold"],
                self.seed,
                tuple(self.class_names),
                draw=self.hparams["fold_draw"],
            )
        except DragonInputError as error:
            raise DragonInputError(f"{self.source}: {error}") from None

    def setup(self, stage: str) -> None:
        if stage == "predict":
            self._setup_predict()
            return
        if not self.splits:
            table = self.load_table()
            feature_array, label_array = tutorial_features(table, self.task, self.seed)
            indices = self.split_indices(label_array)
            digest = hashlib.sha256(np.ascontiguousarray(feature_array).data)  # read in place: no copy of the table
            digest.update(np.ascontiguousarray(label_array).data)
            self.rows_sha256 = digest.hexdigest()
            features, labels = torch.from_numpy(feature_array), torch.from_numpy(label_array)
            self.splits = {name: (features[rows], labels[rows]) for name, rows in vars(indices).items()}

    def state_dict(self) -> dict[str, str]:
        """What Lightning keeps of this module in a checkpoint: the rows' SHA-256 (:attr:`rows_sha256`)."""
        return {"rows_sha256": self.rows_sha256} if self.rows_sha256 is not None else {}

    def input_rows(self) -> tuple[torch.Tensor, bool]:
        """The rows a model fits its input layer on, the training split in raw units, and whether it
        scales them (``standardize``); a model asks for them in its ``setup("fit")``, after this
        module's (Lightning's order)."""
        return self.splits["train"][0], self.hparams["standardize"]

    def _setup_predict(self) -> None:
        self._generated, self._prepared = None, True  # predicting needs no dragon table, on disk or in memory
        if self.predict_csv is None:
            raise DragonInputError("predict needs --data.predict_csv: a CSV with columns numberToes and bodyLength")
        self.predict_table, self.predict_features = read_feature_csv(self.predict_csv)
        taken = [name for name in prediction_columns(self.class_names) if name in self.predict_table.columns]
        if taken:
            raise DragonInputError(
                f"{self.predict_csv}: already has the column(s) {', '.join(taken)}, which predict writes; rename them"
            )

    def _batches(self, features: torch.Tensor, labels: torch.Tensor | None, train: bool = False) -> TensorBatches:
        trainer = self.trainer
        return TensorBatches(
            features,
            labels,
            self.hparams["batch_size"],
            shuffle=train and self.hparams["shuffle"],
            seed=self.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            drop_uneven=train,
            device=trainer.strategy.root_device if trainer else "cpu",
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches(*self.splits["train"], train=True)

    def val_dataloader(self) -> TensorBatches | list:
        """The validation rows; none (Lightning skips the loop) at ``val_fraction`` 0."""
        return self._batches(*self.splits["val"]) if self.validates else []

    def test_dataloader(self) -> TensorBatches:
        return self._batches(*self.splits["test"])

    def predict_dataloader(self) -> TensorBatches:
        if self.predict_features is None:
            raise DragonInputError("predict needs setup('predict') first: it reads --data.predict_csv")
        return self._batches(self.predict_features, None)
