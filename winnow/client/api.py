"""The Python client of Winnow's REST API (`/api/v1/`), for scripts and training machines.

    from winnow.client import Client
    client = Client(token="wnw_...", server="http://127.0.0.1:8000")
    client.create_dataset("street scenes", upload_mode="full")
    summary = client.upload_dataset("images/")

Token and server default to the WINNOW_TOKEN and WINNOW_SERVER environment variables. Every error
the server reports is raised as WinnowError carrying the server's message. No Django here.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from winnow.client import formats, prediction_upload
from winnow.client.formats import IMAGE_EXTENSIONS, find_images  # noqa: F401  (part of the client's API)
from winnow.client.predictions import PredictionError

DEFAULT_SERVER = "http://127.0.0.1:8000"
UPLOAD_MODES = ("full", "thumbnails", "meta")
# One multipart request carries at most this many files and about this many bytes.
BATCH_FILES = 16
BATCH_BYTES = 32 * 1024 * 1024
# JSON registration (meta mode) sends rows only, so batches can be larger.
META_BATCH_ROWS = 2000
RETRY_STATUSES = (502, 503, 504)
# Embedding files above this go up in a resumable session of chunks of EMBEDDING_CHUNK_BYTES.
EMBEDDING_SINGLE_BYTES = 32 * 1024 * 1024
EMBEDDING_CHUNK_BYTES = 16 * 1024 * 1024
_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


class WinnowError(Exception):
    """An error from the Winnow server (status is the HTTP status) or from reaching it (status None)."""

    def __init__(self, status: int | None, message: str, body: Any = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body

    def __str__(self) -> str:
        return self.message


@dataclass
class UploadSummary:
    """What an upload did: counts, and every rejected file with the reason."""

    dataset_id: str
    mode: str
    found: int = 0
    created: int = 0
    replaced: int = 0
    skipped: int = 0
    rejected: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "dataset_id": self.dataset_id,
            "mode": self.mode,
            "found": self.found,
            "created": self.created,
            "replaced": self.replaced,
            "skipped": self.skipped,
            "rejected": list(self.rejected),
        }


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after EXIF orientation, read from the header only."""
    from PIL import Image

    with Image.open(path) as img:
        width, height = img.size
        try:
            orientation = img.getexif().get(0x0112)
        except Exception:  # a broken EXIF block is no reason to reject the image
            orientation = None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


class Client:
    """A session with one Winnow server, optionally bound to one dataset (`dataset_id`)."""

    def __init__(
        self,
        token: str | None = None,
        server: str | None = None,
        dataset_id: str | None = None,
        *,
        timeout: float = 120.0,
        retries: int = 3,
    ):
        self.token = token or os.environ.get("WINNOW_TOKEN")
        self.server = (server or os.environ.get("WINNOW_SERVER") or DEFAULT_SERVER).rstrip("/")
        self.dataset_id = dataset_id
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        # Idempotent calls retry on connection errors and gateway errors; POSTs are retried only
        # where the server makes them idempotent (uploads, by file name).
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=0.5,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}),
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=32)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if self.token:
            self.session.headers["Authorization"] = f"Token {self.token}"
        self.session.headers["User-Agent"] = "winnow-client/0.1"

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.server}/api/v1/{path.lstrip('/')}"

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, self._url(path), **kwargs)
        except requests.ConnectionError as exc:
            raise WinnowError(None, f"cannot reach the Winnow server at {self.server}: {_root_cause(exc)}") from exc
        except requests.Timeout as exc:
            raise WinnowError(None, f"the Winnow server at {self.server} did not answer in time") from exc
        except requests.RequestException as exc:
            raise WinnowError(None, f"request to {self.server} failed: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def _json(self, method: str, path: str, **kwargs) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _dataset(self, dataset_id: str | None) -> str:
        dataset_id = dataset_id or self.dataset_id
        if not dataset_id:
            raise WinnowError(None, "no dataset: pass dataset_id or call create_dataset first")
        return dataset_id

    def _pages(self, path: str, params: dict | None = None) -> Iterator[dict]:
        """Every row of a cursor-paginated list, following `next` links."""
        page = self._json("GET", path, params=params)
        while True:
            yield from page["results"]
            if not page.get("next"):
                return
            page = self._json("GET", page["next"])

    # --- datasets --------------------------------------------------------------------------------

    def create_dataset(self, name: str, upload_mode: str = "full") -> str:
        """Create a dataset (`full`, `thumbnails` or `meta`), make it this client's dataset, return its id."""
        body = self._json("POST", "datasets", json={"name": name, "upload_mode": upload_mode})
        self.dataset_id = body["id"]
        return self.dataset_id

    def list_datasets(self) -> list[dict]:
        """The datasets the token's user is a member of."""
        return self._json("GET", "datasets")

    def get_dataset(self, dataset_id: str | None = None) -> dict:
        """One dataset: id, name, upload_mode, owner, role, sample_count, tag_count."""
        return self._json("GET", f"datasets/{self._dataset(dataset_id)}")

    def delete_dataset(self, dataset_id: str | None = None) -> None:
        """Delete a dataset with its samples, tags, embeddings and files (owner only)."""
        self._request("DELETE", f"datasets/{self._dataset(dataset_id)}")

    def dataset_url(self, dataset_id: str | None = None) -> str:
        """The dataset's page in the web app."""
        return f"{self.server}/datasets/{self._dataset(dataset_id)}"

    # --- samples ---------------------------------------------------------------------------------

    def list_samples(self, dataset_id: str | None = None, **filters) -> Iterator[dict]:
        """Every sample of the dataset, page by page; filters: tag (name or id), file_name, where=[...], sort."""
        params = {"limit": 1000, **{k: v for k, v in filters.items() if v is not None}}
        if "tag" in params:
            params["tag"] = self.get_tag(params["tag"], dataset_id)["id"]
        yield from self._pages(f"datasets/{self._dataset(dataset_id)}/samples", params)

    def existing_file_names(self, dataset_id: str | None = None) -> set[str]:
        """The file names already in the dataset (to resume an upload)."""
        return {row["file_name"] for row in self.list_samples(dataset_id)}

    def upload_dataset(
        self,
        input_dir: str | os.PathLike,
        mode: str | None = None,
        overwrite: bool = False,
        workers: int = 4,
        progress: bool = True,
        metadata: Mapping | str | os.PathLike | None = None,
        *,
        dataset_id: str | None = None,
        batch_files: int = BATCH_FILES,
        on_rejected: Callable[[dict], Any] | None = None,
        embed: bool = True,
    ) -> dict:
        """Upload every image under `input_dir` to the dataset; resumes where an earlier upload stopped.

        Args:
            input_dir: folder walked recursively for jpg/jpeg/png/webp/bmp/tif files; each sample's
                file name is its path relative to this folder.
            mode: the dataset's upload mode; read from the server when None. `meta` registers file
                names with width and height read locally and never sends pixels.
            overwrite: replace samples whose file name is already in the dataset (else skip them).
            workers: parallel requests.
            progress: show a tqdm progress bar.
            metadata: custom metadata sent with the images: a {file_name: dict} mapping, Lightly's
                COCO-like dict, or the path of such a JSON file.
            on_rejected: called with {file_name, reason} for each rejected file as it happens.
            embed: let the server run its built-in embedder once the upload is complete (full and
                thumbnails modes); False when you will upload embeddings of your own.

        Returns:
            {dataset_id, mode, found, created, replaced, skipped, rejected: [{file_name, reason}]}.
        """
        dataset_id = self._dataset(dataset_id)
        dataset_mode = self.get_dataset(dataset_id)["upload_mode"]
        if mode is not None and mode != dataset_mode:
            raise WinnowError(None, f"the dataset's upload mode is {dataset_mode!r}, not {mode!r}")
        if overwrite and dataset_mode == "meta":
            raise WinnowError(
                None,
                "overwrite is not available for meta datasets (no pixels to replace); "
                "replace metadata with upload_custom_metadata",
            )
        root = Path(input_dir)
        try:
            names = find_images(root)
        except FileNotFoundError as exc:
            raise WinnowError(None, str(exc)) from None
        per_file = _metadata_mapping(metadata)
        summary = UploadSummary(dataset_id=dataset_id, mode=dataset_mode, found=len(names))
        if not names:
            return summary.as_dict()
        if not overwrite:
            present = self.existing_file_names(dataset_id)
            todo = [name for name in names if name not in present]
            summary.skipped = len(names) - len(todo)
        else:
            todo = names
        lock = threading.Lock()

        def reject(entry: dict) -> None:
            with lock:
                summary.rejected.append(entry)
            if on_rejected is not None:
                on_rejected(entry)

        bar = progress_bar(len(names), "upload", progress, initial=summary.skipped)
        try:
            if dataset_mode == "meta":
                self._register_meta(dataset_id, root, todo, per_file, overwrite, summary, reject, bar, lock, workers)
            else:
                self._upload_files(
                    dataset_id, root, todo, per_file, overwrite, summary, reject, bar, lock, workers, batch_files, embed
                )
        finally:
            bar.close()
        return summary.as_dict()

    def _upload_files(
        self, dataset_id, root, todo, per_file, overwrite, summary, reject, bar, lock, workers, batch_files, embed
    ) -> None:
        batches = _batches(root, todo, batch_files)
        if not batches:
            return
        # The last batch goes alone, after the others, and asks for the built-in embedder: one
        # embedding run over the whole dataset instead of one per batch.
        *first, last = batches

        def send(batch: list[str], embed: bool) -> None:
            body = self._post_files(dataset_id, root, batch, per_file, overwrite, embed)
            with lock:
                summary.created += len(body.get("created", []))
                summary.replaced += len(body.get("replaced", []))
                summary.skipped += len(body.get("skipped", []))
            for entry in body.get("rejected", []):
                reject(entry)
            bar.update(len(batch))

        _run_parallel([lambda b=b: send(b, False) for b in first], workers)
        send(last, embed)

    def _post_files(self, dataset_id, root: Path, batch: list[str], per_file, overwrite: bool, embed: bool) -> dict:
        data = {
            "file_names": json.dumps(batch),
            "overwrite": "true" if overwrite else "false",
            "embed": "true" if embed else "false",
        }
        batch_metadata = {name: per_file[name] for name in batch if name in per_file}
        if batch_metadata:
            data["metadata"] = json.dumps(batch_metadata)

        def attempt() -> dict:
            handles = []
            try:
                files = []
                for name in batch:
                    handle = open(root / name, "rb")
                    handles.append(handle)
                    content_type = _CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")
                    files.append(("files", (Path(name).name, handle, content_type)))
                return self._json("POST", f"datasets/{dataset_id}/samples", data=data, files=files)
            finally:
                for handle in handles:
                    handle.close()

        # Safe to repeat: a file name that landed on the first try is skipped on the next.
        return _with_retries(attempt, self.retries)

    def _register_meta(self, dataset_id, root, todo, per_file, overwrite, summary, reject, bar, lock, workers) -> None:
        def entries() -> Iterator[dict]:
            for name in todo:
                try:
                    width, height = image_size(root / name)
                except Exception as exc:  # any decode failure rejects just this file
                    reject({"file_name": name, "reason": f"not a readable image: {exc}"})
                    bar.update(1)
                    continue
                row = {"file_name": name, "width": width, "height": height, "size_bytes": (root / name).stat().st_size}
                if name in per_file:
                    row["metadata"] = per_file[name]
                yield row

        done = self.register_samples(
            entries(),
            dataset_id,
            batch_size=META_BATCH_ROWS,
            workers=workers,
            progress=False,
            on_batch=lambda body, size: bar.update(size),
        )
        with lock:
            summary.created += done["created"]
            summary.skipped += done["skipped"]

    def register_samples(
        self,
        entries: Iterable[Mapping],
        dataset_id: str | None = None,
        batch_size: int = META_BATCH_ROWS,
        workers: int = 4,
        overwrite: bool = False,
        progress: bool = True,
        *,
        on_batch: Callable[[dict, int], Any] | None = None,
    ) -> dict:
        """Register samples without pixels in a `meta` dataset, in parallel JSON batches.

        Args:
            entries: an iterable of {file_name, width?, height?, size_bytes?, metadata?} dicts, read
                lazily (a generator over ten million rows is fine: at most about 2 x workers batches are
                held at a time).
            batch_size: entries per request (the server takes up to WINNOW_MAX_SAMPLES_PER_REQUEST).
            workers: requests in flight at once.
            overwrite: replace width, height, size_bytes and metadata of file names already present
                (their id and idx stay); else those entries are skipped.
            progress: show a tqdm progress bar.
            on_batch: called with (the server's answer, number of entries) after each batch, from a
                worker thread.

        A batch that fails on the way (connection error, timeout, HTTP 429, 500, 502, 503, 504) is sent
        again with backoff: registering is idempotent by file name, so a batch whose first try landed
        has those names counted as skipped the second time. A rejected batch (HTTP 400: an entry is
        invalid, named by its index in its batch, whose first and last index in the iterable the
        error gives) stops the registration; the batches
        before it stay registered, so running again with the corrected entries resumes.

        Returns:
            {dataset_id, created, replaced, skipped, batches}.
        """
        dataset_id = self._dataset(dataset_id)
        if batch_size < 1 or workers < 1:
            raise WinnowError(None, "batch_size and workers must be at least 1")
        url = self._url(f"datasets/{dataset_id}/samples")
        total = len(entries) if hasattr(entries, "__len__") else None
        done = {"dataset_id": dataset_id, "created": 0, "replaced": 0, "skipped": 0, "batches": 0}
        lock = threading.Lock()
        slots = threading.Semaphore(2 * workers)  # bounds the batches held in memory
        failures: list[BaseException] = []

        def send(batch: list, first: int) -> None:
            try:
                if failures:  # queued behind a batch that failed: not sent
                    return
                body = self._post_registration(url, batch, overwrite, first)
                with lock:
                    done["created"] += body.get("created", 0)
                    done["replaced"] += body.get("replaced", 0)
                    done["skipped"] += len(body.get("skipped", []))
                    done["batches"] += 1
                bar.update(len(batch))
                if on_batch is not None:
                    on_batch(body, len(batch))
            except BaseException as exc:
                with lock:
                    failures.append(exc)
            finally:
                slots.release()

        bar = progress_bar(total, "register", progress)
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            first = 0
            batch: list = []
            for entry in entries:
                batch.append(entry)
                if len(batch) == batch_size:
                    slots.acquire()
                    if failures:
                        slots.release()
                        break
                    pool.submit(send, batch, first)
                    first += len(batch)
                    batch = []
            if batch and not failures:
                slots.acquire()
                pool.submit(send, batch, first)
        finally:
            pool.shutdown(wait=True)
            bar.close()
        if failures:
            raise failures[0]
        return done

    def _post_registration(self, url: str, batch: list, overwrite: bool, first: int) -> dict:
        """POST one registration batch, retrying what is safe to retry; errors name entries by global index."""
        data = json.dumps({"samples": batch, "overwrite": overwrite}, separators=(",", ":")).encode()

        def attempt() -> dict:
            try:
                response = self.session.post(
                    url, data=data, timeout=self.timeout, headers={"Content-Type": "application/json"}
                )
            except requests.RequestException as exc:
                raise WinnowError(None, f"cannot register samples at {self.server}: {_root_cause(exc)}") from exc
            if response.status_code >= 400:
                error = _error_from(response)
                error.retry_after = _retry_after(response)
                raise error
            return response.json()

        try:
            return _with_retries(attempt, max(self.retries, 5))
        except WinnowError as exc:
            if exc.status == 400:  # the server counts entries from the batch's start
                exc.message = f"batch of entries {first} to {first + len(batch) - 1}: {exc.message}"
                exc.args = (exc.message,)
            raise

    # --- embeddings ------------------------------------------------------------------------------

    def upload_embeddings(
        self,
        source,
        name: str = "default",
        dataset_id: str | None = None,
        *,
        file_names=None,
        labels=None,
        chunked: bool | None = None,
        chunk_bytes: int = EMBEDDING_CHUNK_BYTES,
        progress: bool = True,
        wait: bool = True,
        upload_id: str | None = None,
        timeout: float = 3600,
    ) -> dict:
        """Upload embeddings under `name`: a Lightly CSV path, or a float32 matrix with its file names.

        Args:
            source: a CSV path (see `save_embeddings`), a `.npy` path, or an (n, d) numpy array.
            file_names: with a matrix: n file names (a sequence, or a path to a file with one a line).
            labels: with a matrix, optional: n integers.
            chunked: force (True) or forbid (False) the resumable session; by default files above
                EMBEDDING_SINGLE_BYTES go in chunks of `chunk_bytes`, resuming after a dropped connection.
            wait: wait for the server to store a chunked upload (with progress); False returns the
                upload (id, status, progress) at once: poll `get_embedding_upload`.
            upload_id: continue an earlier session (same files) instead of starting a new one.

        Returns:
            The embedding (id, name, dimension, ...), or the upload when `wait` is False.
        """
        dataset_id = self._dataset(dataset_id)
        with tempfile.TemporaryDirectory(prefix="winnow-embeddings-") as tmp:
            kind, parts = _embedding_parts(source, file_names, labels, Path(tmp))
            total = sum(path.stat().st_size for path in parts.values())
            if chunked is None:
                chunked = upload_id is not None or total > EMBEDDING_SINGLE_BYTES
            if not chunked:
                return self._post_embeddings(dataset_id, name, kind, parts)
            upload = self._send_upload(dataset_id, name, kind, parts, chunk_bytes, progress, upload_id)
        if not wait:
            return upload
        return self.wait_for_embedding_upload(upload["id"], dataset_id, progress=progress, timeout=timeout)

    def _post_embeddings(self, dataset_id: str, name: str, kind: str, parts: dict[str, Path]) -> dict:
        handles = {part: path.open("rb") for part, path in parts.items()}
        try:
            files = {
                part: (path.name, handles[part], "text/csv" if kind == "csv" else "application/octet-stream")
                for part, path in parts.items()
            }
            return self._json("POST", f"datasets/{dataset_id}/embeddings", data={"name": name}, files=files)
        finally:
            for handle in handles.values():
                handle.close()

    def _send_upload(
        self,
        dataset_id: str,
        name: str,
        kind: str,
        parts: dict[str, Path],
        chunk_bytes: int,
        progress: bool,
        upload_id: str | None,
    ) -> dict:
        base = f"datasets/{dataset_id}/embeddings/uploads"
        if upload_id is None:
            upload = self._json(
                "POST",
                base,
                json={"kind": kind, "name": name, "sizes": {part: path.stat().st_size for part, path in parts.items()}},
            )
        else:
            upload = self.get_embedding_upload(upload_id, dataset_id)
        total = sum(upload["sizes"].values())
        bar = _byte_bar(total, "uploading", progress, initial=sum(upload["received"].values()))
        try:
            for part, path in parts.items():
                offset = int(upload["received"].get(part, 0))
                size = path.stat().st_size
                if size != upload["sizes"].get(part):
                    raise WinnowError(None, f"{path} has {size} bytes, the upload expects {upload['sizes'].get(part)}")
                with path.open("rb") as handle:
                    failures = 0
                    while offset < size:
                        handle.seek(offset)
                        data = handle.read(chunk_bytes)
                        try:
                            upload = self._json(
                                "PUT",
                                f"{base}/{upload['id']}/{part}",
                                data=data,
                                headers={
                                    "Content-Type": "application/octet-stream",
                                    "Content-Range": f"bytes {offset}-{offset + len(data) - 1}/{size}",
                                },
                            )
                            failures = 0
                        except WinnowError as exc:
                            transient = exc.status is None or exc.status in RETRY_STATUSES or exc.status in (409, 500)
                            failures += 1
                            if not transient or failures > self.retries + 2:
                                raise
                            if exc.status != 409:
                                time.sleep(min(8.0, 0.5 * 2**failures))
                            # The connection dropped or the chunk was not at the committed offset: ask where to go on.
                            upload = self.get_embedding_upload(upload["id"], dataset_id)
                        new = int(upload["received"].get(part, 0))
                        bar.update(new - offset)
                        offset = new
        finally:
            bar.close()
        return self._json("POST", f"{base}/{upload['id']}/complete")

    def get_embedding_upload(self, upload_id: str, dataset_id: str | None = None) -> dict:
        """A resumable embeddings upload: sizes, received bytes per part, status, progress, error, embedding."""
        return self._json("GET", f"datasets/{self._dataset(dataset_id)}/embeddings/uploads/{upload_id}")

    def wait_for_embedding_upload(
        self,
        upload_id: str,
        dataset_id: str | None = None,
        *,
        progress: bool = True,
        timeout: float = 3600,
        poll: float = 1.0,
    ) -> dict:
        """Wait until the server has stored a completed upload; return the embedding. A refused file raises."""
        dataset_id = self._dataset(dataset_id)
        deadline = time.monotonic() + timeout
        bar = progress_bar(100, "storing", progress)
        try:
            while True:
                upload = self.get_embedding_upload(upload_id, dataset_id)
                bar.update(int(upload["progress"] * 100) - bar.n)
                if upload["status"] == "succeeded":
                    return self._json("GET", f"datasets/{dataset_id}/embeddings/{upload['embedding']}")
                if upload["status"] == "failed":
                    raise WinnowError(400, f"{upload['error_field'] or 'file'}: {upload['error']}", upload)
                if time.monotonic() > deadline:
                    raise WinnowError(None, f"the embeddings upload {upload_id} is still {upload['status']}")
                time.sleep(poll)
        finally:
            bar.close()

    def list_embeddings(self, dataset_id: str | None = None) -> list[dict]:
        """The dataset's embeddings: id, name, dimension, source, projection_status."""
        return self._json("GET", f"datasets/{self._dataset(dataset_id)}/embeddings")

    def get_embedding(self, name_or_id: str, dataset_id: str | None = None) -> dict:
        """One embedding by name or id."""
        for embedding in self.list_embeddings(dataset_id):
            if name_or_id in (embedding["id"], embedding["name"]):
                return embedding
        raise WinnowError(404, f"no embedding named or with id {name_or_id!r} in this dataset")

    def wait_for_embedding(
        self, name: str = "default", dataset_id: str | None = None, timeout: float = 600, poll: float = 2.0
    ) -> dict:
        """Wait until an embedding of that name exists (the server's built-in embedder makes "default")."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.get_embedding(name, dataset_id)
            except WinnowError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(poll)

    def delete_embedding(self, name_or_id: str, dataset_id: str | None = None) -> None:
        """Delete an embedding (by name or id) and its files."""
        embedding = self.get_embedding(name_or_id, dataset_id)
        self._request("DELETE", f"datasets/{self._dataset(dataset_id)}/embeddings/{embedding['id']}")

    def embedding_distance_scale(self, name_or_id: str, dataset_id: str | None = None) -> dict:
        """Percentiles (p5..p95) of nearest-neighbour and pairwise distances, from a sample of the embedding's
        rows: the scale on which to choose diversity's min_distance."""
        embedding = self.get_embedding(name_or_id, dataset_id)
        return self._json("GET", f"datasets/{self._dataset(dataset_id)}/embeddings/{embedding['id']}/distance-scale")

    def download_embeddings(self, name_or_id: str, path: str | os.PathLike, dataset_id: str | None = None) -> None:
        """Save an embedding as Lightly's CSV at `path`."""
        embedding = self.get_embedding(name_or_id, dataset_id)
        response = self._request(
            "GET", f"datasets/{self._dataset(dataset_id)}/embeddings/{embedding['id']}/csv", stream=True
        )
        with open(path, "wb") as handle:
            for chunk in response.iter_content(1 << 16):
                handle.write(chunk)

    # --- custom metadata -------------------------------------------------------------------------

    def upload_custom_metadata(self, custom_metadata, dataset_id: str | None = None) -> dict:
        """Upload custom metadata: Lightly's COCO-like dict, a list of (file_name, dict) pairs, or a JSON path.

        Each listed sample's metadata is replaced. Returns {updated, warnings}.
        """
        if isinstance(custom_metadata, (str, os.PathLike)):
            data = formats.load_custom_metadata(custom_metadata)
        elif isinstance(custom_metadata, Mapping):
            data = dict(custom_metadata)
        else:
            data = formats.format_custom_metadata(custom_metadata)
        return self._json("POST", f"datasets/{self._dataset(dataset_id)}/metadata", json=data)

    def list_fields(self, dataset_id: str | None = None) -> list[dict]:
        """The configured metadata fields (the Configurator)."""
        return self._json("GET", f"datasets/{self._dataset(dataset_id)}/configurator")

    def propose_fields(self, dataset_id: str | None = None) -> Any:
        """Metadata paths found in the dataset, with proposed types and examples."""
        return self._json("GET", f"datasets/{self._dataset(dataset_id)}/metadata/fields")

    def configure_field(
        self, path: str, type: str, display_name: str | None = None, fallback: Any = None, dataset_id: str | None = None
    ) -> dict:
        """Show metadata `path` (e.g. "weather.temperature") as `type`: int, float, categorical_string,
        categorical_int or boolean."""
        body: dict[str, Any] = {"path": path, "type": type}
        if display_name is not None:
            body["display_name"] = display_name
        if fallback is not None:
            body["fallback"] = fallback
        return self._json("POST", f"datasets/{self._dataset(dataset_id)}/configurator", json=body)

    # --- tags ------------------------------------------------------------------------------------

    # --- saved views ---------------------------------------------------------------------------------

    def list_views(self, dataset_id: str | None = None) -> list[dict]:
        """The dataset's saved views: id, name, filter, sort, color."""
        return self._json("GET", f"datasets/{self._dataset(dataset_id)}/views")

    def get_view(self, name_or_id: str, dataset_id: str | None = None) -> dict:
        """One saved view by name or id."""
        for view in self.list_views(dataset_id):
            if name_or_id in (view["id"], view["name"]):
                return view
        raise WinnowError(404, f"no saved view named or with id {name_or_id!r} in this dataset")

    def save_view(
        self,
        name: str,
        *,
        filter: dict | None = None,
        sort: str = "idx",
        color: str = "",
        dataset_id: str | None = None,
    ) -> dict:
        """Save a named view: a filter ({"tag", "file_name", "conditions"}), a sort and the map's colour."""
        body = {"name": name, "filter": filter or {}, "sort": sort, "color": color}
        return self._json("POST", f"datasets/{self._dataset(dataset_id)}/views", json=body)

    def update_view(self, name_or_id: str, dataset_id: str | None = None, **changes) -> dict:
        """Rename or change a saved view: any of name, filter, sort, color, hidden_boxes (detection task names)."""
        view = self.get_view(name_or_id, dataset_id)
        return self._json("PATCH", f"datasets/{self._dataset(dataset_id)}/views/{view['id']}", json=changes)

    def delete_view(self, name_or_id: str, dataset_id: str | None = None) -> None:
        """Delete a saved view."""
        view = self.get_view(name_or_id, dataset_id)
        self._request("DELETE", f"datasets/{self._dataset(dataset_id)}/views/{view['id']}")

    def tag_from_view(self, view: str, tag_name: str, dataset_id: str | None = None) -> dict:
        """A tag of the samples a saved view (name or id) matches now: use it as a run's input tag or export it."""
        found = self.get_view(view, dataset_id)
        return self._json(
            "POST", f"datasets/{self._dataset(dataset_id)}/views/{found['id']}/tag", json={"name": tag_name}
        )

    def list_tags(self, dataset_id: str | None = None) -> list[dict]:
        """The dataset's tags: id, name, count, origin."""
        return self._json("GET", f"datasets/{self._dataset(dataset_id)}/tags")

    def get_tag(self, name_or_id: str, dataset_id: str | None = None) -> dict:
        """One tag by name or id."""
        for tag in self.list_tags(dataset_id):
            if name_or_id in (tag["id"], tag["name"]):
                return tag
        raise WinnowError(404, f"no tag named or with id {name_or_id!r} in this dataset")

    def create_tag_from_filenames(self, name: str, file_names: Iterable[str], dataset_id: str | None = None) -> dict:
        """A tag holding the samples with these file names."""
        return self._json(
            "POST", f"datasets/{self._dataset(dataset_id)}/tags", json={"name": name, "file_names": list(file_names)}
        )

    def tag_arithmetic(self, name: str, operation: str, tag_a: str, tag_b: str, dataset_id: str | None = None) -> dict:
        """A tag from `union`, `intersection` or `difference` of two tags (names or ids)."""
        a, b = self.get_tag(tag_a, dataset_id)["id"], self.get_tag(tag_b, dataset_id)["id"]
        return self._json(
            "POST",
            f"datasets/{self._dataset(dataset_id)}/tags",
            json={"name": name, "operation": operation, "tags": [a, b]},
        )

    def export_tag(self, tag: str, format: str = "filenames", dataset_id: str | None = None, *, raw: bool = False):
        """A tag's samples: `filenames` -> list of names; `csv` -> text; `json`/`label-studio` -> parsed JSON.

        With raw=True every format comes back as the text the server sent.
        """
        tag_id = self.get_tag(tag, dataset_id)["id"]
        return self._export(f"datasets/{self._dataset(dataset_id)}/tags/{tag_id}/export", {"format": format}, raw)

    def export_view(self, view: str, format: str = "filenames", dataset_id: str | None = None, *, raw: bool = False):
        """The samples a saved view (name or id) matches now, in the view's sort, as export_tag gives a tag's (no tag
        is made)."""
        view_id = self.get_view(view, dataset_id)["id"]
        return self._export(f"datasets/{self._dataset(dataset_id)}/views/{view_id}/export", {"format": format}, raw)

    def export_filter(
        self,
        filter: dict | None = None,
        format: str = "filenames",
        dataset_id: str | None = None,
        *,
        raw: bool = False,
        sort: str | None = None,
    ):
        """The samples a filter {"tag", "file_name", "conditions"} matches (all without one), as export_tag gives,
        in idx order or in `sort`'s (idx, -idx, a metadata path or -path; missing values last, ties by idx)."""
        params = {"format": format}
        if filter:
            params["filter"] = json.dumps(filter)
        if sort:
            params["sort"] = sort
        return self._export(f"datasets/{self._dataset(dataset_id)}/export", params, raw)

    def _export(self, path: str, params: dict, raw: bool):
        response = self._request("GET", path, params=params)
        response.encoding = "utf-8"
        text = response.text
        if raw or params["format"] == "csv":
            return text
        if params["format"] == "filenames":
            return [line for line in text.splitlines() if line]
        return json.loads(text)

    # --- sampling --------------------------------------------------------------------------------

    # --- predictions ---------------------------------------------------------------------------

    def upload_predictions(
        self,
        task: str,
        schema,
        predictions,
        dataset_id: str | None = None,
        *,
        file_names=None,
        is_labels: bool | None = None,
        progress: bool = True,
        wait: bool = True,
        timeout: float = 3600,
    ) -> dict:
        """Upload a whole prediction task in Lightly's format; it replaces the task's previous upload.

        Args:
            task: the task's name (letters, digits, '_' and '-').
            schema: `{"task_type": "classification" | "object-detection", "categories": [{"id", "name"}]}`,
                or the path of Lightly's `schema.json`.
            predictions: Lightly's `.lightly/predictions/<task>/` folder (one JSON per image), an iterable of
                per-file records `{"file_name", "predictions": [singletons]}`, a `{file_name: [singletons]}`
                mapping, or an (n, C) numpy array of class probabilities (columns in category id order)
                with `file_names`.
            is_labels: mark the task as ground-truth labels rather than a model's predictions.
            wait: wait while a worker stores a large upload (with progress); False returns the upload to poll.

        Every record is checked here with the server's parser first: a refused one raises WinnowError naming
        the file and field, and nothing is sent. Returns the upload: id, status, result (samples, scores).
        """
        try:
            return prediction_upload.upload_predictions(
                self, task, schema, predictions, self._dataset(dataset_id), bars=(progress_bar, _byte_bar),
                file_names=file_names, is_labels=is_labels, progress=progress, wait=wait, timeout=timeout,
            )  # fmt: skip
        except PredictionError as exc:
            raise WinnowError(400, str(exc)) from None
        except TimeoutError as exc:
            raise WinnowError(None, str(exc)) from None

    def list_prediction_tasks(self, dataset_id: str | None = None) -> list[dict]:
        """The dataset's prediction tasks: name, type, categories, is_labels, count."""
        return self._json("GET", f"datasets/{self._dataset(dataset_id)}/predictions")

    def delete_prediction_task(self, task: str, dataset_id: str | None = None) -> None:
        """Remove a prediction task and its scores."""
        self._json("DELETE", f"datasets/{self._dataset(dataset_id)}/predictions/{task}")

    def create_sampling_run(
        self,
        name: str,
        embedding: str | None,
        strategy: str = "auto",
        n_samples: int | None = None,
        dataset_id: str | None = None,
        **params,
    ) -> dict:
        """Queue a sampling run (auto, coreset, diversity, random, typicality, ...); returns the run (202).

        `strategy` defaults to "auto", the recommended choice of what to label first (needs an
        embedding and `n_samples`).

        `embedding` is a name or id; `params` are the strategy's other fields (min_distance,
        input_tag, preselected_tag, seed, ...).
        """
        body: dict[str, Any] = {"name": name, "strategy": strategy, **params}
        if embedding is not None:
            body["embedding"] = self.get_embedding(embedding, dataset_id)["id"]
        if n_samples is not None:
            body["n_samples"] = n_samples
        return self._json("POST", f"datasets/{self._dataset(dataset_id)}/sampling-runs", json=body)

    def get_run(self, run_id: str, dataset_id: str | None = None) -> dict:
        """A sampling run: status, progress (0-100), error."""
        return self._json("GET", f"datasets/{self._dataset(dataset_id)}/sampling-runs/{run_id}")

    def wait_for_run(
        self,
        run_id: str,
        progress: bool = True,
        dataset_id: str | None = None,
        poll: float = 1.0,
        timeout: float | None = None,
    ) -> dict:
        """Poll a run until it finishes; return it when it succeeded, raise WinnowError otherwise."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = progress_bar(100, "sampling", progress)
        try:
            while True:
                run = self.get_run(run_id, dataset_id)
                bar.update(max(0, int(run.get("progress") or 0) - bar.n))
                if run["status"] == "succeeded":
                    bar.update(100 - bar.n)
                    return run
                if run["status"] in ("failed", "cancelled"):
                    raise WinnowError(
                        None, f"sampling run {run_id} {run['status']}: {run.get('error') or 'no detail'}", run
                    )
                if deadline is not None and time.monotonic() > deadline:
                    raise WinnowError(None, f"sampling run {run_id} is still {run['status']} after {timeout} s")
                time.sleep(poll)
        finally:
            bar.close()

    def get_scores(self, run_id: str, dataset_id: str | None = None) -> Iterator[dict]:
        """A succeeded run's scores by rank: {rank, score, sample_id, file_name, idx}."""
        yield from self._pages(f"datasets/{self._dataset(dataset_id)}/sampling-runs/{run_id}/scores", {"limit": 1000})

    def create_tag_from_run(self, name: str, run_id: str, top_k: int, dataset_id: str | None = None) -> dict:
        """A tag with the `top_k` most important samples of a succeeded run."""
        return self._json(
            "POST",
            f"datasets/{self._dataset(dataset_id)}/tags",
            json={"name": name, "sampling_run": run_id, "top_k": top_k},
        )

    # --- similarity and duplicates ---------------------------------------------------------------

    def find_similar(
        self,
        sample: str | None = None,
        *,
        tag: str | None = None,
        samples: Sequence[str] | None = None,
        mode: str = "centroid",
        vector: Sequence[float] | None = None,
        image: str | os.PathLike | None = None,
        k: int = 100,
        embedding: str = "default",
        metric: str = "euclidean",
        input_tag: str | None = None,
        exclude_query: bool = True,
        dataset_id: str | None = None,
        wait: bool = True,
        progress: bool = True,
    ) -> dict:
        """More like this: rank samples by distance to a sample id, a tag (name or id; its centroid or, with
        mode="each", its nearest member), `samples` (up to 10,000 sample ids, an unsaved selection: like a tag),
        a vector, or an image file (embedded on the server with the dataset's built-in embedder). Returns the run;
        with `wait` once it has finished (read it with `similar_results`)."""
        ds = self._dataset(dataset_id)
        body: dict[str, Any] = {"k": k, "embedding": embedding, "metric": metric, "exclude_query": exclude_query}
        if sample is not None:
            body["sample"] = sample
        if tag is not None:
            body["tag"], body["mode"] = self.get_tag(tag, ds)["id"], mode
        if samples is not None:
            body["samples"], body["mode"] = list(samples), mode
        if vector is not None:
            body["vector"] = [float(v) for v in vector]
        if input_tag is not None:
            body["input_tag"] = self.get_tag(input_tag, ds)["id"]
        if image is not None:
            path = Path(image)
            with open(path, "rb") as handle:
                form = {
                    key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in body.items()
                }
                run = self._json(
                    "POST", f"datasets/{ds}/similarity/search", data=form, files={"image": (path.name, handle)}
                )
        else:
            run = self._json("POST", f"datasets/{ds}/similarity/search", json=body)
        return self.wait_for_similarity_run(run["id"], ds, progress=progress) if wait else run

    def find_duplicates(
        self,
        threshold: float | None = None,
        *,
        embedding: str = "default",
        metric: str = "euclidean",
        input_tag: str | None = None,
        dataset_id: str | None = None,
        wait: bool = True,
        progress: bool = True,
    ) -> dict:
        """Group exact duplicates (same content hash) and near-duplicates (within `threshold`; None: the threshold
        the server suggests from the data) on a worker. The run's `summary` has the counts and the threshold."""
        ds = self._dataset(dataset_id)
        body: dict[str, Any] = {"embedding": embedding, "metric": metric, "threshold": threshold}
        if input_tag is not None:
            body["input_tag"] = self.get_tag(input_tag, ds)["id"]
        run = self._json("POST", f"datasets/{ds}/similarity/duplicates", json=body)
        return self.wait_for_similarity_run(run["id"], ds, progress=progress) if wait else run

    def list_similarity_runs(self, kind: str | None = None, dataset_id: str | None = None) -> list[dict]:
        """The dataset's latest search and duplicate runs (kind "search" or "duplicates"), newest first."""
        params = {"kind": kind} if kind else None
        return self._json("GET", f"datasets/{self._dataset(dataset_id)}/similarity/runs", params=params)

    def get_similarity_run(self, run_id: str, dataset_id: str | None = None) -> dict:
        """A search or duplicate run: status, progress (0..1), error, summary."""
        return self._json("GET", f"datasets/{self._dataset(dataset_id)}/similarity/runs/{run_id}")

    def wait_for_similarity_run(
        self, run_id: str, dataset_id: str | None = None, *, progress: bool = True, poll: float = 1.0
    ) -> dict:
        """Poll a search or duplicate run until it finishes; return it, or raise WinnowError if it failed."""
        bar = progress_bar(100, "similarity", progress)
        try:
            while True:
                run = self.get_similarity_run(run_id, dataset_id)
                bar.update(max(0, int(100 * (run.get("progress") or 0)) - bar.n))
                if run["status"] == "succeeded":
                    bar.update(100 - bar.n)
                    return run
                if run["status"] == "failed":
                    raise WinnowError(None, f"similarity run {run_id} failed: {run.get('error') or 'no detail'}", run)
                time.sleep(poll)
        finally:
            bar.close()

    def similar_results(self, run_id: str, dataset_id: str | None = None) -> Iterator[dict]:
        """A finished run's rows: a search's {rank, idx, distance, sample_id, file_name, ...}, best first; a
        duplicate run's groups {group, size, exact, keep_first, keep_largest, members}, largest first."""
        path = f"datasets/{self._dataset(dataset_id)}/similarity/runs/{run_id}/results"
        offset: int | None = 0
        while offset is not None:
            page = self._json("GET", path, params={"offset": offset, "limit": 200})
            yield from page["results"]
            offset = page["next_offset"]

    def create_tag_from_similarity(
        self,
        name: str,
        run_id: str,
        *,
        top_k: int | None = None,
        keep: str = "first",
        mode: str = "keepers",
        dataset_id: str | None = None,
    ) -> dict:
        """A tag from a finished run: a search's first `top_k` results; for duplicates, one sample per group
        (mode "keepers", keeping the first, the largest or the sharpest), every sample but the extra copies ("deduplicated":
        use it as a sampling run's input tag), or the extra copies ("duplicates")."""
        body: dict[str, Any] = {"name": name, "keep": keep, "mode": mode}
        if top_k is not None:
            body["top_k"] = top_k
        return self._json("POST", f"datasets/{self._dataset(dataset_id)}/similarity/runs/{run_id}/tag", json=body)


# --- helpers -------------------------------------------------------------------------------------


def _error_from(response: requests.Response) -> WinnowError:
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        pass
    if isinstance(body, dict) and body.get("detail"):
        message = str(body["detail"])
    elif response.status_code == 401:
        message = "not authenticated: pass --token or set WINNOW_TOKEN"
    else:
        text = (response.text or "").strip()
        # A short plain-text body says what went wrong; an HTML error page would only be noise.
        shown = f": {text[:300]}" if text and not text.startswith("<") else ""
        message = f"HTTP {response.status_code} {response.reason}{shown}"
    return WinnowError(response.status_code, message, body)


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return str(exc) or exc.__class__.__name__


def _with_retries(call: Callable[[], Any], retries: int) -> Any:
    """Call again after a connection error, a timeout, 429 or a 5xx, with jittered exponential backoff
    (or the server's Retry-After); only for calls the server makes idempotent (uploads, registration)."""
    for attempt in range(retries + 1):
        try:
            return call()
        except WinnowError as exc:
            transient = exc.status is None or exc.status in RETRY_STATUSES or exc.status in (429, 500)
            if not transient or attempt == retries:
                raise
            wait = getattr(exc, "retry_after", None)
            time.sleep(wait if wait is not None else min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def _retry_after(response: requests.Response) -> float | None:
    """The seconds a 429 or 503 asks to wait (Retry-After in seconds), capped at a minute."""
    try:
        return min(60.0, max(0.0, float(response.headers.get("Retry-After", ""))))
    except ValueError:
        return None


def _run_parallel(jobs: list[Callable[[], Any]], workers: int) -> None:
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(job) for job in jobs]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _batches(root: Path, names: list[str], batch_files: int) -> list[list[str]]:
    batches: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name in names:
        try:
            file_size = (root / name).stat().st_size
        except OSError:
            file_size = 0
        if current and (len(current) >= batch_files or size + file_size > BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(name)
        size += file_size
    if current:
        batches.append(current)
    return batches


def _embedding_parts(source, file_names, labels, tmp: Path) -> tuple[str, dict[str, Path]]:
    """("csv", {"file": path}) or ("npy", {"matrix", "names"[, "labels"]}): local files to send."""
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() != ".npy":
        if file_names is not None or labels is not None:
            raise WinnowError(None, "file_names and labels go with a .npy matrix; a CSV holds its own")
        return "csv", {"file": Path(source)}
    if isinstance(source, (str, os.PathLike)):
        matrix = Path(source)
        n, _d = formats.npy_matrix_shape(matrix)
    else:
        array = np.asarray(source)
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
            raise WinnowError(None, f"the embeddings must be an (n, d) float array, got {array.dtype} {array.shape}")
        matrix = tmp / "matrix.npy"
        np.save(matrix, np.ascontiguousarray(array, dtype="<f4"), allow_pickle=False)
        n = array.shape[0]
    if file_names is None:
        raise WinnowError(None, "file_names are required with a matrix: one per row")
    if isinstance(file_names, (str, os.PathLike)):
        names = Path(file_names)
        count = len(formats.load_file_names(names))
    else:
        names = tmp / "names.txt"
        count = formats.save_file_names(names, file_names)
    if count != n:
        raise WinnowError(None, f"the matrix has {n} rows but there are {count} file names")
    parts = {"matrix": matrix, "names": names}
    if labels is not None:
        label_array = np.asarray(labels)
        if label_array.shape != (n,) or label_array.dtype.kind not in "iu":
            raise WinnowError(None, f"labels must be {n} integers")
        parts["labels"] = tmp / "labels.npy"
        np.save(parts["labels"], label_array.astype("<i8"), allow_pickle=False)
    return "npy", parts


def _byte_bar(total: int, description: str, enabled: bool, initial: int = 0):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=description, unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True
    )


def _metadata_mapping(metadata) -> dict[str, dict]:
    if metadata is None:
        return {}
    if isinstance(metadata, (str, os.PathLike)):
        metadata = formats.load_custom_metadata(metadata)
    if isinstance(metadata, Mapping) and "images" in metadata and "metadata" in metadata:
        return formats.metadata_by_file_name(metadata)
    if isinstance(metadata, Mapping):
        return {str(k): v for k, v in metadata.items()}
    raise WinnowError(None, "metadata must be a {file_name: dict} mapping, a COCO-like dict or a JSON file path")


class _NoBar:
    n = 0

    def update(self, k: int = 1) -> None:
        self.n += k

    def close(self) -> None:
        pass


def progress_bar(total: int, description: str, enabled: bool = True, initial: int = 0):
    """A tqdm bar (on stderr), or a silent stand-in with the same update/close when disabled."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        unit="img" if description != "sampling" else "%",
        dynamic_ncols=True,
    )
