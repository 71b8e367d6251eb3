"""Prediction tasks: store a whole task's predictions at once, and the scores computed from them.

An upload's body goes to storage first; it is parsed as a stream (JSON lines) by the request when small and
by a worker when large (winnow.client.predictions holds the parser the client uses too). Nothing is stored
until everything is checked: the format, that every file name is a sample, that boxes lie inside images of
known size. Then, in one transaction, the task row points at the new arrays and every sample's scores at
`predictions.<task>.<score>` in its metadata are replaced (the old task's keys removed, the new ones set by
one UPDATE ... FROM a staged table).

Why scores in metadata: the Configurator's proposals, Analyze & Filter, Explore's sort (and its partial
indexes) and the weights/threshold/balance samplers all read metadata by dot path; a score stored there is
a field like any other, with no second code path in each of them.
"""

from __future__ import annotations

import io
import json
import math
import uuid
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from curation import columns as column_store
from curation import storage
from curation.errors import DomainError
from curation.models import Dataset, FieldType, MetadataField, PredictionTask, PredictionUpload, Sample
from winnow.celery import task as celery_task
from winnow.client import predictions as fmt

PREFIX = fmt.PREFIX
LOOKUP_BATCH = 5000
COPY_BUFFER = 1 << 20
MAX_LISTED = 10
READ_CHUNK = 1 << 20


class PredictionsInvalid(DomainError):
    """An upload that cannot be stored; the message names the file (or line) and field at fault."""

    def __init__(self, message: str, field: str = "predictions"):
        super().__init__(message, field)


# --- receiving -----------------------------------------------------------------------------------


def receive(dataset: Dataset, task_name: str, stream, *, kind: str, creator) -> PredictionUpload:
    """Copy a request body to storage as a queued upload (no parsing yet). `kind`: json | jsonl."""
    problem = fmt.task_name_error(task_name)
    if problem:
        raise PredictionsInvalid(f"the task name {task_name!r} {problem}", "task")
    upload_id = uuid.uuid4().hex[:24]
    key = storage.prediction_upload_key(dataset.pk, upload_id, kind)
    path = storage.spool_path(f".{kind}")
    size = 0
    try:
        with open(path, "wb") as handle:
            while chunk := stream.read(READ_CHUNK):
                size += len(chunk)
                if size > settings.WINNOW_PREDICTIONS_MAX_BYTES:
                    raise PredictionsInvalid(
                        f"the upload is larger than {settings.WINNOW_PREDICTIONS_MAX_BYTES} bytes", "body"
                    )
                handle.write(chunk)
        if size == 0:
            raise PredictionsInvalid("the upload is empty", "body")
        storage.save_file(key, path)
    finally:
        path.unlink(missing_ok=True)
    return PredictionUpload.objects.create(
        id=upload_id, dataset=dataset, task_name=task_name, kind=kind, body_key=key, size=size, creator=creator
    )


def enqueue(upload: PredictionUpload) -> None:
    transaction.on_commit(lambda: celery_task("curation.process_prediction_upload").delay(upload.id))


# --- processing ----------------------------------------------------------------------------------


def _stale_cutoff():
    return timezone.now() - timedelta(seconds=settings.WINNOW_RUN_STALE_SECONDS)


def _claim(upload_id: str) -> PredictionUpload | None:
    """Take a queued upload, or one whose worker went silent (died): exactly one attempt gets it."""
    claimable = Q(status="queued") | Q(status="processing", updated_at__lt=_stale_cutoff())
    changed = PredictionUpload.objects.filter(claimable, pk=upload_id).update(
        status="processing", updated_at=timezone.now()
    )
    return PredictionUpload.objects.select_related("dataset").get(pk=upload_id) if changed else None


def abandoned_uploads() -> list[str]:
    """Uploads a worker died on (silent for WINNOW_RUN_STALE_SECONDS) or whose message was lost (queued as long)."""
    return list(
        PredictionUpload.objects.filter(status__in=("queued", "processing"), updated_at__lt=_stale_cutoff())
        .order_by("created_at")
        .values_list("id", flat=True)[:100]
    )


def _progress(upload: PredictionUpload, fraction: float) -> None:
    PredictionUpload.objects.filter(pk=upload.pk).update(progress=round(fraction, 4), updated_at=timezone.now())


class _CountingLines:
    """Lines of a stored body, reporting the share read so far."""

    def __init__(self, handle, size: int, report):
        self.handle, self.size, self.report, self.read = handle, max(size, 1), report, 0

    def __iter__(self):
        last = 0
        for line in self.handle:  # Django's File yields lines, reading a chunk at a time
            self.read += len(line)
            if self.read - last > 32 * READ_CHUNK:
                last = self.read
                self.report(0.6 * self.read / self.size)
            yield line


def process(upload_id: str) -> str:
    """Parse, check and store a queued upload; returns its final status (failed uploads store nothing)."""
    upload = _claim(upload_id)
    if upload is None:
        return "skipped"
    try:
        result = _store(upload)
    except (PredictionsInvalid, fmt.PredictionError) as exc:
        PredictionUpload.objects.filter(pk=upload.pk).update(status="failed", error=str(exc), updated_at=timezone.now())
        storage.delete_keys([upload.body_key])
        return "failed"
    except Exception as exc:
        PredictionUpload.objects.filter(pk=upload.pk).update(
            status="failed", error=f"internal error: {type(exc).__name__}", updated_at=timezone.now()
        )
        raise
    storage.delete_keys([upload.body_key])
    PredictionUpload.objects.filter(pk=upload.pk).update(
        status="succeeded", progress=1.0, result=result, updated_at=timezone.now()
    )
    return "succeeded"


def _parse(upload: PredictionUpload) -> fmt.Columns:
    with storage.open_file(upload.body_key) as handle:
        if upload.kind == "json":
            try:
                doc = json.load(handle, parse_constant=fmt._reject_constant)
            except (ValueError, UnicodeDecodeError) as exc:
                raise PredictionsInvalid(f"body: not valid JSON ({exc})", "body") from None
            return fmt.parse_document(doc, task=upload.task_name)
        lines = _CountingLines(handle, upload.size, lambda f: _progress(upload, f))
        return fmt.parse_stream(lines, task=upload.task_name)


def _lookup(dataset: Dataset, names: list[str], beat=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(idx, width, height) per file name (idx -1: not a sample). PostgreSQL: the names are COPYed into a temp
    table and joined with the samples in one query; elsewhere a bounded IN list per query."""
    idx = np.full(len(names), -1, dtype=np.int64)
    width = np.zeros(len(names), dtype=np.int64)
    height = np.zeros(len(names), dtype=np.int64)
    if connection.vendor == "postgresql":
        table = Sample._meta.db_table
        escape = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
        buffer = io.StringIO("".join(f"{i}\t{name.translate(escape)}\n" for i, name in enumerate(names)))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE winnow_prediction_names (pos integer, file_name text) ON COMMIT DROP")
            cursor.cursor.copy_expert(
                "COPY winnow_prediction_names (pos, file_name) FROM STDIN", buffer, size=COPY_BUFFER
            )
            if beat is not None:
                beat(0.65)
            cursor.execute(
                f"SELECT n.pos, s.idx, COALESCE(s.width, 0), COALESCE(s.height, 0) FROM winnow_prediction_names AS n "
                f"JOIN {table} AS s ON s.dataset_id = %s AND s.file_name = n.file_name",
                [dataset.id],
            )
            while rows := cursor.fetchmany(50_000):
                found = np.asarray(rows, dtype=np.int64)
                idx[found[:, 0]], width[found[:, 0]], height[found[:, 0]] = found[:, 1], found[:, 2], found[:, 3]
            cursor.execute("DROP TABLE winnow_prediction_names")  # also when an outer transaction goes on
        return idx, width, height
    for start in range(0, len(names), LOOKUP_BATCH):
        chunk = names[start : start + LOOKUP_BATCH]
        pos = {name: start + i for i, name in enumerate(chunk)}
        rows = Sample.objects.filter(dataset=dataset, file_name__in=chunk).values_list(
            "file_name", "idx", "width", "height"
        )
        for name, i, w, h in rows.iterator(chunk_size=LOOKUP_BATCH):
            p = pos[name]
            idx[p], width[p], height[p] = i, w or 0, h or 0
    return idx, width, height


def _store(upload: PredictionUpload) -> dict:
    dataset = upload.dataset
    columns = _parse(upload)
    _progress(upload, 0.6)
    idx, width, height = _lookup(dataset, columns.file_names, lambda f: _progress(upload, f))
    missing = np.flatnonzero(idx < 0)
    if len(missing):
        shown = ", ".join(repr(columns.file_names[i]) for i in missing[:MAX_LISTED])
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise PredictionsInvalid(
            f"file_name: {len(missing)} file name(s) are not samples of this dataset: {shown}{more}"
        )
    fmt.check_boxes(columns, width, height)
    _progress(upload, 0.7)
    scores = fmt.scores(columns)
    classes = fmt.predicted_class(columns)
    prefix = storage.prediction_arrays_prefix(dataset.pk, columns.schema.name, upload.id)
    sorted_idx, arrays = _by_idx(idx, columns)
    keys = [storage.save_matrix(f"{prefix}idx.npy", sorted_idx)]
    for name, array in arrays.items():
        keys.append(storage.save_matrix(f"{prefix}{name}.npy", array))
    _progress(upload, 0.8)
    try:
        with transaction.atomic():
            task, _ = PredictionTask.objects.select_for_update().get_or_create(
                dataset=dataset, name=columns.schema.name, defaults={"creator": upload.creator}
            )
            old_prefix = task.arrays_prefix
            _write_scores(dataset, task.name, idx, scores, classes, columns.schema)
            task.type = columns.schema.type
            task.categories = columns.schema.categories
            task.is_labels = columns.schema.is_labels
            task.count = len(columns)
            task.object_count = len(columns.arrays.get("object_score", ()))
            task.arrays_prefix = prefix
            task.save()
            _configure_fields(dataset, columns.schema)
    except Exception:
        storage.delete_keys(keys)
        raise
    if old_prefix and old_prefix != prefix:
        storage.delete_prefix(old_prefix)
    return {"task": task.id, "name": task.name, "samples": len(columns), "scores": sorted(scores) + ["predicted_class"]}


def _by_idx(idx: np.ndarray, columns: fmt.Columns) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The columns reordered by ascending sample idx, so one sample is found by a binary search of a memory map."""
    order = np.argsort(idx, kind="stable")
    a = columns.arrays
    if columns.schema.type == fmt.CLASSIFICATION:
        return idx[order], {name: array[order] for name, array in a.items()}
    counts = np.diff(a["offsets"])[order]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # Object k of the new order comes from its sample's old start plus its rank within the sample.
    take = np.repeat(a["offsets"][:-1][order], counts) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], counts))
    arrays = {"offsets": offsets, **{name: a[name][take] for name in ("object_category", "object_score", "boxes")}}
    return idx[order], arrays


def _configure_fields(dataset: Dataset, schema: fmt.Schema) -> None:
    """Configure the task's class and its default uncertainty score (if not yet configured), so that Explore's
    filters and sort, Analyze & Filter and the map offer them at once; their sort indexes build on a worker."""
    wanted = [("label" if schema.is_labels else "predicted_class", FieldType.CATEGORICAL_STRING)]
    if not schema.is_labels:
        wanted.append((fmt.DEFAULT_SCORE[schema.type], FieldType.FLOAT))
    for key, field_type in wanted:
        field, created = MetadataField.objects.get_or_create(
            dataset=dataset, path=f"{PREFIX}.{schema.name}.{key}",
            defaults={"type": field_type, "display_name": f"{schema.name}: {key.replace('_', ' ')}"},
        )  # fmt: skip
        if created:
            column_store.fields_changed(dataset.id)
            dataset_id, field_id = dataset.id, field.pk
            transaction.on_commit(
                lambda d=dataset_id, f=field_id: celery_task("curation.sync_sort_indexes").delay(d, f), robust=True
            )


def _sample_values(scores: dict[str, np.ndarray], classes: np.ndarray, schema: fmt.Schema):
    """The JSON object each sample gets at predictions.<task>, as text lines (NaN scores left out)."""
    names = [c["name"] for c in schema.categories]
    key = "label" if schema.is_labels else "predicted_class"
    keys = list(scores)
    cols = [np.round(scores[k], 6).tolist() for k in keys]
    for i, cls in enumerate(classes.tolist()):
        value = {k: c[i] for k, c in zip(keys, cols, strict=True) if not math.isnan(c[i])}
        if cls >= 0:
            value[key] = names[cls]
        yield json.dumps(value, separators=(",", ":"))


def _write_scores(dataset, task_name, idx, scores, classes, schema) -> None:
    """Replace predictions.<task> in every sample's metadata: removed where it was, set where the upload has it."""
    table = Sample._meta.db_table
    values = _sample_values(scores, classes, schema)
    if connection.vendor != "postgresql":
        by_idx = dict(zip(idx.tolist(), values, strict=True))
        changed = []
        for sample in Sample.objects.filter(dataset=dataset).only("id", "idx", "metadata"):
            meta = dict(sample.metadata or {})
            preds = dict(meta.get(PREFIX) or {})
            had = preds.pop(task_name, None) is not None
            if sample.idx in by_idx:
                preds[task_name] = json.loads(by_idx[sample.idx])
            elif not had:
                continue
            meta[PREFIX] = preds
            sample.metadata = meta
            changed.append(sample)
        Sample.objects.bulk_update(changed, ["metadata"], batch_size=500)
        column_store.metadata_changed(dataset.pk)
        return
    with connection.cursor() as cursor:
        # Every rewritten row is a new tuple in each index of the sample table (its GIN index over metadata and
        # the sort indexes too): write each sample at most once, and not at all when its value is unchanged.
        cursor.execute("SET LOCAL work_mem = '256MB'")  # the joins below hash a whole task
        cursor.execute("CREATE TEMP TABLE winnow_staged_predictions (idx integer, value jsonb) ON COMMIT DROP")
        buffer = io.StringIO()
        for i, line in zip(idx.tolist(), values, strict=True):
            buffer.write(f"{i}\t{line.replace(chr(92), chr(92) * 2)}\n")
        buffer.seek(0)
        cursor.cursor.copy_expert("COPY winnow_staged_predictions (idx, value) FROM STDIN", buffer, size=COPY_BUFFER)
        cursor.execute("ANALYZE winnow_staged_predictions")  # a temp table has no statistics: the planner guesses
        # The task's key goes only from samples this upload leaves out; the others get their new value below.
        cursor.execute(
            f"UPDATE {table} AS s SET metadata = s.metadata #- ARRAY[%s, %s] "
            f"WHERE s.dataset_id = %s AND s.metadata -> %s ? %s "
            f"AND NOT EXISTS (SELECT 1 FROM winnow_staged_predictions AS v WHERE v.idx = s.idx)",
            [PREFIX, task_name, dataset.id, PREFIX, task_name],
        )
        cursor.execute(
            f"UPDATE {table} AS s SET metadata = jsonb_set("
            f"  CASE WHEN jsonb_typeof(s.metadata -> %s) = 'object' THEN s.metadata "
            f"       ELSE COALESCE(s.metadata, '{{}}'::jsonb) || jsonb_build_object(%s, '{{}}'::jsonb) END,"
            f"  ARRAY[%s, %s], v.value) "
            f"FROM winnow_staged_predictions AS v WHERE s.dataset_id = %s AND s.idx = v.idx "
            f"AND s.metadata #> ARRAY[%s, %s] IS DISTINCT FROM v.value",
            [PREFIX, PREFIX, PREFIX, task_name, dataset.id, PREFIX, task_name],
        )
        cursor.execute("DROP TABLE winnow_staged_predictions")
    column_store.metadata_changed(dataset.pk)  # the scores are metadata: the column store rebuilds from them


def delete_task(task: PredictionTask) -> None:
    """Remove a task and its scores from every sample's metadata."""
    empty = np.zeros(0, dtype=np.int64)
    schema = fmt.Schema(task.name, task.type, task.categories, task.is_labels)
    with transaction.atomic():
        _write_scores(task.dataset, task.name, empty, {}, empty, schema)
        prefix = task.arrays_prefix
        task.delete()
    if prefix:
        storage.delete_prefix(prefix)


# --- reading -------------------------------------------------------------------------------------


class TaskReader:
    """One task's predictions by sample idx, from its memory-mapped columns (ordered by idx: a binary search)."""

    def __init__(self, task: PredictionTask):
        self.task = task
        self.ids = [c["id"] for c in task.categories]
        self.names = {c["id"]: c["name"] for c in task.categories}
        self.idx = storage.open_matrix(f"{task.arrays_prefix}idx.npy") if task.arrays_prefix else np.zeros(0, np.int64)
        self._arrays: dict[str, np.ndarray] = {}

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = storage.open_matrix(f"{self.task.arrays_prefix}{name}.npy")
        return self._arrays[name]

    def get(self, idx: int, metadata: dict | None = None) -> list[dict] | None:
        """The sample's singletons (None: none for this task): those sent one sample at a time (kept in its
        metadata) win over the columns of the last whole-task upload."""
        preds = (metadata or {}).get(PREFIX)
        own = preds.get(self.task.name) if isinstance(preds, dict) else None
        if isinstance(own, dict) and isinstance(own.get("singletons"), list):
            keys = ("category_id", "score", "probabilities", "bbox")
            return [{k: v for k, v in item.items() if k in keys} for item in own["singletons"]]
        pos = int(np.searchsorted(self.idx, idx))
        if pos >= len(self.idx) or int(self.idx[pos]) != idx:
            return None
        if self.task.type == fmt.CLASSIFICATION:
            item = {
                "category_id": self.ids[int(self._array("category")[pos])],
                "score": round(float(self._array("score")[pos]), 6),
            }
            probs = self._array("probabilities")[pos]
            if not np.isnan(probs).any():
                item["probabilities"] = [round(float(p), 6) for p in probs]
            return [item]
        offsets = self._array("offsets")
        lo, hi = int(offsets[pos]), int(offsets[pos + 1])
        cats, scores = self._array("object_category")[lo:hi], self._array("object_score")[lo:hi]
        boxes = self._array("boxes")[lo:hi]
        return [
            {"category_id": self.ids[int(c)], "score": round(float(s), 6), "bbox": [round(float(v), 3) for v in b]}
            for c, s, b in zip(cats, scores, boxes, strict=True)
        ]


def sample_predictions(task: PredictionTask, idx: int, metadata: dict | None = None) -> list[dict] | None:
    """One sample's predictions of a task as Lightly singletons, or None."""
    return TaskReader(task).get(idx, metadata)


def label_studio_predictions(dataset: Dataset):
    """(idx, width, height, metadata) -> Label Studio pre-annotations of every prediction task (not labels):
    `choices` for classification, `rectanglelabels` in percent of the image for detection (when its size is
    known). `from_name` is the task's name and `to_name` is `image`, for the labeling config to match."""
    readers = [TaskReader(t) for t in dataset.prediction_tasks.filter(is_labels=False)]

    def convert(idx: int, width, height, metadata) -> list[dict]:
        out = []
        for reader in readers:
            preds = reader.get(idx, metadata)
            if preds is None:
                continue
            name, result = reader.task.name, []
            for k, p in enumerate(preds):
                label = reader.names.get(p["category_id"], str(p["category_id"]))
                if "bbox" not in p:
                    result.append({"id": f"{name}-{k}", "from_name": name, "to_name": "image", "type": "choices",
                                   "value": {"choices": [label]}, "score": p["score"]})  # fmt: skip
                elif width and height:
                    x, y, w, h = p["bbox"]
                    value = {"x": 100 * x / width, "y": 100 * y / height, "width": 100 * w / width,
                             "height": 100 * h / height, "rotation": 0, "rectanglelabels": [label]}  # fmt: skip
                    result.append({"id": f"{name}-{k}", "from_name": name, "to_name": "image", "type": "rectanglelabels",
                                   "original_width": width, "original_height": height, "image_rotation": 0,
                                   "value": value, "score": p["score"]})  # fmt: skip
            scores = [p["score"] for p in preds]
            out.append({"model_version": name, "score": round(sum(scores) / len(scores), 6) if scores else 0.0,
                        "result": result})  # fmt: skip
        return out

    return convert


# --- one sample, one schema, one tag's scores at a time (Lightly's client protocol) ----------------


def set_schema(dataset: Dataset, schema: fmt.Schema, creator) -> PredictionTask:
    """Create a task, or change its schema; a changed type or categories drops the predictions stored so far."""
    with transaction.atomic():
        task, created = PredictionTask.objects.select_for_update().get_or_create(
            dataset=dataset,
            name=schema.name,
            defaults={"type": schema.type, "categories": schema.categories, "is_labels": schema.is_labels,
                      "creator": creator},
        )  # fmt: skip
        if created or (task.type, task.categories) == (schema.type, schema.categories):
            return task
        empty = np.zeros(0, dtype=np.int64)
        _write_scores(dataset, task.name, empty, {}, empty, schema)
        old_prefix = task.arrays_prefix
        task.type, task.categories, task.is_labels = schema.type, schema.categories, schema.is_labels
        task.count, task.object_count, task.arrays_prefix = 0, 0, ""
        task.save()
    if old_prefix:
        storage.delete_prefix(old_prefix)
    return task


def set_sample_predictions(task: PredictionTask, sample: Sample, singletons: list) -> None:
    """Replace one sample's predictions of a task; its scores and singletons go to its metadata at once.

    (A whole-task upload keeps predictions as columns; one sample at a time, as Lightly's client sends them,
    they are kept with the sample, under `predictions.<task>.singletons`, a list no field reads.)
    """
    schema = fmt.Schema(
        task.name, task.type, task.categories, task.is_labels, {c["id"]: i for i, c in enumerate(task.categories)}
    )
    builder = fmt.Builder(schema)
    builder.add({"file_name": sample.file_name, "predictions": singletons}, sample.file_name)
    columns = builder.finish()
    fmt.check_boxes(columns, np.array([sample.width or 0]), np.array([sample.height or 0]))
    scores = fmt.scores(columns)
    value = json.loads(next(_sample_values(scores, fmt.predicted_class(columns), schema)))
    value["singletons"] = singletons
    with transaction.atomic():
        locked = Sample.objects.select_for_update().only("id", "metadata").get(pk=sample.pk)
        meta = dict(locked.metadata or {})
        preds = dict(meta.get(PREFIX) or {}) if isinstance(meta.get(PREFIX), dict) else {}
        new = task.name not in preds
        preds[task.name] = value
        meta[PREFIX] = preds
        Sample.objects.filter(pk=sample.pk).update(metadata=meta)
        if new:
            PredictionTask.objects.filter(pk=task.pk).update(count=models.F("count") + 1, updated_at=timezone.now())
        column_store.metadata_changed(task.dataset_id)


def upload_tag_scores(dataset: Dataset, idx: np.ndarray, score_type: str, scores: list) -> None:
    """Active-learning scores of a tag's samples (ascending idx), at predictions._scores.<score_type>: one UPDATE."""
    field = fmt.UPLOADED_SCORES
    if len(scores) != len(idx):
        raise PredictionsInvalid(f"scores: {len(scores)} values for a tag of {len(idx)} samples", "scores")
    values = np.asarray(scores, dtype=np.float64) if all(fmt._is_number(s) for s in scores) else None
    if values is None:
        raise PredictionsInvalid("scores: every score must be a finite number", "scores")
    table = Sample._meta.db_table
    with transaction.atomic():
        if connection.vendor != "postgresql":
            for sample in Sample.objects.filter(dataset=dataset, idx__in=idx.tolist()).only("id", "idx", "metadata"):
                meta = dict(sample.metadata or {})
                preds = dict(meta.get(PREFIX) or {})
                preds[field] = {**(preds.get(field) or {}), score_type: float(values[np.searchsorted(idx, sample.idx)])}
                meta[PREFIX] = preds
                Sample.objects.filter(pk=sample.pk).update(metadata=meta)
            column_store.metadata_changed(dataset.pk)
            return
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS s SET metadata = jsonb_set(jsonb_set("
                f"  CASE WHEN jsonb_typeof(s.metadata -> %s) = 'object' THEN s.metadata "
                f"       ELSE COALESCE(s.metadata, '{{}}'::jsonb) || jsonb_build_object(%s, '{{}}'::jsonb) END,"
                f"  ARRAY[%s, %s], COALESCE(s.metadata -> %s -> %s, '{{}}'::jsonb)),"
                f"  ARRAY[%s, %s, %s], to_jsonb(v.score)) "
                f"FROM (SELECT unnest(%s::integer[]) AS idx, unnest(%s::double precision[]) AS score) AS v "
                f"WHERE s.dataset_id = %s AND s.idx = v.idx",
                [PREFIX, PREFIX, PREFIX, field, PREFIX, field, PREFIX, field, score_type,
                 idx.tolist(), values.tolist(), dataset.id],
            )  # fmt: skip
        column_store.metadata_changed(dataset.pk)


def uploaded_score_types(dataset: Dataset) -> list[str]:
    """The score types uploaded per tag (Lightly's upload_scores) in this dataset."""
    if connection.vendor != "postgresql":
        found = set()
        for meta in Sample.objects.filter(dataset=dataset).values_list("metadata", flat=True):
            found.update(((meta or {}).get(PREFIX) or {}).get(fmt.UPLOADED_SCORES) or {})
        return sorted(found)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT jsonb_object_keys(metadata -> %s -> %s) FROM {Sample._meta.db_table} "
            f"WHERE dataset_id = %s AND jsonb_typeof(metadata -> %s -> %s) = 'object'",
            [PREFIX, fmt.UPLOADED_SCORES, dataset.id, PREFIX, fmt.UPLOADED_SCORES],
        )
        return sorted(row[0] for row in cursor.fetchall())
