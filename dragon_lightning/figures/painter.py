"""Pictures drawn and encoded in a worker process, so that training does not wait for them.

Training hands over what a picture needs (a copy of the weights and a sample of rows: kilobytes) and
goes on; one worker process scores, draws with matplotlib and encodes the PNGs on a core that
training leaves idle, and the caller writes what comes back, in the order it was asked for. The
worker is forked where the platform allows (nothing to import again), ignores Ctrl-C and takes the
default action on SIGTERM: the run decides when it stops, and writes every file itself, atomically.
Where training's threads hold every core, the same tasks run in place.
"""

from __future__ import annotations

import contextlib
import gc
import io
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dragon_lightning.figures.drawing import DecisionRegions, palette_png, png_bytes


@dataclass(frozen=True)
class Picture:
    """A drawn picture, encoded: ``png`` as its file holds it (``None`` when no file is written),
    ``palette`` as a 64-color PNG for TensorBoard and the animation, and its ``shape`` (H, W, 3)."""

    png: bytes | None
    palette: bytes
    shape: tuple[int, ...]

    def write_png(self, path: Path) -> None:
        assert self.png is not None, "drawn without a file"
        path.write_bytes(self.png)


def encoded(image: np.ndarray, file: bool = True) -> Picture:
    return Picture(png_bytes(image) if file else None, palette_png(image), image.shape)


def drawn(drawing: Callable[..., np.ndarray], *args: Any) -> Picture:
    """In the worker: ``drawing(*args)`` (a function of :mod:`~dragon_lightning.figures.drawing`), encoded."""
    return encoded(drawing(*args))


_REGIONS: dict[str, DecisionRegions] = {}
"""The worker's figure for a run's snapshots: built once, then each snapshot draws only what moves."""


@torch.no_grad()
def decision_logits(module: torch.nn.Module, points: np.ndarray, logit_threshold: float) -> np.ndarray:
    """``module``'s logits (raw features in) for raw-feature ``points``, shifted so that the regions split
    where the model decides (its threshold, for fire)."""
    parameter = next(module.parameters())
    logits = module(torch.as_tensor(points, dtype=parameter.dtype, device=parameter.device))
    return logits.float().cpu().numpy() - logit_threshold


def drawn_regions(
    key: str | None,
    features: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    weights: torch.nn.Module,
    logit_threshold: float,
    title: str,
) -> Picture:
    """In the worker: the regions of a model (``weights``: its logits module, on the CPU, in eval mode)
    over ``features``, scored there too. Snapshots of one run share a ``key`` and reuse one figure, and
    are not written as files; ``None`` draws a picture of its own."""
    regions = _REGIONS.get(key) if key is not None else None
    if regions is None:
        regions = DecisionRegions(features, labels, class_names)
        if key is not None:
            _REGIONS.clear()
            _REGIONS[key] = regions
    logits = decision_logits(weights, regions.points, logit_threshold)
    return encoded(regions.draw(logits, title, boundary_lines=True), file=key is None)


def gif_writer(frames: Sequence[bytes], frame_ms: int) -> Callable[[Path], None]:
    """Writes an animation that loops forever, of 64-color PNG frames (:attr:`Picture.palette`: each
    frame keeps its own palette)."""

    def write(path: Path) -> None:
        images = [Image.open(io.BytesIO(frame)) for frame in frames]
        buffer = io.BytesIO()
        images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
        path.write_bytes(buffer.getvalue())

    return write


def _start_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the run's own handler, inherited by the fork
    torch.set_num_threads(1)  # a forked process must not use the parent's OpenMP threads; one core is its share
    # Only CPU time that training leaves: its threads wait for each other at every parallel operation, so
    # one of them put off by the painter would hold up all of them.
    if hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif hasattr(os, "nice"):  # not on Windows
        os.nice(19)


def spare_core() -> bool:
    """Whether a core is left once PyTorch's threads have theirs. Training keeps its threads spinning
    between operations, so where they hold every core a worker gains nothing over drawing in place
    (a default run on 2 cores: about 1.5x in-process either way; with one thread, 1.10x in a worker,
    ``benchmarks/figure_cost.py``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores > torch.get_num_threads()


@contextlib.contextmanager
def _kept_from_the_workers_collector() -> Iterator[None]:
    """While the worker is forked, everything the parent holds is frozen out of garbage collection, so
    the worker never collects what it inherits: another library's object that was garbage but not yet
    collected (an onnxruntime session whose thread pool waits in the parent) can hang forever when
    finalized in a forked child. The parent collects as before once the fork is done."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class Painter:
    """Draws in one worker process, started with the first picture, where a core is spare
    (:func:`spare_core`), else in place when asked; :meth:`deliver` hands finished pictures to their
    callbacks in the order they were asked for."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[tuple[Future, Callable[[Picture], object]]] = deque()

    def submit(self, then: Callable[[Picture], object], task: Callable[..., Picture], *args: Any) -> None:
        """Run ``task(*args)``; :meth:`deliver` calls ``then`` with its picture."""
        starting = self._pool is None and spare_core()
        if starting:
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_start_worker)
        if self._pool is not None:
            with _kept_from_the_workers_collector() if starting else contextlib.nullcontext():  # the first submit forks
                future = self._pool.submit(task, *args)
        else:
            future = Future()
            future.set_result(task(*args))
        self._pending.append((future, then))

    def deliver(self, wait: bool = False) -> None:
        """Hand over the pictures finished so far (``wait``: all of them)."""
        while self._pending and (wait or self._pending[0][0].done()):
            future, then = self._pending.popleft()
            then(future.result())

    def close(self, cancel: bool = False) -> None:
        """Deliver what is pending (``cancel``: drop it) and end the worker."""
        try:
            if cancel:
                self._pending.clear()
            else:
                self.deliver(wait=True)
        finally:
            _REGIONS.clear()  # the run's figure, where it was drawn in place
            if self._pool is not None:
                self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
                self._pool = None
