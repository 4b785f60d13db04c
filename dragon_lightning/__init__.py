"""dragon-lightning: the dragon classification tutorial as a PyTorch Lightning project.

``from dragon_lightning import load_model`` gives a trained checkpoint's scikit-learn-style predictor;
``cli_main([...])`` runs any command (``fit``, ``cv``, ``export``...) from Python, as a notebook does.
"""

__version__ = "0.1.0"
__all__ = ["cli_main", "load_model"]


def __getattr__(name: str):
    # Imported on first use: the package itself stays light for ``python -m dragon_lightning --help``.
    if name == "load_model":
        from dragon_lightning.inference import load_model

        return load_model
    if name == "cli_main":
        from dragon_lightning.commands import cli_main

        return cli_main
    raise AttributeError(f"module 'dragon_lightning' has no attribute {name!r}")
