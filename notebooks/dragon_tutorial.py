# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Dragons with dragon-lightning
#
# The neural-network tutorial you know predicts whether a dragon breathes fire, and which color it is,
# from its number of toes and its body length. This notebook walks the same path with dragon-lightning:
# the same data and models, trained by Lightning, measured against the tutorial and scikit-learn.
# It runs top to bottom in a few minutes on two CPU cores.

# %%
import logging
import os
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import onnxruntime
import pandas as pd
import torch
from IPython.display import Image, display
from lightning.pytorch.loggers import TensorBoardLogger
from threadpoolctl import threadpool_limits

import dragon_lightning
from dragon_lightning import cli_main, load_model
from dragon_lightning.baselines import TUTORIAL_PRINTED, sklearn_predictions
from dragon_lightning.callbacks import TutorialFigures
from dragon_lightning.data import DragonDataModule
from dragon_lightning.figures import as_image, confusion_counts, confusion_matrix, decision_regions, dragons_by_class
from dragon_lightning.models import LogisticRegression, MLPClassifier, Perceptron

CSV_PATH = None  # None: generated dragons. The real file: "../../shared/data/2020-10-21-dragon-data.csv"
SEED = 0  # the draw: toes, split and initial weights
RUNS = Path("dragon_tutorial_runs")  # every run folder of this notebook goes here
CONFIGS = Path(dragon_lightning.__file__).resolve().parents[1] / "configs"
L.seed_everything(SEED, verbose=False)
# One CPU thread for PyTorch and for NumPy's and scikit-learn's BLAS: these models are tiny, and in a
# Jupyter kernel a second thread made a 64x64 matrix product 28 times slower (the kernel's own threads
# take the core it waits for).
torch.set_num_threads(1)
threadpool_limits(1)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # Lightning's start-up lines and tips
warnings.filterwarnings("ignore", message=".*LeafSpec")  # a deprecation inside Lightning, nothing to act on

# %% [markdown]
# ## 1. The dragon data
#
# Each row is a dragon. The tutorial turns it into two features: a number of toes drawn from whether
# the dragon breathes fire, and its body length shifted by the same. `DragonDataModule` generates the
# table (or reads your CSV), makes those features and splits them, stratified, into train, validation
# and test.

# %%
fire_data = DragonDataModule(task="fire", csv_path=CSV_PATH, seed=SEED, data_dir=None)
fire_data.setup("fit")
print({name: len(labels) for name, (_, labels) in fire_data.splits.items()}, "dragons per split")
fire_data.load_table().head()

# %%
features, labels = (tensor.numpy() for tensor in fire_data.splits["train"])
as_image(dragons_by_class(features, labels, fire_data.class_names, "training dragons: does it breathe fire?"))

# %% [markdown]
# ## 2. Fire: logistic regression and the perceptron
#
# Each model is a `LightningModule` trained by `Trainer.fit` on the data module. The model standardizes
# its inputs itself, so everything below feeds it raw toes and lengths. The figures callback draws the
# decision boundary as training moves it.


# %%
def train(model: L.LightningModule, data: DragonDataModule, name: str, epochs: int) -> L.Trainer:
    """Fit, then test the final weights; pictures and TensorBoard logs go to RUNS/name."""
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(RUNS, name=name),
        callbacks=[TutorialFigures()],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    print(f"{name}: test accuracy {float(trainer.callback_metrics['test/acc']):.3f}")
    return trainer


def show_boundary_over_training(trainer: L.Trainer) -> None:
    display(Image(filename=Path(trainer.log_dir) / "figures" / "boundary_over_training.gif"))


logistic_run = train(
    LogisticRegression(num_classes=2, class_names=fire_data.class_names, optimizer=lambda p: torch.optim.Adam(p, lr=0.05)),
    fire_data,
    "fire_logistic",
    epochs=40,
)
show_boundary_over_training(logistic_run)

# %% [markdown]
# The tutorial's perceptron moves its weights only on the dragons it gets wrong, by a step that shrinks
# each epoch. Here a batch makes one such update; batch size 1 would be the tutorial's row-by-row rule.

# %%
perceptron_run = train(
    Perceptron(num_classes=2, class_names=fire_data.class_names, lr=1.0, tol=None), fire_data, "fire_perceptron", epochs=20
)
show_boundary_over_training(perceptron_run)

# %% [markdown]
# ## 3. Color: the multiclass perceptron, then the MLP
#
# Three colors, one output per color. The tutorial's network has hidden layers of 10, 20 and 1000
# units; trained on standardized features with a larger Adam step, it finds the three regions.

# %%
color_data = DragonDataModule(task="color", csv_path=CSV_PATH, seed=SEED, data_dir=None)
color_data.setup("fit")
color_perceptron_run = train(
    Perceptron(num_classes=3, class_names=color_data.class_names, lr=1.0, tol=None), color_data, "color_perceptron", epochs=20
)
mlp_run = train(
    MLPClassifier(
        num_classes=3,
        class_names=color_data.class_names,
        hidden_sizes=(10, 20, 1000),
        optimizer=lambda p: torch.optim.Adam(p, lr=0.003),
    ),
    color_data,
    "color_mlp",
    epochs=60,
)
show_boundary_over_training(mlp_run)

# %% [markdown]
# A trained run is a checkpoint; `load_model` turns it into a scikit-learn-style predictor that takes
# raw features. Its regions and confusion matrix on the test dragons:

# %%
mlp = load_model(mlp_run.checkpoint_callback.best_model_path)
test_features, test_labels = (tensor.numpy() for tensor in color_data.splits["test"])
display(as_image(decision_regions(mlp, test_features, test_labels, "MLP: color regions over the test dragons")))
predicted = mlp.predict(test_features)
predicted_index = np.searchsorted(mlp.classes_, predicted)  # classes_ are sorted: Blue, Red, Yellow
as_image(confusion_matrix(confusion_counts(test_labels, predicted_index, 3), list(mlp.classes_)))

# %% [markdown]
# ## 4. The results against the tutorial and scikit-learn
#
# Our four test accuracies beside what the tutorial printed for its single draw, and beside
# scikit-learn's models trained on exactly the same training rows and standardized features.

# %%
runs = {
    ("fire", "LogisticRegression"): logistic_run,
    ("fire", "Perceptron"): perceptron_run,
    ("color", "Perceptron"): color_perceptron_run,
    ("color", "MLPClassifier"): mlp_run,
}
peers = {task: sklearn_predictions(data) for task, data in (("fire", fire_data), ("color", color_data))}
truth = {"fire": fire_data.splits["test"][1].numpy(), "color": test_labels}
peer_names = {
    "LogisticRegression": "LogisticRegression",
    "Perceptron": "Perceptron",
    "MLPClassifier": "MLPClassifier (10,20,1000)",
}
results = pd.DataFrame(
    [
        {
            "task": task,
            "method": model,
            "dragon-lightning": float(trainer.callback_metrics["test/acc"]),
            "tutorial printed": TUTORIAL_PRINTED[(task, model)],
            "scikit-learn, same rows": float((peers[task][peer_names[model]] == truth[task]).mean()),
        }
        for (task, model), trainer in runs.items()
    ]
)
results.round(3)

# %% [markdown]
# ## 5. The same, the project's way
#
# Everything above is also a command with a YAML config, e.g.
# `dragon-lightning fit --config configs/color_mlp.yaml`; `cli_main` runs the same commands from Python.
# TensorBoard shows every run of this notebook (the tests set `DRAGON_NOTEBOOK_NO_SERVERS`: no server there).

# %%
# %load_ext tensorboard

# %%
if "DRAGON_NOTEBOOK_NO_SERVERS" not in os.environ:
    get_ipython().run_line_magic("tensorboard", f"--logdir {RUNS}")  # noqa: F821 (IPython's global)

# %% [markdown]
# Cross-validation chooses settings without touching the test dragons. `cv --refit true` then trains
# once more on every non-test dragon for the median epochs the folds kept, and `--ensemble true`
# averages the fold models and the refit (25 epochs a run here, to keep the notebook short).

# %%
cv = cli_main(
    [
        "cv",
        "--config",
        str(CONFIGS / "color_mlp.yaml"),
        "--folds",
        "3",
        "--refit",
        "true",
        "--ensemble",
        "true",
        "--trainer.max_epochs",
        "25",
        "--output_dir",
        str(RUNS / "cv_color_mlp"),
        "--trainer.default_root_dir",
        str(RUNS),
        "--data.seed",
        str(SEED),
        "--data.data_dir",
        "null",
        "--trainer.enable_progress_bar",
        "false",
        *(["--data.csv_path", str(CSV_PATH)] if CSV_PATH else []),
    ]
)
print(f"refit test accuracy {cv.refit_test['test/acc']:.3f}, ensemble {cv.ensemble_test['test/acc']:.3f}")

# %% [markdown]
# Finally the ensemble leaves Python: `export` writes one ONNX graph with every member inside, which
# onnxruntime runs with the same answers as `load_model`: the probabilities and the decided class.

# %%
ensemble_checkpoint = RUNS / "cv_color_mlp" / "ensemble" / "checkpoints" / "ensemble.ckpt"
cli_main(
    ["export", "--ckpt_path", str(ensemble_checkpoint), "--output", str(RUNS / "color_ensemble.onnx"), "--overwrite", "true"]
)
session = onnxruntime.InferenceSession(str(RUNS / "color_ensemble.onnx"), providers=["CPUExecutionProvider"])
onnx_probabilities, onnx_classes = session.run(["probabilities", "predicted"], {"features": test_features})
ensemble = load_model(ensemble_checkpoint)
print(f"largest difference from load_model: {np.abs(onnx_probabilities - ensemble.probabilities(test_features)).max():.1e}")
print(f"same classes as load_model: {(ensemble.classes_[onnx_classes] == ensemble.predict(test_features)).all()}")
ensemble.predict_proba(pd.DataFrame(test_features[:5], columns=ensemble.feature_names_in_)).round(3)
