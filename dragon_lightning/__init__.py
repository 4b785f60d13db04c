"""dragon-lightning: the dragon classification tutorial as a PyTorch Lightning project.

``from dragon_lightning import load_model`` gives a trained checkpoint's scikit-learn-style predictor.
"""

__version__ = "0.1.0"
__all__ = ["load_model"]


def __getattr__(name: str):
    # Imported on first use: the package itself stays light for ``python -m dragon_lightning --help``.
    if name == "load_model":
        from dragon_lightning.inference import load_model

        return load_model
    raise AttributeError(f"module 'dragon_lightning' has no attribute {name!r}")
