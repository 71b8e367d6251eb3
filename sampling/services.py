"""Sampling runs: checking a request, running it on a worker, writing its importance scores.

A run goes queued -> running -> succeeded | failed | cancelled.

Claiming. A worker takes a run with one conditional UPDATE (queued, or running with a heartbeat
older than WINNOW_RUN_STALE_SECONDS) that sets a fresh claim token and counts the attempt; it goes
on only if that UPDATE changed one row. Every later write of the attempt (progress, heartbeat,
scores, final status) is conditional on the token, so an attempt that lost the run cannot clobber
the one that took it over. While it works, a heartbeat thread refreshes `heartbeat_at`. Tasks are
acknowledged late, so a worker killed mid-run hands the message to another worker; that delivery
finds the run "running" with a stale heartbeat and reclaims it (or, if the heartbeat is still fresh,
retries after WINNOW_RUN_STALE_SECONDS). After WINNOW_RUN_MAX_ATTEMPTS claims the run is failed
with a readable error instead. A database error that escapes a task (its message would be acknowledged
with the run still "running") retries the task with backoff (sampling/tasks.py).

Scores. One row per effective candidate (candidates minus preselected), rank 1 = most important,
written in one transaction together with the final status: old rows deleted, new ones streamed
with Postgres COPY (bulk_create on SQLite). A killed worker's transaction rolls back, so a run
never has half its scores.

Scale-out. A coreset run over more than WINNOW_SHARD_THRESHOLD candidates, with more than one
shard (WINNOW_SAMPLING_SHARDS, or the run's `shards` parameter, which forces it), runs as a Celery
chord: each shard task picks n_samples greedy k-center centers among its strided share of the
candidates (`shard_centers`), and the merge task runs greedy k-center over the union of the
shards' picks (`merge_centers`; two-round distributed k-center, Malkomes et al. 2015). Scores in
that mode: the n_samples merge picks rank first, in merge order, each scoring its distance to the
selected set (preselected + earlier merge picks) when picked; every other candidate scores its
distance to the preselected samples and the merge picks, capped just below the last pick so the
picks stay on top. The true covering radius of the picks (which the cap can hide) is computed
separately and reported in the run's `summary`.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from celery import chord
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, TextField, Value, When
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Least
from django.utils import timezone

from curation import storage
from curation.errors import DomainError
from curation.metadata import path_error
from curation.models import Dataset, Embedding, FieldType, MetadataField, PredictionTask, Sample, Tag
from sampling.models import FINISHED, ImportanceScore, RunStatus, SamplingRun
from sampling.samplers import (
    STRATEGIES,
    Cancelled,
    SamplerError,
    SelectionInput,
    merge_centers,
    ranking,
    select,
    shard_centers,
    shard_split,
)
from sampling.samplers.base import Monitor
from sampling.samplers.kcenter import KCenter
from sampling.samplers.strategies import PARAM_KEYS
from sampling.samplers.strategies import check_request as check_grammar
from winnow.celery import task
from winnow.client.predictions import DEFAULT_SCORE
from winnow.client.predictions import PREFIX as PREDICTIONS

log = logging.getLogger(__name__)

MAX_SHARDS = 64
NUMERIC_TYPES = {FieldType.INT, FieldType.FLOAT}
CATEGORICAL_TYPES = {FieldType.CATEGORICAL_STRING, FieldType.CATEGORICAL_INT, FieldType.BOOLEAN}
PROGRESS_EVERY_S = 0.5
CANCEL_POLL_S = 0.5
SCORE_BATCH = 5000
CHECKED = "_checked"  # key of a request check_request returned: "single" (one `strategy`) or "list" (`strategies`)


class InvalidRun(DomainError):
    """A run request that cannot be queued; `field` names the request key at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message, field)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class RunFinished(Exception):
    """The run cannot be cancelled: it already finished."""


class LostClaim(Exception):
    """Another attempt took the run over (or it was cancelled as abandoned); this attempt stops quietly."""


# ---- the request ---------------------------------------------------------------------------------


@contextmanager
def _as_invalid_run():
    """The grammar's SamplerError, naming the request key, as this service's DomainError."""
    try:
        yield
    except SamplerError as exc:
        raise InvalidRun(exc.field or "strategies", exc.message) from None


def check_request(data: dict) -> dict:
    """A run request in the strategy grammar (sampling.samplers.strategies), with `strategies` as the checked list
    and the top-level parameters of a single `strategy` moved into it. Raises InvalidRun. The API's serializer
    calls this once; prepare_run then checks what needs the dataset."""
    with _as_invalid_run():
        strategies = check_grammar(data)
    checked = {k: v for k, v in data.items() if k != "strategy" and k not in PARAM_KEYS}
    checked["strategies"] = strategies
    checked[CHECKED] = "list" if data.get("strategies") is not None else "single"
    return checked


def _where(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _task_field(spec: dict, prefix: str, task_types: dict[str, str]) -> dict:
    """The prediction task a strategy names (the grammar checked the keys) as the metadata field it stands for."""
    if "task" not in spec and "score" not in spec:
        return spec
    spec = dict(spec)
    name, score = spec.pop("task", None), spec.pop("score", None)
    if name not in task_types:
        raise InvalidRun(_where(prefix, "task"), f"no prediction task {name!r} in this dataset")
    if spec["strategy"] == "balance":
        spec["field"] = f"{PREDICTIONS}.{name}.predicted_class"
    else:
        score = score if score is not None else DEFAULT_SCORE[task_types[name]]
        if path_error(score):
            raise InvalidRun(_where(prefix, "score"), "must be the name of a score of the task")
        spec["field"] = f"{PREDICTIONS}.{name}.{score}"
    return spec


def _tag(dataset, data: dict, key: str) -> Tag | None:
    tag_id = data.get(key)
    if tag_id is None:
        return None
    tag = Tag.objects.filter(dataset=dataset, pk=str(tag_id)).only("id", "bitmask").first()
    if tag is None:
        raise InvalidRun(key, f"no tag with id {tag_id!r} in this dataset")
    return tag


def _check_field(dataset, spec: dict, prefix: str) -> None:
    """The metadata field must exist in the dataset (configured, or present in some sample) with a usable type."""
    path, name = spec["field"], spec["strategy"]
    where = _where(prefix, "field")
    configured = MetadataField.objects.filter(dataset=dataset, path=path).values_list("type", flat=True).first()
    if configured is None:
        present = Sample.objects.filter(dataset=dataset).annotate(_v=_json_path(path)).filter(_v__isnull=False)
        if not present.exists():
            raise InvalidRun(where, f"no sample of this dataset has the metadata field {path!r}")
        return
    numeric_needed = name in ("weights", "uncertainty", "coral") or (name == "threshold" and spec["operation"] != "eq")
    if numeric_needed and configured not in NUMERIC_TYPES:
        raise InvalidRun(where, f"the {name} strategy needs a numeric field; {path!r} is {configured}")
    if name == "balance" and configured not in CATEGORICAL_TYPES:
        raise InvalidRun(where, f"the balance strategy needs a categorical field; {path!r} is {configured}")


def _json_path(path: str):
    expr = "metadata"
    for segment in path.split("."):
        expr = KeyTransform(segment, expr)
    return expr


def _sample_limit(dataset_id: str, rows: int | None) -> int:
    """One past the last idx a run may score: next_idx, capped by the embedding's rows. Samples are numbered
    densely 0..next_idx-1 (next_idx moves in the transaction that inserts them) and never deleted one by one."""
    limit = Dataset.objects.filter(pk=dataset_id).values_list("next_idx", flat=True).first() or 0
    return limit if rows is None else min(limit, rows)


def _tag_within(tag: Tag, limit: int) -> np.ndarray:
    """The tag's idx below `limit` (_sample_limit), ascending int64, from its bits alone."""
    idx = tag.indices().astype(np.int64, copy=False)
    return idx[idx < limit]


def _candidates(limit: int, input_tag: Tag | None, preselected_tag: Tag | None) -> tuple[np.ndarray, np.ndarray]:
    """(candidates, preselected) as sorted idx arrays below `limit` (_sample_limit): every sample, or the input
    tag's, from the tags' bits alone (no sample row is read)."""
    cand = _tag_within(input_tag, limit) if input_tag is not None else np.arange(limit, dtype=np.int64)
    pre = _tag_within(preselected_tag, limit) if preselected_tag is not None else np.zeros(0, dtype=np.int64)
    return cand, pre


def _candidate_count(dataset_id: str, rows: int | None, input_tag: Tag | None, preselected_tag: Tag | None) -> int:
    """How many samples a run would score (what _candidates leaves, less the preselected), from next_idx and the
    tags' bits alone: samples are numbered densely 0..next_idx-1 and never deleted one by one (initial-tag's bits),
    so the request reads no sample row whatever the dataset's size (at 10M, reading every idx took minutes)."""
    limit = _sample_limit(dataset_id, rows)
    cand = _tag_within(input_tag, limit) if input_tag is not None else None  # never arange(limit) in a request
    if preselected_tag is None:
        return limit if cand is None else len(cand)
    pre = _tag_within(preselected_tag, limit)
    if cand is None:
        return limit - len(pre)
    return len(np.setdiff1d(cand, pre, assume_unique=True))


def prepare_run(dataset, data: dict) -> dict:
    """Check a run request against the dataset (nothing is written); return the SamplingRun fields. Raises InvalidRun.

    `data` is what check_request returned (a plain dict is checked by it first). What is left here needs the
    dataset: prediction tasks, metadata fields, the embedding, tags, and n_samples against the candidates. The
    request's types (n_samples an integer >= 1, seed, shards) are the API serializer's; Python callers pass
    sound values.
    """
    if CHECKED not in data:
        data = check_request(data)
    task_types = dict(PredictionTask.objects.filter(dataset=dataset).values_list("name", "type"))
    strategies, prefixes = [], []
    for i, spec in enumerate(data["strategies"]):
        prefix = "" if data[CHECKED] == "single" else f"strategies[{i}]"
        spec = _task_field(spec, prefix, task_types)
        if "field" in spec:
            problem = path_error(spec["field"])
            if problem:
                raise InvalidRun(_where(prefix, "field"), f"a metadata field path {problem}")
        strategies.append(spec)
        prefixes.append(prefix)
    names = [s["strategy"] for s in strategies]
    n_samples, min_distance = data.get("n_samples"), data.get("min_distance")
    for spec, prefix in zip(strategies, prefixes):
        if "field" in spec:
            _check_field(dataset, spec, prefix)

    needs_embedding = [n for n in names if STRATEGIES[n]["embeddings"]]
    embedding = None
    if data.get("embedding") is not None:
        embedding = Embedding.objects.filter(dataset=dataset, pk=str(data["embedding"])).only("id", "count").first()
        if embedding is None:
            raise InvalidRun("embedding", f"no embedding with id {data['embedding']!r} in this dataset")
    elif needs_embedding:
        raise InvalidRun("embedding", f"required by the {needs_embedding[0]} strategy")

    input_tag = _tag(dataset, data, "input_tag")
    preselected_tag = _tag(dataset, data, "preselected_tag")
    query_tag = _tag(dataset, data, "query_tag")
    if "similarity" in names and query_tag is None:
        raise InvalidRun("query_tag", "required by the similarity strategy")
    if query_tag is not None and "similarity" not in names:
        raise InvalidRun("query_tag", "only the similarity strategy uses a query tag")

    rows = embedding.count if (embedding is not None and needs_embedding) else None
    if query_tag is not None and not np.any(query_tag.indices() < rows):
        raise InvalidRun("query_tag", "none of its samples has a row in the embedding")
    m = _candidate_count(dataset.pk, rows, input_tag, preselected_tag)
    if m == 0:
        culprit = (
            "input_tag"
            if input_tag
            else "preselected_tag"
            if preselected_tag
            else "embedding"
            if rows is not None
            else "dataset"
        )
        raise InvalidRun(culprit, "leaves no candidate samples to score")
    if n_samples is not None and n_samples > m:
        raise InvalidRun("n_samples", f"must be between 1 and {m}, the number of candidate samples")

    shards = data.get("shards")
    if shards is not None and shards > 1:
        if names != ["coreset"] or min_distance is not None:
            raise InvalidRun("shards", "only a coreset run (without min_distance) can be split into shards")
        if not 1 <= shards <= min(MAX_SHARDS, m):
            raise InvalidRun("shards", f"must be between 1 and {min(MAX_SHARDS, m)}")

    return {
        "name": data["name"],
        "embedding": embedding,
        "strategy": "+".join(names)[:32],
        "parameters": {
            "strategies": strategies,
            "seed": int(data.get("seed") or 0),
            "shards": shards,
            # Kept so that a deleted tag fails the run instead of silently widening it (the FK becomes NULL).
            "input_tag": input_tag.id if input_tag else None,
            "preselected_tag": preselected_tag.id if preselected_tag else None,
            "query_tag": query_tag.id if query_tag else None,
        },
        "n_samples": n_samples,
        "min_distance": min_distance,
        "input_tag": input_tag,
        "preselected_tag": preselected_tag,
        "query_tag": query_tag,
    }


NOT_SENT = "Waiting for the task broker (unreachable when the run was created); sent as soon as it is back."


def create_run(dataset, data: dict, creator) -> SamplingRun:
    """Check the request, create the queued run and enqueue it once the transaction commits.

    The run's task_id is set only once the broker took the message: a run whose task_id is empty is queued but
    not sent (the broker was down), says so in `error`, and `unsent_runs` finds it for the sweeper.
    """
    fields = prepare_run(dataset, data)
    with transaction.atomic():
        run = SamplingRun.objects.create(dataset=dataset, creator=creator, task_id="", **fields)
        transaction.on_commit(lambda: send_run(run))
    return run


def send_run(run: SamplingRun) -> bool:
    """Publish the run's task (bounded retries, settings CELERY_TASK_PUBLISH_RETRY_POLICY); False if the broker
    did not take it, with the run left queued, unsent and saying so."""
    task_id = uuid.uuid4().hex
    try:
        task("sampling.run_sampling").apply_async(args=[run.id], task_id=task_id)
    except Exception as exc:  # any transport error: the run must not vanish, and the request must not fail
        log.warning("could not send sampling run %s to the broker: %s", run.id, exc)
        SamplingRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED, task_id="").update(error=NOT_SENT)
        run.error = NOT_SENT
        return False
    mark_sent(run.pk, task_id)
    run.task_id = task_id
    return True


def mark_sent(run_id: str, task_id: str) -> None:
    """The broker took a message for the run: it is no longer unsent."""
    SamplingRun.objects.filter(pk=run_id, task_id="").update(
        task_id=task_id,
        error=Case(When(error=NOT_SENT, then=Value("")), default=F("error"), output_field=TextField()),
    )


def unsent_runs(min_age_seconds: float = 5) -> list[SamplingRun]:
    """Queued runs the broker never took (task_id empty), older than a few seconds (their on_commit is done)."""
    cutoff = timezone.now() - timedelta(seconds=min_age_seconds)
    return list(SamplingRun.objects.filter(status=RunStatus.QUEUED, task_id="", created_at__lt=cutoff).only("id"))


def cancel_run(run: SamplingRun) -> SamplingRun:
    """Queued (or abandoned) -> cancelled at once; running -> cancel requested, the worker stops at its next poll."""
    now = timezone.now()
    runs = SamplingRun.objects.filter(pk=run.pk)
    done = {"status": RunStatus.CANCELLED, "cancel_requested": True, "finished_at": now}
    changed = (
        runs.filter(status=RunStatus.QUEUED).update(**done)
        or runs.filter(status=RunStatus.RUNNING, heartbeat_at__lt=_stale_cutoff()).update(**done)  # abandoned
        or runs.filter(status=RunStatus.RUNNING).update(cancel_requested=True)
    )
    run.refresh_from_db()
    if not changed:
        raise RunFinished(f"the run already finished ({run.status})")
    return run


# ---- claiming ------------------------------------------------------------------------------------

CLAIMED, BUSY, DONE = "claimed", "busy", "done"


def _stale_cutoff():
    return timezone.now() - timedelta(seconds=settings.WINNOW_RUN_STALE_SECONDS)


def claim_run(run_id: str) -> tuple[str, str | None]:
    """(CLAIMED, token) if this attempt now holds the run; (BUSY, None) if a live attempt holds it;
    (DONE, None) if there is nothing to do (finished, missing, or just failed/cancelled here)."""
    now = timezone.now()
    token = uuid.uuid4().hex
    claimable = Q(status=RunStatus.QUEUED) | Q(status=RunStatus.RUNNING, heartbeat_at__lt=_stale_cutoff())
    changed = (
        SamplingRun.objects.filter(pk=run_id, cancel_requested=False, attempts__lt=settings.WINNOW_RUN_MAX_ATTEMPTS)
        .filter(claimable)
        .update(
            status=RunStatus.RUNNING,
            claim=token,
            attempts=F("attempts") + 1,
            heartbeat_at=now,
            started_at=now,
            finished_at=None,
            progress=0,
            error="",
        )
    )
    if changed == 1:
        return CLAIMED, token
    run = (
        SamplingRun.objects.filter(pk=run_id)
        .only("status", "claim", "attempts", "cancel_requested", "heartbeat_at")
        .first()
    )
    if run is None or run.status in FINISHED:
        return DONE, None
    abandoned = run.status == RunStatus.QUEUED or run.heartbeat_at is None or run.heartbeat_at < _stale_cutoff()
    if not abandoned:
        return BUSY, None
    # Abandoned and not claimable: cancelled meanwhile, or out of attempts.
    if run.cancel_requested:
        values = {"status": RunStatus.CANCELLED, "finished_at": now}
    else:
        values = {
            "status": RunStatus.FAILED,
            "finished_at": now,
            "error": (
                f"Stopped after {run.attempts} attempts: the worker running this run stopped without finishing "
                "(killed, or out of memory). Try a smaller n_samples or more worker memory."
            ),
        }
    SamplingRun.objects.filter(pk=run_id, claim=run.claim, status=run.status).update(**values)
    return DONE, None


def abandoned_runs(include_lost_queued: bool = True) -> list[str]:
    """Runs nothing is working on: "running" with a heartbeat older than the staleness (its worker
    died; the broker would hand the message out again only after the visibility timeout), or "queued" for
    longer than the visibility timeout (the message was lost, e.g. a broker restarted without persistence)."""
    now = timezone.now()
    # One staleness: the heartbeat beats four times per staleness, so a run silent that long has no worker.
    dead = now - timedelta(seconds=settings.WINNOW_RUN_STALE_SECONDS)
    lost = now - timedelta(seconds=settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"])
    abandoned = Q(status=RunStatus.RUNNING, heartbeat_at__lt=dead)
    if include_lost_queued:
        abandoned |= Q(status=RunStatus.QUEUED, created_at__lt=lost)
    return list(SamplingRun.objects.filter(abandoned).values_list("id", flat=True))


class Attempt:
    """One claimed attempt: throttled progress, cancel polls and a heartbeat, all conditional on the claim."""

    def __init__(self, run_id: str, token: str, *, heartbeat: bool):
        self.run_id, self.token = run_id, token
        self.lo, self.hi = 0, 100
        self._last_pct, self._last_write, self._next_poll = -1, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = None
        if heartbeat:
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self):
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _mine(self):
        return SamplingRun.objects.filter(pk=self.run_id, claim=self.token, status=RunStatus.RUNNING)

    def _beat(self) -> None:
        interval = max(0.5, settings.WINNOW_RUN_STALE_SECONDS / 4)
        try:
            while not self._stop.wait(interval):
                try:
                    self._mine().update(heartbeat_at=timezone.now())
                except Exception:  # one failed beat (a dropped connection) must not end the heartbeats
                    log.warning("heartbeat of sampling run %s failed", self.run_id, exc_info=True)
                    connection.close()  # the next beat reconnects
        finally:
            connection.close()  # this thread's own connection

    def phase(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def progress(self, fraction: float) -> None:
        pct = int(self.lo + (self.hi - self.lo) * min(max(fraction, 0.0), 1.0))
        now = time.monotonic()
        if pct > self._last_pct and now - self._last_write >= PROGRESS_EVERY_S:
            self._last_pct, self._last_write = pct, now
            if not self._mine().update(progress=pct, heartbeat_at=timezone.now()):
                raise LostClaim(self.run_id)

    def add_progress(self, points: int, *, cap: int = 100) -> None:
        # Capped: a shard delivered again (its worker killed) adds its points twice.
        if not self._mine().update(progress=Least(F("progress") + points, cap), heartbeat_at=timezone.now()):
            raise LostClaim(self.run_id)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now < self._next_poll:
            return False
        self._next_poll = now + CANCEL_POLL_S
        state = SamplingRun.objects.filter(pk=self.run_id).values_list("claim", "status", "cancel_requested").first()
        if state is None or state[0] != self.token or state[1] != RunStatus.RUNNING:
            raise LostClaim(self.run_id)
        return bool(state[2])

    def end(self, status: str, error: str = "") -> bool:
        return bool(self._mine().update(status=status, error=error[:4000], finished_at=timezone.now()))


# ---- inputs --------------------------------------------------------------------------------------

ID_CHUNK = 100_000
# Ids of fewer than 1/ID_SUBSET_SHARE of the samples are read row by row (by index), more from the whole id map.
ID_SUBSET_SHARE = 4


def sample_id_map(dataset_id: str, only: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(idx ascending as int64, sample id of each) as two numpy arrays; no Python object per sample. With `only`
    (ascending idx), the samples among them (PostgreSQL reads only those rows).

    On PostgreSQL one binary COPY streams the rows and numpy reads them in 4 MiB pieces; the ids
    come back as fixed-width bytes when every id is ASCII of one width (public ids are). Otherwise
    (SQLite, or ids of mixed width) a chunked values_list builds a str array.
    """
    if connection.vendor == "postgresql":
        found = _copy_id_map(dataset_id, only)
        if found is not None:
            return found
    idx_parts, id_parts = [], []
    rows = Sample.objects.filter(dataset_id=dataset_id).order_by("idx").values_list("idx", "id")
    chunk: list = []
    for row in rows.iterator(chunk_size=20_000):
        chunk.append(row)
        if len(chunk) == ID_CHUNK:
            idx_parts.append(np.array([r[0] for r in chunk], dtype=np.int64))
            id_parts.append(np.array([r[1] for r in chunk], dtype=str))
            chunk = []
    if chunk or not idx_parts:
        idx_parts.append(np.array([r[0] for r in chunk], dtype=np.int64))
        id_parts.append(np.array([r[1] for r in chunk], dtype=str))
    idx, ids = np.concatenate(idx_parts), np.concatenate(id_parts)
    if only is not None:
        keep = np.isin(idx, only)
        idx, ids = idx[keep], ids[keep]
    return idx, ids


def sample_ids_of(dataset_id: str, idx: np.ndarray, size: int) -> np.ndarray:
    """The ids of the samples `idx` (ascending) as a numpy array aligned with it: read from the whole id map when
    `idx` is much of the dataset's `size` samples, else only their rows. SamplerError for an idx without a sample."""
    only = None if len(idx) * ID_SUBSET_SHARE >= size else idx
    map_idx, map_ids = sample_id_map(dataset_id, only)
    at = np.minimum(np.searchsorted(map_idx, idx), max(len(map_idx) - 1, 0))
    lost = np.flatnonzero(map_idx[at] != idx) if len(map_idx) else np.arange(len(idx))
    if len(lost):
        raise SamplerError(f"sample idx {int(idx[lost[0]])} has no sample any more ({len(lost)} in all)")
    return map_ids[at]


class _IdMapSink:
    """File-like target of COPY ... TO STDOUT (FORMAT binary): parses fixed-layout rows as they stream in.

    Every row is (int16 2, int32 4, int32 idx, int32 w, w bytes of id); w is read from the first
    row. A row of another layout (an id of another width) sets `irregular` and the rest is skipped.
    """

    HEADER = 19  # "PGCOPY\n\xff\r\n\0", int32 flags, int32 header extension length (0)

    def __init__(self):
        self.pending = bytearray()
        self.header_done = False
        self.row = None
        self.idx_parts, self.id_parts = [], []
        self.irregular = False

    def write(self, data) -> int:
        if not self.irregular:
            self.pending += data
            if len(self.pending) >= 1 << 22:
                self._parse()
        return len(data)

    def _parse(self) -> None:
        buf = self.pending
        if not self.header_done:
            if len(buf) < self.HEADER:
                return
            if bytes(buf[:11]) != b"PGCOPY\n\xff\r\n\x00":
                raise ValueError("sample id map: not a binary COPY stream")
            del buf[: self.HEADER]
            self.header_done = True
        if self.row is None:
            if len(buf) < 14:
                return
            if struct.unpack(">h", buf[:2])[0] == -1:  # the trailer: no rows
                del buf[:2]
                return
            width = struct.unpack(">i", buf[10:14])[0]
            if width < 0:
                self.irregular = True
                return
            self.row = np.dtype(
                [("nfields", ">i2"), ("idx_len", ">i4"), ("idx", ">i4"), ("id_len", ">i4"), ("id", f"S{width}")]
            )
        size = self.row.itemsize
        whole = len(buf) // size
        if whole == 0:
            return
        rows = np.frombuffer(bytes(buf[: whole * size]), dtype=self.row)
        del buf[: whole * size]
        width = self.row["id"].itemsize
        if not ((rows["nfields"] == 2).all() and (rows["idx_len"] == 4).all() and (rows["id_len"] == width).all()):
            self.irregular = True
            return
        ids = rows["id"].copy()
        if (ids.view(np.uint8) >= 128).any():  # not ASCII: let the str path decode it
            self.irregular = True
            return
        self.idx_parts.append(rows["idx"].astype(np.int64))
        self.id_parts.append(ids)

    def finish(self) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.irregular:
            self._parse()
        if self.irregular or bytes(self.pending) not in (b"\xff\xff", b""):
            return None
        if not self.idx_parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype="S1")
        return np.concatenate(self.idx_parts), np.concatenate(self.id_parts)


def _copy_id_map(dataset_id: str, only: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    table = Sample._meta.db_table
    sink = _IdMapSink()
    where, params = "dataset_id = %s", [dataset_id]
    if only is not None:
        # The idx as one int4[] literal (ints we made, no Python object per sample): `{1,2,3}`.
        where += " AND idx = ANY(%s::int4[])"
        params.append("{" + ",".join(np.asarray(only, dtype=np.int64).astype(str)) + "}")
    with connection.cursor() as cursor:
        sql = cursor.cursor.mogrify(
            f"COPY (SELECT idx, id FROM {table} WHERE {where} ORDER BY idx) TO STDOUT WITH (FORMAT binary)", params
        )
        cursor.cursor.copy_expert(sql.decode(), sink, size=1 << 20)
    return sink.finish()


@dataclass
class Inputs:
    selection: SelectionInput
    eff: np.ndarray  # effective candidates: candidates minus preselected, ascending idx
    dataset_id: str
    size: int  # the samples considered: idx 0..size-1

    def ids_for(self, idx: np.ndarray) -> np.ndarray:
        """The sample ids of `idx` (ascending), read when the scores are written: the only sample rows a run reads."""
        return sample_ids_of(self.dataset_id, idx, self.size)


def load_inputs(run: SamplingRun, *, with_matrix: bool = True) -> Inputs:
    """What a run scores, from next_idx and the tags' bits as numpy arrays; no sample row is read (metadata
    strategies read their field's values)."""
    params = run.parameters or {}
    for key in ("input_tag", "preselected_tag", "query_tag"):
        if params.get(key) and getattr(run, f"{key}_id") is None:
            raise SamplerError(f"{key}: the tag was deleted after the run was queued")
    strategies = params.get("strategies") or []
    needs_x = any(STRATEGIES[s["strategy"]]["embeddings"] for s in strategies)
    if needs_x and run.embedding_id is None:
        raise SamplerError("embedding: the embedding was deleted after the run was queued")
    embedding = run.embedding if needs_x else None
    rows = embedding.count if embedding is not None else None
    n = _sample_limit(run.dataset_id, rows)
    cand, pre = _candidates(n, run.input_tag, run.preselected_tag)
    metadata = {}
    for spec in strategies:
        if "field" in spec and spec["field"] not in metadata:
            metadata[spec["field"]] = _metadata_column(run.dataset_id, spec["field"], n)
    query = run.query_tag.indices() if run.query_tag_id else None
    if query is not None and rows is not None:
        query = query[query < rows]
    selection = SelectionInput(embeddings=None, candidates=cand, preselected=pre, metadata=metadata, query=query)
    inputs = Inputs(selection, np.setdiff1d(cand, pre, assume_unique=True), run.dataset_id, n)
    if with_matrix:
        attach_matrix(run, inputs)
    return inputs


def attach_matrix(run: SamplingRun, inputs: Inputs) -> None:
    """Map the embedding matrix if the run's strategies use it (random and metadata-only runs never touch it)."""
    strategies = (run.parameters or {}).get("strategies") or []
    if not any(STRATEGIES[s["strategy"]]["embeddings"] for s in strategies):
        return
    X = storage.open_matrix(run.embedding.matrix_key)  # read-only memory map: pages are read as used
    rows = run.embedding.count
    if X.ndim != 2 or len(X) < rows:
        raise SamplerError(f"embedding: its matrix has shape {X.shape}, expected {rows} rows")
    inputs.selection.embeddings = X


def _metadata_column(dataset_id: str, path: str, n: int) -> np.ndarray:
    """One value per idx (None where missing), the configured fallback filled in; object array of length n."""
    fallback = MetadataField.objects.filter(dataset_id=dataset_id, path=path).values_list("fallback", flat=True).first()
    col = np.full(n, fallback, dtype=object)
    values = (
        Sample.objects.filter(dataset_id=dataset_id, idx__lt=n)
        .annotate(_v=_json_path(path))
        .filter(_v__isnull=False)
        .values_list("idx", "_v")
    )
    for idx, value in values.iterator(chunk_size=20_000):
        if value is not None and not isinstance(value, (dict, list)):
            col[idx] = value
    return col


# ---- execution -----------------------------------------------------------------------------------


def _plain_coreset(run: SamplingRun) -> bool:
    names = [spec["strategy"] for spec in (run.parameters or {}).get("strategies", [])]
    return names == ["coreset"] and run.min_distance is None and run.n_samples is not None


def shard_count(run: SamplingRun, candidates: int) -> int:
    """How many shards a run is split into (1: not split). An explicit `shards` parameter forces it."""
    if not _plain_coreset(run):
        return 1
    asked = (run.parameters or {}).get("shards")
    if asked:
        return min(int(asked), candidates)
    return settings.WINNOW_SAMPLING_SHARDS if candidates > settings.WINNOW_SHARD_THRESHOLD else 1


def _readable(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _guarded(run_id: str, attempt: Attempt, work) -> str:
    """Run `work()` and turn every way it can end into the run's final status."""
    try:
        return work()
    except Cancelled:
        attempt.end(RunStatus.CANCELLED)
        return RunStatus.CANCELLED
    except LostClaim:
        log.info("sampling run %s: this attempt lost its claim; stopping", run_id)
        return DONE
    except SamplerError as exc:
        attempt.end(RunStatus.FAILED, str(exc))
        return RunStatus.FAILED
    except Exception as exc:
        log.exception("sampling run %s failed", run_id)
        attempt.end(RunStatus.FAILED, f"Unexpected error: {_readable(exc)}")
        return RunStatus.FAILED


def execute_run(run_id: str, *, eager: bool) -> str:
    """The task body: claim the run, then score it here or fan it out to shard tasks."""
    outcome, token = claim_run(run_id)
    if outcome != CLAIMED:
        return outcome
    return run_claimed(run_id, token, eager=eager)


def run_claimed(run_id: str, token: str, *, eager: bool) -> str:
    """Execute a run whose claim this attempt holds; returns the status it ended in."""
    with Attempt(run_id, token, heartbeat=not eager) as attempt:
        return _guarded(run_id, attempt, lambda: _execute(run_id, token, attempt))


def _execute(run_id: str, token: str, attempt: Attempt) -> str:
    run = SamplingRun.objects.select_related("embedding", "input_tag", "preselected_tag", "query_tag").get(pk=run_id)
    attempt.phase(0, 3)
    inputs = load_inputs(run, with_matrix=False)
    n_shards = shard_count(run, len(inputs.eff))
    if n_shards > 1:
        return _dispatch_shards(run, token, n_shards, attempt)
    attach_matrix(run, inputs)
    attempt.progress(1.0)
    attempt.phase(3, 95)
    scores = select(
        inputs.selection,
        run.parameters["strategies"],
        n_samples=run.n_samples,
        min_distance=run.min_distance,
        seed=run.parameters.get("seed", 0),
        progress=attempt.progress,
        should_stop=attempt.should_stop,
    )
    order = ranking(scores, inputs.eff)
    summary = {"candidates": len(inputs.eff), "mode": "single"}
    if _plain_coreset(run):
        # Scores past the top n_samples are the final distances to the picks: the largest is the radius.
        k = run.n_samples
        summary["covering_radius"] = float(scores[order[k]]) if len(order) > k else 0.0
    write_scores(run_id, token, inputs.ids_for(inputs.eff), scores, order, summary=summary)
    return RunStatus.SUCCEEDED


# ---- scale-out -----------------------------------------------------------------------------------

SHARD_SPAN = (5, 85)  # progress points the shard round covers; the merge covers the rest


def _dispatch_shards(run: SamplingRun, token: str, n_shards: int, attempt: Attempt) -> str:
    attempt.phase(0, SHARD_SPAN[0])
    attempt.progress(1.0)
    header = [task("sampling.reduce_shard").s(run.id, token, i, n_shards) for i in range(n_shards)]
    chord(header)(task("sampling.merge_shards").s(run.id, token))
    return "dispatched"  # the merge task finishes the run


def _claimed(run_id: str, token: str) -> SamplingRun | None:
    return (
        SamplingRun.objects.select_related("embedding", "input_tag", "preselected_tag", "query_tag")
        .filter(pk=run_id, claim=token, status=RunStatus.RUNNING)
        .first()
    )


def reduce_shard(run_id: str, token: str, shard: int, n_shards: int, *, eager: bool) -> dict | None:
    """Round one on one shard: the shard's greedy k-center picks as sample idx (None if the run is no longer ours)."""
    run = _claimed(run_id, token)
    if run is None:
        return None
    with Attempt(run_id, token, heartbeat=not eager) as attempt:

        def work():
            if attempt.should_stop():
                raise Cancelled("cancelled")
            inputs = load_inputs(run)
            sel = inputs.selection
            rows = shard_split(inputs.eff, n_shards)[shard]
            picks = (
                shard_centers(sel.embeddings, rows, run.n_samples, sel.preselected, seed=run.parameters.get("seed", 0))
                if len(rows)
                else np.zeros(0, np.int64)
            )
            attempt.add_progress((SHARD_SPAN[1] - SHARD_SPAN[0]) // n_shards, cap=SHARD_SPAN[1])
            return {"shard": shard, "rows": picks.tolist(), "worker": f"{socket.gethostname()}:{os.getpid()}"}

        result = _guarded(run_id, attempt, work)
    return result if isinstance(result, dict) else None


def merge_shards(results: list, run_id: str, token: str, *, eager: bool) -> str:
    """Round two: greedy k-center over the union of the shards' picks, then the scores of every candidate."""
    if any(r is None for r in results):
        return DONE  # a shard failed or was cancelled; it already recorded why
    run = _claimed(run_id, token)
    if run is None:
        return DONE
    with Attempt(run_id, token, heartbeat=not eager) as attempt:

        def work():
            inputs = load_inputs(run)
            sel = inputs.selection
            union = np.sort(np.concatenate([np.asarray(r["rows"], dtype=np.int64) for r in results]))
            attempt.phase(SHARD_SPAN[1], 95)
            monitor = Monitor(attempt.progress, attempt.should_stop)
            scores = merge_centers(
                sel.embeddings,
                union,
                run.n_samples,
                sel.preselected,
                inputs.eff,
                seed=run.parameters.get("seed", 0),
                monitor=monitor,
            )
            order = ranking(scores, inputs.eff)
            top = inputs.eff[order[: run.n_samples]]
            centers = np.concatenate([sel.preselected, top])
            # The scores cap the others just below the last pick; the real radius needs their uncapped distances.
            radius = float(KCenter(sel.embeddings, inputs.eff, centers).final_distances().max())
            summary = {
                "candidates": len(inputs.eff),
                "mode": "sharded",
                "shards": len(results),
                "union": len(union),
                "workers": sorted({r["worker"] for r in results}),
                "covering_radius": radius,
            }
            write_scores(run_id, token, inputs.ids_for(inputs.eff), scores, order, summary=summary)
            return RunStatus.SUCCEEDED

        return _guarded(run_id, attempt, work)


# ---- writing scores ------------------------------------------------------------------------------


def write_scores(
    run_id: str,
    token: str | None,
    sample_ids: np.ndarray,
    scores: np.ndarray,
    order: np.ndarray | None = None,
    *,
    summary: dict | None = None,
) -> int:
    """Replace the run's scores and mark it succeeded, in one transaction.

    `sample_ids[i]` is the sample of `scores[i]`; `order` the ranking (positions, best first).
    With a `token`, only the attempt holding the claim (and not asked to cancel) may finish the
    run; otherwise this raises LostClaim or Cancelled and nothing is written.
    """
    scores = np.asarray(scores, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        # NaN would also break the scores page: strict JSON has no NaN.
        raise SamplerError(
            f"scores: {len(bad)} of {len(scores)} are NaN or infinite (first at position {bad[0]}); nothing was written"
        )
    if order is None:
        order = np.argsort(-scores, kind="stable")
    m = len(scores)
    with transaction.atomic():
        runs = SamplingRun.objects.filter(pk=run_id)
        if token is not None:
            runs = runs.filter(claim=token, status=RunStatus.RUNNING)
        # The UPDATE first: it locks the run row, so a concurrent cancel waits and then sees "succeeded".
        changed = runs.filter(cancel_requested=False).update(
            status=RunStatus.SUCCEEDED,
            progress=100,
            score_count=m,
            finished_at=timezone.now(),
            error="",
            summary=summary or {},
        )
        if changed != 1:
            if token is not None and SamplingRun.objects.filter(pk=run_id, claim=token, cancel_requested=True).exists():
                raise Cancelled("cancelled before the scores were written")
            raise LostClaim(run_id)
        ImportanceScore.objects.filter(run_id=run_id).delete()
        ranked_ids = _id_array(sample_ids)[order]
        ranked_scores = scores[order]
        if connection.vendor == "postgresql":
            _copy_scores(run_id, ranked_ids, ranked_scores)
        else:
            _bulk_scores(run_id, ranked_ids, ranked_scores)
    return m


def _bulk_scores(run_id: str, ranked_ids: np.ndarray, ranked_scores: np.ndarray) -> None:
    for start in range(0, len(ranked_ids), SCORE_BATCH):
        ImportanceScore.objects.bulk_create(
            [
                ImportanceScore(run_id=run_id, sample_id=_as_str(sid), rank=start + i + 1, score=float(score))
                for i, (sid, score) in enumerate(
                    zip(
                        ranked_ids[start : start + SCORE_BATCH].tolist(),
                        ranked_scores[start : start + SCORE_BATCH].tolist(),
                    )
                )
            ]
        )


def _id_array(sample_ids) -> np.ndarray:
    """The ids as a numpy array without a Python object per id where they come as one (bytes or str array)."""
    if isinstance(sample_ids, np.ndarray) and sample_ids.dtype.kind in "SU":
        return sample_ids
    return np.asarray(sample_ids, dtype=object)


def _copy_scores(run_id: str, ranked_ids: np.ndarray, ranked_scores: np.ndarray) -> None:
    """COPY the rows (run_id, sample_id, rank, score); binary when every id is ASCII of one width (public ids are)."""
    table = ImportanceScore._meta.db_table
    columns = "run_id, sample_id, rank, score"
    id_bytes = _fixed_width(run_id, ranked_ids)
    if id_bytes is not None:
        stream = _BinaryScoreRows(run_id.encode(), id_bytes, ranked_scores)
        sql = f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT binary)"
    else:
        stream = _text_copy(run_id, [_as_str(i) for i in ranked_ids.tolist()], ranked_scores)
        sql = f"COPY {table} ({columns}) FROM STDIN"
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(sql, stream, size=1 << 20)


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fixed_width(run_id: str, ids: np.ndarray) -> np.ndarray | None:
    """The ids as bytes if they and the run id are all ASCII of one width (public ids are), else None."""
    width = len(run_id)
    if not run_id.isascii():
        return None
    if ids.dtype.kind == "S":  # the worker's id map: already bytes; only the width is checked
        wide = ids
        if (wide.view(np.uint8) >= 128).any() if wide.dtype.itemsize else False:
            return None
    else:
        try:
            wide = np.array(ids.tolist() if ids.dtype == object else ids, dtype=f"S{width + 1}")
        except UnicodeEncodeError:
            return None
    if len(ids) == 0:
        return np.zeros(0, dtype=f"S{width}")
    if wide.dtype.itemsize < width:
        return None
    lengths = np.char.str_len(wide)
    if lengths.min() != width or lengths.max() != width:
        return None
    return wide.astype(f"S{width}", copy=False)


class _BinaryScoreRows:
    """A binary COPY stream read in pieces: every row has the same layout (two fixed-width ids, int4,
    float8), so numpy builds ROWS_PER_PIECE rows at a time; memory stays a few MB whatever the count.

    Rows go in rank order, so the inserts into the (run, rank) index are sequential.
    """

    ROWS_PER_PIECE = 65_536

    def __init__(self, run_id: bytes, id_bytes: np.ndarray, ranked_scores: np.ndarray):
        w = len(run_id)
        self.row = np.dtype(
            [
                ("nfields", ">i2"),
                ("run_len", ">i4"),
                ("run", f"S{w}"),
                ("sample_len", ">i4"),
                ("sample", f"S{w}"),
                ("rank_len", ">i4"),
                ("rank", ">i4"),
                ("score_len", ">i4"),
                ("score", ">f8"),
            ]
        )
        self.run_id, self.ids, self.scores = run_id, id_bytes, ranked_scores
        self.next_row = 0
        self.pending = memoryview(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        self.trailer_sent = False

    def _piece(self) -> bytes:
        start, stop = self.next_row, min(self.next_row + self.ROWS_PER_PIECE, len(self.ids))
        rows = np.empty(stop - start, dtype=self.row)
        w = len(self.run_id)
        rows["nfields"], rows["run_len"], rows["run"] = 4, w, self.run_id
        rows["sample_len"], rows["sample"] = w, self.ids[start:stop]
        rows["rank_len"], rows["rank"] = 4, np.arange(start + 1, stop + 1)
        rows["score_len"], rows["score"] = 8, self.scores[start:stop]
        self.next_row = stop
        return rows.tobytes()

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        while len(self.pending) == 0:
            if self.next_row < len(self.ids):
                self.pending = memoryview(self._piece())
            elif not self.trailer_sent:
                self.pending, self.trailer_sent = memoryview(struct.pack(">h", -1)), True
            else:
                return b""
        out, self.pending = self.pending[:size], self.pending[size:]
        return bytes(out)


def _text_copy(run_id: str, ids: list[str], ranked_scores: np.ndarray) -> io.StringIO:
    # Public ids never need COPY escaping; other ids are escaped the way COPY's text format wants.
    esc = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
    lines = "".join(
        f"{run_id.translate(esc)}\t{sid.translate(esc)}\t{rank}\t{score!r}\n"
        for rank, (sid, score) in enumerate(zip(ids, ranked_scores.tolist()), 1)
    )
    return io.StringIO(lines)
