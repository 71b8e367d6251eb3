"""Object storage for originals, thumbnails and embedding matrices, through Django's storage API.

A local directory by default, an S3-compatible bucket when AWS_STORAGE_BUCKET_NAME is set.
Keys are relative paths under `datasets/<dataset id>/`; the key scheme (which object lives where) is written
once, below, and every module builds its keys through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

# ---- the key scheme ------------------------------------------------------------------------------


def dataset_prefix(dataset_id: str) -> str:
    """Everything a dataset stores lives under this prefix (deleting the dataset deletes it)."""
    return f"datasets/{dataset_id}/"


def original_key(dataset_id: str, sample_id: str, extension: str) -> str:
    return f"{dataset_prefix(dataset_id)}originals/{sample_id}{extension}"


def thumbnail_key(dataset_id: str, sample_id: str) -> str:
    return f"{dataset_prefix(dataset_id)}thumbnails/{sample_id}.webp"


def embedding_matrix_key(dataset_id: str, embedding_id: str) -> str:
    """The (n, d) float32 .npy of an embedding; its other files sit beside it (`embedding_file_key`)."""
    return f"{dataset_prefix(dataset_id)}embeddings/{embedding_id}.npy"


def embedding_file_key(matrix_key: str, suffix: str) -> str:
    """A file stored beside an embedding's matrix: `.rows.npz`, `.<method>.npy` layouts, `.model.npz`."""
    return matrix_key.removesuffix(".npy") + suffix


def embedding_upload_prefix(dataset_id: str, upload_id: str) -> str:
    """The chunks of a resumable embeddings upload, until it is processed or abandoned."""
    return f"{dataset_prefix(dataset_id)}uploads/{upload_id}/"


def embedding_upload_chunk_key(upload_prefix: str, part: str, offset: int) -> str:
    return f"{upload_prefix}{part}/{offset:015d}"


def prediction_upload_key(dataset_id: str, upload_id: str, kind: str) -> str:
    """The body of a large prediction upload, kept for the worker that parses it."""
    return f"{dataset_prefix(dataset_id)}predictions/uploads/{upload_id}.{kind}"


def prediction_arrays_prefix(dataset_id: str, task_name: str, upload_id: str) -> str:
    """A prediction task's columns (`idx.npy` and one .npy per column), one folder per upload that wrote them."""
    return f"{dataset_prefix(dataset_id)}predictions/{task_name}/{upload_id}/"


def similarity_result_key(dataset_id: str, run_id: str) -> str:
    return f"{dataset_prefix(dataset_id)}similarity/{run_id}.npz"


def metadata_columns_prefix(dataset_id: str) -> str:
    """The metadata column store (curation.columns): one folder per build under it."""
    return f"{dataset_prefix(dataset_id)}columns/"


# ---- reading and writing -------------------------------------------------------------------------


def save_new(key: str, data) -> str:
    """Write `data` (bytes, or a binary file object read from its start) at `key`, which names a fresh id.

    Nothing is there yet, so this skips save_bytes' exists/delete round trips. A file object is stored as a
    bare File: S3 then types the object by the key's extension, never by what an uploading client claimed.
    """
    if isinstance(data, bytes):
        content = ContentFile(data)
    else:
        data.seek(0)
        content = File(data)
    saved = default_storage.save(key, content)
    if saved != key:
        default_storage.delete(saved)
        raise RuntimeError(f"storage saved {key!r} as {saved!r}")
    return key


def save_bytes(key: str, data: bytes) -> str:
    """Write `data` at exactly `key` (overwriting), return the key."""
    if default_storage.exists(key):
        default_storage.delete(key)
    saved = default_storage.save(key, ContentFile(data))
    if saved != key:  # a storage that renames on collision would break our key scheme
        raise RuntimeError(f"storage saved {key!r} as {saved!r}")
    return key


def read_bytes(key: str) -> bytes:
    with default_storage.open(key, "rb") as handle:
        return handle.read()


def save_matrix(key: str, matrix: np.ndarray) -> str:
    """Write `matrix` as .npy at `key`, through a local temp file (no second copy of it in memory)."""
    path = spool_path(".npy")
    try:
        with open(path, "wb") as handle:
            np.lib.format.write_array(handle, np.asarray(matrix), allow_pickle=False)
        return save_file(key, path)
    finally:
        path.unlink(missing_ok=True)


def spool_dir() -> Path:
    """A local folder for temp files (under WINNOW_VAR_DIR: the same disk as local media, so a move is a rename)."""
    folder = Path(settings.VAR_DIR) / "spool"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def spool_path(suffix: str = "") -> Path:
    handle, name = tempfile.mkstemp(suffix=suffix, dir=spool_dir())
    os.close(handle)
    return Path(name)


class _LocalFile(File):
    """A local file that FileSystemStorage moves into place instead of copying (its temp-upload path)."""

    def __init__(self, path: Path):
        super().__init__(open(path, "rb"), name=path.name)
        self._path = str(path)

    def temporary_file_path(self) -> str:
        return self._path


def save_file(key: str, source) -> str:
    """Stream a file object, or move a local file (a Path), to exactly `key` (overwriting); return the key.

    Local storage renames a Path into place; S3 uploads either in parts, never holding it in memory.
    """
    if default_storage.exists(key):
        default_storage.delete(key)
    content = _LocalFile(Path(source)) if isinstance(source, (str, Path)) else File(source, name=os.path.basename(key))
    try:
        saved = default_storage.save(key, content)
    finally:
        content.close()
    if saved != key:
        raise RuntimeError(f"storage saved {key!r} as {saved!r}")
    return key


def open_file(key: str):
    """A binary file object reading `key` from storage (stream it; do not read() it whole)."""
    return default_storage.open(key, "rb")


def size_of(key: str) -> int:
    return default_storage.size(key)


def load_matrix(key: str) -> np.ndarray:
    return np.load(io.BytesIO(read_bytes(key)), allow_pickle=False)


def delete_keys(keys) -> None:
    for key in keys:
        if key:
            default_storage.delete(key)


def delete_prefix(prefix: str) -> int:
    """Delete every object under `prefix` (a dataset's folder); return how many files went.

    On local storage the emptied folders go too, the prefix's own folder included (S3 has no folders).
    """
    if not prefix.endswith("/"):
        raise ValueError("prefix must end with '/'")
    removed = 0
    folders = []
    stack = [prefix.rstrip("/")]
    while stack:
        folder = stack.pop()
        try:
            dirs, files = default_storage.listdir(folder)
        except FileNotFoundError:
            continue
        folders.append(folder)
        for name in files:
            default_storage.delete(f"{folder}/{name}")
            removed += 1
        stack.extend(f"{folder}/{d}" for d in dirs)
    _remove_empty_folders(folders)
    return removed


def _remove_empty_folders(folders: list[str]) -> None:
    """Local storage: remove the listed folders, deepest first; one that is not empty stays."""
    for folder in reversed(folders):  # a folder is listed before its subfolders
        try:
            local = default_storage.path(folder)
        except NotImplementedError:  # object storage: folders do not exist on their own
            return
        try:
            os.rmdir(local)
        except OSError:  # not empty (a file arrived meanwhile) or already gone
            pass


# ---- memory-mapped matrices (workers) -----------------------------------------------------------

MATRIX_CACHE_MAX_AGE_S = 24 * 3600  # a cached copy nobody opened for this long is removed


def open_matrix(key: str) -> np.ndarray:
    """The stored matrix as a read-only memory map, so a worker holds only the pages it reads.

    Local storage maps the stored file in place. Object storage (S3) is streamed once into a
    local cache file (under WINNOW_VAR_DIR/cache/matrices, named by the key, its size and its
    modification time, so a rewritten object is fetched again) and that copy is mapped.
    """
    path = _local_path(key) or _cached_copy(key)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _local_path(key: str) -> str | None:
    try:
        return default_storage.path(key)
    except NotImplementedError:  # object storage: no local file
        return None


def matrix_cache_dir() -> Path:
    return Path(settings.VAR_DIR) / "cache" / "matrices"


def _cached_copy(key: str) -> str:
    folder = matrix_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    size = default_storage.size(key)
    try:
        version = f"{size}-{int(default_storage.get_modified_time(key).timestamp())}"
    except (NotImplementedError, AttributeError):
        version = str(size)
    stem = hashlib.sha256(key.encode()).hexdigest()[:32]
    path = folder / f"{stem}-{version}.npy"
    if path.exists() and path.stat().st_size == size:
        os.utime(path)  # recently used: the age-based clean-up keeps it
        return str(path)
    # Streamed in 1 MiB pieces into a temporary file, renamed into place once complete, so a
    # concurrent worker never maps half a file.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, default_storage.open(key, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _clean_matrix_cache(folder, keep=path, stem=stem)
    return str(path)


def _clean_matrix_cache(folder: Path, keep: Path, stem: str) -> None:
    """Remove older versions of the same key and copies unused for MATRIX_CACHE_MAX_AGE_S.

    A worker that still maps a removed file keeps reading it: the file goes once it is unmapped.
    """
    cutoff = time.time() - MATRIX_CACHE_MAX_AGE_S
    for other in folder.iterdir():
        if other == keep:
            continue
        try:
            stale = other.name.startswith(f"{stem}-") or other.stat().st_mtime < cutoff
            if stale:
                other.unlink()
        except OSError:  # removed meanwhile by another worker
            pass
