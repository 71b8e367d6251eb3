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

Uploads (CSV, or a float32 .npy matrix plus its file names) are read as streams, block by block:
each block's file names become idx values in one SQL statement and its rows go straight into the
(n, d) .npy being written in the spool folder (storage.spool_dir), which is then moved (local) or
uploaded (S3) as is. Memory: the matrix once plus a few blocks, whatever the file's size.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from queue import Full, Queue

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from curation import storage
from curation.errors import DomainError
from curation.models import Dataset, Embedding, EmbeddingSource, Sample, new_public_id
from winnow import safejson
from winnow.celery import task
from winnow.client import embedder, embeddings_csv, pretrained
from winnow.client.embeddings_csv import ParsedCsv
from winnow.client.formats import FormatError

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


class EmbeddingError(DomainError):
    """A rejected embedding upload; the message names the row at fault, `field` the request field."""

    def __init__(self, message: str, field: str = "file"):
        super().__init__(message, field)


# --- keys -----------------------------------------------------------------------------------------


matrix_key = storage.embedding_matrix_key  # (dataset id, embedding id) -> the matrix's key


def rows_key(embedding: Embedding) -> str:
    return storage.embedding_file_key(embedding.matrix_key, ".rows.npz")


def layout_key(embedding: Embedding, method: str) -> str:
    return storage.embedding_file_key(embedding.matrix_key, f".{method}.npy")


def layout_method(key: str) -> str:
    """The method ("pca", "tsne") a layout key was written by."""
    return key.removesuffix(".npy").rsplit(".", 1)[-1]


def model_key(embedding: Embedding) -> str:
    """The fitted built-in embedder that made this embedding (so a query image is embedded the same way)."""
    return storage.embedding_file_key(embedding.matrix_key, ".model.npz")


def all_keys(embedding: Embedding) -> list[str]:
    return [
        embedding.matrix_key,
        rows_key(embedding),
        layout_key(embedding, "pca"),
        layout_key(embedding, "tsne"),
        model_key(embedding),
    ]


def save_model(embedding: Embedding, model: embedder.PatchEmbedder) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **model.state())
    storage.save_bytes(model_key(embedding), buffer.getvalue())


def load_model(embedding: Embedding):
    """The embedder that made this embedding, ready to embed more images like it: the pretrained model, or the
    built-in one as fitted for it; None for an uploaded embedding (or a built-in one made before models were kept)."""
    if embedding.model == pretrained.NAME:
        return pretrained.PretrainedEmbedder() if pretrained.available() else None
    key = model_key(embedding)
    if embedding.source != EmbeddingSource.BUILTIN or not storage.default_storage.exists(key):
        return None
    with np.load(io.BytesIO(storage.read_bytes(key)), allow_pickle=False) as arrays:
        return embedder.PatchEmbedder.from_state(arrays)


# --- reading -----------------------------------------------------------------------------------------


def load(embedding: Embedding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matrix by idx (n, d) float32, memory-mapped: a download reads it a block at a time; covered idx ascending,
    labels aligned with the idx)."""
    matrix = storage.open_matrix(embedding.matrix_key)
    with np.load(io.BytesIO(storage.read_bytes(rows_key(embedding))), allow_pickle=False) as rows:
        return matrix, rows["idx"], rows["labels"]


# --- CSV and .npy in, as streams ------------------------------------------------------------------------

BLOCK_BYTES = 8 << 20  # the CSV is read, parsed and stored this many bytes at a time
NPY_BLOCK_ROWS = 65536
_UNKNOWN_KEPT = 10_000  # unknown file names remembered to tell a repeated unknown name apart


@contextmanager
def _as_embedding_error():
    """The shared parser's FormatError as an EmbeddingError (the API answers it as a 400 on `file`)."""
    try:
        yield
    except FormatError as exc:
        raise EmbeddingError(str(exc)) from None


def _embedding_errors(blocks):
    with _as_embedding_error():
        yield from blocks


def parse_csv(data: bytes) -> ParsedCsv:
    """Parse a whole CSV in memory (tests and small files); uploads go through the streaming `create_*`."""
    with _as_embedding_error():
        return embeddings_csv.parse_csv(data, settings.WINNOW_MAX_EMBEDDING_DIMENSION)


def _csv_blocks(fileobj, block_bytes: int | None = None) -> Iterator[ParsedCsv]:
    """Lightly's CSV block by block (winnow.client.embeddings_csv); EmbeddingError names the row."""
    # BLOCK_BYTES is read now, not when the module loads, so a test that sets it gets blocks of that size.
    block_bytes = block_bytes or BLOCK_BYTES
    return _embedding_errors(embeddings_csv.csv_blocks(fileobj, block_bytes, settings.WINNOW_MAX_EMBEDDING_DIMENSION))


def check_dimension(d: int, what: str) -> int:
    """d, if at most WINNOW_MAX_EMBEDDING_DIMENSION; else an EmbeddingError (the map and samplers grow with d)."""
    with _as_embedding_error():
        return embeddings_csv.check_dimension(d, what, settings.WINNOW_MAX_EMBEDDING_DIMENSION)


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


def create_from_csv(
    dataset: Dataset,
    name: str,
    data,
    *,
    creator=None,
    embedding_id: str | None = None,
    progress=None,
    size: int | None = None,
) -> Embedding:
    """Validate a Lightly embeddings CSV against the dataset and store it; nothing is written on error.

    `data` is bytes or a binary file object, read as a stream (memory: the matrix once, not the CSV).
    `embedding_id` stores it under an id promised earlier (the Lightly client's signed-upload flow).
    `progress(fraction)` is called after each block when `size` (bytes) is known.
    """
    name = clean_name(dataset, name)
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    reader = _Counting(stream, size if size is not None else (len(data) if isinstance(data, bytes) else None), progress)
    return _create(
        dataset, name, _csv_blocks(reader), "row", "the CSV", EmbeddingSource.CSV, creator, embedding_id, reader.report
    )


def create_from_npy(
    dataset: Dataset,
    name: str,
    matrix,
    names,
    labels=None,
    *,
    creator=None,
    embedding_id: str | None = None,
    progress=None,
    size: int | None = None,
) -> Embedding:
    """Store a float32 (n, d) `.npy` matrix whose row i belongs to the i-th file name of `names`.

    `matrix`, `names` (UTF-8 text, one file name a line, or a JSON list) and the optional `labels`
    (an integer `.npy` of shape (n,)) are binary file objects or bytes, read as streams.
    """
    name = clean_name(dataset, name)
    wrap = lambda f: io.BytesIO(f) if isinstance(f, (bytes, bytearray, memoryview)) else f  # noqa: E731
    reader = _Counting(wrap(matrix), size, progress)
    blocks = _npy_blocks(reader, wrap(names), wrap(labels) if labels is not None else None)
    return _create(
        dataset, name, blocks, "line", "the file names", EmbeddingSource.CSV, creator, embedding_id, reader.report
    )


class _Counting:
    """A read-only stream that reports the fraction read so far."""

    def __init__(self, stream, size: int | None, progress):
        self.stream, self.size, self.progress, self.done, self._reported = stream, size, progress, 0, 0.0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.done += len(data)
        return data

    def report(self) -> None:
        """Called by the consuming thread (the parser thread must not touch the database)."""
        if self.progress and self.size and self.done / self.size >= self._reported + 0.01:
            self._reported = self.done / self.size
            self.progress(min(1.0, self._reported))


def _create(
    dataset: Dataset,
    name: str,
    blocks: Iterator[ParsedCsv],
    unit: str,
    what: str,
    source: str,
    creator,
    embedding_id: str | None,
    report=None,
) -> Embedding:
    n = int(Dataset.objects.values_list("next_idx", flat=True).get(pk=dataset.pk))
    builder = None
    try:
        for block in _read_ahead(blocks):
            if builder is None:
                builder = _MatrixBuilder(dataset.pk, n, block.matrix.shape[1], unit)
            builder.add(block)
            if report is not None:
                report()
        if builder is None:
            raise EmbeddingError(f"{what} has a header but no rows" if unit == "row" else f"{what} are empty")
        builder.check_known()
        try:
            return builder.store(dataset, name, what, source, creator, embedding_id)
        except IntegrityError:
            # Another upload took the name between clean_name's check and the insert (its files are gone).
            if Embedding.objects.filter(dataset_id=dataset.pk, name=name).exclude(pk=embedding_id or "").exists():
                raise EmbeddingError(f"this dataset already has an embedding named {name!r}", "name") from None
            raise
    finally:
        if builder is not None:
            builder.discard()


def _read_ahead(blocks: Iterator[ParsedCsv], depth: int = 2) -> Iterator[ParsedCsv]:
    """Parse the next blocks in a thread while this one waits on the database for its idx values.

    The parser touches no database, so Django's per-thread connection is no concern.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for block in blocks:
                while not stop.is_set():
                    try:
                        queue.put(block, timeout=0.2)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            item = done
        except BaseException as exc:  # handed to the consumer, which raises it
            item = exc
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.2)
                return
            except Full:
                continue

    thread = threading.Thread(target=produce, name="embeddings-parser", daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class _MatrixBuilder:
    """Rows by file name, written straight into the (n, d) float32 .npy spool file at their sample's idx.

    File names become idx one block at a time (one SQL statement per block), so no N-entry dict
    is ever built; per sample only the idx-indexed arrays below are kept (17 bytes).
    """

    def __init__(self, dataset_id: str, n: int, d: int, unit: str):
        self.dataset_id, self.n, self.d, self.unit = dataset_id, n, d, unit
        self.path = storage.spool_path(".npy")
        self.matrix = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=(n, d))
        self.covered = np.zeros(n, dtype=bool)
        self.labels = np.zeros(n, dtype=np.int64)
        self.line_of = np.zeros(n, dtype=np.int64)
        self.unknown: list[tuple[int, str]] = []
        self.unknown_count = 0
        self.unknown_seen: dict[str, int] = {}

    def discard(self) -> None:
        self.matrix = None
        self.path.unlink(missing_ok=True)

    def add(self, block: ParsedCsv) -> None:
        if block.matrix.shape[1] != self.d:
            raise EmbeddingError(
                f"{self.unit} {block.line_numbers[0]}: has {block.matrix.shape[1]} values, earlier rows have {self.d}"
            )
        lines = np.asarray(block.line_numbers, dtype=np.int64)
        for row, file_name in enumerate(block.file_names):
            if "\x00" in file_name:
                raise EmbeddingError(f"{self.unit} {lines[row]} ({file_name!r}): not a file name")
        idx = idx_of_file_names(self.dataset_id, block.file_names, self.n)
        known = np.flatnonzero(idx >= 0)
        k_idx = idx[known]
        _values, first = np.unique(k_idx, return_index=True)
        dup = self.covered[k_idx]
        repeated = np.ones(k_idx.size, dtype=bool)
        repeated[first] = False
        dup |= repeated
        candidates = []  # (line, name, earlier line)
        if dup.any():
            j = int(np.argmax(dup))
            row = int(known[j])
            if self.covered[k_idx[j]]:
                earlier = int(self.line_of[k_idx[j]])
            else:
                earlier = int(lines[known[np.flatnonzero(k_idx == k_idx[j])[0]]])
            candidates.append((int(lines[row]), block.file_names[row], earlier))
        for row in np.flatnonzero(idx < 0).tolist():
            file_name, line = block.file_names[row], int(lines[row])
            if candidates and line > candidates[0][0]:
                break
            if file_name in self.unknown_seen:
                candidates.append((line, file_name, self.unknown_seen[file_name]))
                break
            if len(self.unknown_seen) < _UNKNOWN_KEPT:
                self.unknown_seen[file_name] = line
            if len(self.unknown) < MAX_LISTED:
                self.unknown.append((line, file_name))
        if candidates:
            line, file_name, earlier = min(candidates)
            raise EmbeddingError(embeddings_csv.repeated_name_error(self.unit, line, file_name, earlier))
        self.unknown_count += int(idx.size - known.size)
        self.matrix[k_idx] = block.matrix[known]
        self.labels[k_idx] = block.labels[known]
        self.line_of[k_idx] = lines[known]
        self.covered[k_idx] = True

    def check_known(self) -> None:
        if self.unknown_count:
            listed = ", ".join(f"{self.unit} {line} ({f!r})" for line, f in self.unknown[:MAX_LISTED])
            raise EmbeddingError(
                f"{self.unknown_count} file name(s) are not samples of this dataset: {listed}"
                + (" ..." if self.unknown_count > MAX_LISTED else "")
            )

    def store(
        self, dataset: Dataset, name: str, what: str, source: str, creator, embedding_id: str | None
    ) -> Embedding:
        self.matrix.flush()
        self.matrix = None  # unmapped: the file is complete
        with transaction.atomic():
            # Lock the dataset row: no upload can add a sample between the coverage check and the write.
            locked = Dataset.objects.select_for_update().only("id", "next_idx").get(pk=dataset.pk)
            if int(locked.next_idx) != self.n:
                raise EmbeddingError(f"samples were added to the dataset while {what} were read; upload again")
            total = Sample.objects.filter(dataset_id=locked.pk).count()
            covered = int(np.count_nonzero(self.covered))
            if covered != total:
                missing = self._missing_names()
                listed = ", ".join(repr(f) for f in missing)
                count = max(total - covered, len(missing))
                raise EmbeddingError(
                    f"{what} must cover every sample; {count} of {total} are missing: {listed}"
                    + (" ..." if count > MAX_LISTED else "")
                )
            idx = np.flatnonzero(self.covered)
            return _store_files(
                locked,
                name,
                self.path,
                idx,
                self.labels[idx],
                self.d,
                source=source,
                creator=creator,
                embedding_id=embedding_id,
            )

    def _missing_names(self) -> list[str]:
        uncovered = np.flatnonzero(~self.covered)
        found: list[str] = []
        for start in range(0, uncovered.size, 500):
            chunk = uncovered[start : start + 500].tolist()
            found += (
                Sample.objects.filter(dataset_id=self.dataset_id, idx__in=chunk)
                .order_by("idx")
                .values_list("file_name", flat=True)[: MAX_LISTED - len(found)]
            )
            if len(found) >= MAX_LISTED:
                break
        return found


def idx_of_file_names(dataset_id: str, file_names: list[str], below: int) -> np.ndarray:
    """The idx of each file name among the dataset's samples with idx < `below`; -1 where there is none.

    PostgreSQL: one statement joining the names (an array parameter) with the samples; SQLite: IN lists.
    """
    if connection.vendor == "postgresql":
        # Probed in sorted order (neighbouring index pages), sent as one string rather than an array literal.
        order = sorted(range(len(file_names)), key=file_names.__getitem__)
        joined = "\n".join([file_names[i] for i in order])
        as_text = joined.count("\n") == len(file_names) - 1
        names_sql = "string_to_array(%s, chr(10))" if as_text else "%s::text[]"
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")  # compiling costs more than this query takes
            cursor.execute(
                # LATERAL ... LIMIT 1 (not flattened into a join): one index probe per name, never a hash
                # of the whole dataset per block, which the planner picks when its estimate is stale.
                f"SELECT coalesce(s.idx, -1) FROM unnest({names_sql}) WITH ORDINALITY AS u(file_name, ord) "
                "LEFT JOIN LATERAL (SELECT c.idx FROM curation_sample c WHERE c.dataset_id = %s "
                "AND c.file_name = u.file_name AND c.idx < %s LIMIT 1) s ON true ORDER BY u.ord",
                [joined if as_text else [file_names[i] for i in order], dataset_id, below],
            )
            rows = cursor.fetchall()
        probed = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        idx = np.empty(len(file_names), dtype=np.int64)
        idx[np.asarray(order, dtype=np.int64)] = probed
        return idx
    found: dict[str, int] = {}
    for start in range(0, len(file_names), 500):
        found.update(
            Sample.objects.filter(
                dataset_id=dataset_id,
                file_name__in=file_names[start : start + 500],
                idx__lt=below,
            ).values_list("file_name", "idx")
        )
    return np.fromiter((found.get(f, -1) for f in file_names), dtype=np.int64, count=len(file_names))


def _store_files(
    dataset: Dataset,
    name: str,
    matrix_path,
    idx: np.ndarray,
    labels: np.ndarray,
    d: int,
    *,
    source: str,
    creator=None,
    embedding_id: str | None = None,
) -> Embedding:
    """Move the finished .npy into storage, write the rows file, then the row (inside the caller's transaction)."""
    if embedding_id and Embedding.objects.filter(pk=embedding_id).exists():
        # Checked before any file is written: the keys below would be the existing embedding's files.
        raise IntegrityError(f"embedding id {embedding_id} is already taken")
    n = int(dataset.next_idx)
    embedding = Embedding(
        id=embedding_id or new_public_id(),
        dataset_id=dataset.pk,
        name=name,
        dimension=int(d),
        count=n,
        source=source,
        creator=creator,
        projection_status=Status.PENDING,
    )
    embedding.matrix_key = matrix_key(dataset.pk, embedding.id)
    buffer = io.BytesIO()
    np.savez(buffer, idx=idx, labels=labels)
    written = []
    try:
        written.append(embedding.matrix_key)
        storage.save_file(embedding.matrix_key, matrix_path)
        written.append(rows_key(embedding))
        storage.save_bytes(rows_key(embedding), buffer.getvalue())
        embedding.save(force_insert=True)
    except BaseException:
        storage.delete_keys(written)
        raise
    transaction.on_commit(lambda: _enqueue_projection(embedding.pk), robust=True)
    return embedding


# --- .npy in -------------------------------------------------------------------------------------------


def _read_exactly(stream, size: int) -> bytes:
    parts, left = [], size
    while left > 0:
        data = stream.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def _npy_header(stream, what: str, ndim: int) -> tuple[tuple, np.dtype]:
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, SyntaxError) as exc:
        raise EmbeddingError(f"{what} is not a .npy file ({exc})", "matrix" if ndim == 2 else "labels") from None
    if fortran:
        raise EmbeddingError(f"{what} must be in C order", "matrix" if ndim == 2 else "labels")
    if len(shape) != ndim:
        raise EmbeddingError(
            f"{what} must have {ndim} dimension(s), got shape {shape}", "matrix" if ndim == 2 else "labels"
        )
    return shape, dtype


def _name_lines(stream) -> Iterator[tuple[int, str]]:
    """(line number, file name) of a names file: one name a line, or a JSON list of strings; a backslash
    becomes `/` (a path separator, as in the CSV and at registration)."""
    head = _read_exactly(stream, 1 << 16)
    body = io.BytesIO(head) if len(head) < (1 << 16) else _Joined(head, stream)
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        try:
            names = safejson.loads(head + stream.read() if len(head) >= (1 << 16) else head, "the file names")
        except ValueError as exc:
            raise EmbeddingError(f"the file names are not a valid JSON list ({exc})", "names") from None
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise EmbeddingError("the file names JSON must be a list of strings", "names")
        yield from enumerate((name.replace("\\", "/") for name in names), start=1)
        return
    for first_line, text in _embedding_errors(embeddings_csv.text_blocks(body, BLOCK_BYTES)):
        if "\\" in text:  # a path separator, as in the CSV and at registration
            text = text.replace("\\", "/")
        for number, line in enumerate(text.split("\n"), start=first_line):
            line = line.rstrip("\r")
            if line.strip():
                yield number, line


class _Joined:
    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if self.head:
            data, self.head = self.head, b""
            return data
        return self.stream.read(n)


def _npy_blocks(matrix, names, labels=None) -> Iterator[ParsedCsv]:
    (n, d), dtype = _npy_header(matrix, "the matrix", 2)
    try:
        check_dimension(int(d), "the matrix")
    except EmbeddingError as exc:
        raise EmbeddingError(str(exc), "matrix") from None
    if dtype != np.dtype("<f4"):
        raise EmbeddingError(f"the matrix must be float32 little-endian, not {dtype}", "matrix")
    if d < 1:
        raise EmbeddingError(f"the matrix has no columns (shape {(n, d)})", "matrix")
    if labels is not None:
        (n_labels,), label_dtype = _npy_header(labels, "the labels", 1)
        if label_dtype.kind not in "iu" or n_labels != n:
            raise EmbeddingError(f"the labels must be {n} integers, not {n_labels} of {label_dtype}", "labels")
    name_iter = _name_lines(names)
    done = 0
    while done < n:
        rows = min(NPY_BLOCK_ROWS, n - done)
        raw = _read_exactly(matrix, rows * d * 4)
        if len(raw) != rows * d * 4:
            raise EmbeddingError(f"the matrix file is cut short: its header says {n} rows", "matrix")
        block = np.frombuffer(raw, dtype="<f4").reshape(rows, d)
        pairs = [pair for _i, pair in zip(range(rows), name_iter)]
        if len(pairs) < rows:
            raise EmbeddingError(f"the matrix has {n} rows but there are only {done + len(pairs)} file names", "names")
        line_numbers = [p[0] for p in pairs]
        file_names = [p[1] for p in pairs]
        finite = np.isfinite(block)
        if not finite.all():
            row, column = map(int, np.argwhere(~finite)[0])
            raise EmbeddingError(
                f"line {line_numbers[row]} ({file_names[row]!r}): embedding_{column} is "
                f"{block[row, column]}; embeddings must be finite numbers",
                "matrix",
            )
        if labels is not None:
            label_raw = _read_exactly(labels, rows * label_dtype.itemsize)
            if len(label_raw) != rows * label_dtype.itemsize:
                raise EmbeddingError("the labels file is cut short", "labels")
            block_labels = np.frombuffer(label_raw, dtype=label_dtype).astype(np.int64)
        else:
            block_labels = np.zeros(rows, dtype=np.int64)
        yield ParsedCsv(file_names, line_numbers, block, block_labels)
        done += rows
    extra = sum(1 for _ in name_iter)
    if extra:
        raise EmbeddingError(f"there are {n + extra} file names but the matrix has {n} rows", "names")
    if n == 0:
        return


def _store(
    dataset: Dataset,
    name: str,
    idx: np.ndarray,
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    source: str,
    creator=None,
    embedding_id: str | None = None,
) -> Embedding:
    """Vectors held in memory (the built-in embedder's, one per thumbnail) stored as an upload's are."""
    order = np.argsort(idx, kind="stable")
    idx, vectors, labels = idx[order], vectors[order], labels[order]
    matrix = np.zeros((int(dataset.next_idx), vectors.shape[1]), dtype=np.float32)
    matrix[idx] = vectors
    path = storage.spool_path(".npy")
    try:
        np.save(path, matrix, allow_pickle=False)
        return _store_files(
            dataset,
            name,
            path,
            idx,
            labels,
            vectors.shape[1],
            source=source,
            creator=creator,
            embedding_id=embedding_id,
        )
    finally:
        path.unlink(missing_ok=True)


def _enqueue_projection(embedding_id: str) -> None:
    task("curation.compute_projection").delay(embedding_id)


def stale_pending_projections() -> list[str]:
    """Embeddings whose projection is still pending long after any attempt would have ended: its message was lost
    to a broker outage, or its worker died. Sending them again only recomputes the same layout."""
    cutoff = timezone.now() - timedelta(seconds=settings.WINNOW_PROJECTION_TIME_LIMIT + 60)
    return list(
        Embedding.objects.filter(projection_status=Status.PENDING, created_at__lt=cutoff).values_list("id", flat=True)
    )


def send_projection(embedding_id: str) -> None:
    _enqueue_projection(embedding_id)


def delete_embedding(embedding: Embedding) -> None:
    """Delete the row, then (after the commit) its files."""
    # The results of its similarity runs go too (the runs' rows cascade).
    keys = all_keys(embedding) + [k for k in embedding.similarity_runs.values_list("result_key", flat=True) if k]
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


def _csv_chunks(
    embedding: Embedding, matrix: np.ndarray, idx: np.ndarray, labels: np.ndarray, chunk_rows: int
) -> Iterator[str]:
    label_of = dict(zip(idx.tolist(), labels.tolist()))
    d = matrix.shape[1]
    yield ",".join(["filenames", *(f"embedding_{i}" for i in range(d)), "labels"]) + "\r\n"
    row_format = ",".join(["%.9g"] * d)
    samples = (
        (
            Sample.objects.filter(dataset_id=embedding.dataset_id, idx__in=idx.tolist())
            .order_by("idx")
            .values_list("idx", "file_name")
        )
        if idx.size <= 50_000
        else (
            # A long IN list is slower than filtering in Python.
            (i, f)
            for i, f in Sample.objects.filter(dataset_id=embedding.dataset_id)
            .order_by("idx")
            .values_list("idx", "file_name")
            .iterator(chunk_size=5000)
            if i in label_of
        )
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
    """PCA layout at once, then t-SNE for small embeddings; returns the final status (None: gone).

    The matrix is read from storage in row blocks, twice (covariance, then projection): the worker
    holds the (n, 2) layouts and a block, never the matrix.
    """
    embedding = Embedding.objects.filter(pk=embedding_id).first()
    if embedding is None:
        return None
    try:
        with np.load(io.BytesIO(storage.read_bytes(rows_key(embedding))), allow_pickle=False) as rows:
            covered = rows["idx"]
        n = int(embedding.count)
        present = _present_idx(embedding, covered, n)
        mask = np.zeros(n, dtype=bool)
        mask[present] = True
        top, mean = _pca_axes(embedding.matrix_key, mask)
        pca = np.full((n, 2), np.nan, dtype=np.float32)
        for start, block in _matrix_blocks(embedding.matrix_key):
            keep = mask[start : start + block.shape[0]]
            pca[start : start + block.shape[0]][keep] = _project(block[keep], top, mean)
        _save_layout(embedding, "pca", pca, Status.PARTIAL if _wants_tsne(present.size) else Status.READY)
    except Exception:
        log.exception("PCA projection of embedding %s failed", embedding_id)
        Embedding.objects.filter(pk=embedding_id).update(projection_status=Status.FAILED)
        raise
    if not _wants_tsne(present.size):
        return Status.READY
    try:
        points = np.concatenate(
            [block[mask[start : start + block.shape[0]]] for start, block in _matrix_blocks(embedding.matrix_key)]
        )
        tsne = _layout(n, present, tsne_2d(points))
        _save_layout(embedding, "tsne", tsne, Status.READY)
    except Exception:
        # The PCA layout stands; a failed nonlinear layout must not hide the map.
        log.exception("t-SNE projection of embedding %s failed; keeping PCA", embedding_id)
        Embedding.objects.filter(pk=embedding_id).update(projection_status=Status.READY)
    return Status.READY


def _matrix_blocks(key: str, rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 block) of a stored (n, d) .npy, streamed from storage."""
    with storage.open_file(key) as handle:
        (n, d), dtype = _npy_header(handle, "the stored matrix", 2)
        start = 0
        while start < n:
            count = min(rows, n - start)
            raw = _read_exactly(handle, count * d * dtype.itemsize)
            yield start, np.frombuffer(raw, dtype=dtype).reshape(count, d).astype(np.float32, copy=False)
            start += count


# Up to this many dimensions the covariance is formed (d x d float64: 2 MiB at 512); above, the top axes come from
# a randomized subspace iteration holding d x SUBSPACE numbers, so memory and time grow linearly with d.
EXACT_PCA_MAX_DIMENSION = 512
SUBSPACE = 8
SUBSPACE_PASSES = 4


def _pca_axes(key: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top two principal axes (d, <=2) and the mean, summed over row blocks of the stored matrix."""
    total = None
    gram = None
    m = 0
    for start, block in _matrix_blocks(key):
        x = block[mask[start : start + block.shape[0]]].astype(np.float64)
        if total is None:
            total = np.zeros(block.shape[1])
            if block.shape[1] <= EXACT_PCA_MAX_DIMENSION:
                gram = np.zeros((block.shape[1], block.shape[1]))
        total += x.sum(axis=0)
        if gram is not None:
            gram += x.T @ x
        m += x.shape[0]
    if total is None or m < 2:
        return np.zeros((0 if total is None else total.size, 0)), np.zeros(0 if total is None else total.size)
    mean = total / m
    if gram is None:
        return _top_axes_randomized(key, mask, mean, m), mean
    covariance = gram - m * np.outer(mean, mean)
    return _top_axes(covariance), mean


def _top_axes_randomized(key: str, mask: np.ndarray, mean: np.ndarray, m: int) -> np.ndarray:
    """The top two eigenvectors of the covariance by subspace iteration, one pass over the matrix per step."""
    d = mean.size
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((d, SUBSPACE)))[0]
    for _ in range(SUBSPACE_PASSES):
        product = np.zeros((d, SUBSPACE))
        for start, block in _matrix_blocks(key):
            x = block[mask[start : start + block.shape[0]]].astype(np.float64)
            product += x.T @ (x @ basis)
        product -= m * np.outer(mean, mean @ basis)  # covariance @ basis, without forming the covariance
        previous, basis = basis, np.linalg.qr(product)[0]
    small = previous.T @ product  # the covariance within the subspace (SUBSPACE x SUBSPACE)
    _values, vectors = np.linalg.eigh((small + small.T) / 2)
    top = previous @ vectors[:, ::-1][:, :2]
    top *= np.sign(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])])
    return top


def _top_axes(scatter: np.ndarray) -> np.ndarray:
    _eigvals, eigvecs = np.linalg.eigh(scatter)  # d x d: cheap for any number of samples
    top = eigvecs[:, ::-1][:, :2]  # one column only when the embedding has one dimension
    top *= np.sign(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])])
    return top


def _project(points: np.ndarray, top: np.ndarray, mean: np.ndarray) -> np.ndarray:
    out = np.zeros((points.shape[0], 2), dtype=np.float32)
    if top.shape[1]:
        out[:, : top.shape[1]] = (points.astype(np.float64) - mean) @ top
    return out


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
    if m < 2:
        return np.zeros((m, 2), dtype=np.float32)
    x = points.astype(np.float64)
    mean = x.mean(axis=0)
    x -= mean
    return _project(points, _top_axes(x.T @ x), mean)


def tsne_2d(points: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    init = pca_2d(points).astype(np.float64)
    # Scaled as sklearn's own "pca" init does (std 1e-4), computed once here from our PCA.
    init *= 1e-4 / (np.std(init[:, 0]) or 1.0)
    perplexity = float(min(30.0, (points.shape[0] - 1) / 3))
    layout = TSNE(
        n_components=2,
        perplexity=perplexity,
        init=init,
        random_state=seed,
        max_iter=500,
        n_jobs=1,
    ).fit_transform(points.astype(np.float32))
    return layout.astype(np.float32)


# --- built-in embedder ---------------------------------------------------------------------------------


def embed_dataset(dataset_id: str, requested_at: str | None = None) -> str | None:
    """Embed the dataset's thumbnails with the built-in embedder as the embedding "default".

    Returns the new embedding's id, or None when there is nothing to do: a later upload has queued
    a run of its own (it will see more samples), the dataset keeps no pixels or has fewer than two
    images, or an uploaded CSV already holds the name "default".
    """
    dataset = Dataset.objects.filter(pk=dataset_id).only("id", "upload_mode").first()
    if dataset is None or not dataset.has_pixels:
        return None
    since = parse_datetime(requested_at) if requested_at else None
    if since and Sample.objects.filter(dataset_id=dataset_id, created_at__gt=since).exists():
        return None
    if _csv_holds_default(dataset_id):
        return None
    snapshot = _thumbnail_snapshot(dataset_id)
    if len(snapshot) < 2:
        return None

    # The pretrained model when the `model` extra is installed, else the built-in one fitted on these thumbnails.
    model_name = pretrained.default_model()
    size = pretrained.IMAGE_SIZE if model_name == pretrained.NAME else embedder.PatchEmbedder().image_size
    arrays, kept = _load_thumbnails(snapshot, size, embedder.to_array)
    if len(kept) < 2:
        return None
    fitted: list = []
    vectors = embedder.embed_images(arrays, seed=0, model=model_name, fitted=fitted)
    log.info("dataset %s embedded with the %s model", dataset_id, model_name)

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
        Embedding.objects.filter(pk=embedding.pk).update(model=model_name)
        embedding.model = model_name
        if model_name == pretrained.BUILTIN and fitted:
            save_model(embedding, fitted[0])
    return embedding.pk


def _csv_holds_default(dataset_id: str) -> bool:
    return (
        Embedding.objects.filter(dataset_id=dataset_id, name=BUILTIN_NAME)
        .exclude(source=EmbeddingSource.BUILTIN)
        .exists()
    )


def _thumbnail_snapshot(dataset_id: str) -> list[tuple[int, str]]:
    return list(
        Sample.objects.filter(dataset_id=dataset_id)
        .exclude(thumbnail_key="")
        .order_by("idx")
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
