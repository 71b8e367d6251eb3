"""Similarity search and near-duplicate groups through the REST API (tasks run in-process)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from curation import bitmask, embeddings, knn, similarity, storage
from curation.models import Dataset, Embedding, EmbeddingSource, Sample, SimilarityRun, Tag
from winnow.client import embedder

pytestmark = pytest.mark.django_db

N = 200


def add_samples(dataset, n: int = N, sha=None):
    Sample.objects.bulk_create(
        Sample(
            dataset=dataset,
            idx=i,
            file_name=f"img_{i:03d}.jpg",
            width=100 + i,
            height=100,
            size_bytes=1000 + i,
            sha256=(sha or {}).get(i, ""),
        )
        for i in range(n)
    )
    dataset.next_idx = n
    dataset.save(update_fields=["next_idx"])
    return {s.idx: s.id for s in Sample.objects.filter(dataset=dataset)}


def add_embedding(dataset, X, name="default", covered=None, source=EmbeddingSource.CSV) -> Embedding:
    emb = Embedding.objects.create(
        dataset=dataset, name=name, dimension=X.shape[1], count=len(X), matrix_key="", source=source
    )
    emb.matrix_key = storage.save_matrix(embeddings.matrix_key(dataset.id, emb.id), X.astype(np.float32))
    emb.save(update_fields=["matrix_key"])
    idx = np.flatnonzero(covered) if covered is not None else np.arange(len(X))
    buffer = io.BytesIO()
    np.savez(buffer, idx=idx.astype(np.int64), labels=np.zeros(idx.size, dtype=np.int64))
    storage.save_bytes(embeddings.rows_key(emb), buffer.getvalue())
    return emb


def add_tag(dataset, name, indices) -> Tag:
    indices = list(indices)
    return Tag.objects.create(
        dataset=dataset, name=name, bitmask=bitmask.from_indices(indices), count=len(indices), origin="selection"
    )


def url(dataset, rest):
    return f"/api/v1/datasets/{dataset.id}/similarity/{rest}"


@pytest.fixture
def matrix():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 8)).astype(np.float32)
    X[150] = X[10] + 0.001  # near duplicates of 10
    X[151] = X[10] - 0.001
    X[60] = X[61] + 0.001  # and a pair
    return X


def brute_order(X, covered, q):
    d = np.linalg.norm(X.astype(np.float64) - q, axis=1)
    d[~covered] = np.inf
    order = np.lexsort((np.arange(len(X)), d))
    return order[np.isfinite(d[order])]


def test_search_from_a_sample_matches_brute_force(viewer_api, dataset, matrix):
    ids = add_samples(dataset)
    covered = np.ones(N, dtype=bool)
    covered[[3, 4]] = False  # rows without a vector are never results
    add_embedding(dataset, matrix, covered=covered)
    resp = viewer_api.post(url(dataset, "search"), {"sample": ids[10], "k": 30}, format="json")
    assert resp.status_code == 201, resp.json()
    run = resp.json()
    assert run["status"] == "succeeded" and run["summary"]["count"] == 30
    page = viewer_api.get(url(dataset, f"runs/{run['id']}/results?limit=20")).json()
    covered[10] = False  # the query itself is left out
    expected = brute_order(matrix, covered, matrix[10])[:30]
    assert [r["idx"] for r in page["results"]] == expected[:20].tolist()
    assert page["results"][0]["sample_id"] == ids[150] and page["results"][0]["file_name"] == "img_150.jpg"
    assert [r["rank"] for r in page["results"]] == list(range(1, 21))
    assert page["next_offset"] == 20 and page["count"] == 30
    rest = viewer_api.get(url(dataset, f"runs/{run['id']}/results?offset=20&limit=20")).json()
    assert [r["idx"] for r in rest["results"]] == expected[20:].tolist() and rest["next_offset"] is None
    dists = [r["distance"] for r in page["results"] + rest["results"]]
    assert dists == sorted(dists)


def test_search_from_a_tag_centroid_and_each(editor_api, dataset, matrix):
    add_samples(dataset)
    add_embedding(dataset, matrix)
    tag = add_tag(dataset, "query", [20, 40])
    inside = add_tag(dataset, "half", range(0, N, 2))
    body = {"tag": tag.id, "mode": "each", "k": 10, "input_tag": inside.id}
    run = editor_api.post(url(dataset, "search"), body, format="json").json()
    got = [r["idx"] for r in editor_api.get(url(dataset, f"runs/{run['id']}/results")).json()["results"]]
    covered = np.arange(N) % 2 == 0
    covered[[20, 40]] = False
    d = np.minimum(np.linalg.norm(matrix - matrix[20], axis=1), np.linalg.norm(matrix - matrix[40], axis=1))
    d[~covered] = np.inf
    assert got == np.lexsort((np.arange(N), d))[:10].tolist()

    run = editor_api.post(url(dataset, "search"), {"tag": tag.id, "k": 5}, format="json").json()
    got = [r["idx"] for r in editor_api.get(url(dataset, f"runs/{run['id']}/results")).json()["results"]]
    covered = np.ones(N, dtype=bool)
    covered[[20, 40]] = False
    assert got == brute_order(matrix, covered, matrix[[20, 40]].mean(axis=0))[:5].tolist()

    resp = editor_api.post(url(dataset, f"runs/{run['id']}/tag"), {"name": "like-query", "top_k": 3}, format="json")
    assert resp.status_code == 201, resp.json()
    assert Tag.objects.get(dataset=dataset, name="like-query").indices().tolist() == sorted(got[:3])


def test_search_from_an_unsaved_selection(viewer_api, owner, dataset, matrix):
    ids = add_samples(dataset)
    covered = np.ones(N, dtype=bool)
    covered[5] = False  # a selected sample without a vector does not move the centroid
    add_embedding(dataset, matrix, covered=covered)
    picked = [ids[30], ids[31], ids[5], ids[30]]  # a repeated id counts once
    resp = viewer_api.post(url(dataset, "search"), {"samples": picked, "k": 8}, format="json")
    assert resp.status_code == 201, resp.json()
    run = resp.json()
    assert run["params"]["query"] == {"kind": "samples", "idx": [5, 30, 31], "mode": "centroid"}
    got = [r["idx"] for r in viewer_api.get(url(dataset, f"runs/{run['id']}/results")).json()["results"]]
    left = covered.copy()
    left[[5, 30, 31]] = False  # the selection itself is left out
    assert got == brute_order(matrix, left, matrix[[30, 31]].mean(axis=0))[:8].tolist()

    body = {"samples": [ids[30], ids[31]], "mode": "each", "k": 4, "exclude_query": False}
    run = viewer_api.post(url(dataset, "search"), body, format="json").json()
    got = [r["idx"] for r in viewer_api.get(url(dataset, f"runs/{run['id']}/results")).json()["results"]]
    assert got[:2] == [30, 31]  # each member is at distance 0 from itself

    other = Dataset.objects.create(name="other", owner=owner)
    foreign = Sample.objects.create(dataset=other, idx=0, file_name="x.jpg")
    before = SimilarityRun.objects.count()
    for body, field in [
        ({"samples": [ids[1], foreign.id]}, "samples"),  # another dataset's sample is not found here
        ({"samples": []}, "samples"),
        ({"samples": [ids[1]], "tag": "x" * 24}, "query"),
        ({"samples": [ids[1]], "mode": "all"}, "mode"),
    ]:
        resp = viewer_api.post(url(dataset, "search"), body, format="json")
        assert resp.status_code == 400, body
        assert field in resp.json()["errors"], (body, resp.json())
    assert SimilarityRun.objects.count() == before
    run = viewer_api.post(url(dataset, "search"), {"samples": [ids[5]]}, format="json").json()
    assert run["status"] == "failed" and "no sample given has a vector" in run["error"]


def test_search_by_vector_and_bad_input(viewer_api, dataset, matrix):
    ids = add_samples(dataset)
    add_embedding(dataset, matrix)
    q = [0.5] * 8
    run = viewer_api.post(url(dataset, "search"), {"vector": q, "k": 5}, format="json").json()
    got = [r["idx"] for r in viewer_api.get(url(dataset, f"runs/{run['id']}/results")).json()["results"]]
    assert got == brute_order(matrix, np.ones(N, dtype=bool), np.array(q))[:5].tolist()

    before = SimilarityRun.objects.count()
    bad = [
        ({"vector": [1.0, 2.0]}, "vector"),
        ({}, "query"),
        ({"sample": ids[1], "tag": "x" * 24}, "query"),
        ({"sample": "nope"}, "sample"),
        ({"sample": ids[1], "k": 0}, "k"),
        ({"sample": ids[1], "metric": "manhattan"}, "metric"),
        ({"sample": ids[1], "embedding": "missing"}, "embedding"),
        ({"sample": ids[1], "input_tag": "missing"}, "input_tag"),
    ]
    for body, field in bad:
        resp = viewer_api.post(url(dataset, "search"), body, format="json")
        assert resp.status_code == 400, body
        assert field in resp.json()["errors"], (body, resp.json())
    assert SimilarityRun.objects.count() == before


def test_search_by_image_uses_the_datasets_builtin_embedder(viewer_api, dataset):
    rng = np.random.default_rng(5)
    pictures = rng.integers(0, 255, size=(30, 32, 32, 3), dtype=np.uint8)
    model = embedder.PatchEmbedder(seed=0, n_centroids=16, dim=8)
    X = model.fit_transform(pictures)
    add_samples(dataset, 30)
    emb = add_embedding(dataset, X, source=EmbeddingSource.BUILTIN)
    buffer = io.BytesIO()
    Image.fromarray(pictures[7]).save(buffer, "PNG")

    resp = viewer_api.post(url(dataset, "search"), {"image": _file(buffer.getvalue()), "k": 3}, format="multipart")
    assert (
        resp.status_code == 400 and "image" in resp.json()["errors"]
    )  # no model kept: the server cannot embed like it

    embeddings.save_model(emb, model)
    resp = viewer_api.post(url(dataset, "search"), {"image": _file(buffer.getvalue()), "k": 3}, format="multipart")
    assert resp.status_code == 201, resp.json()
    first = viewer_api.get(url(dataset, f"runs/{resp.json()['id']}/results")).json()["results"][0]
    assert first["idx"] == 7  # the image itself, through the thumbnail path the dataset took

    resp = viewer_api.post(url(dataset, "search"), {"image": _file(b"not an image")}, format="multipart")
    assert resp.status_code == 400 and "image" in resp.json()["errors"]


def _file(data: bytes):
    handle = io.BytesIO(data)
    handle.name = "query.png"
    return handle


def test_builtin_embedder_state_round_trips():
    rng = np.random.default_rng(1)
    pictures = rng.integers(0, 255, size=(20, 32, 32, 3), dtype=np.uint8)
    model = embedder.PatchEmbedder(seed=0, n_centroids=16, dim=8)
    X = model.fit_transform(pictures)
    again = embedder.PatchEmbedder.from_state(model.state())
    np.testing.assert_allclose(again.transform(pictures), X, atol=1e-5)


@pytest.mark.parametrize("pairs_by", ["all pairs", "cells"])
def test_duplicates_groups_planted_copies_and_tags(
    editor_api, viewer_api, dataset, matrix, django_capture_on_commit_callbacks, monkeypatch, pairs_by
):
    if pairs_by == "cells":  # what a dataset above 20,000 samples gets
        monkeypatch.setattr(knn, "EXACT_PAIRS_MAX_ROWS", 50)
        monkeypatch.setattr(knn, "CELL_PAIR_COST", 0.0)  # 200 rows: comparing every pair would be cheaper
    sha = {5: "a" * 64, 99: "a" * 64}  # same bytes, far apart in the embedding
    add_samples(dataset, sha=sha)
    add_embedding(dataset, matrix)
    assert viewer_api.post(url(dataset, "duplicates"), {}, format="json").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        resp = editor_api.post(url(dataset, "duplicates"), {}, format="json")
    assert resp.status_code == 202, resp.json()
    run = editor_api.get(url(dataset, f"runs/{resp.json()['id']}")).json()
    assert run["status"] == "succeeded", run
    summary = run["summary"]
    assert summary["groups"] == 3 and summary["exact_groups"] == 1 and summary["removable"] == 4
    assert 0.002 < summary["suggested_threshold"] == summary["threshold"]
    assert summary["pairs_by"] == pairs_by and summary["capped_rows"] == 0
    page = editor_api.get(url(dataset, f"runs/{run['id']}/results")).json()
    groups = [[m["idx"] for m in g["members"]] for g in page["results"]]
    assert groups == [[10, 150, 151], [5, 99], [60, 61]]
    assert [g["exact"] for g in page["results"]] == [False, True, False]
    assert page["results"][0]["keep_largest"] == 151  # the widest image
    assert page["results"][0]["keep_sharpest"] == 10  # no thumbnails to compare: the first

    def tag(name, **body):
        resp = editor_api.post(url(dataset, f"runs/{run['id']}/tag"), {"name": name, **body}, format="json")
        assert resp.status_code == 201, resp.json()
        return Tag.objects.get(dataset=dataset, name=name).indices().tolist()

    assert tag("keep", keep="first") == [5, 10, 60]
    assert tag("extra", mode="duplicates", keep="largest") == [5, 10, 60, 150]
    dedup = tag("dedup", mode="deduplicated")
    assert len(dedup) == N - 4 and not {61, 99, 150, 151} & set(dedup)

    with django_capture_on_commit_callbacks(execute=True):
        resp = editor_api.post(url(dataset, "duplicates"), {"threshold": 100.0}, format="json")
    failed = editor_api.get(url(dataset, f"runs/{resp.json()['id']}")).json()
    assert failed["status"] == "succeeded" and failed["summary"]["groups"] == 1  # everything joins


def test_duplicates_bad_input_and_outsiders(editor_api, outsider_api, dataset, matrix):
    add_samples(dataset)
    add_embedding(dataset, matrix)
    for body, field in [
        ({"threshold": -1}, "threshold"),
        ({"metric": "l1"}, "metric"),
        ({"embedding": "x"}, "embedding"),
    ]:
        resp = editor_api.post(url(dataset, "duplicates"), body, format="json")
        assert resp.status_code == 400 and field in resp.json()["errors"]
    run = editor_api.post(url(dataset, "duplicates"), {}, format="json").json()
    assert outsider_api.post(url(dataset, "duplicates"), {}, format="json").status_code == 404
    assert outsider_api.post(url(dataset, "search"), {"vector": [0] * 8}, format="json").status_code == 404
    for rest in (f"runs/{run['id']}", f"runs/{run['id']}/results", "runs"):
        assert outsider_api.get(url(dataset, rest)).status_code == 404
    assert outsider_api.post(url(dataset, f"runs/{run['id']}/tag"), {"name": "x"}, format="json").status_code == 404
    assert editor_api.get(url(dataset, "runs/000000000000000000000000")).status_code == 404
    resp = editor_api.post(url(dataset, f"runs/{run['id']}/tag"), {"name": "k", "keep": "best"}, format="json")
    assert resp.status_code == 400 and "keep" in resp.json()["errors"]


def test_large_search_goes_to_a_worker_task(editor_api, dataset, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(similarity, "INLINE_MAX_ELEMENTS", 10)
    ids = add_samples(dataset, 50)
    add_embedding(dataset, np.random.default_rng(0).normal(size=(50, 4)))
    with django_capture_on_commit_callbacks(execute=True):
        resp = editor_api.post(url(dataset, "search"), {"sample": ids[0], "k": 5}, format="json")
    assert resp.status_code == 202 and resp.json()["status"] == "queued"
    run = editor_api.get(url(dataset, f"runs/{resp.json()['id']}")).json()
    assert run["status"] == "succeeded" and run["summary"]["count"] == 5


def test_deleting_the_embedding_removes_its_runs_and_their_results(
    editor_api, dataset, matrix, django_capture_on_commit_callbacks
):
    ids = add_samples(dataset)
    emb = add_embedding(dataset, matrix)
    run = editor_api.post(url(dataset, "search"), {"sample": ids[1], "k": 3}, format="json").json()
    key = SimilarityRun.objects.get(pk=run["id"]).result_key
    assert storage.default_storage.exists(key)
    with django_capture_on_commit_callbacks(execute=True):
        assert editor_api.delete(f"/api/v1/datasets/{dataset.id}/embeddings/{emb.id}").status_code == 204
    assert not SimilarityRun.objects.exists() and not storage.default_storage.exists(key)


def test_sharpness_prefers_the_unblurred_image():
    from PIL import ImageFilter

    rng = np.random.default_rng(0)
    sharp = Image.fromarray(rng.integers(0, 255, size=(64, 64), dtype=np.uint8))
    blurred = sharp.filter(ImageFilter.GaussianBlur(2))
    assert similarity.sharpness(np.asarray(sharp)) > 10 * similarity.sharpness(np.asarray(blurred)) > 0
    assert similarity.sharpness(np.zeros((2, 2))) == 0.0
