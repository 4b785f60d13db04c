"""A trained model outside Lightning: ``load_model`` turns a checkpoint into a scikit-learn-style
predictor for notebooks and scripts, and into the plain ``torch.nn.Module`` that export writes out.

The checkpoint is read as data (``weights_only=True``) onto the CPU, whatever device trained it. The
predictor takes features in the units ``predict`` takes (``numberToes``, ``bodyLength`` after the
tutorial's recipe): the standardization is the model's first layer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jsonargparse import ArgumentError, ArgumentParser
from torch import nn

from dragon_lightning import answering
from dragon_lightning.arguments import init_parameters
from dragon_lightning.checkpoints.checks import check_hyperparameters
from dragon_lightning.checkpoints.files import checkpoint_from_bytes, load_checkpoint, resolve_shortcut
from dragon_lightning.checkpoints.files import model_class as checkpoint_model_class
from dragon_lightning.data import DragonDataModule
from dragon_lightning.data.features import CLASS_NAMES
from dragon_lightning.errors import DragonInputError, first_line
from dragon_lightning.gates.tables import Features, feature_tensor
from dragon_lightning.messages import input_error_message
from dragon_lightning.models import DragonClassifier
from dragon_lightning.models.base import class_probabilities, decide
from dragon_lightning.schema import FEATURE_COLUMNS, prediction_columns

# The network holds gradients for fine-tuning (``classifier``); answers need none.
in_chunks = torch.no_grad()(answering.in_chunks)
answers_in_chunks = torch.no_grad()(answering.answers_in_chunks)


def task_of(classifier: DragonClassifier) -> str:
    """The task a classifier was trained for, from its class names."""
    for task, names in CLASS_NAMES.items():
        if list(names) == list(classifier.class_names):
            return task
    return "fire" if classifier.binary else "color"


class AnswerModel(nn.Module):
    """Raw ``[N, 2]`` float32 features in; class probabilities ``[N, C]``, the decided class index ``[N]``
    and whether the row lies far outside the training range ``[N]`` out: the model's standardization,
    network, sigmoid or softmax, decision rule (:func:`~dragon_lightning.models.base.decide`) and
    extrapolation rule, nothing else. What export traces, so an ONNX file's users read the class and
    the flag from the graph as ``predict`` writes them."""

    def __init__(self, classifier: DragonClassifier) -> None:
        super().__init__()
        self.logits = classifier.logits_module()
        self.logit_threshold = classifier.logit_threshold
        self.training_range = classifier.inputs

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.logits(features)
        outside = self.training_range.outside_training_range(features)
        return class_probabilities(logits), decide(logits, self.logit_threshold), outside


class TrainedModel:
    """A trained dragon classifier with scikit-learn's inference interface.

    Attributes:
        classes_: class names in the order of the probability columns.
        task: ``fire`` or ``color``.
        feature_names_in_: the two input columns, ``numberToes`` and ``bodyLength``.
        module: the :class:`AnswerModel` on the CPU, in eval mode.
        classifier: the restored LightningModule (for fine-tuning or a ``Trainer``).
    """

    feature_names_in_ = np.array(FEATURE_COLUMNS, dtype=object)
    n_features_in_ = len(FEATURE_COLUMNS)

    def __init__(self, classifier: DragonClassifier, data_options: dict, path: Path) -> None:
        self.classifier = classifier.eval()
        self.task = task_of(classifier)
        self.path = path
        self.data_options = data_options
        """The data module's options at training time (how to rebuild its splits)."""
        self.feature_range = (classifier.inputs.low.numpy(), classifier.inputs.high.numpy())
        """Lowest and highest training value of each feature."""
        self.classes_ = np.array(classifier.class_names, dtype=object)
        self.module = AnswerModel(classifier).eval()

    def __repr__(self) -> str:
        return f"TrainedModel({type(self.classifier).__name__}, task={self.task!r}, classes={list(self.classes_)}, path='{self.path}')"

    def features(self, X: Features) -> torch.Tensor:
        """``X`` checked and as a float32 ``[N, 2]`` tensor (the table gate): a DataFrame's two feature
        columns by name (others ignored), or an array's two columns in that order."""
        return feature_tensor(X, "X")

    def probabilities(self, X: Features) -> np.ndarray:
        """Class probabilities as a float32 ``[N, C]`` array."""
        return answers_in_chunks(self.module, self.features(X))[0]

    def predict_proba(self, X: Features) -> pd.DataFrame:
        """One ``p_<class>`` column per class (the columns ``predict`` writes); a DataFrame keeps its index."""
        _, *columns, _ = prediction_columns(self.classes_)
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(self.probabilities(X), columns=columns, index=index)

    def decision_function(self, X: Features) -> np.ndarray:
        """scikit-learn's decision scores: for two classes one score per row, positive where the model
        predicts the second class (the logit less that of ``threshold``); else one logit per class."""
        logits = in_chunks(self.module.logits, self.features(X))
        if self.classifier.binary:
            return logits[:, 0] - self.classifier.logit_threshold
        return logits

    def outside_training_range(self, X: Features) -> np.ndarray:
        """True for rows far outside the training data (as ``predict`` marks them): extrapolations."""
        return self.classifier.inputs.outside_training_range(self.features(X)).numpy()

    def predict(self, X: Features) -> np.ndarray:
        """The predicted class name of every row, decided as ``predict`` decides."""
        return self.classes_[answers_in_chunks(self.module, self.features(X))[1]]

    def test_split(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The checkpoint's test rows (raw features, class indices), drawn again from its data options;
        ``None`` when they cannot be (a CSV that is gone or changed, or no data options). Options of
        the wrong type (a file edited on purpose) are refused in one line, not drawn from."""
        accepted = init_parameters(DragonDataModule)
        options = {name: value for name, value in self.data_options.items() if name in accepted}
        if not options:
            return None
        options |= {"data_dir": None, "predict_csv": None}
        check_types(options, self.path, DragonDataModule, "data option")
        data = DragonDataModule(**options)
        try:
            data.setup("test")
        except DragonInputError:
            return None
        features, labels = data.splits["test"]
        return features.numpy(), labels.numpy()


def _check_fitted_features(classifier: DragonClassifier, path: str | os.PathLike) -> None:
    """The standardization and training range: finite numbers and a standard deviation above 0 (the
    data module never fits 0; a file that says so was edited)."""
    inputs = classifier.inputs
    for name in ("mean", "std", "low", "high"):
        if not torch.isfinite(getattr(inputs, name)).all():
            raise DragonInputError(
                f"{path}: its fitted feature {name} is not {len(FEATURE_COLUMNS)} finite numbers; not a usable checkpoint"
            )
    if not (inputs.std > 0).all():
        raise DragonInputError(
            f"{path}: its feature scaling has a standard deviation of 0, which would divide by zero; not a usable checkpoint"
        )


def check_types(values: dict, path: str | os.PathLike, owner: type, what: str) -> None:
    """A checkpoint's ``values`` for ``owner`` (a model, the data module) against the types of its
    signature, as the command line's parser checks them: a file edited with a matching checksum may
    hold ``activation: 0``. ``what`` they are, for the message."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(owner)
    try:
        parser.parse_object(values)
    except ArgumentError as error:
        reason = (input_error_message(error) or first_line(error)).removeprefix("--")
        raise DragonInputError(f"{path}: its {what} {reason}") from None


def load_model(path: str | os.PathLike, option: str | None = None, data: bytes | None = None) -> TrainedModel:
    """Load a dragon-lightning checkpoint for inference on the CPU (as data: no pickled code runs):
    a file, or ``"best"`` and ``"last"`` as ``--ckpt_path`` takes them (the newest run's under
    ``./lightning_logs``).

    ``option`` names where ``path`` came from in messages (a command-line option); ``data``: the file's
    bytes, read through the gate already (a server's workers load what the server read and checked,
    whatever the file holds by then). Raises :class:`DragonInputError` naming the file when it is not
    a readable dragon-lightning checkpoint or its weights do not fit the model it names.
    """
    if data is None and isinstance(path, str):
        path = resolve_shortcut(path, option=option)
    checkpoint = load_checkpoint(path, option=option) if data is None else checkpoint_from_bytes(data, path, option)
    assert checkpoint is not None  # a path was given
    model_class = checkpoint_model_class(checkpoint, path)
    hyperparameters = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
    check_hyperparameters(checkpoint, path, model_class, {})
    check_types(hyperparameters, path, model_class, "hyperparameter")
    if "compile" in init_parameters(model_class):
        hyperparameters["compile"] = False  # inference runs eagerly; the weights are the same
    try:
        classifier = model_class(**hyperparameters)
        classifier.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, TypeError, ValueError) as error:
        reason = first_line(error)
        raise DragonInputError(f"{path}: its weights do not fit a {model_class.__name__} ({reason})") from None
    _check_fitted_features(classifier, path)
    return TrainedModel(classifier, dict(checkpoint.get("datamodule_hyper_parameters", {})), Path(path))
