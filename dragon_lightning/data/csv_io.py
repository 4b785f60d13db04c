"""Reading and writing dragon CSVs, validated at the boundary.

Every problem becomes one :class:`DragonInputError` line that names the file, the line as numbered
in the file (the header is line 1) and the column. Parsing is pandas' C reader with no per-row Python,
so files of millions of rows load in seconds; the slow search for the offending row runs only when
something is already wrong.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dragon_lightning.atomic import write_atomically
from dragon_lightning.data.schema import CATEGORIES, COLUMNS, FEATURE_COLUMNS, NUMERIC_COLUMNS
from dragon_lightning.errors import DragonInputError
from dragon_lightning.paths import require_regular_file

ENCODING = "utf-8-sig"
FLOAT32_MAX = float(np.finfo(np.float32).max)


def line_of_row(path: Path, row_index: int) -> int:
    """The physical line (1-based, header included) where data row ``row_index`` starts.

    Runs only once something is wrong: it re-reads the file with the csv module, which counts the
    lines of quoted fields that hold line breaks.
    """
    with path.open(newline="", encoding=ENCODING) as file:
        reader = csv.reader(file)
        for _ in range(int(row_index) + 1):  # the header and the rows before this one
            next(reader)
        return reader.line_num + 1


def _not_utf8(path: Path) -> DragonInputError:
    """Where the file stops being UTF-8, as a line number (pandas reports a byte offset within a chunk)."""
    data = path.read_bytes()
    try:
        data.decode(ENCODING)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        return DragonInputError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}); save the file as UTF-8")
    return DragonInputError(f"{path}: not UTF-8 text; save the file as UTF-8")


def _read(path: Path, required: Sequence[str], categorical: Sequence[str] = ()) -> pd.DataFrame:
    """Read ``path`` with pandas, turning I/O and header problems into one-line errors."""
    require_regular_file(path, "file")
    try:
        header = pd.read_csv(path, nrows=0, encoding=ENCODING).columns
    except pd.errors.EmptyDataError:
        raise DragonInputError(f"{path}: file is empty, expected a header line with {', '.join(required)}") from None
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except pd.errors.ParserError as error:
        raise DragonInputError(f"{path}: not a readable CSV file ({str(error).splitlines()[0]})") from None
    header = [str(name).strip() for name in header]
    for name in required:
        if name not in header:
            hint = " (is the file comma-separated?)" if len(header) == 1 and len(required) > 1 else ""
            raise DragonInputError(f"{path}: missing column '{name}'; the header has {', '.join(header)}{hint}")
    try:
        table = pd.read_csv(
            path,
            encoding=ENCODING,
            skip_blank_lines=False,
            dtype={name: "category" for name in categorical},
        )
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except pd.errors.ParserError as error:
        raise DragonInputError(f"{path}: not a readable CSV file ({str(error).splitlines()[0]})") from None
    table.columns = header
    # A file may end in blank lines; blank lines inside it stay and are reported as empty values.
    filled = np.flatnonzero(table.notna().any(axis=1).to_numpy())
    table = table.iloc[: filled[-1] + 1] if len(filled) else table.iloc[:0]
    if table.empty:
        raise DragonInputError(f"{path}: has a header but no data rows")
    return table


def _first_bad(mask: np.ndarray | pd.Series) -> int | None:
    bad = np.flatnonzero(np.asarray(mask))
    return int(bad[0]) if len(bad) else None


def numeric_values(values: pd.Series, where: Callable[[int], str]) -> np.ndarray:
    """Return ``values`` as float64 that is finite also in float32 (the models' dtype), or raise
    naming the first bad row as ``where(row)`` describes it."""
    if (row := _first_bad(values.isna())) is not None:
        raise DragonInputError(f"{where(row)}: empty or missing value")
    if not pd.api.types.is_numeric_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce")
        row = _first_bad(numbers.isna())
        raise DragonInputError(f"{where(row)}: {values.iloc[row]!r} is not a number")
    numbers = values.to_numpy(dtype=np.float64)
    if (row := _first_bad(~np.isfinite(numbers))) is not None:
        raise DragonInputError(f"{where(row)}: {numbers[row]} is not a finite number")
    if (row := _first_bad(np.abs(numbers) > FLOAT32_MAX)) is not None:
        raise DragonInputError(
            f"{where(row)}: {numbers[row]:g} is too large (the models compute in float32, up to {FLOAT32_MAX:.3g})"
        )
    return numbers


def _check_numeric(table: pd.DataFrame, path: Path, column: str) -> np.ndarray:
    return numeric_values(table[column], lambda row: f"{path}: line {line_of_row(path, row)}, column '{column}'")


def _check_categorical(table: pd.DataFrame, path: Path, column: str, allowed: Sequence[str]) -> pd.Categorical:
    values = table[column]
    if (row := _first_bad(values.isna())) is not None:
        raise DragonInputError(f"{path}: line {line_of_row(path, row)}, column '{column}': empty or missing value")
    values = values.astype(str).astype("category") if values.dtype != "category" else values
    unknown = set(values.cat.categories) - set(allowed)
    if unknown:
        row = _first_bad(values.isin(unknown))
        raise DragonInputError(
            f"{path}: line {line_of_row(path, row)}, column '{column}': unknown category {values.iloc[row]!r}; "
            f"expected one of {', '.join(allowed)}"
        )
    return pd.Categorical(values, categories=list(allowed))


def read_dragon_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Load a dragon table with the real file's schema; extra columns are ignored."""
    path = Path(path)
    table = _read(path, COLUMNS, categorical=tuple(CATEGORIES))
    checked = {column: _check_numeric(table, path, column) for column in NUMERIC_COLUMNS}
    for column, allowed in CATEGORIES.items():
        checked[column] = _check_categorical(table, path, column, allowed)
    fire = _check_numeric(table, path, "breathesFire")
    if (row := _first_bad((fire != 0) & (fire != 1))) is not None:
        raise DragonInputError(f"{path}: line {line_of_row(path, row)}, column 'breathesFire': {fire[row]:g} is not 0 or 1")
    checked["breathesFire"] = fire.astype(np.int8)
    return pd.DataFrame(checked, columns=list(COLUMNS))


def read_feature_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Load dragons to predict: numeric ``numberToes`` and ``bodyLength``, other columns kept as they are."""
    path = Path(path)
    table = _read(path, FEATURE_COLUMNS)
    for column in FEATURE_COLUMNS:
        table[column] = _check_numeric(table, path, column)
    return table


def write_csv(table: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = True) -> bool:
    """Write ``table`` without its index, atomically; see :func:`write_atomically` for ``overwrite``."""
    return write_atomically(path, lambda tmp: table.to_csv(tmp, index=False), overwrite=overwrite)

