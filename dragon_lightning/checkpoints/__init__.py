"""Checkpoints, in one place:

- :mod:`.files`: the one way to read a checkpoint file (data only, allow-listed class paths, bounded,
  checksummed, earlier layouts migrated) and the checksum written with it;
- :mod:`.io`: Lightning's checkpoint plugin, which writes through the output gate and reads through
  :mod:`.files`, Lightning's restore included;
- :mod:`.callback`: ``ResumableCheckpoint``, what a run saves and when, so that any stop can resume exactly;
- :mod:`.checks`: a ``--ckpt_path`` against the command's model and data, before Lightning loads it.
"""

from dragon_lightning.checkpoints.io import AtomicCheckpointIO

__all__ = ["AtomicCheckpointIO"]
