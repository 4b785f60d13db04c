"""The refit: once cross-validation has chosen the settings and the number of epochs, train once more
on every non-test row (no validation split) and keep the final weights, as scikit-learn's
``GridSearchCV(refit=True)`` does. It is a normal ``fit`` run: config.yaml, checkpoints, pictures and
the test at the end, the only use of the test rows. With several seeds, one refit per seed on the same
rows, and their average as one model (a seed ensemble), tested as well."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jsonargparse import Namespace
from jsonargparse.typing import PositiveInt

from dragon_lightning.cli import DragonCLI, build_cli
from dragon_lightning.errors import DragonInputError
from dragon_lightning.gates.outputs import OutputFolder
from dragon_lightning.search.ensemble import ENSEMBLE_CHECKPOINT, write_ensemble
from dragon_lightning.search.runs import FitSettings, RunResult, check_settings, in_run_folder, test_run, with_options

REFIT = "refit"
"""The refit's run folder in a cv or sweep folder (the first seed's, with several)."""
SEED_ENSEMBLE = "refit_ensemble"
"""The run folder of the refits' seed ensemble."""
REFIT_OPTIONS = {"data.val_fraction": 0.0, "data.n_folds": None, "checkpoint.monitor": None}
"""No validation rows, so nothing to rank checkpoints by: the final weights are kept."""


@dataclass(frozen=True)
class RefitOptions:
    """
    Args:
        refit: then train once more on every non-test row (--data.val_fraction 0) for the epochs the
            runs kept (the median over the folds), keep the final weights and test them: run folder 'refit'
        refit_seeds: with --refit true: train the refit this many times, with seeds seed_everything, +1,
            ... on the same rows (run folders 'refit', 'refit_seed_1', ...), and average them as one model,
            refit_ensemble/checkpoints/ensemble.ckpt, tested in run folder 'refit_ensemble'
    """

    refit: bool = False
    refit_seeds: PositiveInt = 1

    def __post_init__(self) -> None:
        if self.refit_seeds > 1 and not self.refit:
            raise DragonInputError(f"--refit_seeds {self.refit_seeds} trains refits: add --refit true")


def recommended_epochs(epochs: Sequence[int]) -> int:
    """The median of the folds' kept epochs, rounded half up (at least 1)."""
    return max(1, int(statistics.median(epochs) + 0.5))


def as_refit_trains(results: Sequence[RunResult]) -> tuple[int, list[dict[str, float]] | None]:
    """The refit's epochs for these fold runs, and each run's ``val/loss`` and ``val/acc`` after them
    (``None`` unless every run recorded its validations): what ``cv`` and a sweep judge a config by. A
    fold's own score is that of the epoch it kept as best on its own validation rows, which flatters
    configs whose epochs differ much; these epochs are the median over every fold, which one fold's rows
    hardly move."""
    epochs = recommended_epochs([result.epochs for result in results])
    scores = [result.after_epochs(epochs) for result in results]
    return epochs, scores if all(scores) else None


def refit_settings(settings: FitSettings, epochs: int) -> FitSettings:
    """``fit`` settings for the refit of ``settings``: every non-test row, ``epochs`` epochs."""
    return with_options(settings, {**REFIT_OPTIONS, "trainer.max_epochs": epochs})


def refit_folder(member: int) -> str:
    return REFIT if member == 0 else f"{REFIT}_seed_{member}"


def refit_outputs(seeds: int) -> list[str]:
    """The run folders of a refit with ``seeds`` seeds."""
    return [*map(refit_folder, range(seeds)), *([SEED_ENSEMBLE] if seeds > 1 else [])]


@dataclass(frozen=True)
class SeedPlan:
    """The seeds of a seed ensemble (refits, or a fold's models), fixed before any run: the first is
    the config's own ``seed_everything``, and every member draws its rows with the config's data seed,
    so the seeds change only the weights."""

    seeds: int
    first_seed: int | None
    data_seed: int | None

    @classmethod
    def of(cls, config: Namespace, seeds: int) -> SeedPlan:
        """The plan for a parsed config, its data seed resolved."""
        seed = config.seed_everything
        numbered = isinstance(seed, int) and not isinstance(seed, bool) and config.data.seed is not None
        return cls(seeds, seed if numbered else None, config.data.seed if numbered else None)

    @classmethod
    def for_refit(cls, settings: FitSettings, seeds: int, prog: str) -> SeedPlan:
        """Check the refit's options as ``fit`` would, before any fold or trial trains."""
        return cls.of(check_settings(refit_settings(settings, 1), prog).config, seeds)

    def seeded(self, member: int) -> dict[str, int]:
        """The options of member ``member``: the config's own for the first, as a run with one seed, and
        for every member of an unseeded config (``seed_everything: false``), whose weights differ anyway."""
        if member == 0 or self.first_seed is None:
            return {}
        assert self.data_seed is not None
        return {"seed_everything": self.first_seed + member, "data.seed": self.data_seed}


@dataclass(frozen=True)
class Refits:
    """The refit runs, and the seed ensemble's test run when there were several seeds."""

    runs: list[DragonCLI]
    seed_ensemble: DragonCLI | None


def refit(settings: FitSettings, epochs: int, run_dir: Path) -> DragonCLI:
    """Train and test the refit into ``run_dir`` (a run folder of its own); returns the finished CLI."""
    options = {"test_after_fit": True, **in_run_folder(run_dir)}
    print(f"refit on every non-test row for {epochs} epochs: {run_dir}", flush=True)
    return build_cli({"fit": with_options(refit_settings(settings, epochs), options)})


def refit_with_seeds(plan: SeedPlan, settings: FitSettings, epochs: int, folder: OutputFolder) -> Refits:
    """One refit per seed of ``plan`` in ``folder``; with more than one, their seed ensemble, tested."""
    runs = [
        refit(with_options(settings, plan.seeded(member)), epochs, folder.claim_folder(refit_folder(member)))
        for member in range(plan.seeds)
    ]
    if plan.seeds == 1:
        return Refits(runs, None)
    ensemble_dir = folder.claim_folder(SEED_ENSEMBLE)
    path = write_ensemble([run.tested_checkpoint for run in runs], ensemble_dir / "checkpoints" / ENSEMBLE_CHECKPOINT)
    print(f"seed ensemble of {plan.seeds} refits: {path}", flush=True)
    return Refits(runs, test_run(ensemble_dir, settings, path))
