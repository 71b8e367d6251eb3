"""The embeddings CSV parser shared by server and client (winnow.client.embeddings_csv), on plain bytes: no Django."""

from __future__ import annotations

import io

import numpy as np
import pytest

from winnow.client import embeddings_csv
from winnow.client.formats import FormatError

CSV = (
    "\ufefffilenames,embedding_0,embedding_1,labels\r\n"
    "a.jpg,1.5,-2,0\r\n"
    '"with,comma.jpg",3,4e-1,7\r\n'
    "\r\n"
    "c.jpg,0,1,-3\r\n"
).encode()


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1 << 20])
def test_blocks_of_any_size_give_the_same_rows(block_bytes):
    blocks = list(embeddings_csv.csv_blocks(io.BytesIO(CSV), block_bytes))
    names = [n for b in blocks for n in b.file_names]
    assert names == ["a.jpg", "with,comma.jpg", "c.jpg"]
    assert [n for b in blocks for n in b.line_numbers] == [2, 3, 5]
    matrix = np.concatenate([b.matrix for b in blocks])
    assert matrix.dtype == np.float32
    np.testing.assert_allclose(matrix, [[1.5, -2], [3, 0.4], [0, 1]], rtol=1e-6)
    assert np.concatenate([b.labels for b in blocks]).tolist() == [0, 7, -3]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"row 1: the CSV is empty"),
        ("name,embedding_0,labels\na.jpg,1,0\n", r"row 1: the header must be filenames"),
        ("filenames,embedding_1,labels\na.jpg,1,0\n", r"row 1: column 2 is 'embedding_1', expected 'embedding_0'"),
        (
            "filenames,embedding_0,labels\na.jpg,1,0\nb.jpg,x,0\n",
            r"row 3 \('b.jpg'\): embedding_0 is 'x', not a number",
        ),
        (
            "filenames,embedding_0,labels\na.jpg,1,2,0\n",
            r"row 2 \('a.jpg'\): has 2 embedding values, the header names 1",
        ),
        ("filenames,embedding_0,labels\na.jpg,nan,0\n", r"row 2 \('a.jpg'\): embedding_0 is 'nan'; embeddings must be"),
        ("filenames,embedding_0,labels\na.jpg,1,cat\n", r"row 2 \('a.jpg'\): labels is 'cat', not an integer"),
    ],
)
def test_a_bad_file_is_a_format_error_naming_the_row(text, message):
    with pytest.raises(FormatError, match=message):
        list(embeddings_csv.csv_blocks(io.BytesIO(text.encode()), 64))


def test_bytes_that_are_not_utf8_are_named_by_offset():
    with pytest.raises(FormatError, match=r"not UTF-8 text \(bad byte at offset 30\)"):
        embeddings_csv.parse_csv(b"filenames,embedding_0,labels\na\xff.jpg,1,0\n")


def test_a_header_past_the_servers_dimension_limit_is_refused_only_with_a_limit():
    text = b"filenames,embedding_0,embedding_1,embedding_2,labels\na.jpg,1,2,3,0\n"
    assert embeddings_csv.parse_csv(text).matrix.shape == (1, 3)
    with pytest.raises(
        FormatError, match="row 1: the header has 3 embedding dimensions; this server accepts at most 2"
    ):
        embeddings_csv.parse_csv(text, max_dimension=2)


# Lightly's dialect that the client's own reader used to take and the server refused (issue 13: one parser).
LIGHTLY_EXTRAS = (
    b"filenames,embedding_0,masked,embedding_1,selected,labels\r\ncam\\a.jpg,1.5,0,-2,1,4\r\nb.jpg,3,1,0.25,0,5\r\n"
)


@pytest.mark.parametrize("block_bytes", [1, 16, 1 << 20])
def test_lightlys_masked_and_selected_columns_are_skipped_and_backslashes_become_slashes(block_bytes):
    blocks = list(embeddings_csv.csv_blocks(io.BytesIO(LIGHTLY_EXTRAS), block_bytes))
    assert [n for b in blocks for n in b.file_names] == ["cam/a.jpg", "b.jpg"]
    np.testing.assert_array_equal(np.concatenate([b.matrix for b in blocks]), [[1.5, -2], [3, 0.25]])
    assert np.concatenate([b.labels for b in blocks]).tolist() == [4, 5]


def test_spaces_around_header_names_are_ignored():
    parsed = embeddings_csv.parse_csv(b"filenames, embedding_0 ,labels\nwin\\dir\\x.jpg,1,0\n")
    assert parsed.file_names == ["win/dir/x.jpg"] and parsed.matrix.tolist() == [[1.0]]


@pytest.mark.parametrize("block_bytes", [1, 1 << 20])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("filenames,embedding_0,labels\na.jpg,1,0\n,2,0\n", r"^row 3 \(''\): not a file name$"),
        ('filenames,embedding_0,labels\n"",2,0\n', r"^row 2 \(''\): not a file name$"),
        ("filenames,embedding_0,labels\na\x00.jpg,2,0\n", r"^row 2 \('a\\x00.jpg'\): not a file name$"),
        ("filenames,masked,labels\na.jpg,1,0\n", r"^row 1: the header must be .*; it names no embedding column$"),
        (
            "filenames,embedding_0,masked,labels\na.jpg,1,0\n",
            r"^row 2 \('a.jpg'\): has 1 values between the file name and labels, the header names 2 columns$",
        ),
        (
            "filenames,embedding_0,selected,embedding_2,labels\na.jpg,1,0,2,0\n",
            r"^row 1: column 4 is 'embedding_2', expected 'embedding_1'",
        ),
        (
            "filenames,embedding_0,masked,labels\na.jpg,x,0,0\n",
            r"^row 2 \('a.jpg'\): embedding_0 is 'x', not a number$",
        ),
    ],
)
def test_bad_names_and_special_columns_are_named_by_row(text, message, block_bytes):
    with pytest.raises(FormatError, match=message):
        list(embeddings_csv.csv_blocks(io.BytesIO(text.encode()), block_bytes))
