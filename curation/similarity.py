"""Similarity search ("more like this") and near-duplicate groups over a stored embedding.

A search ranks the samples by their distance to a query: one sample, a tag (its centroid, or each member:
the distance to the nearest one), a vector, or an image file embedded with the dataset's built-in embedder.
A duplicate run groups samples with the same content hash (sha256, computed at upload) and samples within a
distance threshold of each other (suggested from the data when not given).

Both read the memory-mapped matrix in blocks (curation.knn), so memory stays bounded whatever the dataset's
size. A search over at most INLINE_MAX_ELEMENTS matrix entries runs inside the request: one pass of BLAS over
at most 16 MiB, a few milliseconds, with no Python work per sample. Anything larger, and every duplicate run
(every pair up to 20,000 samples, k-means cells above: see knn.threshold_pairs), runs on a worker, with progress. Results go to storage as .npz next to the embedding:
`idx` and `distance` ranked (search); `members`, `offsets`, `distance`, `keep_first`, `keep_largest`, `exact`
`keep_sharpest` (duplicates: the groups, largest first, each member's distance to the group's first sample, and the
sample each keep rule keeps; sharpest = highest variance of the Laplacian of its thumbnail).
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from PIL import Image

from curation import bitmask, embeddings, images, knn, storage, tagging
from curation.errors import DomainError
from curation.models import Dataset, Embedding, Sample, SimilarityRun, Tag, TagOrigin
from winnow.celery import task
from winnow.client import embedder

log = logging.getLogger(__name__)

SEARCH, DUPLICATES = "search", "duplicates"
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
DEFAULT_K = 100
MAX_K = 10_000
MAX_EACH_MEMBERS = 10_000  # "each member" queries; a larger tag is searched by its centroid
INLINE_MAX_ELEMENTS = 1 << 22  # n x d entries searched in the request (16 MiB of float32)
MAX_IMAGE_BYTES = 32 << 20
QUERY_MODES = ("centroid", "each")
KEEP_RULES = ("first", "largest", "sharpest")
TAG_MODES = ("keepers", "deduplicated", "duplicates")
STALE_FACTOR = 10  # a running run that reported nothing for this many stale periods died with its worker


class SimilarityError(DomainError):
    """Bad input for a search or duplicate run; `field` names the request field at fault."""


# --- reading the embedding ----------------------------------------------------------------------------


def covered_mask(embedding: Embedding, n: int) -> np.ndarray:
    """Bool over the matrix rows: True where the row holds a sample's vector."""
    key = embeddings.rows_key(embedding)
    mask = np.zeros(n, dtype=bool)
    if storage.default_storage.exists(key):
        with np.load(io.BytesIO(storage.read_bytes(key)), allow_pickle=False) as rows:
            idx = rows["idx"]
        mask[idx[idx < n]] = True
    else:  # stored without a row list: every row up to its count
        mask[: min(n, embedding.count)] = True
    return mask


def _tag_mask(dataset: Dataset, tag_id: str, n: int, field: str) -> np.ndarray:
    tag = Tag.objects.filter(dataset=dataset, pk=tag_id).first()
    if tag is None:
        raise SimilarityError(f"no tag with id {tag_id!r} in this dataset", field)
    return bitmask.to_bool(bytes(tag.bitmask), n)


def result_key(run: SimilarityRun) -> str:
    return storage.similarity_result_key(run.dataset_id, run.pk)


# --- creating runs --------------------------------------------------------------------------------------


def _check_common(dataset: Dataset, embedding: Embedding, metric: str, input_tag: str | None) -> None:
    if embedding.dataset_id != dataset.pk:
        raise SimilarityError(f"no embedding with id {embedding.pk!r} in this dataset", "embedding")
    if metric not in knn.METRICS:
        raise SimilarityError(f"must be one of {', '.join(knn.METRICS)}", "metric")
    if input_tag is not None and not Tag.objects.filter(dataset=dataset, pk=input_tag).exists():
        raise SimilarityError(f"no tag with id {input_tag!r} in this dataset", "input_tag")


def resolve_query(
    dataset: Dataset,
    embedding: Embedding,
    *,
    sample: str | None = None,
    tag: str | None = None,
    samples: list[str] | None = None,
    mode: str = "centroid",
    vector=None,
    image: bytes | None = None,
    image_name: str = "",
) -> dict:
    """The query of a search as stored in the run's params; exactly one of sample, tag, samples (an unsaved
    selection: its centroid or each member, like a tag), vector, image."""
    given = [
        name
        for name, value in (
            ("sample", sample),
            ("tag", tag),
            ("samples", samples),
            ("vector", vector),
            ("image", image),
        )
        if value
    ]
    if len(given) != 1:
        raise SimilarityError("give exactly one query: sample, tag, samples, vector or image", "query")
    if samples:
        if mode not in QUERY_MODES:
            raise SimilarityError(f"must be one of {', '.join(QUERY_MODES)}", "mode")
        ids = list(dict.fromkeys(samples))
        if len(ids) > MAX_EACH_MEMBERS:
            raise SimilarityError(f"at most {MAX_EACH_MEMBERS} samples: save a larger selection as a tag", "samples")
        rows = dict(Sample.objects.filter(dataset=dataset, pk__in=ids).values_list("id", "idx"))
        missing = [i for i in ids if i not in rows]
        if missing:
            raise SimilarityError(
                f"{len(missing)} of the samples are not in this dataset (first: {missing[0]!r})", "samples"
            )
        return {"kind": "samples", "idx": sorted(int(rows[i]) for i in ids), "mode": mode}
    if sample:
        row = Sample.objects.filter(dataset=dataset, pk=sample).values_list("idx", flat=True).first()
        if row is None:
            raise SimilarityError(f"no sample with id {sample!r} in this dataset", "sample")
        return {"kind": "sample", "sample": sample, "idx": int(row)}
    if tag:
        if mode not in QUERY_MODES:
            raise SimilarityError(f"must be one of {', '.join(QUERY_MODES)}", "mode")
        found = Tag.objects.filter(dataset=dataset, pk=tag).only("id", "count", "name").first()
        if found is None:
            raise SimilarityError(f"no tag with id {tag!r} in this dataset", "tag")
        if mode == "each" and found.count > MAX_EACH_MEMBERS:
            raise SimilarityError(
                f"the tag has {found.count} samples; 'each' searches at most {MAX_EACH_MEMBERS}: use 'centroid'", "mode"
            )
        return {"kind": "tag", "tag": tag, "mode": mode}
    if vector is not None and image is None:
        values = np.asarray(vector, dtype=np.float64) if isinstance(vector, list) else None
        if values is None or values.ndim != 1 or values.size != embedding.dimension:
            raise SimilarityError(
                f"must be a list of {embedding.dimension} numbers (the embedding's dimension)", "vector"
            )
        if not np.isfinite(values).all():
            raise SimilarityError("must hold finite numbers only", "vector")
        return {"kind": "vector", "vector": [float(v) for v in values]}
    return {"kind": "image", "name": image_name[:200], "vector": embed_image(embedding, image)}


def embed_image(embedding: Embedding, data: bytes) -> list[float]:
    """An image file's vector with the built-in embedder fitted for this embedding (as the dataset's thumbnails)."""
    if len(data) > MAX_IMAGE_BYTES:
        raise SimilarityError(f"the image is larger than {MAX_IMAGE_BYTES >> 20} MiB", "image")
    model = embeddings.load_model(embedding)
    if model is None:
        raise SimilarityError(
            f"the server cannot embed an image like the embedding {embedding.name!r} (it was uploaded, or its model "
            "is not installed here): embed the image yourself and send `vector`",
            "image",
        )
    try:
        processed = images.process_image(data)  # the same checks and thumbnail as an upload
    except images.ImageRejected as exc:
        raise SimilarityError(str(exc), "image") from None
    with Image.open(io.BytesIO(processed.thumbnail)) as thumb:
        array = embedder.to_array(thumb, model.image_size)
    return [float(v) for v in model.transform(array[None])[0]]


def _new_run(dataset, embedding, kind: str, params: dict, creator) -> SimilarityRun:
    return SimilarityRun.objects.create(dataset=dataset, embedding=embedding, kind=kind, params=params, creator=creator)


def create_search(
    dataset: Dataset,
    embedding: Embedding,
    query: dict,
    *,
    k: int = DEFAULT_K,
    metric: str = "euclidean",
    input_tag: str | None = None,
    exclude_query: bool = True,
    creator=None,
) -> SimilarityRun:
    """Record a search (query from `resolve_query`); run it now when small, else queue it for a worker."""
    _check_common(dataset, embedding, metric, input_tag)
    if not 1 <= k <= MAX_K:
        raise SimilarityError(f"must be between 1 and {MAX_K}", "k")
    params = {"query": query, "k": k, "metric": metric, "input_tag": input_tag, "exclude_query": exclude_query}
    run = _new_run(dataset, embedding, SEARCH, params, creator)
    if embedding.count * embedding.dimension <= INLINE_MAX_ELEMENTS:
        execute(run.pk)
        run.refresh_from_db()
    else:
        transaction.on_commit(lambda: _enqueue(run.pk), robust=True)
    return run


def create_duplicates(
    dataset: Dataset,
    embedding: Embedding,
    *,
    threshold: float | None = None,
    metric: str = "euclidean",
    input_tag: str | None = None,
    creator=None,
) -> SimilarityRun:
    """Queue a near-duplicate grouping (threshold None: the one suggested from the data)."""
    _check_common(dataset, embedding, metric, input_tag)
    if threshold is not None and not (np.isfinite(threshold) and threshold >= 0):
        raise SimilarityError("must be a finite number of at least 0", "threshold")
    params = {"threshold": threshold, "metric": metric, "input_tag": input_tag}
    run = _new_run(dataset, embedding, DUPLICATES, params, creator)
    transaction.on_commit(lambda: _enqueue(run.pk), robust=True)
    return run


def _enqueue(run_id: str) -> None:
    task("curation.run_similarity").delay(run_id)


# --- running ------------------------------------------------------------------------------------------


class _Progress:
    """Writes the run's progress (and so its heartbeat) at most every 2%, mapped into [lo, hi]."""

    def __init__(self, run_id: str, lo: float = 0.0, hi: float = 1.0):
        self.run_id, self.lo, self.hi, self.last = run_id, lo, hi, -1.0

    def span(self, lo: float, hi: float) -> _Progress:
        self.lo, self.hi = lo, hi
        return self

    def __call__(self, fraction: float) -> None:
        value = self.lo + (self.hi - self.lo) * min(1.0, max(0.0, fraction))
        if value - self.last >= 0.02:
            self.last = value
            SimilarityRun.objects.filter(pk=self.run_id).update(progress=round(value, 3), updated_at=timezone.now())


def execute(run_id: str) -> str | None:
    """Claim a queued run (or one whose worker went silent), run it, store its result; return its status."""
    stale = timezone.now() - timedelta(seconds=settings.WINNOW_RUN_STALE_SECONDS * STALE_FACTOR)
    claimed = SimilarityRun.objects.filter(pk=run_id, status=QUEUED).update(
        status=RUNNING, updated_at=timezone.now()
    ) or SimilarityRun.objects.filter(pk=run_id, status=RUNNING, updated_at__lt=stale).update(
        status=RUNNING, progress=0.0, updated_at=timezone.now()
    )
    if not claimed:
        return None
    run = SimilarityRun.objects.select_related("dataset", "embedding").get(pk=run_id)
    progress = _Progress(run_id)
    try:
        arrays, summary = (_search if run.kind == SEARCH else _duplicates)(run, progress)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        key = storage.save_bytes(result_key(run), buffer.getvalue())
    except SimilarityError as exc:
        _fail(run_id, str(exc))
        return FAILED
    except Exception as exc:
        log.exception("similarity run %s failed", run_id)
        _fail(run_id, f"internal error: {type(exc).__name__}: {exc}")
        return FAILED
    SimilarityRun.objects.filter(pk=run_id, status=RUNNING).update(
        status=SUCCEEDED, progress=1.0, result_key=key, summary=summary, updated_at=timezone.now()
    )
    return SUCCEEDED


def _fail(run_id: str, error: str) -> None:
    SimilarityRun.objects.filter(pk=run_id).update(status=FAILED, error=error[:2000], updated_at=timezone.now())


def _candidates(run: SimilarityRun) -> tuple[np.ndarray, np.ndarray]:
    X = storage.open_matrix(run.embedding.matrix_key)
    covered = covered_mask(run.embedding, len(X))
    if run.params.get("input_tag"):
        covered &= _tag_mask(run.dataset, run.params["input_tag"], len(X), "input_tag")
    return X, covered


def _query(run: SimilarityRun, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query vectors (m, d), idx of the query samples: left out of the results when exclude_query)."""
    query = run.params["query"]
    all_covered = covered_mask(run.embedding, len(X))
    if query["kind"] in ("vector", "image"):
        return np.asarray(query["vector"], dtype=np.float32)[None], np.empty(0, dtype=np.int64)
    if query["kind"] == "sample":
        i = query["idx"]
        if i >= len(X) or not all_covered[i]:
            raise SimilarityError(f"the sample has no vector in the embedding {run.embedding.name!r}", "sample")
        return np.asarray(X[i : i + 1], dtype=np.float32), np.array([i], dtype=np.int64)
    if query["kind"] == "samples":
        chosen = np.asarray(query["idx"], dtype=np.int64)
        members = chosen[chosen < len(X)]
        members = members[all_covered[members]]
        what = "samples"
    else:
        members = np.flatnonzero(_tag_mask(run.dataset, query["tag"], len(X), "tag") & all_covered)
        what = "tag"
    if members.size == 0:
        owner = "of the tag" if what == "tag" else "given"
        raise SimilarityError(f"no sample {owner} has a vector in the embedding {run.embedding.name!r}", what)
    if query["mode"] == "each":
        return np.asarray(X[members], dtype=np.float32), members
    total = np.zeros(X.shape[1], dtype=np.float64)
    for start in range(0, members.size, knn.BLOCK_ROWS):
        total += np.asarray(X[members[start : start + knn.BLOCK_ROWS]], dtype=np.float64).sum(axis=0)
    return (total / members.size).astype(np.float32)[None], members


def _search(run: SimilarityRun, progress: _Progress) -> tuple[dict, dict]:
    X, covered = _candidates(run)
    queries, query_idx = _query(run, X)
    if run.params.get("exclude_query", True) and query_idx.size:
        covered[query_idx] = False
    idx, dist = knn.nearest_to_queries(
        X, covered, queries, run.params["k"], run.params["metric"], progress=progress.span(0.0, 0.98)
    )
    return {"idx": idx, "distance": dist}, {"count": int(idx.size), "searched": int(covered.sum())}


def _exact_pairs(dataset_id: str, covered: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Edges joining samples with the same sha256 (each to the first of its hash), among covered rows."""
    hashes = (
        Sample.objects.filter(dataset_id=dataset_id)
        .exclude(sha256="")
        .values("sha256")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .values_list("sha256", flat=True)
    )
    rows = (
        Sample.objects.filter(dataset_id=dataset_id, sha256__in=hashes)
        .order_by("sha256", "idx")
        .values_list("idx", "sha256")
    )
    first: dict[str, int] = {}
    sha_of: dict[int, str] = {}
    ii, jj = [], []
    for idx, sha in rows.iterator(chunk_size=10_000):  # duplicates only: a worker loop over them is fine
        if idx >= len(covered) or not covered[idx]:
            continue
        sha_of[idx] = sha
        if sha in first:
            ii.append(first[sha])
            jj.append(idx)
        else:
            first[sha] = idx
    return np.array(ii, dtype=np.int64), np.array(jj, dtype=np.int64), sha_of


def _sizes(dataset_id: str, members: np.ndarray) -> tuple[dict[int, tuple[int, int]], dict[int, str]]:
    """idx -> (pixels, bytes) of the group members, for the "largest" rule; idx -> thumbnail key where kept."""
    out: dict[int, tuple[int, int]] = {}
    thumbs: dict[int, str] = {}
    for start in range(0, members.size, 10_000):
        chunk = [int(v) for v in members[start : start + 10_000]]
        for idx, w, h, b, thumb in Sample.objects.filter(dataset_id=dataset_id, idx__in=chunk).values_list(
            "idx", "width", "height", "size_bytes", "thumbnail_key"
        ):
            out[idx] = ((w or 0) * (h or 0), b or 0)
            if thumb:
                thumbs[idx] = thumb
    return out, thumbs


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian (Pech-Pacheco et al. 2000): higher = sharper. `gray` is a 2-D array."""
    g = np.asarray(gray, dtype=np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


def _sharpness_of(thumbs: dict[int, str]) -> dict[int, float]:
    """idx -> sharpness of its thumbnail (all thumbnails share one size rule, so they compare); unreadable: 0."""

    def one(key: str) -> float:
        try:
            with Image.open(io.BytesIO(storage.read_bytes(key))) as image:
                return sharpness(np.asarray(image.convert("L")))
        except (OSError, ValueError):
            return 0.0

    items = list(thumbs.items())
    with ThreadPoolExecutor(max_workers=8) as pool:  # storage reads wait on disk or network
        values = list(pool.map(one, [key for _idx, key in items]))
    return {idx: value for (idx, _key), value in zip(items, values, strict=True)}


def _duplicates(run: SimilarityRun, progress: _Progress) -> tuple[dict, dict]:
    X, covered = _candidates(run)
    metric = run.params["metric"]
    nn = knn.nearest_neighbour_distances(X, covered, metric=metric, progress=progress.span(0.0, 0.1))
    suggested = knn.suggest_threshold(nn)
    threshold = run.params.get("threshold")
    threshold = suggested if threshold is None else float(threshold)
    stats: dict = {}
    try:
        i, j, _d = knn.threshold_pairs(X, covered, threshold, metric, progress=progress.span(0.1, 0.9), stats=stats)
    except ValueError as exc:
        raise SimilarityError(str(exc), "threshold") from None
    ei, ej, sha_of = _exact_pairs(run.dataset_id, covered)
    groups = knn.groups_from_pairs(len(X), np.concatenate([i, ei]), np.concatenate([j, ej]))
    progress.span(0.9, 1.0)(0.0)

    members = np.concatenate(groups) if groups else np.empty(0, dtype=np.int64)
    offsets = np.zeros(len(groups) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(g) for g in groups])
    keep_first = np.array([g[0] for g in groups], dtype=np.int64)
    sizes, thumbs = _sizes(run.dataset_id, members)
    keep_largest = np.array(
        [max(g, key=lambda v: (*sizes.get(int(v), (0, 0)), -int(v))) for g in groups], dtype=np.int64
    )
    sharp = _sharpness_of(thumbs)
    keep_sharpest = np.array([max(g, key=lambda v: (sharp.get(int(v), 0.0), -int(v))) for g in groups], dtype=np.int64)
    exact = np.array([len({sha_of.get(int(v)) for v in g}) == 1 and int(g[0]) in sha_of for g in groups], dtype=bool)
    distance = np.empty(members.size, dtype=np.float32)
    Qfirst = np.repeat(keep_first, np.diff(offsets))
    for start in range(0, members.size, knn.BLOCK_ROWS):
        a = np.asarray(X[members[start : start + knn.BLOCK_ROWS]], dtype=np.float32)
        b = np.asarray(X[Qfirst[start : start + knn.BLOCK_ROWS]], dtype=np.float32)
        if metric == "cosine":
            na = np.maximum(np.linalg.norm(a, axis=1), 1e-30)
            nb = np.maximum(np.linalg.norm(b, axis=1), 1e-30)
            distance[start : start + len(a)] = np.maximum(1.0 - np.einsum("ij,ij->i", a, b) / (na * nb), 0.0)
        else:
            distance[start : start + len(a)] = np.linalg.norm(a - b, axis=1)
    summary = {
        "groups": len(groups),
        "exact_groups": int(exact.sum()),
        "in_groups": int(members.size),
        "removable": int(members.size - len(groups)),
        "threshold": threshold,
        "suggested_threshold": suggested,
        "searched": int(covered.sum()),
        "pairs_by": stats.get("method", ""),  # "all pairs", or "cells": exact unless capped_rows > 0
        "capped_rows": int(stats.get("capped_rows", 0)),
    }
    arrays = {
        "members": members,
        "offsets": offsets,
        "distance": distance,
        "keep_first": keep_first,
        "keep_largest": keep_largest,
        "keep_sharpest": keep_sharpest,
        "exact": exact,
    }
    return arrays, summary


# --- results ------------------------------------------------------------------------------------------


def load_result(run: SimilarityRun) -> dict[str, np.ndarray]:
    if run.status != SUCCEEDED or not run.result_key:
        raise SimilarityError(
            f"the run is {run.status}; it has no results yet"
            if run.status != FAILED
            else f"the run failed: {run.error}",
            "status",
        )
    with np.load(io.BytesIO(storage.read_bytes(run.result_key)), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _sample_rows(dataset_id: str, idx: np.ndarray) -> dict[int, dict]:
    """idx -> the sample's id, file name, size and thumbnail presence (one query for a page)."""
    rows = Sample.objects.filter(dataset_id=dataset_id, idx__in=[int(v) for v in idx]).values(
        "idx", "id", "file_name", "width", "height", "size_bytes", "thumbnail_key"
    )
    return {
        r["idx"]: {
            "sample_id": r["id"],
            "file_name": r["file_name"],
            "width": r["width"],
            "height": r["height"],
            "size_bytes": r["size_bytes"],
            "has_thumbnail": bool(r["thumbnail_key"]),
        }
        for r in rows
    }


def search_page(run: SimilarityRun, offset: int, limit: int) -> dict:
    """Ranked results [offset, offset + limit): rank, idx, distance and the sample."""
    data = load_result(run)
    idx, dist = data["idx"][offset : offset + limit], data["distance"][offset : offset + limit]
    samples = _sample_rows(run.dataset_id, idx)
    results = [
        {"rank": offset + r + 1, "idx": int(i), "distance": float(d), **samples.get(int(i), {})}
        for r, (i, d) in enumerate(zip(idx, dist, strict=True))
    ]
    total = int(data["idx"].size)
    return {
        "count": total,
        "offset": offset,
        "next_offset": offset + limit if offset + limit < total else None,
        "results": results,
    }


MAX_SHOWN_MEMBERS = 50  # per group on a page; a group's full size is in `size`


def groups_page(run: SimilarityRun, offset: int, limit: int) -> dict:
    """Duplicate groups [offset, offset + limit), largest first, each with up to MAX_SHOWN_MEMBERS members."""
    data = load_result(run)
    offsets = data["offsets"]
    total = int(offsets.size - 1)
    picked = []
    shown = []
    for g in range(offset, min(total, offset + limit)):
        lo, hi = int(offsets[g]), int(offsets[g + 1])
        picked.append((g, lo, hi))
        shown.append(data["members"][lo : min(hi, lo + MAX_SHOWN_MEMBERS)])
    samples = _sample_rows(run.dataset_id, np.concatenate(shown)) if shown else {}
    results = []
    for g, lo, hi in picked:
        top = min(hi, lo + MAX_SHOWN_MEMBERS)
        results.append(
            {
                "group": g,
                "size": hi - lo,
                "exact": bool(data["exact"][g]),
                "keep_first": int(data["keep_first"][g]),
                "keep_largest": int(data["keep_largest"][g]),
                "keep_sharpest": int(data["keep_sharpest"][g]),
                "members": [
                    {"idx": int(i), "distance": float(d), **samples.get(int(i), {})}
                    for i, d in zip(data["members"][lo:top], data["distance"][lo:top], strict=True)
                ],
            }
        )
    return {
        "count": total,
        "offset": offset,
        "next_offset": offset + limit if offset + limit < total else None,
        "results": results,
    }


def tag_from_run(
    run: SimilarityRun, name: str, *, top_k: int | None = None, keep: str = "first", mode: str = "keepers", creator=None
) -> Tag:
    """A tag from a finished run: a search's top_k results; one sample per duplicate group (`keepers`), every
    sample but the extra copies (`deduplicated`: the input for a sampling run), or the extra copies alone."""
    data = load_result(run)
    size = run.embedding.count
    if run.kind == SEARCH:
        total = int(data["idx"].size)
        top_k = total if top_k is None else top_k
        if not 1 <= top_k <= max(total, 1):
            raise SimilarityError(f"must be between 1 and {total} (the results)", "top_k")
        chosen = data["idx"][:top_k]
        detail = {"similarity_run": run.pk, "top_k": top_k}
        return tagging.create_tag(
            run.dataset, name, chosen, origin=TagOrigin.SELECTION, origin_detail=detail, creator=creator
        )
    if keep not in KEEP_RULES:
        raise SimilarityError(f"must be one of {', '.join(KEEP_RULES)}", "keep")
    if mode not in TAG_MODES:
        raise SimilarityError(f"must be one of {', '.join(TAG_MODES)}", "mode")
    keepers = data[f"keep_{keep}"]
    extra = np.zeros(size, dtype=bool)
    extra[data["members"]] = True
    extra[keepers] = False
    if mode == "keepers":
        mask = np.zeros(size, dtype=bool)
        mask[keepers] = True
    elif mode == "duplicates":
        mask = extra
    else:
        mask = covered_mask(run.embedding, size)
        if run.params.get("input_tag"):
            mask &= _tag_mask(run.dataset, run.params["input_tag"], size, "input_tag")
        mask &= ~extra
    detail = {"similarity_run": run.pk, "keep": keep, "mode": mode, "threshold": run.summary.get("threshold")}
    return tagging.create_tag(
        run.dataset, name, mask, origin=TagOrigin.SELECTION, origin_detail=detail, creator=creator
    )
