"""The one CSV reader: header and rows, and every problem one sentence."""

from __future__ import annotations

import pytest

from bloodcell.data.tables import csv_rows, read_csv
from bloodcell.errors import DataError


def test_header_and_rows_with_a_byte_order_mark_and_quoted_line_breaks(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'\xef\xbb\xbfid,note\r\n1,"two\r\nlines"\r\n2,\r\n')
    fields, rows = read_csv(path, "table", ("id", "note"))
    assert fields == ["id", "note"]
    assert rows == [{"id": "1", "note": "two\r\nlines"}, {"id": "2", "note": ""}]


@pytest.mark.parametrize(("content", "message"), [
    (None, "t.csv: table not found"),
    (b"id,note\n\xff\n", "t.csv: cannot read the table (it is not UTF-8 text)"),
    (b"id\n1\n", "t.csv: the table lacks column(s) note (expected the columns id and note)"),
    (b"id,note\n1,\"" + b"x" * 200_000 + b"\n", "not a readable CSV"),
    (b"id,note\n1," + b"x" * 20_000 + b"\n", "t.csv line 2: a field is longer than 10000 characters"),
])
def test_every_problem_is_one_sentence(tmp_path, content, message):
    path = tmp_path / "t.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as raised:
        read_csv(path, "table", ("id", "note"))
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_folder_and_an_oversized_file_are_refused(tmp_path):
    with pytest.raises(DataError, match="cannot read the table"):
        read_csv(tmp_path, "table")
    (tmp_path / "big.csv").write_text("id\n" + "1\n" * 100)
    with pytest.raises(DataError, match="more than the 50 byte limit for the table"):
        read_csv(tmp_path / "big.csv", "table", max_bytes=50)
    with pytest.raises(DataError, match="more than the 5 limit"):
        csv_rows("id\n1\n2\n", "text", max_bytes=5)
