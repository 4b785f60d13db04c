"""The gates every command passes: whatever a user hands in or names goes through one of them, so a
command added later is safe without rules of its own.

- :mod:`~dragon_lightning.gates.inputs`: the one way to open a user's file (regular file, size bound,
  UTF-8, bounded YAML), applied to every argument before parsing.
- :mod:`~dragon_lightning.gates.outputs`: the one way to write into a folder a user named (atomic,
  never over a file this project did not write, refused before work).
- :mod:`~dragon_lightning.checkpoints.files`: the one way to load a checkpoint (data only, allow-listed
  class paths, bounded, checksummed, read once); it lives with the rest of the checkpoint code, above
  the models whose classes it allows.
- :mod:`~dragon_lightning.gates.tables`: the one way from a table to feature tensors.
"""
