"""Object storage for originals, thumbnails and embedding matrices, through Django's storage API.

A local directory by default, an S3-compatible bucket when AWS_STORAGE_BUCKET_NAME is set.
Keys are relative paths under `datasets/<dataset id>/`.
"""

from __future__ import annotations

import io
import os

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage


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
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(matrix), allow_pickle=False)
    return save_bytes(key, buffer.getvalue())


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
