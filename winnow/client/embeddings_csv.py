"""Lightly's embeddings CSV read as a stream, block by block: the one parser of that format.

`filenames,embedding_0,...,embedding_{d-1},labels`, UTF-8 (a BOM is dropped), LF or CRLF line ends, a quoted
field may hold a comma, blank lines are skipped, spaces around a header name are ignored. Lightly's `masked`
and `selected` columns may sit among the embedding columns (Lightly's check_embeddings allows them): they are
skipped. A backslash in a file name is a path separator, as when samples are registered (a CSV written on
Windows names `cam\\0.jpg`): it becomes `/`. An empty file name, or one holding a NUL, is refused.

Each block's numbers are parsed by numpy in one pass (Python only splits lines), so memory is a few blocks
whatever the file's size; a FormatError names the row at fault ("row 1" is the header). Django-free, like
predictions.py: the server parses uploads with it (curation.embeddings) and the client reads files with it
(winnow.client.formats.load_embeddings), so both accept the same files and name a fault in the same words.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from winnow.client.errors import FormatError

BLOCK_BYTES = 8 << 20  # the CSV is read and parsed this many bytes at a time
SKIPPED_COLUMNS = ("masked", "selected")  # Lightly's own columns that may sit among the embedding columns
NO_ROWS = "the CSV has a header but no rows"


@dataclass(frozen=True)
class Header:
    dimension: int  # embedding columns
    columns: int  # fields in a row
    keep: list[int] | None  # positions of the embedding values among a row's middle fields; None: all of them


@dataclass
class ParsedCsv:
    file_names: list[str]
    line_numbers: list[int]  # the file's row number of each entry (the header is row 1)
    matrix: np.ndarray  # float32 (m, d)
    labels: np.ndarray  # int64 (m,)


def parse_csv(data: bytes, max_dimension: int | None = None) -> ParsedCsv:
    """Parse a whole CSV in memory (tests and small files); uploads go through `csv_blocks`."""
    blocks = list(csv_blocks(io.BytesIO(data), BLOCK_BYTES, max_dimension))
    if not blocks:
        raise FormatError(NO_ROWS)
    return ParsedCsv(
        [n for b in blocks for n in b.file_names],
        [n for b in blocks for n in b.line_numbers],
        np.concatenate([b.matrix for b in blocks]),
        np.concatenate([b.labels for b in blocks]),
    )


def text_blocks(fileobj, block_bytes: int) -> Iterator[tuple[int, str]]:
    """(line number of the first line, text of whole lines) from a binary stream, UTF-8, BOM dropped."""
    tail = b""
    offset = 0  # byte offset of `tail` in the file
    line = 1
    first = True
    while True:
        chunk = fileobj.read(block_bytes)
        data = tail + chunk if tail else chunk
        if first and data:
            if len(data) < 3 and chunk:
                tail = data
                continue
            if data.startswith(b"\xef\xbb\xbf"):
                data, offset = data[3:], 3
            first = False
        if not chunk:
            complete, tail = data, b""
        else:
            cut = data.rfind(b"\n")
            if cut < 0:
                tail = data
                continue
            complete, tail = data[: cut + 1], data[cut + 1 :]
        if complete:
            try:
                text = complete.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormatError(f"the CSV is not UTF-8 text (bad byte at offset {offset + exc.start})") from None
            yield line, text
            line += text.count("\n")
            offset += len(complete)
        if not chunk:
            return


def csv_blocks(fileobj, block_bytes: int = BLOCK_BYTES, max_dimension: int | None = None) -> Iterator[ParsedCsv]:
    """Parse Lightly's `filenames,embedding_0,...,embedding_{d-1},labels` block by block; FormatError names the row.

    `fileobj` is a binary stream; a header naming more than `max_dimension` columns is refused.

    Each block's numbers are parsed by numpy in one pass; Python only splits lines.
    """
    header = None
    for first_line, text in text_blocks(fileobj, block_bytes):
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        start = 0
        if header is None:
            if not lines:
                continue
            header = _check_header(_split_line(lines[0].rstrip("\r"), 1), max_dimension)
            start = 1
        block = _parse_block_fast(lines, start, first_line, header) or _parse_lines(lines, start, first_line, header)
        if block is not None:
            yield block
    if header is None:
        raise FormatError("row 1: the CSV is empty; expected the header filenames,embedding_0,...,labels")


def repeated_name_error(unit: str, line: int, file_name: str, earlier: int) -> str:
    """The words for a file name given twice, the same whoever finds it (the server by sample, the client by name)."""
    return f"{unit} {line} ({file_name!r}): the file name is also on {unit} {earlier}; each sample must appear once"


def _parse_block_fast(lines: list[str], start: int, first_line: int, header: Header) -> ParsedCsv | None:
    """A block without quotes, blank lines or odd file names, parsed by numpy's C reader; None: let
    `_parse_lines` do it (which names the row at fault when there is one)."""
    rows = lines[start:] if start else lines
    if not rows:
        return None
    for line in (rows[0], rows[-1]):
        if not line.strip():
            return None
    joined = "\n".join(rows)
    if '"' in joined or "\n\n" in joined or "\x00" in joined:
        return None
    if joined.startswith(",") or "\n," in joined:  # an empty file name
        return None
    if "\r" in joined:
        if joined.count("\r") != len(rows) or "\r\n\r" in joined:
            return None
        rows = joined.replace("\r", "").split("\n")
    text_commas = joined.count(",")
    if text_commas != len(rows) * (header.columns - 1):
        return None
    usecols = range(1, header.dimension + 1) if header.keep is None else [k + 1 for k in header.keep]
    try:
        with np.errstate(over="ignore"), warnings.catch_warnings():
            warnings.simplefilter("error")
            matrix = np.loadtxt(rows, delimiter=",", usecols=usecols, dtype=np.float32, comments=None, ndmin=2)
            labels = np.array([line[line.rfind(",") + 1 :] for line in rows]).astype(np.int64)
    except (ValueError, OverflowError, TypeError, Warning):
        return None
    if matrix.shape != (len(rows), header.dimension) or not np.isfinite(matrix).all():
        return None
    names = [line[: line.find(",")] for line in rows]
    if "\\" in joined:
        names = [name.replace("\\", "/") for name in names]
    return ParsedCsv(names, list(range(first_line + start, first_line + start + len(rows))), matrix, labels)


def _parse_lines(lines: list[str], start: int, first_line: int, header: Header) -> ParsedCsv | None:
    dimension, middle_count = header.dimension, header.columns - 2
    names: list[str] = []
    numbers: list[str] = []
    labels: list[str] = []
    line_numbers: list[int] = []
    for number in range(start, len(lines)):
        line = lines[number].rstrip("\r")
        number += first_line
        if not line.strip():
            continue
        if '"' in line:  # a quoted field (a file name holding a comma): the csv module splits it
            fields = _split_line(line, number)
            name, middle, label = fields[0], fields[1:-1], fields[-1] if len(fields) > 1 else ""
            values, count = ",".join(middle), len(middle)
        else:
            first, last = line.find(","), line.rfind(",")
            if first < 0 or first == last:
                name, values, label, count = line.split(",")[0], "", "", 0
            else:
                name, values, label = line[:first], line[first + 1 : last], line[last + 1 :]
                count = values.count(",") + 1
        if "\\" in name:
            name = name.replace("\\", "/")
        if not name or "\x00" in name:
            raise FormatError(f"row {number} ({name!r}): not a file name")
        if count != middle_count:
            if header.keep is None:
                raise FormatError(
                    f"row {number} ({name!r}): has {count} embedding values, the header names {dimension}"
                )
            raise FormatError(
                f"row {number} ({name!r}): has {count} values between the file name and labels, "
                f"the header names {middle_count} columns"
            )
        if header.keep is not None:
            fields = values.split(",")
            values = ",".join(fields[k] for k in header.keep)
        names.append(name)
        numbers.append(values)
        labels.append(label)
        line_numbers.append(number)
    if not names:
        return None
    matrix = _parse_numbers(numbers, len(names), dimension, names, line_numbers)
    return ParsedCsv(names, line_numbers, matrix, _parse_labels(labels, names, line_numbers))


def _split_line(line: str, number: int) -> list[str]:
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error as exc:
        raise FormatError(f"row {number}: malformed CSV ({exc})") from None
    return rows[0] if rows else []


def _check_header(header: list[str], max_dimension: int | None) -> Header:
    shape = "the header must be filenames,embedding_0,...,embedding_{d-1},labels"
    if len(header) < 3 or header[0].strip() != "filenames" or header[-1].strip() != "labels":
        raise FormatError(f"row 1: {shape}, not {','.join(header[:3])}{',...' if len(header) > 3 else ''}")
    keep = []
    for position, column in enumerate(header[1:-1]):
        if column.strip() in SKIPPED_COLUMNS:
            continue
        i = len(keep)
        if column.strip() != f"embedding_{i}":
            raise FormatError(f"row 1: column {position + 2} is {column!r}, expected 'embedding_{i}' ({shape})")
        keep.append(position)
    if not keep:
        raise FormatError(f"row 1: {shape}; it names no embedding column")
    dimension = check_dimension(len(keep), "row 1: the header", max_dimension)
    return Header(dimension, len(header), None if len(keep) == len(header) - 2 else keep)


def check_dimension(d: int, what: str, limit: int | None) -> int:
    """d, if at most `limit` (the server's WINNOW_MAX_EMBEDDING_DIMENSION; None: no limit); else a FormatError."""
    if limit is not None and d > limit:
        raise FormatError(
            f"{what} has {d} embedding dimensions; this server accepts at most {limit} (WINNOW_MAX_EMBEDDING_DIMENSION)"
        )
    return d


def _parse_numbers(numbers: list[str], m: int, d: int, names: list[str], line_numbers: list[int]) -> np.ndarray:
    flat = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # older numpy only warns on unparsable text
            flat = np.fromstring(",".join(numbers), dtype=np.float64, sep=",")
    except (ValueError, DeprecationWarning):
        flat = None
    if flat is None or flat.size != m * d:
        _raise_bad_number(numbers, names, line_numbers)
    with np.errstate(over="ignore"):
        matrix = flat.reshape(m, d).astype(np.float32)
    finite = np.isfinite(matrix)
    if not finite.all():
        row, column = map(int, np.argwhere(~finite)[0])
        raw = numbers[row].split(",")[column].strip()
        raise FormatError(
            f"row {line_numbers[row]} ({names[row]!r}): embedding_{column} is {raw!r}; "
            "embeddings must be finite numbers within float32 range"
        )
    return matrix


def _raise_bad_number(numbers: list[str], names: list[str], line_numbers: list[int]):
    """Find the row numpy could not read (rows one by one: only on the error path)."""
    for row, values in enumerate(numbers):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                ok = np.fromstring(values, dtype=np.float64, sep=",").size == values.count(",") + 1
        except (ValueError, DeprecationWarning):
            ok = False
        if ok:
            continue
        where = f"row {line_numbers[row]} ({names[row]!r})"
        for column, raw in enumerate(values.split(",")):
            try:
                float(raw.strip().replace("_", "!"))  # "1_0" is a Python float but not a CSV number
            except ValueError:
                raise FormatError(f"{where}: embedding_{column} is {raw.strip()!r}, not a number") from None
        raise FormatError(f"{where}: the embedding values are not comma-separated numbers")
    raise FormatError("the embedding values could not be read as numbers")


def _parse_labels(labels: list[str], names: list[str], line_numbers: list[int]) -> np.ndarray:
    try:
        return np.array([int(label) for label in labels], dtype=np.int64)
    except (ValueError, OverflowError):
        for row, label in enumerate(labels):
            try:
                np.int64(int(label))
            except (ValueError, OverflowError):
                raise FormatError(
                    f"row {line_numbers[row]} ({names[row]!r}): labels is {label!r}, not an integer"
                ) from None
        raise
