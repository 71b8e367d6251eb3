"""Embeddings: Lightly's CSV format in and out, the stored matrix, the 2D projection, the built-in embedder run.

Storage, per embedding, under `datasets/<dataset id>/embeddings/`:

- `<id>.npy`: float32 (n, d); row i is the sample with idx i, n = the dataset's next idx when the
  embedding was stored (Embedding.count holds n: the sampler takes samples with idx < count). Rows of idx values that have no vector (a sample deleted before the upload,
  a sample without a thumbnail for the built-in embedder) are zero: never read a row whose idx is
  not in the covered list below.
- `<id>.rows.npz`: `idx`, the covered idx values ascending, and `labels`, the CSV's labels column
  aligned with `idx` (int64; Lightly's format holds integers there).
- `<id>.pca.npy` and, for at most settings.WINNOW_TSNE_MAX_POINTS samples, `<id>.tsne.npy`: float32
  (n, 2) layouts for the embedding map, row i = idx i, NaN where the idx is not covered.

An uploaded CSV must cover every sample of the dataset exactly once (as Lightly requires), so for a
CSV the covered list is every sample present at upload; idx gaps left by deleted samples stay zero.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.dateparse import parse_datetime

from curation import storage
from curation.models import Dataset, Embedding, EmbeddingSource, Sample, UploadMode, new_public_id

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 200
MAX_LISTED = 10  # how many offending file names an error message lists
BUILTIN_NAME = "default"


class Status:
    """Embedding.projection_status values."""

    PENDING = "pending"  # queued, nothing to show yet
    PARTIAL = "partial"  # the PCA layout is ready; a nonlinear layout is being computed
    READY = "ready"  # every layout this embedding gets is ready
    FAILED = "failed"


class EmbeddingError(ValueError):
    """A rejected embedding upload; the message names the row at fault, `field` the request field."""

    def __init__(self, message: str, field: str = "file"):
        super().__init__(message)
        self.field = field


# --- keys -----------------------------------------------------------------------------------------

def matrix_key(dataset_id: str, embedding_id: str) -> str:
    return f"datasets/{dataset_id}/embeddings/{embedding_id}.npy"


def _sibling(embedding: Embedding, suffix: str) -> str:
    return embedding.matrix_key.removesuffix(".npy") + suffix


def rows_key(embedding: Embedding) -> str:
    return _sibling(embedding, ".rows.npz")


def layout_key(embedding: Embedding, method: str) -> str:
    return _sibling(embedding, f".{method}.npy")


def layout_method(key: str) -> str:
    """The method ("pca", "tsne") a layout key was written by."""
    return key.removesuffix(".npy").rsplit(".", 1)[-1]


def all_keys(embedding: Embedding) -> list[str]:
    return [embedding.matrix_key, rows_key(embedding), layout_key(embedding, "pca"), layout_key(embedding, "tsne")]


# --- reading -----------------------------------------------------------------------------------------

def load(embedding: Embedding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matrix by idx (n, d) float32, covered idx ascending, labels aligned with the idx)."""
    matrix = storage.load_matrix(embedding.matrix_key)
    with np.load(io.BytesIO(storage.read_bytes(rows_key(embedding))), allow_pickle=False) as rows:
        return matrix, rows["idx"], rows["labels"]


# --- CSV in ------------------------------------------------------------------------------------------

@dataclass
class ParsedCsv:
    file_names: list[str]
    line_numbers: list[int]  # the file's row number of each entry (the header is row 1)
    matrix: np.ndarray  # float32 (m, d)
    labels: np.ndarray  # int64 (m,)


def parse_csv(data: bytes) -> ParsedCsv:
    """Parse Lightly's `filenames,embedding_0,...,embedding_{d-1},labels`; EmbeddingError names the row.

    The numbers are parsed by numpy in one pass over the whole numeric block; Python only splits
    lines, so 100,000 x 128 takes seconds.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EmbeddingError(f"the CSV is not UTF-8 text (bad byte at offset {exc.start})") from None
    lines = text.split("\n")
    header = _split_line(lines[0].rstrip("\r"), 1) if lines else []
    dimension = _check_header(header)

    names: list[str] = []
    numbers: list[str] = []
    labels: list[str] = []
    line_numbers: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if '"' in line:  # a quoted file name (one holding a comma): the csv module splits it
            fields = _split_line(line, number)
            name, middle, label = fields[0], fields[1:-1], fields[-1] if len(fields) > 1 else ""
            values, count = ",".join(middle), len(middle)
        else:
            first, last = line.find(","), line.rfind(",")
            if first < 0 or first == last:
                name, values, label, count = line.split(",")[0], "", "", 0
            else:
                name, values, label = line[:first], line[first + 1:last], line[last + 1:]
                count = values.count(",") + 1
        if count != dimension:
            raise EmbeddingError(
                f"row {number} ({name!r}): has {count} embedding values, the header names {dimension}"
            )
        names.append(name)
        numbers.append(values)
        labels.append(label)
        line_numbers.append(number)
    if not names:
        raise EmbeddingError("the CSV has a header but no rows")

    matrix = _parse_numbers(numbers, len(names), dimension, names, line_numbers)
    return ParsedCsv(names, line_numbers, matrix, _parse_labels(labels, names, line_numbers))


def _split_line(line: str, number: int) -> list[str]:
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error as exc:
        raise EmbeddingError(f"row {number}: malformed CSV ({exc})") from None
    return rows[0] if rows else []


def _check_header(header: list[str]) -> int:
    shape = "the header must be filenames,embedding_0,...,embedding_{d-1},labels"
    if len(header) < 3 or header[0].strip() != "filenames" or header[-1].strip() != "labels":
        raise EmbeddingError(f"row 1: {shape}, not {','.join(header[:3])}{',...' if len(header) > 3 else ''}")
    for i, column in enumerate(header[1:-1]):
        if column.strip() != f"embedding_{i}":
            raise EmbeddingError(f"row 1: column {i + 2} is {column!r}, expected 'embedding_{i}' ({shape})")
    return len(header) - 2


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
        raise EmbeddingError(
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
                raise EmbeddingError(f"{where}: embedding_{column} is {raw.strip()!r}, not a number") from None
        raise EmbeddingError(f"{where}: the embedding values are not comma-separated numbers")
    raise EmbeddingError("the embedding values could not be read as numbers")


def _parse_labels(labels: list[str], names: list[str], line_numbers: list[int]) -> np.ndarray:
    try:
        return np.array([int(label) for label in labels], dtype=np.int64)
    except (ValueError, OverflowError):
        for row, label in enumerate(labels):
            try:
                np.int64(int(label))
            except (ValueError, OverflowError):
                raise EmbeddingError(
                    f"row {line_numbers[row]} ({names[row]!r}): labels is {label!r}, not an integer"
                ) from None
        raise


def clean_name(dataset: Dataset, name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise EmbeddingError("is required: a non-empty string", "name")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise EmbeddingError(f"must be at most {MAX_NAME_LENGTH} characters (got {len(name)})", "name")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise EmbeddingError("must not contain control characters", "name")
    if Embedding.objects.filter(dataset=dataset, name=name).exists():
        raise EmbeddingError(f"this dataset already has an embedding named {name!r}", "name")
    return name


def create_from_csv(dataset: Dataset, name: str, data: bytes, *, creator=None,
                    embedding_id: str | None = None) -> Embedding:
    """Validate a Lightly embeddings CSV against the dataset and store it; nothing is written on error.

    `embedding_id` stores it under an id promised earlier (the Lightly client's signed-upload flow).
    """
    name = clean_name(dataset, name)
    parsed = parse_csv(data)
    first: dict[str, int] = {}
    for row, file_name in enumerate(parsed.file_names):
        if file_name in first:
            raise EmbeddingError(
                f"row {parsed.line_numbers[row]} ({file_name!r}): the file name is also on row "
                f"{parsed.line_numbers[first[file_name]]}; each sample must appear once"
            )
        first[file_name] = row

    try:
        return _create_locked(dataset, name, parsed, first, creator, embedding_id)
    except IntegrityError:
        # Another upload took the name between clean_name's check and the insert (its files are gone).
        if Embedding.objects.filter(dataset_id=dataset.pk, name=name).exclude(pk=embedding_id or "").exists():
            raise EmbeddingError(f"this dataset already has an embedding named {name!r}", "name") from None
        raise


def _create_locked(dataset: Dataset, name: str, parsed: ParsedCsv, first: dict[str, int], creator,
                   embedding_id: str | None) -> Embedding:
    with transaction.atomic():
        # Lock the dataset row: no upload can add a sample between the coverage check and the write.
        locked = Dataset.objects.select_for_update().only("id", "next_idx").get(pk=dataset.pk)
        idx_by_name = dict(Sample.objects.filter(dataset_id=locked.pk).values_list("file_name", "idx"))
        unknown = [(parsed.line_numbers[row], f) for f, row in first.items() if f not in idx_by_name]
        if unknown:
            listed = ", ".join(f"row {line} ({f!r})" for line, f in unknown[:MAX_LISTED])
            raise EmbeddingError(
                f"{len(unknown)} file name(s) are not samples of this dataset: {listed}"
                + (" ..." if len(unknown) > MAX_LISTED else "")
            )
        missing = sorted((idx, f) for f, idx in idx_by_name.items() if f not in first)
        if missing:
            listed = ", ".join(repr(f) for _idx, f in missing[:MAX_LISTED])
            raise EmbeddingError(
                f"the CSV must cover every sample; {len(missing)} of {len(idx_by_name)} are missing: {listed}"
                + (" ..." if len(missing) > MAX_LISTED else "")
            )
        idx = np.array([idx_by_name[f] for f in parsed.file_names], dtype=np.int64)
        embedding = _store(
            locked, name, idx, parsed.matrix, parsed.labels, source=EmbeddingSource.CSV, creator=creator,
            embedding_id=embedding_id,
        )
    return embedding


def _store(dataset: Dataset, name: str, idx: np.ndarray, vectors: np.ndarray, labels: np.ndarray, *,
           source: str, creator=None, embedding_id: str | None = None) -> Embedding:
    """Write matrix and rows files, then the row (inside the caller's transaction); files go if it fails."""
    if embedding_id and Embedding.objects.filter(pk=embedding_id).exists():
        # Checked before any file is written: the keys below would be the existing embedding's files.
        raise IntegrityError(f"embedding id {embedding_id} is already taken")
    order = np.argsort(idx, kind="stable")
    idx, vectors, labels = idx[order], vectors[order], labels[order]
    n = max(int(dataset.next_idx), int(idx[-1]) + 1 if idx.size else 0)
    matrix = np.zeros((n, vectors.shape[1]), dtype=np.float32)
    matrix[idx] = vectors
    embedding = Embedding(
        id=embedding_id or new_public_id(), dataset_id=dataset.pk, name=name, dimension=int(vectors.shape[1]),
        count=n, source=source, creator=creator, projection_status=Status.PENDING,
    )
    embedding.matrix_key = matrix_key(dataset.pk, embedding.id)
    buffer = io.BytesIO()
    np.savez(buffer, idx=idx, labels=labels)
    written = []
    try:
        written.append(storage.save_matrix(embedding.matrix_key, matrix))
        written.append(storage.save_bytes(rows_key(embedding), buffer.getvalue()))
        embedding.save(force_insert=True)
    except BaseException:
        storage.delete_keys(written)
        raise
    transaction.on_commit(lambda: _enqueue_projection(embedding.pk), robust=True)
    return embedding


def _enqueue_projection(embedding_id: str) -> None:
    from curation import tasks

    tasks.compute_projection.delay(embedding_id)


def delete_embedding(embedding: Embedding) -> None:
    """Delete the row, then (after the commit) its files."""
    keys = all_keys(embedding)
    with transaction.atomic():
        embedding.delete()
        # Deleting a key that was never written (no t-SNE layout) is a no-op on both storages.
        transaction.on_commit(lambda: storage.delete_keys(keys), robust=True)


# --- CSV out -----------------------------------------------------------------------------------------

def csv_chunks(embedding: Embedding, chunk_rows: int = 2000) -> Iterator[str]:
    """The embedding in Lightly's CSV format, for the samples it covers that still exist, by idx.

    Values are written with 9 significant digits, which reads back to the very same float32. The
    files are read before the first chunk is asked for, so a missing file fails before streaming.
    """
    return _csv_chunks(embedding, *load(embedding), chunk_rows)


def _csv_chunks(embedding: Embedding, matrix: np.ndarray, idx: np.ndarray, labels: np.ndarray,
                chunk_rows: int) -> Iterator[str]:
    label_of = dict(zip(idx.tolist(), labels.tolist()))
    d = matrix.shape[1]
    yield ",".join(["filenames", *(f"embedding_{i}" for i in range(d)), "labels"]) + "\r\n"
    row_format = ",".join(["%.9g"] * d)
    samples = (
        Sample.objects.filter(dataset_id=embedding.dataset_id, idx__in=idx.tolist())
        .order_by("idx").values_list("idx", "file_name")
    ) if idx.size <= 50_000 else (
        # A long IN list is slower than filtering in Python.
        (i, f) for i, f in Sample.objects.filter(dataset_id=embedding.dataset_id).order_by("idx")
        .values_list("idx", "file_name").iterator(chunk_size=5000) if i in label_of
    )
    lines: list[str] = []
    for i, file_name in samples:
        values = row_format % tuple(matrix[i].tolist())
        lines.append(f"{_csv_field(file_name)},{values},{label_of[i]}\r\n")
        if len(lines) >= chunk_rows:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)


def _csv_field(value: str) -> str:
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


# --- 2D projection -------------------------------------------------------------------------------------

def compute_projection(embedding_id: str) -> str | None:
    """PCA layout at once, then t-SNE for small embeddings; returns the final status (None: gone)."""
    embedding = Embedding.objects.filter(pk=embedding_id).first()
    if embedding is None:
        return None
    try:
        matrix, idx, _labels = load(embedding)
        present = _present_idx(embedding, idx, matrix.shape[0])
        points = matrix[present]
        pca = _layout(matrix.shape[0], present, pca_2d(points))
        _save_layout(embedding, "pca", pca, Status.PARTIAL if _wants_tsne(present.size) else Status.READY)
    except Exception:
        log.exception("PCA projection of embedding %s failed", embedding_id)
        Embedding.objects.filter(pk=embedding_id).update(projection_status=Status.FAILED)
        raise
    if not _wants_tsne(present.size):
        return Status.READY
    try:
        tsne = _layout(matrix.shape[0], present, tsne_2d(points))
        _save_layout(embedding, "tsne", tsne, Status.READY)
    except Exception:
        # The PCA layout stands; a failed nonlinear layout must not hide the map.
        log.exception("t-SNE projection of embedding %s failed; keeping PCA", embedding_id)
        Embedding.objects.filter(pk=embedding_id).update(projection_status=Status.READY)
    return Status.READY


def _present_idx(embedding: Embedding, covered: np.ndarray, n: int) -> np.ndarray:
    alive = np.fromiter(
        Sample.objects.filter(dataset_id=embedding.dataset_id, idx__lt=n).values_list("idx", flat=True), dtype=np.int64
    )
    return np.intersect1d(covered, alive)


def _wants_tsne(count: int) -> bool:
    return 10 <= count <= settings.WINNOW_TSNE_MAX_POINTS


def _layout(n: int, present: np.ndarray, points: np.ndarray) -> np.ndarray:
    out = np.full((n, 2), np.nan, dtype=np.float32)
    out[present] = points
    return out


def _save_layout(embedding: Embedding, method: str, layout: np.ndarray, status: str) -> None:
    key = storage.save_matrix(layout_key(embedding, method), layout)
    if not Embedding.objects.filter(pk=embedding.pk).update(projection_key=key, projection_status=status):
        storage.delete_keys([key])  # deleted meanwhile: its files must not linger


def pca_2d(points: np.ndarray) -> np.ndarray:
    """The first two principal components, signs fixed so the same data always gives the same map."""
    m = points.shape[0]
    out = np.zeros((m, 2), dtype=np.float32)
    if m < 2:
        return out
    x = points.astype(np.float64)
    x -= x.mean(axis=0)
    _eigvals, eigvecs = np.linalg.eigh(x.T @ x)  # d x d: cheap for any number of samples
    top = eigvecs[:, ::-1][:, :2]  # one column only when the embedding has one dimension
    top *= np.sign(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])])
    projected = x @ top
    out[:, : projected.shape[1]] = projected
    return out


def tsne_2d(points: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    init = pca_2d(points).astype(np.float64)
    # Scaled as sklearn's own "pca" init does (std 1e-4), computed once here from our PCA.
    init *= 1e-4 / (np.std(init[:, 0]) or 1.0)
    perplexity = float(min(30.0, (points.shape[0] - 1) / 3))
    layout = TSNE(
        n_components=2, perplexity=perplexity, init=init, random_state=seed, max_iter=500, n_jobs=1,
    ).fit_transform(points.astype(np.float32))
    return layout.astype(np.float32)


# --- built-in embedder ---------------------------------------------------------------------------------

def embed_dataset(dataset_id: str, requested_at: str | None = None) -> str | None:
    """Embed the dataset's thumbnails with the built-in embedder as the embedding "default".

    Returns the new embedding's id, or None when there is nothing to do: a later upload has queued
    a run of its own (it will see more samples), the dataset keeps no pixels or has fewer than two
    images, or an uploaded CSV already holds the name "default".
    """
    from winnow.client import embedder

    dataset = Dataset.objects.filter(pk=dataset_id).only("id", "upload_mode").first()
    if dataset is None or dataset.upload_mode == UploadMode.META:
        return None
    since = parse_datetime(requested_at) if requested_at else None
    if since and Sample.objects.filter(dataset_id=dataset_id, created_at__gt=since).exists():
        return None
    if _csv_holds_default(dataset_id):
        return None
    snapshot = _thumbnail_snapshot(dataset_id)
    if len(snapshot) < 2:
        return None

    size = embedder.PatchEmbedder().image_size
    arrays, kept = _load_thumbnails(snapshot, size, embedder.to_array)
    if len(kept) < 2:
        return None
    vectors = embedder.embed_images(arrays, seed=0)

    with transaction.atomic():
        locked = Dataset.objects.select_for_update().only("id", "next_idx").filter(pk=dataset_id).first()
        if locked is None or _thumbnail_snapshot(dataset_id) != snapshot:
            return None  # samples changed while we worked; the upload that changed them queued a run
        old = Embedding.objects.filter(dataset_id=dataset_id, name=BUILTIN_NAME).first()
        if old is not None:
            if old.source != EmbeddingSource.BUILTIN:
                return None
            delete_embedding(old)  # same transaction: the name is free for the new one
        idx = np.array(kept, dtype=np.int64)
        embedding = _store(
            locked, BUILTIN_NAME, idx, vectors, np.zeros(idx.size, dtype=np.int64), source=EmbeddingSource.BUILTIN
        )
    return embedding.pk


def _csv_holds_default(dataset_id: str) -> bool:
    return Embedding.objects.filter(dataset_id=dataset_id, name=BUILTIN_NAME).exclude(
        source=EmbeddingSource.BUILTIN
    ).exists()


def _thumbnail_snapshot(dataset_id: str) -> list[tuple[int, str]]:
    return list(
        Sample.objects.filter(dataset_id=dataset_id).exclude(thumbnail_key="").order_by("idx")
        .values_list("idx", "thumbnail_key")
    )


def _load_thumbnails(snapshot, size: int, to_array) -> tuple[np.ndarray, list[int]]:
    from PIL import Image

    def one(key: str):
        try:
            with Image.open(io.BytesIO(storage.read_bytes(key))) as image:
                return to_array(image, size)
        except (OSError, ValueError) as exc:  # a missing or unreadable thumbnail leaves its row out
            log.warning("thumbnail %s skipped by the embedder: %s", key, exc)
            return None

    arrays = np.empty((len(snapshot), size, size, 3), dtype=np.uint8)
    kept: list[int] = []
    # Storage reads wait on disk or network, and Pillow releases the GIL while decoding.
    with ThreadPoolExecutor(max_workers=8) as pool:
        for (idx, _key), array in zip(snapshot, pool.map(one, [key for _idx, key in snapshot])):
            if array is not None:
                arrays[len(kept)] = array
                kept.append(idx)
    return arrays[: len(kept)], kept
