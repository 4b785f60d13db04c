import hashlib

import pandas as pd
import pytest
import torch

from dragon_lightning.data import generate_dragons, read_dragon_csv, read_feature_csv
from dragon_lightning.data.csv_io import write_csv
from dragon_lightning.errors import DragonInputError
from dragon_lightning.gates.outputs import write_atomically


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
