import csv
import hashlib
import io
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dragon_lightning.data import generate_dragons, read_dragon_csv, read_feature_csv
from dragon_lightning.data.csv_io import write_csv
from dragon_lightning.errors import DragonInputError
from dragon_lightning.gates.outputs import write_atomically
from dragon_lightning.gates.tables import feature_tensor


def test_the_real_file_loads_with_its_schema(real_csv):
    assert hashlib.sha256(real_csv.read_bytes()).hexdigest().startswith("8e377de2")
    table = read_dragon_csv(real_csv)
    assert len(table) == 480
    assert table["breathesFire"].sum() == 251
    assert list(table["color"].cat.categories) == ["Blue", "Red", "Yellow"]


def test_bom_crlf_and_extra_columns_are_accepted(tmp_path):
    table = generate_dragons(48, seed=0)
    plain = tmp_path / "plain.csv"
    table.to_csv(plain, index=False)
    messy = tmp_path / "messy.csv"
    with_extra = table.assign(name=[f"dragon {i}" for i in range(48)])
    messy.write_bytes(b"\xef\xbb\xbf" + with_extra.to_csv(index=False).replace("\n", "\r\n").encode())
    pd.testing.assert_frame_equal(read_dragon_csv(messy), read_dragon_csv(plain))


def test_trailing_blank_lines_are_ignored_but_inner_ones_are_reported(tmp_path):
    path = tmp_path / "d.csv"
    generate_dragons(48, seed=0).to_csv(path, index=False)
    path.write_text(path.read_text() + "\n\n")
    assert len(read_dragon_csv(path)) == 48
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:3], "", *lines[3:]]) + "\n")
    with pytest.raises(DragonInputError, match="line 4, column 'testScore': empty or missing value"):
        read_dragon_csv(path)


def test_feature_csv_keeps_other_columns(tmp_path):
    path = tmp_path / "new.csv"
    path.write_text("name,numberToes,bodyLength\nSmaug,6,170.5\nPuff,22,240\n")
    table, features = read_feature_csv(path)
    assert table["name"].tolist() == ["Smaug", "Puff"]
    assert features.dtype == torch.float32 and features.tolist() == [[6.0, 170.5], [22.0, 240.0]]
    path.write_text("name,numberToes\nSmaug,6\n")
    with pytest.raises(DragonInputError, match="missing column 'bodyLength'"):
        read_feature_csv(path)


def test_writes_are_atomic_and_never_clobber_a_different_file(tmp_path):
    path = tmp_path / "out.csv"
    table = pd.DataFrame({"a": [1, 2]})
    assert write_csv(table, path, overwrite=False)
    assert not write_csv(table, path, overwrite=False), "identical content is left as it is"
    with pytest.raises(DragonInputError, match="exists with different content"):
        write_csv(pd.DataFrame({"a": [3]}), path, overwrite=False)
    assert path.read_text() == "a\n1\n2\n"

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(tmp_path / "other.csv", half_then_fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"], "no temporary or half-written file"


# Fields as a careless export writes them: numbers, words, blanks, stray commas and quotes, line breaks.
FIELD = st.one_of(
    st.integers(-50, 400).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.text(alphabet=' ,"x\n.e-1', max_size=6),
)
ROWS = st.lists(st.lists(FIELD, min_size=0, max_size=4), min_size=0, max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, extra_column=st.booleans())
def test_any_csv_is_read_for_exactly_its_rows_or_refused_in_one_line(rows, extra_column, tmp_path):
    header = ["numberToes", "bodyLength", *(["name"] if extra_column else [])]
    path = tmp_path / "dragons.csv"
    path.write_text("\n".join(",".join(fields) for fields in [header, *rows]) + "\n", encoding="utf-8")
    records = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))[1:]
    try:
        table, features = read_feature_csv(path)
    except DragonInputError as error:
        message = str(error)
        assert "\n" not in message and message.startswith(f"{path}: "), message
        return
    # Accepted: exactly the file's records, none wider than the header (a shorter one lacks only fields
    # of other columns, read as empty), their numbers as written.
    while records and records[-1] == []:  # blank lines at the end of a file are no rows
        records.pop()
    assert len(features) == len(table) == len(records)
    assert all(2 <= len(record) <= len(header) for record in records), records
    expected = np.array([[float(record[0]), float(record[1])] for record in records], dtype=np.float32)
    np.testing.assert_array_equal(features.numpy(), expected)


# What Python hands load_model: numbers of every kind (a database's Decimal among them), text, booleans,
# None, complex numbers and bytes, nested at any depth, and NumPy arrays of every dtype.
SCALAR = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.complex_numbers(max_magnitude=10),
    st.binary(max_size=3),
)
TABLES = st.one_of(
    st.recursive(SCALAR, lambda children: st.lists(children, max_size=4), max_leaves=12),
    st.lists(st.tuples(SCALAR, SCALAR), max_size=5),
    hnp.arrays(st.one_of(hnp.scalar_dtypes(), st.just(np.dtype(object))), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)),
)


@settings(max_examples=500, deadline=None)
@given(table=TABLES)
@example(table=np.array([["292277026597", "2020"]], dtype="datetime64[Y]"))  # pandas refused it: OutOfBoundsDatetime
def test_any_python_table_becomes_finite_features_or_is_refused_in_one_line(table):
    try:
        features = feature_tensor(table)
    except DragonInputError as error:
        assert "\n" not in str(error), str(error)
        return
    assert features.dtype == torch.float32 and features.ndim == 2 and features.shape[1] == 2
    assert torch.isfinite(features).all()


def test_decimals_are_numbers_and_their_nans_are_missing():
    assert feature_tensor([(7, Decimal("150.5")), (Fraction(9, 2), 200)]).tolist() == [[7.0, 150.5], [4.5, 200.0]]
    for missing in (Decimal("NaN"), Decimal("sNaN")):  # the signalling one raised decimal.InvalidOperation
        with pytest.raises(DragonInputError, match="row 0, column 'bodyLength': empty or missing value"):
            feature_tensor([(7, missing)])
