"""The processes that run a sweep's trials side by side on one machine, and stop when their parent does."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import warnings

import optuna
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dragon_lightning.errors import DragonError
from dragon_lightning.quiet import quiet_lightning, quiet_warnings
from dragon_lightning.search.objective import TrialObjective, report_progress
from dragon_lightning.search.space import read_space
from dragon_lightning.search.study import SweepSettings, open_study
from dragon_lightning.search.trials import run_until_done

PARENT_POLL_SECONDS = 1.0


def run_worker(settings: SweepSettings, worker: int) -> None:
    """Take trials of the shared study in this process until it has ``n_trials``, without re-importing
    anything between them."""
    quiet_warnings()
    quiet_lightning()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    study = open_study(settings, worker)
    objective = TrialObjective(settings, read_space(settings.space_path))
    with warnings.catch_warnings():  # Optuna marks its stale-trial check experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        run_until_done(study, objective, settings.n_trials, [report_progress(settings.objective.metric)])


def _stop_with_parent(parent: int) -> None:
    """End this worker when the sweep that started it ends, even by SIGKILL: no orphan keeps writing.
    SIGTERM, as Ctrl-C would, marks its trial as interrupted, to run again next time."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-sweep-parent", daemon=True).start()


def _worker_process(settings: SweepSettings, worker: int, parent: int) -> None:
    _stop_with_parent(parent)
    try:
        run_worker(settings, worker)
    except (KeyboardInterrupt, SIGTERMException):
        raise SystemExit(130) from None


def run_workers(settings: SweepSettings, workers: int) -> None:
    """``workers`` processes share the study; Ctrl-C or SIGTERM stops them all (their trials run again next time)."""
    if workers == 1:
        run_worker(settings, 0)
        return
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_process, args=(settings, i, os.getpid()), daemon=False) for i in range(workers)]

    def stop(signum, frame):
        for process in processes:
            if process.is_alive():
                process.terminate()
        raise SIGTERMException()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = [process.exitcode for process in processes if process.exitcode]
    if failed:
        raise DragonError(
            f"sweep: {len(failed)} of {len(processes)} worker processes failed (exit {failed[0]}); see their output above"
        )
