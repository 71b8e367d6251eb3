"""Lightly's prediction format: task schemas, per-sample predictions, and the scores computed from them.

One parser shared by the client (checks before anything is sent) and the server (checks what arrives).
No Django: this module runs on training machines.

Schema (Lightly's `.lightly/predictions/<task>/schema.json`):
    {"task_type": "classification" | "object-detection", "categories": [{"id": 0, "name": "cat"}, ...]}
    (`type` is accepted for `task_type`; `name` and `is_labels` are optional.)
Predictions of one sample (Lightly's `.lightly/predictions/<task>/<image path without extension>.json`):
    {"file_name": "a/b.jpg", "predictions": [{"category_id": 1, "score": 0.9, "probabilities": [0.1, 0.9]}]}
    classification: exactly one singleton; `probabilities` (optional) has one entry per category, in the
    order of the category ids, and sums to 1.
    object-detection: any number of singletons, each with `bbox` [x, y, w, h] in pixels (top-left corner).
An upload stream (JSON lines): a header line {"schema": {...}, "is_labels": false}, then one line per sample.

Parsed predictions are kept as compact columns (numpy arrays, a chunk at a time), never one object per sample.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from winnow.client.formats import FormatError

TASK_TYPES = ("classification", "object-detection")
CLASSIFICATION, DETECTION = TASK_TYPES
# A task name starts with a letter or digit: `_scores` (scores uploaded per tag, /v1/) cannot be a task.
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
UPLOADED_SCORES = "_scores"
# Probabilities are model output rounded to a few digits by whoever wrote the JSON.
PROBABILITY_TOLERANCE = 1e-2
# A box may stick out of the image by rounding (e.g. x + w = 640.4 on a 640-pixel image).
BBOX_TOLERANCE = 1.0
MAX_CATEGORIES = 10_000
MAX_OBJECTS = 10_000  # per sample
CHUNK = 8192

CLASSIFICATION_SCORES = ("uncertainty_least_confidence", "uncertainty_margin", "uncertainty_entropy", "confidence")
DETECTION_SCORES = ("object_count", "mean_confidence", "min_confidence", "objectness_least_confidence")
# The score an uncertainty strategy uses when it names only the task.
DEFAULT_SCORE = {CLASSIFICATION: "uncertainty_least_confidence", DETECTION: "objectness_least_confidence"}
PREFIX = "predictions"  # scores live in each sample's metadata at predictions.<task>.<score>


class PredictionError(FormatError):
    """Predictions not in Lightly's format; the message names the file (or line) and the field at fault."""


@dataclass
class Schema:
    name: str
    type: str
    categories: list[dict]  # [{"id", "name"}], sorted by id
    is_labels: bool = False
    index: dict[int, int] = field(default_factory=dict)  # category id -> position

    def as_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "categories": self.categories, "is_labels": self.is_labels}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def task_name_error(name) -> str | None:
    if not isinstance(name, str) or not TASK_NAME.match(name):
        return "must be 1 to 100 letters, digits, '_' or '-', starting with a letter or digit"
    return None


def parse_schema(obj: Any, name: str | None = None, *, where: str = "schema") -> Schema:
    """Check a task schema; `name` (the task's name) wins over a `name` key in the schema."""
    if not isinstance(obj, Mapping):
        raise PredictionError(f"{where}: must be an object with 'task_type' and 'categories'")
    name = name if name is not None else obj.get("name")
    problem = task_name_error(name)
    if problem:
        raise PredictionError(f"{where}.name: the task name {name!r} {problem}")
    task_type = obj.get("task_type", obj.get("type"))
    if task_type not in TASK_TYPES:
        raise PredictionError(f"{where}.task_type: {task_type!r} is not one of {', '.join(TASK_TYPES)}")
    cats = obj.get("categories")
    if not isinstance(cats, list) or not cats:
        raise PredictionError(f"{where}.categories: must be a non-empty list of {{'id', 'name'}} objects")
    if len(cats) > MAX_CATEGORIES:
        raise PredictionError(f"{where}.categories: at most {MAX_CATEGORIES} categories")
    seen_ids: set[int] = set()
    seen_names: set[str] = set()
    out = []
    for i, cat in enumerate(cats):
        at = f"{where}.categories[{i}]"
        if not isinstance(cat, Mapping):
            raise PredictionError(f"{at}: must be an object with 'id' and 'name'")
        cid, cname = cat.get("id"), cat.get("name")
        if not _is_int(cid) or cid < 0:
            raise PredictionError(f"{at}.id: must be a non-negative integer")
        if not isinstance(cname, str) or not cname or "\x00" in cname:
            raise PredictionError(f"{at}.name: must be a non-empty string")
        if cid in seen_ids:
            raise PredictionError(f"{at}.id: {cid} is used by another category")
        if cname in seen_names:
            raise PredictionError(f"{at}.name: {cname!r} is used by another category")
        seen_ids.add(cid)
        seen_names.add(cname)
        out.append({"id": cid, "name": cname})
    out.sort(key=lambda c: c["id"])
    is_labels = obj.get("is_labels", False)
    if not isinstance(is_labels, bool):
        raise PredictionError(f"{where}.is_labels: must be true or false")
    return Schema(name, task_type, out, is_labels, {c["id"]: i for i, c in enumerate(out)})


@dataclass
class Columns:
    """Predictions of a whole task as arrays, one entry per sample in upload order.

    classification: `category` (position in schema.categories), `score`, `probabilities` (n x C, NaN rows
    where a sample gave none). object-detection: `offsets` (n + 1; the objects of sample i are
    offsets[i]:offsets[i+1]), `object_category`, `object_score`, `boxes` (m x 4, x y w h).
    """

    schema: Schema
    file_names: list[str]
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.file_names)


class Builder:
    """Validates predictions one sample at a time and keeps them as column chunks."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.n_cat = len(schema.categories)
        self.file_names: list[str] = []
        self._seen: set[str] = set()
        self._rows: dict[str, list] = {}
        self._chunks: dict[str, list[np.ndarray]] = {}
        self._objects = 0

    def _push(self, key: str, value) -> None:
        self._rows.setdefault(key, []).append(value)

    def _flush(self) -> None:
        for key, rows in self._rows.items():
            if rows:
                dtype = np.int64 if key in ("offsets",) else np.int32 if key.endswith("category") else np.float32
                self._chunks.setdefault(key, []).append(np.asarray(rows, dtype=dtype))
                rows.clear()

    def _probabilities(self, probs, at: str) -> list[float]:
        if not isinstance(probs, list) or len(probs) != self.n_cat:
            got = len(probs) if isinstance(probs, list) else type(probs).__name__
            raise PredictionError(f"{at}.probabilities: must list {self.n_cat} numbers (one per category), got {got}")
        # Type by exact class (bool is an int subclass), range by min/max, NaN by the sum: C loops, not per-entry calls.
        numbers = all(type(p) is float or type(p) is int for p in probs)
        total = math.fsum(probs) if numbers else math.nan
        if not numbers or total != total or min(probs) < 0 or max(probs) > 1:
            raise PredictionError(f"{at}.probabilities: every entry must be a number between 0 and 1")
        if abs(total - 1.0) > PROBABILITY_TOLERANCE:
            raise PredictionError(f"{at}.probabilities: sum to {total:.6g}, not 1 (tolerance {PROBABILITY_TOLERANCE})")
        return probs

    def add(self, record: Any, where: str) -> None:
        """Check one sample's record ({"file_name", "predictions"}); `where` names the file or line."""
        if not isinstance(record, Mapping):
            raise PredictionError(f"{where}: must be an object with 'file_name' and 'predictions'")
        name = record.get("file_name")
        if not isinstance(name, str) or not name or "\x00" in name:
            raise PredictionError(f"{where}.file_name: must be a non-empty string")
        where = f"{where} ({name})" if name not in where else where
        if name in self._seen:
            raise PredictionError(f"{where}.file_name: {name!r} has predictions earlier in the upload")
        preds = record.get("predictions")
        if not isinstance(preds, list):
            raise PredictionError(f"{where}.predictions: must be a list of prediction singletons")
        if self.schema.type == CLASSIFICATION and len(preds) != 1:
            raise PredictionError(f"{where}.predictions: a classification has exactly one singleton, got {len(preds)}")
        if len(preds) > MAX_OBJECTS:
            raise PredictionError(f"{where}.predictions: at most {MAX_OBJECTS} objects per sample")
        parsed = []
        for j, pred in enumerate(preds):
            at = f"{where}.predictions[{j}]"
            if not isinstance(pred, Mapping):
                raise PredictionError(f"{at}: must be an object with 'category_id' and 'score'")
            cid = pred.get("category_id")
            if not _is_int(cid) or cid not in self.schema.index:
                raise PredictionError(f"{at}.category_id: {cid!r} is not a category of task {self.schema.name!r}")
            score = pred.get("score")
            if not _is_number(score) or not 0 <= score <= 1:
                raise PredictionError(f"{at}.score: must be a number between 0 and 1")
            probs = pred.get("probabilities")
            if probs is not None:
                probs = self._probabilities(probs, at)
            box = None
            if self.schema.type == DETECTION:
                box = pred.get("bbox")
                if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
                    raise PredictionError(f"{at}.bbox: must be [x, y, w, h], four finite numbers")
                if box[0] < -BBOX_TOLERANCE or box[1] < -BBOX_TOLERANCE or box[2] < 0 or box[3] < 0:
                    raise PredictionError(f"{at}.bbox: {box} is outside the image (negative x, y, width or height)")
            parsed.append((self.schema.index[cid], float(score), probs, box))
        self.file_names.append(name)
        self._seen.add(name)
        if self.schema.type == CLASSIFICATION:
            cat, score, probs, _ = parsed[0]
            self._push("category", cat)
            self._push("score", score)
            self._push("probabilities", probs if probs is not None else [math.nan] * self.n_cat)
        else:
            for cat, score, _, box in parsed:
                self._push("object_category", cat)
                self._push("object_score", score)
                self._push("boxes", box)
            self._objects += len(parsed)
            self._push("offsets", self._objects)
        if len(self.file_names) % CHUNK == 0:
            self._flush()

    def finish(self) -> Columns:
        self._flush()
        n_cat = self.n_cat

        def cat(key: str, dtype, shape=(0,)) -> np.ndarray:
            parts = self._chunks.get(key)
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(shape, dtype=dtype)

        if self.schema.type == CLASSIFICATION:
            arrays = {
                "category": cat("category", np.int32),
                "score": cat("score", np.float32),
                "probabilities": cat("probabilities", np.float32, (0, n_cat)).reshape(-1, n_cat),
            }
        else:
            arrays = {
                "offsets": np.concatenate([[0], cat("offsets", np.int64)]).astype(np.int64),
                "object_category": cat("object_category", np.int32),
                "object_score": cat("object_score", np.float32),
                "boxes": cat("boxes", np.float32, (0, 4)).reshape(-1, 4),
            }
        return Columns(self.schema, self.file_names, arrays)


def check_boxes(columns: Columns, width: np.ndarray, height: np.ndarray) -> None:
    """Refuse a box outside its image where the image size is known (width/height > 0, per sample)."""
    if columns.schema.type != DETECTION or not len(columns.arrays["boxes"]):
        return
    offsets, boxes = columns.arrays["offsets"], columns.arrays["boxes"]
    owner = np.repeat(np.arange(len(columns)), np.diff(offsets))
    w, h = width.astype(np.float64)[owner], height.astype(np.float64)[owner]
    known = (w > 0) & (h > 0)
    x2 = boxes[:, 0].astype(np.float64) + boxes[:, 2]
    y2 = boxes[:, 1].astype(np.float64) + boxes[:, 3]
    bad = np.flatnonzero(known & ((x2 > w + BBOX_TOLERANCE) | (y2 > h + BBOX_TOLERANCE)))
    if len(bad):
        k = int(bad[0])
        i = int(owner[k])
        j = k - int(offsets[i])
        box = [round(float(v), 3) for v in boxes[k]]
        raise PredictionError(
            f"{columns.file_names[i]}.predictions[{j}].bbox: {box} is outside the image "
            f"({int(w[k])} x {int(h[k])} pixels)"
        )


# --- scores --------------------------------------------------------------------------------------


def classification_scores(probabilities: np.ndarray, score: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Lightly's classification scores, normalised to [0, 1] (1 = most uncertain), from (n x C) probabilities.

    least confidence: (1 - max p) / (1 - 1/C); margin: 1 - (p1 - p2); entropy: -sum p log p / log C.
    Rows without probabilities (NaN) get NaN, except least confidence, taken from `score` when given.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    n, c = p.shape
    out: dict[str, np.ndarray] = {}
    top2 = np.sort(p, axis=1)[:, -2:] if c >= 2 else np.concatenate([np.zeros((n, 1)), p], axis=1)
    best = top2[:, -1]
    if score is not None:
        best = np.where(np.isnan(best), np.asarray(score, dtype=np.float64), best)
    out["uncertainty_least_confidence"] = np.clip((1.0 - best) / (1.0 - 1.0 / c), 0, 1) if c > 1 else 1.0 - best
    out["uncertainty_margin"] = np.clip(1.0 - (top2[:, -1] - top2[:, -2]), 0, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    plogp[np.isnan(p)] = np.nan
    entropy = -plogp.sum(axis=1)
    out["uncertainty_entropy"] = np.clip(entropy / math.log(c), 0, 1) if c > 1 else np.zeros(n)
    out["confidence"] = best
    return out


def detection_scores(offsets: np.ndarray, object_score: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: object count, mean and min confidence (NaN without objects), objectness least confidence.

    Objectness least confidence (Lightly's image-level detection uncertainty): 1 - the highest confidence of any
    object; an image without any object scores 1 (the model is sure of nothing there).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    s = np.asarray(object_score, dtype=np.float64)
    counts = np.diff(offsets)
    n = len(counts)
    has = counts > 0
    starts = offsets[:-1][has]
    mean = np.full(n, np.nan)
    low = np.full(n, np.nan)
    high = np.zeros(n)
    if len(s):
        mean[has] = np.add.reduceat(s, starts) / counts[has]
        low[has] = np.minimum.reduceat(s, starts)
        high[has] = np.maximum.reduceat(s, starts)
    return {
        "object_count": counts.astype(np.float64),
        "mean_confidence": mean,
        "min_confidence": low,
        "objectness_least_confidence": 1.0 - high,
    }


def predicted_class(columns: Columns) -> np.ndarray:
    """Category position per sample (-1: none): the class, or for detection the class of the most confident object."""
    a = columns.arrays
    if columns.schema.type == CLASSIFICATION:
        return a["category"].astype(np.int64)
    offsets, s = a["offsets"], a["object_score"]
    counts = np.diff(offsets)
    out = np.full(len(columns), -1, dtype=np.int64)
    if len(s):
        owner = np.repeat(np.arange(len(columns)), counts)
        order = np.lexsort((-np.arange(len(s)), s, owner))  # per sample by score; ties: the first object
        last = order[offsets[1:][counts > 0] - 1]
        out[counts > 0] = a["object_category"][last]
    return out


def scores(columns: Columns) -> dict[str, np.ndarray]:
    """Every score of the task, one float per sample (NaN = not defined for that sample)."""
    a = columns.arrays
    if columns.schema.type == CLASSIFICATION:
        if columns.schema.is_labels:
            return {}
        return classification_scores(a["probabilities"], a["score"])
    result = detection_scores(a["offsets"], a["object_score"])
    if columns.schema.is_labels:
        return {"object_count": result["object_count"]}
    return result


# --- reading and writing -------------------------------------------------------------------------


def parse_stream(lines: Iterable[bytes | str], *, task: str | None = None, source: str = "line") -> Columns:
    """Parse an upload stream: a header line {"schema", "is_labels"}, then one sample per line."""
    builder = None
    for number, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                raise PredictionError(f"{source} {number}: not UTF-8") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_reject_constant)
        except ValueError as exc:
            raise PredictionError(f"{source} {number}: not valid JSON ({exc})") from None
        if builder is None:
            if not isinstance(obj, Mapping) or "schema" not in obj:
                raise PredictionError(f"{source} {number}: the first line must be {{'schema': ..., 'is_labels': ...}}")
            schema = dict(obj["schema"]) if isinstance(obj["schema"], Mapping) else obj["schema"]
            if isinstance(schema, dict) and "is_labels" in obj:
                schema["is_labels"] = obj["is_labels"]
            builder = Builder(parse_schema(schema, task))
            continue
        builder.add(obj, f"{source} {number}")
    if builder is None:
        raise PredictionError(f"{source} 1: empty upload; the first line must be {{'schema': ...}}")
    return builder.finish()


def parse_document(doc: Any, *, task: str | None = None) -> Columns:
    """Parse a JSON upload: {"schema": {...}, "is_labels": false, "predictions": [{"file_name", "predictions"}]}."""
    if not isinstance(doc, Mapping) or "schema" not in doc or not isinstance(doc.get("predictions"), list):
        raise PredictionError("body: must be an object with 'schema' and a 'predictions' list")
    schema = dict(doc["schema"]) if isinstance(doc["schema"], Mapping) else doc["schema"]
    if isinstance(schema, dict) and "is_labels" in doc:
        schema["is_labels"] = doc["is_labels"]
    builder = Builder(parse_schema(schema, task))
    for i, record in enumerate(doc["predictions"]):
        builder.add(record, f"predictions[{i}]")
    return builder.finish()


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON (NaN and Infinity are not allowed)")


def load_schema(path: str | os.PathLike, task: str | None = None) -> Schema:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (OSError, ValueError) as exc:
        raise PredictionError(f"{path}: cannot read the schema ({exc})") from None
    return parse_schema(obj, task, where=str(path))


def iter_prediction_files(input_dir: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """(path, record) for every per-image JSON under a Lightly task folder (schema.json skipped), sorted."""
    root = Path(input_dir)
    if not root.is_dir():
        raise PredictionError(f"{input_dir}: not a folder")
    for path in sorted(root.rglob("*.json")):
        if path.name == "schema.json" and path.parent == root:
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
        except (OSError, ValueError) as exc:
            raise PredictionError(f"{path}: not valid JSON ({exc})") from None
        yield str(path.relative_to(root)), record


def records_from_arrays(
    file_names: Sequence[str], probabilities: np.ndarray, category_ids: Sequence[int] | None = None
) -> Iterator[dict]:
    """Classification records from an (n x C) probability array (columns in category id order)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(file_names):
        raise PredictionError(f"probabilities: expected shape ({len(file_names)}, C), got {p.shape}")
    ids = list(range(p.shape[1])) if category_ids is None else list(category_ids)
    top = p.argmax(axis=1)
    for name, row, t in zip(file_names, p.tolist(), top.tolist(), strict=True):
        yield {
            "file_name": name,
            "predictions": [{"category_id": ids[t], "score": row[t], "probabilities": row}],
        }


def header_line(schema: Schema) -> bytes:
    return json.dumps({"schema": schema.as_dict(), "is_labels": schema.is_labels}).encode() + b"\n"


def record_line(record: Mapping) -> bytes:
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode() + b"\n"
