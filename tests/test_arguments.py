"""Ranges live in the signatures: the parser applies them on the command line, check_arguments for Python
callers, and the models' shared arguments are declared once."""

import pytest

from dragon_lightning.arguments import init_parameters, parse_options
from dragon_lightning.callbacks import TutorialFigures
from dragon_lightning.data import DragonDataModule
from dragon_lightning.errors import InvalidArgument
from dragon_lightning.models import FoldEnsemble, LogisticRegression, MLPClassifier, Perceptron

PYTHON_CASES = [
    (MLPClassifier, {"hidden_sizes": [4, 0]}, "hidden_sizes is not of type PositiveInt: 0"),
    (MLPClassifier, {"dropout": 1.0}, "dropout is not of type ClosedOpenUnitInterval"),
    (LogisticRegression, {"threshold": 0.0}, "threshold is not of type OpenUnitInterval"),
    (Perceptron, {"tol": -1.0}, "tol is not of type NonNegativeFloat"),
    (Perceptron, {"num_classes": 1}, "num_classes is not of type ClassCount"),
    (DragonDataModule, {"batch_size": 0}, "batch_size is not of type PositiveInt"),
    (DragonDataModule, {"seed": 2**32}, "seed is not of type Seed"),
    (TutorialFigures, {"max_points": 0}, "max_points is not of type PositiveInt"),
    (TutorialFigures, {"boundary_every_n_epochs": -1}, "boundary_every_n_epochs is not of type PositiveInt"),
    (MLPClassifier, {"hidden_sizes": None}, "hidden_sizes may not be null"),
    (MLPClassifier, {"hidden_sizes": [4, None]}, "hidden_sizes may not be null"),
    (LogisticRegression, {"threshold": None}, "threshold may not be null"),
]


@pytest.mark.parametrize(
    "cls, arguments, message", PYTHON_CASES, ids=[f"{c.__name__}-{next(iter(a))}" for c, a, _ in PYTHON_CASES]
)
def test_python_callers_get_the_ranges_of_the_signature(cls, arguments, message):
    with pytest.raises(InvalidArgument, match=message):
        cls(**arguments)
    valid = {"hidden_sizes": [4], "dropout": 0.5, "threshold": 0.3, "tol": None, "num_classes": 2, "batch_size": 1}
    valid |= {"seed": 2**32 - 1, "max_points": 1, "boundary_every_n_epochs": None}
    cls(**{name: valid[name] for name in arguments})


def test_shared_arguments_are_declared_once_and_reach_every_model():
    shared = {"num_features", "num_classes", "class_names", "threshold"}
    optimized = {"optimizer", "scheduler", "label_smoothing", "input_noise"}
    assert shared | optimized | {"hidden_sizes"} <= set(init_parameters(MLPClassifier))
    assert shared | optimized == set(init_parameters(LogisticRegression))
    assert shared | {"lr", "tol", "online"} == set(init_parameters(Perceptron)), "the perceptron has no optimizer"
    model = MLPClassifier(num_classes=3, hidden_sizes=[4], threshold=0.5)
    assert model.hparams["num_classes"] == 3 and model.hparams["threshold"] == 0.5 and "optimizer" not in model.hparams
    assert set(init_parameters(FoldEnsemble)) == {"members", "threshold"}


def test_a_commands_options_are_taken_whole_never_by_a_prefix():
    """``export --ckpt x`` must not be read as ``--ckpt_path x``: a prefix is a typo, refused."""
    from jsonargparse import ArgumentError

    from dragon_lightning.export import ExportOptions

    with pytest.raises(ArgumentError, match="unrecognized arguments: --ckpt x"):
        parse_options(ExportOptions, ["--ckpt", "x", "--output", "model.onnx"], "export", "")
    assert parse_options(ExportOptions, ["--ckpt_path", "x", "--output", "model.onnx"], "export", "").ckpt_path == "x"
