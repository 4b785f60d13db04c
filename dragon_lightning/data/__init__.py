"""Dragon tables (generated or loaded), the tutorial's features, and the DataModule."""

from dragon_lightning.data.csv_io import read_dragon_csv, read_feature_csv
from dragon_lightning.data.datamodule import DragonDataModule
from dragon_lightning.data.features import stratified_split, tutorial_features
from dragon_lightning.data.generator import generate_dragons

__all__ = [
    "DragonDataModule",
    "generate_dragons",
    "read_dragon_csv",
    "read_feature_csv",
    "stratified_split",
    "tutorial_features",
]
