"""Reading and writing dragon CSVs, validated at the boundary.

Every problem becomes one :class:`DragonInputError` line that names the file, the line as numbered
in the file (the header is line 1) and the column. Parsing is pandas' C reader with no per-row Python,
so files of millions of rows load in seconds; the slow search for the offending row runs only when
something is already wrong.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import torch

from dragon_lightning.errors import DragonInputError, first_line
from dragon_lightning.gates.inputs import CSV, opened
from dragon_lightning.gates.outputs import write_atomically
from dragon_lightning.gates.tables import feature_tensor, first_bad, numeric_values
from dragon_lightning.schema import CATEGORIES, COLUMNS, FEATURE_COLUMNS, NUMERIC_COLUMNS

ENCODING = "utf-8-sig"
MAX_COLUMNS = 1000


def line_of_row(path: Path, row_index: int) -> int:
    """The physical line (1-based, header included) where data row ``row_index`` starts.

    Runs only once something is wrong: it re-reads the file with the csv module, which counts the
    lines of quoted fields that hold line breaks.
    """
    with opened(path, CSV) as raw, io.TextIOWrapper(raw, encoding=ENCODING, newline="") as file:
        reader = csv.reader(file)
        try:
            for _ in range(int(row_index) + 1):  # the header and the rows before this one
                next(reader)
        except csv.Error:  # a field beyond the csv module's limit: pandas read it, the line counter cannot
            raise DragonInputError(
                f"{path}: line {reader.line_num}: a field longer than {csv.field_size_limit():,} characters"
            ) from None
        return reader.line_num + 1


def _not_utf8(path: Path, file: BinaryIO) -> DragonInputError:
    """Where the file stops being UTF-8, as a line number (pandas reports a byte offset within a chunk)."""
    file.seek(0)
    data = file.read()
    try:
        data.decode(ENCODING)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        return DragonInputError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}); save the file as UTF-8")
    return DragonInputError(f"{path}: not UTF-8 text; save the file as UTF-8")


RAW_TABLE = (
    ": a raw dragon table, whose features the tutorial's recipe derives using each dragon's label, so it "
    "cannot be predicted; give numberToes and bodyLength per dragon, as examples/dragons_to_predict.csv does"
)


def _read(path: Path, required: Sequence[str], categorical: Sequence[str] = ()) -> pd.DataFrame:
    """Read ``path`` with pandas, turning I/O and header problems into one-line errors."""
    with opened(path, CSV) as file:
        return _parse(path, file, required, categorical)


def _parse(path: Path, file: BinaryIO, required: Sequence[str], categorical: Sequence[str]) -> pd.DataFrame:
    try:
        header = pd.read_csv(file, nrows=0, encoding=ENCODING).columns
    except pd.errors.EmptyDataError:
        raise DragonInputError(f"{path}: file is empty, expected a header line with {', '.join(required)}") from None
    except UnicodeDecodeError:
        raise _not_utf8(path, file) from None
    except pd.errors.ParserError as error:
        raise DragonInputError(f"{path}: not a readable CSV file ({first_line(error)})") from None
    header = [str(name).strip() for name in header]
    _check_header_line(path, file)
    if len(header) > MAX_COLUMNS:
        raise DragonInputError(f"{path}: line 1: {len(header):,} columns, more than {MAX_COLUMNS:,}; is this a dragon table?")
    for name in dict.fromkeys(header):
        if header.count(name) > 1 and name in required:
            raise DragonInputError(
                f"{path}: line 1: the column '{name}' appears {header.count(name)} times (spaces around names are ignored)"
            )
    for name in required:
        if name not in header:
            hint = " (is the file comma-separated?)" if len(header) == 1 and len(required) > 1 else ""
            if set(COLUMNS) <= set(header) and name in FEATURE_COLUMNS:
                hint = RAW_TABLE
            raise DragonInputError(f"{path}: missing column '{name}'; the header has {', '.join(header)}{hint}")
    _check_first_record(path, file, len(header))  # after the header's own checks: a file of semicolons fails those
    try:
        table = pd.read_csv(
            file,
            encoding=ENCODING,
            skip_blank_lines=False,
            index_col=False,  # never leading fields as an index (their columns would shift): a longer row is an error
            dtype={name: "category" for name in categorical},
        )
    except UnicodeDecodeError:
        raise _not_utf8(path, file) from None
    except pd.errors.ParserError as error:
        raise DragonInputError(f"{path}: not a readable CSV file ({first_line(error)})") from None
    table.columns = header
    # A file may end in blank lines; blank lines inside it stay and are reported as empty values.
    filled = np.flatnonzero(table.notna().any(axis=1).to_numpy())
    table = table.iloc[: filled[-1] + 1] if len(filled) else table.iloc[:0]
    if table.empty:
        raise DragonInputError(f"{path}: has a header but no data rows")
    return table


def _check_header_line(path: Path, file: BinaryIO) -> None:
    """The header must be text: UTF-16 reads as names with NUL bytes between their letters."""
    file.seek(0)
    if b"\x00" in file.readline():
        raise DragonInputError(f"{path}: line 1: holds NUL bytes (UTF-16 text?); save the file as UTF-8")


def _check_first_record(path: Path, file: BinaryIO, fields: int) -> None:
    """The first row may be no longer than the header: pandas refuses a longer row later in the file,
    but reads the first one's extra fields as an index (or, at ``index_col=False``, drops them)."""
    file.seek(0)
    text = io.TextIOWrapper(file, encoding=ENCODING, newline="")
    try:
        reader = csv.reader(text)
        next(reader, None)
        first = next(reader, None)
        if first is not None and len(first) > fields:
            raise DragonInputError(
                f"{path}: line {reader.line_num}: {len(first)} fields, more than the header's {fields} (a comma too many?)"
            )
    except (csv.Error, UnicodeDecodeError):
        pass  # pandas' read names these
    finally:
        text.detach()
    file.seek(0)


def _check_numeric(table: pd.DataFrame, path: Path, column: str) -> np.ndarray:
    return numeric_values(
        table[column],
        lambda row: f"{path}: " + (f"line {line_of_row(path, row)}, " if row is not None else "") + f"column '{column}'",
    )


def _check_categorical(table: pd.DataFrame, path: Path, column: str, allowed: Sequence[str]) -> pd.Categorical:
    values = table[column]
    if (row := first_bad(values.isna())) is not None:
        raise DragonInputError(f"{path}: line {line_of_row(path, row)}, column '{column}': empty or missing value")
    values = values.astype(str).astype("category") if values.dtype != "category" else values
    unknown = set(values.cat.categories) - set(allowed)
    if unknown:
        row = first_bad(values.isin(unknown))
        assert row is not None  # an unknown category is in some row
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
    if (row := first_bad((fire != 0) & (fire != 1))) is not None:
        raise DragonInputError(f"{path}: line {line_of_row(path, row)}, column 'breathesFire': {fire[row]:g} is not 0 or 1")
    checked["breathesFire"] = fire.astype(np.int8)
    return pd.DataFrame(checked, columns=list(COLUMNS))


def read_feature_csv(path: str | os.PathLike) -> tuple[pd.DataFrame, torch.Tensor]:
    """Load dragons to predict: the table as it is (other columns kept) and its checked feature tensor."""
    path = Path(path)
    table = _read(path, FEATURE_COLUMNS)
    features = feature_tensor(table, str(path), lambda row: f"line {line_of_row(path, row)}")
    return table, features


def write_csv(table: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = True) -> bool:
    """Write ``table`` without its index, atomically; see :func:`write_atomically` for ``overwrite``."""
    return write_atomically(path, lambda tmp: table.to_csv(tmp, index=False), overwrite=overwrite)
