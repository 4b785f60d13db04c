"""A sweep's settings, as every worker process receives them, and the Optuna study they open."""

from __future__ import annotations

import dataclasses
import os
import socket
import zlib

import optuna

from dragon_lightning.search.runs import FitSettings, Objective
from dragon_lightning.search.storage import open_storage


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """Everything a worker process needs (plain values: workers are started fresh)."""

    fit_settings: FitSettings
    space_path: str
    sweep_dir: str
    storage_url: str | None
    study_name: str
    objective: Objective
    folds: int | None
    seed: int
    threads: int | None
    prune: bool = True
    n_trials: int = 20
    """Trials the study should have in total (see :mod:`dragon_lightning.search.trials`)."""
    heartbeat: int = 60
    """Seconds between a database trial's heartbeats; one silent for twice as long is retried elsewhere."""
    repeats: int = 1
    """Draws of folds a trial is scored on (repeated cross-validation), with ``folds``."""
    trials_before: int = 0
    """Trials the study had when this command started: a rerun seeds its samplers apart from the last run's."""


def sampler_seed(settings: SweepSettings, worker: int) -> int:
    """Worker ``worker``'s TPE seed. On one machine: ``seed + worker`` (offset by the trials a rerun
    finds), reproducible. With ``--storage``, machines run the same command, so the seed also takes
    this machine's name and process: two machines never draw the same settings."""
    seed = settings.seed + 1000 * settings.trials_before + worker
    if settings.storage_url is None:
        return seed % 2**32
    return zlib.crc32(f"{seed}:{socket.gethostname()}:{os.getpid()}".encode())


def open_study(settings: SweepSettings, worker: int) -> optuna.Study:
    """The shared study, with a sampler seeded per worker and machine (see :func:`sampler_seed`)."""
    return optuna.create_study(
        study_name=settings.study_name,
        storage=open_storage(settings.sweep_dir, settings.storage_url, settings.heartbeat),
        load_if_exists=True,
        direction=settings.objective.direction,
        sampler=optuna.samplers.TPESampler(seed=sampler_seed(settings, worker)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0 if settings.folds else 5)
        if settings.prune
        else optuna.pruners.NopPruner(),
    )
