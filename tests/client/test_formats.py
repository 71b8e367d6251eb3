"""The embeddings CSV and custom metadata JSON: the same bytes and shapes as Lightly's helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from winnow.client import format_custom_metadata, load_embeddings, save_custom_metadata, save_embeddings
from winnow.client.formats import FormatError, load_custom_metadata, metadata_by_file_name

# What lightly.utils.io.save_embeddings writes for the same input (csv module, excel dialect: CRLF).
LIGHTLY_CSV = (
    "filenames,embedding_0,embedding_1,embedding_2,labels\r\n"
    "a/one.jpg,0.5,-1.25,3.0,0\r\n"
    "two.png,0.1,0.2,0.30000001192092896,7\r\n"
)


def test_save_embeddings_writes_lightlys_bytes(tmp_path):
    path = tmp_path / "embeddings.csv"
    embeddings = np.array([[0.5, -1.25, 3.0], [0.1, 0.2, float(np.float32(0.3))]])
    save_embeddings(path, embeddings, [0, 7], ["a/one.jpg", "two.png"])
    assert path.read_bytes() == LIGHTLY_CSV.encode()


def test_float32_embeddings_write_their_shortest_form(tmp_path):
    path = tmp_path / "e.csv"
    save_embeddings(path, np.array([[0.1, 2.5]], dtype=np.float32), [1], ["x.jpg"])
    assert path.read_text().splitlines()[1] == "x.jpg,0.1,2.5,1"


def test_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(20, 16)).astype(np.float32)
    labels = list(range(20))
    names = [f"folder/img_{i:03d}.jpg" for i in range(20)]
    path = tmp_path / "e.csv"
    save_embeddings(path, embeddings, labels, names)
    loaded, loaded_labels, loaded_names = load_embeddings(path)
    assert loaded.dtype == np.float64 and loaded.shape == (20, 16)
    np.testing.assert_array_equal(loaded.astype(np.float32), embeddings)
    assert loaded_labels == labels and loaded_names == names


def test_save_rejects_unequal_lengths_and_commas(tmp_path):
    with pytest.raises(ValueError, match=r"\(2, 1, 2\)"):
        save_embeddings(tmp_path / "e.csv", np.zeros((2, 3)), [0, 0], ["a.jpg"])
    with pytest.raises(ValueError, match="comma"):
        save_embeddings(tmp_path / "e.csv", np.zeros((1, 3)), [0], ["a,b.jpg"])


# The client reads the CSV with the server's parser (winnow.client.embeddings_csv), so a fault is named in the
# server's words: "row N" (the header is row 1), the file name, the column (issue 13).
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"^row 1: the CSV is empty"),
        ("name,embedding_0,labels\r\na.jpg,1,0\r\n", r"^row 1: the header must be filenames,.*, not name,embedding_0"),
        ("filenames,embedding_0\r\na.jpg,1\r\n", r"^row 1: the header must be filenames,.*labels, not filenames"),
        ("filenames,emb,labels\r\na.jpg,1,0\r\n", r"^row 1: column 2 is 'emb', expected 'embedding_0'"),
        ("filenames,embedding_1,labels\r\na.jpg,1,0\r\n", r"^row 1: column 2 is 'embedding_1', expected 'embedding_0'"),
        (
            "filenames,embedding_0,embedding_1,labels\r\na.jpg,1,2,0\r\nb.jpg,1,0\r\n",
            r"^row 3 \('b.jpg'\): has 1 embedding values, the header names 2$",
        ),
        (
            "filenames,embedding_0,labels\r\na.jpg,1,0\r\nb.jpg,x,0\r\n",
            r"^row 3 \('b.jpg'\): embedding_0 is 'x', not a number$",
        ),
        (
            "filenames,embedding_0,labels\r\na.jpg,nan,0\r\n",
            r"^row 2 \('a.jpg'\): embedding_0 is 'nan'; embeddings must be finite numbers within float32 range$",
        ),
        ("filenames,embedding_0,labels\r\na.jpg,inf,0\r\n", r"^row 2 \('a.jpg'\): embedding_0 is 'inf'; .* finite"),
        (
            "filenames,embedding_0,labels\r\na.jpg,1e39,0\r\n",
            r"^row 2 \('a.jpg'\): embedding_0 is '1e39'; .*float32 range",
        ),
        ("filenames,embedding_0,labels\r\na.jpg,1,cat\r\n", r"^row 2 \('a.jpg'\): labels is 'cat', not an integer$"),
        (
            "filenames,embedding_0,labels\r\na.jpg,1,0\r\na.jpg,2,0\r\n",
            r"^row 3 \('a.jpg'\): the file name is also on row 2; each sample must appear once$",
        ),
        (
            "filenames,embedding_0,labels\r\na\\b.jpg,1,0\r\na/b.jpg,2,0\r\n",
            r"^row 3 \('a/b.jpg'\): the file name is also on row 2",
        ),
        ("filenames,embedding_0,labels\r\n,1,0\r\n", r"^row 2 \(''\): not a file name$"),
        ("filenames,embedding_0,labels\r\n", r"^the CSV has a header but no rows$"),
        ("filenames,embedding_0,labels\r\n\r\n\r\n", r"^the CSV has a header but no rows$"),
    ],
)
def test_load_embeddings_names_the_row_at_fault_as_the_server_does(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text, newline="")
    with pytest.raises(FormatError, match=message):
        load_embeddings(path)


def test_load_embeddings_refuses_text_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("filenames,embedding_0,labels\nçà.jpg,1,0\n".encode("latin-1"))
    with pytest.raises(FormatError, match=r"^the CSV is not UTF-8 text \(bad byte at offset 29\)$"):
        load_embeddings(path)


def test_a_repeat_in_a_later_block_names_both_rows(tmp_path, monkeypatch):
    from winnow.client import embeddings_csv

    monkeypatch.setattr(embeddings_csv, "BLOCK_BYTES", 64)
    rows = [f"img_{i:03d}.jpg,{i},0" for i in range(40)] + ["img_005.jpg,1,0"]
    path = tmp_path / "e.csv"
    path.write_text("filenames,embedding_0,labels\n" + "\n".join(rows) + "\n")
    with pytest.raises(FormatError, match=r"^row 42 \('img_005.jpg'\): the file name is also on row 7;"):
        load_embeddings(path)


@pytest.mark.parametrize(
    "text",
    [
        # Lightly's masked/selected columns between the embeddings are skipped (Lightly's check_embeddings allows them).
        "filenames,embedding_0,masked,embedding_1,labels\na.jpg,1,0,2,3\n",
        "filenames,embedding_0,embedding_1,selected,labels\r\na.jpg,1,2,1,3\r\n",
        # Spaces around header names, blank lines and a BOM: the server always took them; the client now does too.
        "filenames, embedding_0 ,embedding_1,labels\r\na.jpg,1,2,3\r\n",
        "\ufefffilenames,embedding_0,embedding_1,labels\r\n\r\na.jpg,1,2,3\r\n  \r\n\r\n",
        # A quoted value, spaces around a value.
        'filenames,embedding_0,embedding_1,labels\na.jpg,"1", 2 ,3\n',
    ],
)
def test_load_reads_every_dialect_the_server_takes(tmp_path, text):
    path = tmp_path / "e.csv"
    path.write_bytes(text.encode())
    embeddings, labels, names = load_embeddings(path)
    assert embeddings.dtype == np.float64
    assert embeddings.tolist() == [[1.0, 2.0]] and labels == [3] and names == ["a.jpg"]


def test_load_gives_the_float32_values_the_server_stores_and_slashes_for_backslashes(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text('filenames,embedding_0,labels\r\ncam\\0.jpg,0.1,0\r\n"x,y.jpg",1e-46,1\r\n', newline="")
    embeddings, labels, names = load_embeddings(path)
    assert names == ["cam/0.jpg", "x,y.jpg"] and labels == [0, 1]
    assert embeddings.tolist() == [[float(np.float32(0.1))], [0.0]]


def test_format_custom_metadata_is_lightlys_coco_shape():
    pairs = [
        ("hello.png", {"number_of_people": 1, "weather": {"scenario": "rain"}}),
        ("world.png", {"number_of_people": 3}),
    ]
    assert format_custom_metadata(pairs) == {
        "images": [{"id": 0, "file_name": "hello.png"}, {"id": 1, "file_name": "world.png"}],
        "metadata": [
            {"image_id": 0, "number_of_people": 1, "weather": {"scenario": "rain"}},
            {"image_id": 1, "number_of_people": 3},
        ],
    }


def test_save_custom_metadata_accepts_pairs_or_formatted(tmp_path):
    pairs = [("a.jpg", {"t": 1.5})]
    save_custom_metadata(tmp_path / "pairs.json", pairs)
    save_custom_metadata(tmp_path / "dict.json", format_custom_metadata(pairs))
    assert (tmp_path / "pairs.json").read_bytes() == (tmp_path / "dict.json").read_bytes()
    data = load_custom_metadata(tmp_path / "pairs.json")
    assert json.loads((tmp_path / "pairs.json").read_text()) == data
    assert metadata_by_file_name(data) == {"a.jpg": {"t": 1.5}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "JSON object"),
        ({"images": []}, "list `metadata`"),
        ({"images": [{"id": 0}], "metadata": []}, r"images\[0\]"),
        ({"images": [{"id": 0, "file_name": "a"}], "metadata": [{"image_id": 5}]}, r"metadata\[0\]: image_id 5"),
    ],
)
def test_load_custom_metadata_names_the_entry_at_fault(tmp_path, data, message):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=message):
        load_custom_metadata(path)


# The metadata file is decoded by the server's reader (winnow.safejson), as an uploaded file is (issue 13).
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_load_custom_metadata_reads_what_the_server_reads(tmp_path, encoding):
    data = {"images": [{"id": 0, "file_name": "été.jpg"}], "metadata": [{"image_id": 0, "t": 1.5}]}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding=encoding)
    assert load_custom_metadata(path) == data


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"images": [], "metadata": [{"image_id": 0, "t": NaN}]}', r"not valid JSON \(NaN is not a JSON number\)$"),
        ("[" * 70 + "]" * 70, r"not valid JSON \(file\[0\] is nested more than 64 levels deep\)$"),
        ('{"images": [', r"not valid JSON \(Expecting value: line 1 column 13 \(char 12\)\)$"),
    ],
)
def test_load_custom_metadata_refuses_what_the_server_refuses(tmp_path, text, message):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(FormatError, match=message):
        load_custom_metadata(path)


def test_load_embeddings_streams_into_the_matrix_without_a_python_object_per_value(tmp_path, monkeypatch):
    """The matrix is filled block by block (float32 blocks, then the float64 result): no list of floats per row."""
    import tracemalloc

    from winnow.client import embeddings_csv

    monkeypatch.setattr(embeddings_csv, "BLOCK_BYTES", 256 << 10)  # a few blocks' text is small beside the matrix
    n, d = 20_000, 64
    embeddings = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    path = tmp_path / "e.csv"
    save_embeddings(path, embeddings, [0] * n, [f"img_{i:06d}.jpg" for i in range(n)])
    tracemalloc.start()
    try:
        loaded, _labels, _names = load_embeddings(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # float64 result (8 bytes a value) + the float32 blocks (4) + names; Python floats in lists take ~40.
    assert peak < 2.5 * loaded.nbytes, peak / loaded.nbytes
    np.testing.assert_array_equal(loaded, embeddings)
