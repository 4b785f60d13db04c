"""Minibatches sliced from materialised tensors: no per-sample ``__getitem__``, no collate.

For tabular data that fits in memory this is orders of magnitude cheaper than a ``DataLoader`` over a
``TensorDataset``. Lightning does not re-wrap it with a ``DistributedSampler``, so sharding across
processes happens here: under DDP every rank sees its own rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


class TensorBatches:
    """Yield ``(features, labels)`` (or ``(features,)`` without labels) in batches of ``batch_size``.

    ``shuffle`` draws a new order each epoch from ``(seed, epoch)``, so an epoch's order does not
    depend on how many epochs this process has run before (resumed runs see the same batches). The
    epoch is the number of passes begun over this object; its :meth:`state_dict`, which Lightning
    keeps in checkpoints, carries it across a resume.
    Training shards (``drop_uneven=True``) give every rank the same number of rows, as DDP needs;
    evaluation shards keep every row exactly once across ranks, so metrics count no row twice.
    """

    def __init__(
        self,
        features: torch.Tensor,
        labels: torch.Tensor | None,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_uneven: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        self.features = features.to(device)
        self.labels = None if labels is None else labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_uneven = drop_uneven
        self.epoch = -1  # the first pass is epoch 0
        self._yielded = 0
        self._resume_at: tuple[int, int] | None = None

    def _rows_per_rank(self) -> int:
        n = len(self.features)
        if self.drop_uneven:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        return math.ceil(self._rows_per_rank() / self.batch_size)

    def _order(self) -> torch.Tensor | None:
        n = len(self.features)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=generator)
        elif self.world_size == 1:
            return None
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size][: self._rows_per_rank()].to(self.features.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        skip = 0
        if self._resume_at is not None:  # restored from a checkpoint: finish that epoch, or start the next
            epoch, done = self._resume_at
            self.epoch, skip = (epoch, done) if done < len(self) else (epoch + 1, 0)
            self._resume_at = None
        else:
            self.epoch += 1
        order = self._order()
        tensors = [t for t in (self.features, self.labels) if t is not None]
        if order is not None:
            tensors = [t[order] for t in tensors]
        self._yielded = skip
        rows = self._rows_per_rank()
        for start in range(skip * self.batch_size, rows, self.batch_size):
            self._yielded += 1
            yield tuple(t[start : start + self.batch_size] for t in tensors)

    def state_dict(self) -> dict[str, int]:
        """Where this epoch stands, saved in checkpoints so a resumed run continues with the next batch.

        Lightning asks while the last yielded batch is being processed (it does not prefetch from a
        loader of known length), so batches yielded equals batches trained on.
        """
        return {"epoch": self.epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (state["epoch"], state["batches"])
