"""dragon-lightning from Python: train with a plain Lightning Trainer, then predict with ``load_model``.

    python examples/python_api.py

Writes ``lightning_logs/`` in the current folder, as the command line does. The same run from Python
through the CLI is ``cli_main(["fit", "--config", "configs/color_mlp.yaml"])``
(``from dragon_lightning import cli_main``).
"""

from functools import partial

import lightning as L
import pandas as pd
import torch

from dragon_lightning import load_model
from dragon_lightning.data import DragonDataModule
from dragon_lightning.models import MLPClassifier


def main() -> None:
    L.seed_everything(0)
    data = DragonDataModule(task="color", n_dragons=480, data_dir=None, batch_size=16)
    model = MLPClassifier(
        num_features=data.num_features,
        num_classes=data.num_classes,
        class_names=data.class_names,
        hidden_sizes=[64, 64],
        optimizer=partial(torch.optim.Adam, lr=0.01),
    )
    trainer = L.Trainer(max_epochs=30, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    print(f"test accuracy {float(trainer.callback_metrics['test/acc']):.3f}")

    trained = load_model(trainer.checkpoint_callback.best_model_path)
    dragons = pd.DataFrame({"numberToes": [5, 10, 20], "bodyLength": [150.0, 200.0, 260.0]})
    print(trained.predict_proba(dragons).assign(predicted=trained.predict(dragons)).round(3).to_string())


if __name__ == "__main__":
    main()
