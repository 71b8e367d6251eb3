"""File formats shared with Lightly: the embeddings CSV and the COCO-like custom metadata JSON.

The CSV is `filenames,embedding_0,...,embedding_{d-1},labels`, written by Python's csv module
(comma, CRLF line ends), one row per image; the JSON is
`{"images": [{"id", "file_name"}], "metadata": [{"image_id", ...}]}`. Files written here load in
Lightly and the reverse. No Django: this module runs on training machines.

`load_embeddings` reads the CSV with the server's own parser (winnow.client.embeddings_csv), so a file
loads here exactly when the server would take it, and a fault is named in the server's words.
`validate_custom_metadata` is the one check of a metadata document: the server runs it on every upload
(curation.metadata) and the client before anything is sent, so both name the same entries at fault.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from winnow import safejson
from winnow.client import embeddings_csv
from winnow.client.errors import FormatError
from winnow.values import bad_value, size_error

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
MAX_ERRORS = 20  # problems a rejected metadata document reports


class MetadataErrors(FormatError):
    """A custom metadata document with problems: `errors` maps `images`, `metadata` or `non_field_errors` to
    messages that each name the entry at fault."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(message for messages in errors.values() for message in messages))
        self.errors = errors


def save_embeddings(
    path: str | os.PathLike,
    embeddings: np.ndarray,
    labels: Sequence[int],
    filenames: Sequence[str],
) -> None:
    """Write embeddings as a CSV in Lightly's format.

    Args:
        path: where to write the CSV.
        embeddings: an (n, d) array, one row per image.
        labels: n integer labels (use 0 when there are none).
        filenames: n file names, relative to the dataset's folder.

    Raises:
        ValueError: if the lengths differ, the array is not 2-D, or a file name contains a comma
            or a line break (Lightly rejects those).
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n x d), got shape {embeddings.shape}")
    n_embeddings, n_filenames, n_labels = len(embeddings), len(filenames), len(labels)
    if n_embeddings != n_labels or n_filenames != n_labels:
        raise ValueError(
            "Length of embeddings, labels, and filenames should be equal "
            f"but are not: ({n_embeddings}, {n_filenames}, {n_labels})"
        )
    for i, name in enumerate(filenames):
        if "," in name or "\n" in name or "\r" in name:
            raise ValueError(f"filenames[{i}] {name!r} contains a comma or a line break")
    header = ["filenames", *(f"embedding_{i}" for i in range(embeddings.shape[1])), "labels"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter=",")
        writer.writerow(header)
        for name, row, label in zip(filenames, embeddings, labels):
            writer.writerow([name, *row, str(label)])


def load_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, list[int], list[str]]:
    """Read a Lightly embeddings CSV with the server's parser (winnow.client.embeddings_csv): the same files
    load, to the same float32 values, and a bad file gets the words the server would answer.

    The file is read as a stream, block by block, straight into the matrix. Lightly's `masked` and
    `selected` columns are skipped; a backslash in a file name becomes `/`, as on the server.

    Returns:
        (embeddings as a float64 (n, d) array holding the float32 values the server stores, labels as ints,
        filenames), in file order.

    Raises:
        FormatError: naming the row at fault ("row 1" is the header): a wrong header, a row of another
            width, a value that is not a finite float32, a label that is not an integer, an empty file
            name, a file name given twice, text that is not UTF-8, or no rows at all.
    """
    blocks = []
    seen: set[str] = set()
    n = 0
    with open(path, "rb") as handle:
        for block in embeddings_csv.csv_blocks(handle, embeddings_csv.BLOCK_BYTES):
            blocks.append(block)
            n += len(block.file_names)
            seen.update(block.file_names)
            if len(seen) != n:
                _raise_repeated(blocks)
    if not blocks:
        raise FormatError(embeddings_csv.NO_ROWS)
    d = blocks[0].matrix.shape[1]
    embeddings = np.empty((n, d), dtype=np.float64)
    labels: list[int] = []
    filenames: list[str] = []
    row = 0
    while blocks:
        block = blocks.pop(0)  # each block's float32 matrix is freed once copied
        embeddings[row : row + len(block.file_names)] = block.matrix
        row += len(block.file_names)
        labels += block.labels.tolist()
        filenames += block.file_names
    return embeddings, labels, filenames


def _raise_repeated(blocks) -> None:
    seen: dict[str, int] = {}
    for block in blocks:
        for name, line in zip(block.file_names, block.line_numbers):
            if name in seen:
                raise FormatError(embeddings_csv.repeated_name_error("row", line, name, seen[name]))
            seen[name] = line


def save_file_names(path: str | os.PathLike, filenames: Iterable[str]) -> int:
    """Write file names one a line (UTF-8, LF), the names file of a binary `.npy` embeddings upload.

    Returns how many were written. Raises ValueError for a name with a line break or a NUL.
    """
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for i, name in enumerate(filenames):
            if not isinstance(name, str) or not name or any(ch in name for ch in "\r\n\x00"):
                raise ValueError(f"filenames[{i}] {name!r} is empty or contains a line break or NUL")
            handle.write(name + "\n")
            count += 1
    return count


def load_file_names(path: str | os.PathLike) -> list[str]:
    """Read a names file as the server does: one file name a line (blank lines skipped), or a JSON list."""
    text = Path(path).read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise FormatError(f"{path}: a JSON names file must be a list of strings")
        return names
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def npy_matrix_shape(path: str | os.PathLike) -> tuple[int, int]:
    """(n, d) of a `.npy` embeddings matrix, checked as the server checks it: float32, C order, 2-D."""
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(handle)
        except ValueError as exc:
            raise FormatError(f"{path}: not a .npy file ({exc})") from None
    if dtype != np.dtype("<f4") or fortran or len(shape) != 2:
        raise FormatError(f"{path}: the matrix must be a C-order float32 (n, d) array, not {dtype} {shape}")
    return shape


def format_custom_metadata(custom_metadata: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, list[dict]]:
    """Turn (file_name, metadata dict) pairs into Lightly's COCO-like custom metadata dict.

    Example:
        >>> format_custom_metadata([("a.png", {"number_of_people": 1})])
        {'images': [{'id': 0, 'file_name': 'a.png'}], 'metadata': [{'image_id': 0, 'number_of_people': 1}]}
    """
    formatted: dict[str, list[dict]] = {"images": [], "metadata": []}
    for i, (file_name, metadata) in enumerate(custom_metadata):
        if not isinstance(metadata, Mapping):
            raise TypeError(f"entry {i} ({file_name}): metadata must be a dict, got {type(metadata).__name__}")
        formatted["images"].append({"id": i, "file_name": file_name})
        formatted["metadata"].append({"image_id": i, **metadata})
    return formatted


def save_custom_metadata(path: str | os.PathLike, custom_metadata) -> None:
    """Write custom metadata as Lightly's JSON file.

    `custom_metadata` is a list of (file_name, metadata dict) pairs, as Lightly takes it, or a dict
    already made by `format_custom_metadata`.
    """
    if isinstance(custom_metadata, Mapping):
        formatted = dict(custom_metadata)
    else:
        formatted = format_custom_metadata(custom_metadata)
    with open(path, "w") as handle:
        json.dump(formatted, handle)


def load_custom_metadata(path: str | os.PathLike) -> dict[str, list[dict]]:
    """Read a custom metadata JSON file as the server reads an uploaded one, then check its COCO-like shape.

    The bytes are decoded by the server's own reader (winnow.safejson: UTF-8, -16 or -32 with or without a BOM;
    NaN and Infinity refused; bounded nesting), so a file loads here exactly when the server would take it as
    an upload, and a fault is named in the same words (the entry at fault, or why the JSON is not valid).
    """
    try:
        data = safejson.loads(Path(path).read_bytes(), "file", text=False)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and UnsafeJSON are ValueErrors
        raise FormatError(f"{path}: not valid JSON ({exc})") from None
    check_custom_metadata(data)
    return data


def check_custom_metadata(data: Any) -> list[tuple[str, dict]]:
    """Raise FormatError unless `data` has `images` [{id, file_name}] and `metadata` [{image_id, ...}] that the
    server stores (the server's own check, `validate_custom_metadata`); return [(file name, metadata)]."""
    if not isinstance(data, Mapping):
        raise FormatError("custom metadata must be a JSON object with `images` and `metadata`")
    for key in ("images", "metadata"):
        if not isinstance(data.get(key), list):
            raise FormatError(f"custom metadata needs a list `{key}`")
    return validate_custom_metadata(dict(data))[1]


def _describe(kind: str, index: int, entry) -> str:
    name = entry.get("file_name") if isinstance(entry, dict) else None
    return f"{kind}[{index}]" + (f" ({name!r})" if isinstance(name, str) else "")


def validate_custom_metadata(payload) -> tuple[dict, list[tuple[str, dict]]]:
    """Check a whole custom metadata document as the server stores it; return {image id: file name} and
    [(file name, metadata)], or raise MetadataErrors naming each entry at fault (at most MAX_ERRORS of them)."""
    if not isinstance(payload, dict):
        raise MetadataErrors({"non_field_errors": ["expected a JSON object with 'images' and 'metadata' lists"]})
    errors: dict[str, list[str]] = {}
    for key in ("images", "metadata"):
        if not isinstance(payload.get(key), list):
            errors[key] = [f"'{key}' is required and must be a list"]
    if errors:
        raise MetadataErrors(errors)

    problems: list[str] = []
    id_to_name: dict = {}
    seen_names: dict[str, int] = {}
    for i, image in enumerate(payload["images"]):
        where = _describe("images", i, image)
        if not isinstance(image, dict):
            problems.append(f"{where}: must be an object with 'file_name' and 'id'")
            continue
        name, image_id = image.get("file_name"), image.get("id")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: 'file_name' is required and must be a non-empty string")
        if image_id is None or isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
            problems.append(f"{where}: 'id' is required and must be an integer or a string")
            continue
        if image_id in id_to_name:
            problems.append(f"{where}: id {image_id!r} is used by another image")
        elif isinstance(name, str) and name:
            if name in seen_names:
                problems.append(f"{where}: file name {name!r} is already listed at images[{seen_names[name]}]")
            else:
                seen_names[name] = i
            id_to_name[image_id] = name
        if len(problems) >= MAX_ERRORS:
            break
    if problems:
        raise MetadataErrors({"images": problems})

    entries: list[tuple[str, dict]] = []
    used: dict = {}
    for j, entry in enumerate(payload["metadata"]):
        where = f"metadata[{j}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object with 'image_id'")
            continue
        image_id = entry.get("image_id")
        if "image_id" not in entry or isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
            problems.append(f"{where}: 'image_id' is required and must be an integer or a string")
            continue
        name = id_to_name.get(image_id)
        if name is None:
            problems.append(f"{where}: image_id {image_id!r} is not the id of any entry in 'images'")
            continue
        where = f"{where} (image_id {image_id!r}, file {name!r})"
        if image_id in used:
            problems.append(f"{where}: image {image_id!r} already has metadata at metadata[{used[image_id]}]")
            continue
        used[image_id] = j
        values = {k: v for k, v in entry.items() if k != "image_id"}
        problem = bad_value(values) or size_error(values)
        if "predictions" in values:
            problem = "'predictions' is reserved for the scores of prediction tasks; upload those as a prediction task"
        if problem:
            problems.append(f"{where}: {problem}")
        else:
            entries.append((name, values))
        if len(problems) >= MAX_ERRORS:
            break
    if problems:
        raise MetadataErrors({"metadata": problems})
    return id_to_name, entries


def metadata_by_file_name(data: Mapping[str, list[dict]]) -> dict[str, dict]:
    """The COCO-like dict as {file_name: metadata without image_id}."""
    return dict(check_custom_metadata(data))


def find_images(input_dir: str | os.PathLike) -> list[str]:
    """Relative paths (forward slashes, sorted) of the image files under `input_dir`; hidden entries skipped.

    These are the samples' file names: the same on upload, in the embeddings CSV and in metadata.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{input_dir} is not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)
