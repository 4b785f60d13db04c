"""A search space: a small YAML file that maps ``fit`` option keys to Optuna distributions.

model.init_args.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
model.init_args.hidden_sizes: {type: categorical, choices: [[10, 20, 1000], [64, 64], [32]]}
data.batch_size: {type: int, low: 8, high: 128, log: true}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from dragon_lightning.errors import DragonInputError
from dragon_lightning.gates.inputs import SPACE, read_yaml_mapping

FIELDS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    distributions: dict[str, optuna.distributions.BaseDistribution]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's settings, drawn by the study's sampler."""
        settings: dict[str, Any] = {}
        for key, d in self.distributions.items():
            if isinstance(d, optuna.distributions.CategoricalDistribution):
                settings[key] = trial.suggest_categorical(key, d.choices)
            elif isinstance(d, optuna.distributions.IntDistribution):
                settings[key] = trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
            elif isinstance(d, optuna.distributions.FloatDistribution):
                settings[key] = trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log)
        return settings

    def holds(self, settings: dict[str, Any]) -> bool:
        """Whether the space can draw ``settings`` (one value for each of its keys, as :meth:`encoded` gives them)."""
        return set(settings) == set(self.distributions) and all(
            _holds(self.distributions[key], value) for key, value in settings.items()
        )

    @staticmethod
    def encoded(settings: dict[str, Any]) -> dict[str, Any]:
        """Settings as the study stores them: a list or mapping (``hidden_sizes``) as its JSON text."""
        return {key: _as_choice(value) for key, value in settings.items()}

    def extremes(self) -> list[tuple[str, Any]]:
        """Every key with each of its bounds and choices: each must parse as a ``fit`` option."""
        return [(key, value) for key, d in self.distributions.items() for value in _extremes(d)]


def _holds(distribution: optuna.distributions.BaseDistribution, value: Any) -> bool:
    """Whether ``distribution`` can draw ``value``."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value in distribution.choices
    assert isinstance(distribution, (optuna.distributions.IntDistribution, optuna.distributions.FloatDistribution))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not distribution.low <= value <= distribution.high:
        return False
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return isinstance(value, int) and (value - distribution.low) % distribution.step == 0
    if distribution.step is None:
        return True
    steps = (value - distribution.low) / distribution.step
    return abs(steps - round(steps)) < 1e-9


def _as_choice(value: Any) -> Any:
    """Optuna stores plain scalars: a list or mapping choice (``hidden_sizes``) travels as its JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _extremes(distribution: optuna.distributions.BaseDistribution) -> list[Any]:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return list(distribution.choices)
    assert isinstance(distribution, (optuna.distributions.IntDistribution, optuna.distributions.FloatDistribution))
    return [distribution.low, distribution.high]


def read_space(path: str | Path) -> SearchSpace:
    """Read and check a space file; every problem is one line naming the file and the key."""
    path = Path(path)
    entries = read_yaml_mapping(path, SPACE, "--space")
    if not entries:
        raise DragonInputError(f"{path}: an empty search space; map fit option keys to distributions")
    return SearchSpace(path, {str(key): _distribution(path, str(key), spec) for key, spec in entries.items()})


def _distribution(path: Path, key: str, spec: Any) -> optuna.distributions.BaseDistribution:
    where = f"{path}: {key}"
    if key.startswith("-"):
        raise DragonInputError(f"{where}: write option keys without leading dashes, e.g. data.batch_size")
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str) or spec["type"] not in FIELDS:
        raise DragonInputError(f"{where}: needs a mapping with type float, int or categorical, got {spec!r}")
    kind = spec["type"]
    unknown = set(spec) - FIELDS[kind] - {"type"}
    if unknown:
        raise DragonInputError(f"{where}: {', '.join(sorted(unknown))} is not a setting of a {kind} distribution")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise DragonInputError(f"{where}: choices must be a non-empty list")
        return optuna.distributions.CategoricalDistribution([_as_choice(choice) for choice in choices])
    low, high, step = (_number(spec.get(name)) for name in ("low", "high", "step"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise DragonInputError(f"{where}: log must be true or false, got {log!r}")
    number = int if kind == "int" else (int, float)
    if not all(isinstance(v, number) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        raise DragonInputError(
            f"{where}: low and high must be {'integers' if kind == 'int' else 'numbers'}, got {low!r} and {high!r}"
        )
    if not low < high:
        raise DragonInputError(f"{where}: low must be below high, got {low} and {high}")
    if log and low <= 0:
        raise DragonInputError(f"{where}: a log scale needs low above 0, got {low}")
    if step is not None and (log or not isinstance(step, number) or step <= 0):
        raise DragonInputError(
            f"{where}: step must be a positive {'integer' if kind == 'int' else 'number'} without log, got {step!r}"
        )
    if kind == "int":
        return optuna.distributions.IntDistribution(low, high, log=log, step=int(step or 1))
    return optuna.distributions.FloatDistribution(float(low), float(high), log=log, step=step)


def _number(value: Any) -> Any:
    """PyYAML reads ``1e5`` (no sign after the e) as text; take it as the number it is."""
    if isinstance(value, str):
        try:
            return int(value) if value.lstrip("+-").isdigit() else float(value)
        except ValueError:
            return value
    return value
