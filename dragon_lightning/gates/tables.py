"""The one way from a table to the models' feature tensors: CSV files (``predict``'s input), DataFrames
and arrays handed to ``load_model``. A served request's rows are checked by the same rules in its
pydantic model (``serve_api``), which validates each request alone before it joins a batch.

A column must hold numbers: integers or floats, or text that reads as numbers. Booleans, complex
numbers, dates, durations and categories are refused by name rather than quietly cast; every value
must be finite and within float32 (the models' dtype). A problem is one :class:`DragonInputError`
line naming the source, the row and the column.
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Callable, Sequence
from numbers import Real
from typing import TypeAlias

import numpy as np
import pandas as pd
import torch

from dragon_lightning.errors import DragonInputError, first_line
from dragon_lightning.schema import FEATURE_COLUMNS, FLOAT32_MAX

Features: TypeAlias = pd.DataFrame | np.ndarray | torch.Tensor | Sequence[Sequence[float]]


def first_bad(mask) -> int | None:
    bad = np.flatnonzero(np.asarray(mask))
    return int(bad[0]) if len(bad) else None


def numeric_values(values: pd.Series, where: Callable[[int | None], str]) -> np.ndarray:
    """``values`` as float64 that is finite also in float32, or one line naming the first bad row as
    ``where(row)`` describes it (``where(None)``: the column as a whole)."""
    dtype = values.dtype
    if (
        pd.api.types.is_bool_dtype(dtype)
        or pd.api.types.is_complex_dtype(dtype)
        or not (
            pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)
        )
    ):
        raise DragonInputError(f"{where(None)}: holds {dtype} values, expected numbers")
    with decimal.localcontext() as context:  # a Decimal's signalling NaN is missing too, not an exception
        context.traps[decimal.InvalidOperation] = False
        missing = values.isna()
    if (row := first_bad(missing)) is not None:
        raise DragonInputError(f"{where(row)}: empty or missing value")
    if not pd.api.types.is_numeric_dtype(dtype):  # text or Python objects: each must read as a real number
        numbers = pd.Series([_real(value) for value in values], dtype=np.float64)
        if (row := first_bad(numbers.isna())) is not None:
            raise DragonInputError(f"{where(row)}: {values.iloc[row]!r} is not a number")
        values = numbers
    numbers = values.to_numpy(dtype=np.float64)
    if (row := first_bad(~np.isfinite(numbers))) is not None:
        raise DragonInputError(f"{where(row)}: {numbers[row]} is not a finite number")
    if (row := first_bad(np.abs(numbers) > FLOAT32_MAX)) is not None:
        raise DragonInputError(
            f"{where(row)}: {numbers[row]:g} is too large (the models compute in float32, up to {FLOAT32_MAX:.3g})"
        )
    return numbers


def _real(value) -> float:
    """A real number from text or a Python number (a database's ``Decimal``, a ``Fraction``); NaN for
    anything else (booleans, complex, dates)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, Real, decimal.Decimal)):
        return np.nan
    try:
        return float(value)
    except (ValueError, OverflowError):
        return np.nan


def column(table: pd.DataFrame, name: str, source: str) -> pd.Series:
    """The one column ``name`` of ``table``: missing or repeated is one line naming it."""
    found = int((table.columns == name).sum())
    if found == 0:
        raise DragonInputError(f"{source}: missing column '{name}'; expected {', '.join(FEATURE_COLUMNS)}")
    if found > 1:
        raise DragonInputError(f"{source}: the column '{name}' appears {found} times; keep one")
    return table[name]


def _not_numbers(source: str, error: Exception) -> DragonInputError:
    return DragonInputError(f"{source}: not a table of numbers ({first_line(error)})")


def _cell_name(source: str, row_name: Callable[[int], str], name: str, row: int | None) -> str:
    return f"{source}: {row_name(row) + ', ' if row is not None else ''}column '{name}'"


def feature_tensor(X: Features, source: str = "X", row_name: Callable[[int], str] = lambda row: f"row {row}") -> torch.Tensor:
    """``X`` checked, as a float32 ``[N, 2]`` tensor: a DataFrame's two feature columns by name (others
    ignored), or an array's two columns in :data:`FEATURE_COLUMNS` order. ``row_name`` turns a row index
    into words for messages (a CSV names its physical line)."""
    if isinstance(X, pd.DataFrame):
        table = X
    else:
        try:
            array = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
        except (TypeError, ValueError, RuntimeError) as error:
            raise _not_numbers(source, error) from None
        if array.ndim != 2 or array.shape[1] != len(FEATURE_COLUMNS):
            raise DragonInputError(
                f"{source}: expected shape [N, {len(FEATURE_COLUMNS)}] ({', '.join(FEATURE_COLUMNS)}), got {list(array.shape)}"
            )
        try:
            table = pd.DataFrame(array, columns=list(FEATURE_COLUMNS))
        except (TypeError, ValueError) as error:  # pandas refuses some arrays outright: dates beyond its range
            raise _not_numbers(source, error) from None
    if len(table) == 0:
        raise DragonInputError(f"{source}: no rows")
    columns = []
    for name in FEATURE_COLUMNS:
        values = column(table, name, source).reset_index(drop=True)
        columns.append(numeric_values(values, functools.partial(_cell_name, source, row_name, name)))
    return torch.from_numpy(np.stack(columns, axis=1).astype(np.float32))
