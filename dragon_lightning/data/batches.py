"""Minibatches sliced from materialised tensors: no per-sample ``__getitem__``, no collate.

For tabular data that fits in memory this is orders of magnitude cheaper than a ``DataLoader`` over a
``TensorDataset``. Lightning does not re-wrap it with a ``DistributedSampler``, so sharding across
processes happens here: under DDP every rank sees its own rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochOrder(Sampler[int]):
    """This rank's rows, in the order of one epoch: drawn from ``(seed, epoch)`` when shuffled.

    Like a ``DistributedSampler``, it is told the epoch: Lightning's fit loop calls :meth:`set_epoch`
    before every epoch with its own count, which a checkpoint restores wherever the run stopped (in
    the middle of an epoch or at its end), so a resumed run draws the orders an uninterrupted one draws.
    Training shards (``drop_uneven=True``) give every rank the same number of rows, as DDP needs;
    evaluation shards keep every row exactly once across ranks, so metrics count no row twice.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int, rank: int, world_size: int, drop_uneven: bool) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size, self.drop_uneven = rank, world_size, drop_uneven
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_uneven:
            return self.n // self.world_size
        return len(range(self.rank, self.n, self.world_size))

    def rows(self) -> torch.Tensor | None:
        """The row indices in order; ``None`` for all rows as they are (one unshuffled process)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=generator)
        elif self.world_size == 1:
            return None
        else:
            order = torch.arange(self.n)
        return order[self.rank :: self.world_size][: len(self)]

    def __iter__(self) -> Iterator[int]:
        rows = self.rows()
        return iter(range(self.n) if rows is None else rows.tolist())


class TensorBatches:
    """Yield ``(features, labels)`` (or ``(features,)`` without labels) in batches of ``batch_size``,
    in the rows and order of its :attr:`sampler`.

    Its :meth:`state_dict`, which Lightning keeps in checkpoints, says how far the epoch went, so a
    run resumed in the middle of an epoch continues with the next batch of that epoch.
    """

    batch_sampler = None  # as a DataLoader with a sampler: Lightning finds the sampler to tell the epoch

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
        self.sampler = EpochOrder(
            len(features), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, drop_uneven=drop_uneven
        )
        self._yielded = 0
        self._resume_at: tuple[int, int] | None = None

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        skip = 0
        if self._resume_at is not None:  # restored from a checkpoint: finish that epoch if it was unfinished
            epoch, done = self._resume_at
            self._resume_at = None
            if epoch == self.sampler.epoch and done < len(self):
                skip = done
        order = self.sampler.rows()
        tensors = [t for t in (self.features, self.labels) if t is not None]
        if order is not None:
            order = order.to(self.features.device)
            tensors = [t[order] for t in tensors]
        self._yielded = skip
        for start in range(skip * self.batch_size, len(self.sampler), self.batch_size):
            self._yielded += 1
            yield tuple(t[start : start + self.batch_size] for t in tensors)

    def state_dict(self) -> dict[str, int]:
        """Where this epoch stands, saved in checkpoints so a resumed run continues with the next batch.

        Lightning asks while the last yielded batch is being processed (it does not prefetch from a
        loader of known length), so batches yielded equals batches trained on.
        """
        return {"epoch": self.sampler.epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (state["epoch"], state["batches"])
