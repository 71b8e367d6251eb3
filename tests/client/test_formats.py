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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("name,embedding_0,labels\r\na.jpg,1,0\r\n", "first column must be `filenames`"),
        ("filenames,embedding_0\r\na.jpg,1\r\n", "last column must be `labels`"),
        ("filenames,emb,labels\r\na.jpg,1,0\r\n", "found 'emb'"),
        ("filenames, embedding_0,labels\r\na.jpg,1,0\r\n", "whitespace"),
        ("filenames,embedding_0,embedding_1,labels\r\na.jpg,1,2,0\r\nb.jpg,1,0\r\n", "line 3: 3 columns"),
        ("filenames,embedding_0,labels\r\na.jpg,1,0\r\nb.jpg,x,0\r\n", "line 3 \\(b.jpg\\): embedding_0='x'"),
        ("filenames,embedding_0,labels\r\na.jpg,nan,0\r\n", "line 2 \\(a.jpg\\): embedding_0='nan' is not finite"),
        ("filenames,embedding_0,labels\r\na.jpg,inf,0\r\n", "not finite"),
        ("filenames,embedding_0,labels\r\na.jpg,1,cat\r\n", "labels='cat' is not an integer"),
        ("filenames,embedding_0,labels\r\na.jpg,1,0\r\na.jpg,2,0\r\n", "line 3: file name 'a.jpg' repeats line 2"),
        ("filenames,embedding_0,labels\r\na.jpg,1,0\r\n\r\n", "line 3: empty row"),
        ("filenames,embedding_0,labels\r\n", "no rows"),
    ],
)
def test_load_embeddings_names_the_line_at_fault(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text, newline="")
    with pytest.raises(FormatError, match=message):
        load_embeddings(path)


def test_load_reads_past_lightlys_special_columns(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("filenames,embedding_0,masked,embedding_1,labels\na.jpg,1,0,2,3\n")
    embeddings, labels, names = load_embeddings(path)
    assert embeddings.tolist() == [[1.0, 2.0]] and labels == [3] and names == ["a.jpg"]


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
