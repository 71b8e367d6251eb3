"""The client's side of prediction tasks: check predictions locally with the server's parser, send them as JSON
lines (streamed from a temp file, with a progress bar), wait for a worker when the server hands one the upload."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from winnow.client import predictions as fmt


class _Body:
    """A file read for a request body, with a length (so requests sends Content-Length) and a byte bar."""

    def __init__(self, handle, size: int, bar):
        self.handle, self.size, self.bar = handle, size, bar

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        data = self.handle.read(n)
        self.bar.update(len(data))
        return data


def _schema(task: str, schema, is_labels: bool | None) -> fmt.Schema:
    if isinstance(schema, fmt.Schema):
        obj = schema.as_dict()
    elif isinstance(schema, (str, os.PathLike)):
        obj = fmt.load_schema(schema, task).as_dict()
    elif isinstance(schema, Mapping):
        obj = dict(schema)
    else:
        raise fmt.PredictionError("schema: a dict, a Schema or the path of a schema.json")
    if is_labels is not None:
        obj["is_labels"] = is_labels
    obj.pop("name", None)
    return fmt.parse_schema(obj, task)


def _records(predictions, file_names, where_prefix: str) -> Iterable[tuple[str, Any]]:
    if isinstance(predictions, (str, os.PathLike)):
        yield from fmt.iter_prediction_files(predictions)
        return
    if isinstance(predictions, np.ndarray):
        if file_names is None:
            raise fmt.PredictionError("file_names: required with a probability array")
        names = list(file_names)
        for i, record in enumerate(fmt.records_from_arrays(names, predictions)):
            yield f"{where_prefix}[{i}]", record
        return
    if isinstance(predictions, Mapping):  # {file_name: [singletons]}
        for name, singletons in predictions.items():
            yield name, {"file_name": name, "predictions": singletons}
        return
    for i, record in enumerate(predictions):
        yield f"{where_prefix}[{i}]", record


def upload_predictions(
    client,
    task: str,
    schema,
    predictions,
    dataset_id: str,
    *,
    bars,
    file_names=None,
    is_labels: bool | None = None,
    progress: bool = True,
    wait: bool = True,
    timeout: float = 3600,
) -> dict:
    """See `Client.upload_predictions`; `bars` = (item progress bar, byte progress bar) factories.
    A refused prediction raises PredictionError naming the file and field."""
    progress_bar, byte_bar = bars
    parsed = _schema(task, schema, is_labels)
    with tempfile.TemporaryDirectory(prefix="winnow-predictions-") as tmp:
        path = Path(tmp) / "predictions.jsonl"
        builder = fmt.Builder(parsed)  # the server's checks, before a byte is sent
        bar = progress_bar(None, "checking", progress)
        try:
            with path.open("wb") as out:
                out.write(fmt.header_line(parsed))
                for where, record in _records(predictions, file_names, "predictions"):
                    builder.add(record, where)
                    out.write(fmt.record_line(record))
                    bar.update(1)
        finally:
            bar.close()
        size = path.stat().st_size
        bar = byte_bar(size, "uploading", progress)
        try:
            with path.open("rb") as handle:
                upload = client._json(
                    "PUT",
                    f"datasets/{dataset_id}/predictions/{task}",
                    data=_Body(handle, size, bar),
                    headers={"Content-Type": "application/x-ndjson"},
                    timeout=max(client.timeout, 600),
                )
        finally:
            bar.close()
    if upload["status"] == "succeeded" or not wait:
        return upload
    return wait_for_prediction_upload(
        client, upload["id"], dataset_id, progress_bar, progress=progress, timeout=timeout
    )


def wait_for_prediction_upload(
    client, upload_id: str, dataset_id: str, progress_bar, *, progress: bool = True, timeout: float = 3600, poll=1.0
) -> dict:
    deadline = time.monotonic() + timeout
    bar = progress_bar(100, "storing", progress)
    try:
        while True:
            upload = client._json("GET", f"datasets/{dataset_id}/predictions/uploads/{upload_id}")
            bar.update(max(0, int(upload["progress"] * 100) - bar.n))
            if upload["status"] == "succeeded":
                return upload
            if upload["status"] == "failed":
                raise fmt.PredictionError(upload["error"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"the prediction upload {upload_id} is still {upload['status']}")
            time.sleep(poll)
    finally:
        bar.close()
