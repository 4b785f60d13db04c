"""dragon-lightning: the dragon classification tutorial as a PyTorch Lightning project."""

__version__ = "0.1.0"
