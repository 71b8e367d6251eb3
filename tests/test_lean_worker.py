"""Lean workers: memory-mapped matrices, id maps as numpy arrays, streamed score rows (sampling.services)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext

from curation import storage
from curation.models import Sample
from sampling import services
from sampling.models import ImportanceScore, SamplingRun
from sampling.samplers import SelectionInput, select
from tests.api.test_sampling_runs import add_embedding, add_samples, add_tag, blobs, idx_walk, post_and_run
from tests.test_s3_storage import s3, s3_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


def db_ids(dataset) -> list[tuple[int, str]]:
    return list(Sample.objects.filter(dataset=dataset).order_by("idx").values_list("idx", "id"))


# ---- id map ---------------------------------------------------------------------------------------


def test_id_map_is_two_numpy_arrays_in_idx_order(dataset):
    add_samples(dataset, 30)
    Sample.objects.filter(dataset=dataset, idx__in=[0, 7, 29]).delete()  # gaps, first and last included
    idx, ids = services.sample_id_map(dataset.id)
    assert idx.dtype == np.int64 and ids.dtype == np.dtype("S24")
    assert [(int(i), s.decode()) for i, s in zip(idx, ids)] == db_ids(dataset)


def test_id_map_of_an_empty_dataset(dataset):
    idx, ids = services.sample_id_map(dataset.id)
    assert len(idx) == 0 and len(ids) == 0


def test_id_map_with_ids_of_other_widths_falls_back_to_str(dataset):
    Sample.objects.bulk_create(
        [Sample(dataset=dataset, id=f"legacy-{i}", idx=i, file_name=f"{i}.png") for i in range(12)]
    )
    idx, ids = services.sample_id_map(dataset.id)
    assert ids.dtype.kind == "U"
    assert list(zip(idx.tolist(), ids.tolist())) == db_ids(dataset)


def test_id_map_without_copy_gives_the_same_arrays(dataset, monkeypatch):
    add_samples(dataset, 25)
    copied = services.sample_id_map(dataset.id)
    monkeypatch.setattr(services, "_copy_id_map", lambda *_args: None)  # the SQLite path
    monkeypatch.setattr(services, "ID_CHUNK", 4)
    idx, ids = services.sample_id_map(dataset.id)
    assert np.array_equal(idx, copied[0]) and ids.astype("S24").tolist() == copied[1].tolist()


@pytest.mark.parametrize("piece", [1, 3, 38, 1000])
def test_id_map_stream_parses_rows_split_anywhere(dataset, piece):
    add_samples(dataset, 40)
    raw = io.BytesIO()
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(
            cursor.cursor.mogrify(
                "COPY (SELECT idx, id FROM curation_sample WHERE dataset_id = %s ORDER BY idx) TO STDOUT "
                "WITH (FORMAT binary)",
                [dataset.id],
            ).decode(),
            raw,
        )
    data = raw.getvalue()
    sink = services._IdMapSink()
    for s in range(0, len(data), piece):
        sink.write(data[s : s + piece])
        sink._parse()  # as if 4 MiB had arrived at this odd boundary
    idx, ids = sink.finish()
    assert [(int(i), s.decode()) for i, s in zip(idx, ids)] == db_ids(dataset)


def test_id_map_stream_refuses_something_that_is_not_copy():
    sink = services._IdMapSink()
    sink.write(b"not a binary copy stream at all")
    with pytest.raises(ValueError, match="not a binary COPY"):
        sink.finish()


# ---- memory-mapped matrices -----------------------------------------------------------------------


def test_open_matrix_maps_the_local_file_read_only(dataset):
    X = blobs(20)
    key = storage.save_matrix(f"{dataset.storage_prefix}embeddings/m.npy", X)
    M = storage.open_matrix(key)
    assert isinstance(M, np.memmap) and not M.flags.writeable
    assert np.array_equal(M, X)


def test_open_matrix_on_object_storage_streams_a_cached_copy(dataset, settings, tmp_path, monkeypatch):
    settings.VAR_DIR = tmp_path / "var"

    monkeypatch.setattr(storage, "_local_path", lambda _key: None)  # as on object storage
    key = f"{dataset.storage_prefix}embeddings/m.npy"
    X = blobs(20)
    storage.save_matrix(key, X)
    first = storage.open_matrix(key)
    assert isinstance(first, np.memmap) and np.array_equal(first, X)
    cache = storage.matrix_cache_dir()
    assert len(list(cache.iterdir())) == 1
    assert np.array_equal(storage.open_matrix(key), X) and len(list(cache.iterdir())) == 1  # reused

    Y = blobs(30, seed=1)
    storage.save_matrix(key, Y)  # the object is rewritten: fetched again, the old copy goes
    assert np.array_equal(storage.open_matrix(key), Y)
    assert len(list(cache.iterdir())) == 1
    assert np.array_equal(first, X)  # a map of the removed copy still reads its data


def test_open_matrix_leaves_no_partial_copy_when_the_read_fails(dataset, settings, tmp_path, monkeypatch):
    settings.VAR_DIR = tmp_path / "var"
    monkeypatch.setattr(storage, "_local_path", lambda _key: None)  # as on object storage
    key = storage.save_matrix(f"{dataset.storage_prefix}embeddings/m.npy", blobs(20))

    def broken(*_args, **_kwargs):
        raise OSError("connection reset")

    monkeypatch.setattr(type(default_storage._wrapped), "open", broken)
    with pytest.raises(OSError, match="connection reset"):
        storage.open_matrix(key)
    assert list(storage.matrix_cache_dir().iterdir()) == []


# ---- runs on a mapped matrix ----------------------------------------------------------------------


@pytest.fixture
def mapped(dataset):
    add_samples(dataset, 80)
    X = blobs(80, d=8, seed=2)
    emb = add_embedding(dataset, X)
    return {
        "X": X,
        "embedding": emb,
        "input": add_tag(dataset, "input", range(3, 70)),
        "labeled": add_tag(dataset, "labeled", [3, 10, 40, 75]),
    }


@pytest.mark.parametrize(
    "strategy",
    [
        {"strategy": "coreset", "n_samples": 15},
        {"strategy": "random"},
        {"strategy": "typicality", "n_samples": 6},
        {"strategy": "diversity", "min_distance": 2.0},
    ],
)
def test_run_on_the_mapped_matrix_scores_exactly_as_the_sampler_on_an_array(
    editor_api, dataset, mapped, strategy, django_capture_on_commit_callbacks
):
    body = {
        "name": "mapped",
        "embedding": mapped["embedding"].id,
        "input_tag": mapped["input"].id,
        "preselected_tag": mapped["labeled"].id,
        "seed": 5,
        **strategy,
    }
    response = post_and_run(editor_api, dataset, body, django_capture_on_commit_callbacks)
    run = SamplingRun.objects.get(pk=response.json()["id"])
    assert run.status == "succeeded", run.error
    params = {k: v for k, v in strategy.items() if k not in ("strategy", "n_samples", "min_distance")}
    # 75 is preselected but not an input: it still counts as selected
    inp = SelectionInput(mapped["X"], np.arange(3, 70), np.array([3, 10, 40, 75]), {})
    expected = select(
        inp,
        [{"strategy": strategy["strategy"], **params}],
        n_samples=strategy.get("n_samples"),
        min_distance=strategy.get("min_distance"),
        seed=5,
    )
    eff = np.setdiff1d(np.arange(3, 70), [3, 10, 40])
    ids = dict(Sample.objects.filter(dataset=dataset).values_list("id", "idx"))
    got = {ids[s]: score for s, score in ImportanceScore.objects.filter(run=run).values_list("sample_id", "score")}
    assert sorted(got) == eff.tolist()  # the input tag, without the preselected samples
    assert np.array_equal(np.array([got[i] for i in eff.tolist()]), expected)


@pytest.mark.parametrize("strategy", [{"strategy": "random"}, {"strategy": "weights", "field": "car.speed"}])
def test_runs_without_an_embedding_strategy_never_open_the_matrix(
    editor_api, dataset, mapped, strategy, monkeypatch, django_capture_on_commit_callbacks
):
    def untouchable(key):
        raise AssertionError("the matrix was opened")

    monkeypatch.setattr(storage, "open_matrix", untouchable)
    monkeypatch.setattr(storage, "load_matrix", untouchable)
    body = {"name": "no matrix", "embedding": mapped["embedding"].id, **strategy}
    run_id = post_and_run(editor_api, dataset, body, django_capture_on_commit_callbacks).json()["id"]
    run = SamplingRun.objects.get(pk=run_id)
    assert run.status == "succeeded", run.error
    assert run.score_count == 80


def test_a_run_reads_the_matrix_as_a_memory_map(
    editor_api, dataset, mapped, monkeypatch, django_capture_on_commit_callbacks
):
    seen = []
    original = storage.open_matrix

    def spy(key):
        seen.append(original(key))
        return seen[-1]

    monkeypatch.setattr(storage, "open_matrix", spy)
    monkeypatch.setattr(storage, "load_matrix", lambda key: pytest.fail("the whole matrix was read"))
    body = {"name": "map", "embedding": mapped["embedding"].id, "strategy": "coreset", "n_samples": 5}
    run_id = post_and_run(editor_api, dataset, body, django_capture_on_commit_callbacks).json()["id"]
    assert SamplingRun.objects.get(pk=run_id).status == "succeeded"
    assert len(seen) == 1 and isinstance(seen[0], np.memmap)


# ---- no sample row but the ids of what is scored ----------------------------------------------------------


def _sample_statements(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if '"curation_sample"' in q["sql"]]


@pytest.mark.parametrize("input_name", [None, "input", "few"])
@pytest.mark.parametrize("pre_name", [None, "labeled"])
@pytest.mark.parametrize("strategy", ["coreset", "random"])
def test_a_runs_inputs_come_from_next_idx_and_the_tags_bits_without_a_sample_row(
    dataset, mapped, input_name, pre_name, strategy, monkeypatch
):
    tags = {**mapped, "few": add_tag(dataset, "few", [2, 9, 33, 78, 79])}
    run = SamplingRun.objects.create(
        dataset=dataset,
        name="inputs",
        strategy=strategy,
        embedding=mapped["embedding"],
        input_tag=tags.get(input_name),
        preselected_tag=tags.get(pre_name),
        parameters={"strategies": [{"strategy": strategy}]},
    )
    run = SamplingRun.objects.select_related("embedding", "input_tag", "preselected_tag", "query_tag").get(pk=run.pk)
    id_maps = []
    real = services.sample_id_map
    monkeypatch.setattr(services, "sample_id_map", lambda *a: id_maps.append(a) or real(*a))  # a COPY, not captured
    with CaptureQueriesContext(connection) as queries:
        inputs = services.load_inputs(run)
    assert not _sample_statements(queries) and not id_maps
    cand, pre = idx_walk(dataset, 80 if strategy == "coreset" else None, tags.get(input_name), tags.get(pre_name))
    assert inputs.selection.candidates.tolist() == cand.tolist()
    assert inputs.selection.preselected.tolist() == pre.tolist()
    assert inputs.eff.tolist() == np.setdiff1d(cand, pre).tolist()
    ids = dict(Sample.objects.filter(dataset=dataset).values_list("idx", "id"))
    assert [i.decode() for i in inputs.ids_for(inputs.eff).tolist()] == [ids[i] for i in inputs.eff.tolist()]


@pytest.mark.parametrize("input_name", [None, "few"])
def test_a_run_reads_sample_rows_only_for_the_ids_of_its_scores_and_scores_as_before(
    editor_api, dataset, mapped, input_name, monkeypatch, django_capture_on_commit_callbacks
):
    few = add_tag(dataset, "few", [2, 9, 33, 40, 78])
    reads = []
    real = services.sample_id_map
    monkeypatch.setattr(services, "sample_id_map", lambda *a: reads.append(a[1:]) or real(*a))
    body = {"name": "whole", "embedding": mapped["embedding"].id, "strategy": "coreset", "n_samples": 3, "seed": 4}
    if input_name:
        body["input_tag"] = few.id
    body["preselected_tag"] = mapped["labeled"].id
    with CaptureQueriesContext(connection) as queries:
        run_id = post_and_run(editor_api, dataset, body, django_capture_on_commit_callbacks).json()["id"]
    run = SamplingRun.objects.get(pk=run_id)
    assert run.status == "succeeded", run.error
    assert not _sample_statements(queries)  # the POST and the run read no sample row through the ORM
    cand = np.arange(80) if input_name is None else np.array([2, 9, 33, 40, 78])
    pre = np.array([3, 10, 40, 75])
    eff = np.setdiff1d(cand, pre)
    # The ids: one COPY of the whole id map for the whole dataset, of the scored samples only for a small tag.
    assert len(reads) == 1
    if input_name is None:
        assert reads[0] == (None,)
    else:
        assert reads[0][0].tolist() == eff.tolist()
    expected = select(SelectionInput(mapped["X"], cand, pre, {}), [{"strategy": "coreset"}], n_samples=3, seed=4)
    ids = dict(Sample.objects.filter(dataset=dataset).values_list("id", "idx"))
    got = {ids[s]: score for s, score in ImportanceScore.objects.filter(run=run).values_list("sample_id", "score")}
    assert sorted(got) == eff.tolist()
    assert np.array_equal(np.array([got[i] for i in eff.tolist()]), expected)


def test_ids_of_an_idx_without_a_sample_fail_the_run_before_anything_is_written(dataset):
    add_samples(dataset, 10)
    Sample.objects.filter(dataset=dataset, idx=7).delete()
    assert services.sample_ids_of(dataset.id, np.array([1, 8]), 10).shape == (2,)
    for idx in ([6, 7], [0, 1, 2, 3, 4, 5, 6, 7, 8]):  # by index, and from the whole map
        with pytest.raises(services.SamplerError, match="sample idx 7 has no sample"):
            services.sample_ids_of(dataset.id, np.array(idx), 10)


# ---- score rows -------------------------------------------------------------------------------------


def test_scores_from_a_bytes_id_map_stream_in_pieces(dataset, monkeypatch):
    add_samples(dataset, 50)
    monkeypatch.setattr(services._BinaryScoreRows, "ROWS_PER_PIECE", 7)
    _idx, ids = services.sample_id_map(dataset.id)
    run = SamplingRun.objects.create(dataset=dataset, name="pieces", strategy="random")
    services.write_scores(run.id, None, ids, np.linspace(0, 1, 50))
    rows = list(ImportanceScore.objects.filter(run=run).order_by("rank").values_list("rank", "sample_id", "score"))
    assert [r[0] for r in rows] == list(range(1, 51))
    assert [r[1] for r in rows] == [i.decode() for i in ids[::-1].tolist()]
    assert np.allclose([r[2] for r in rows], np.linspace(1, 0, 50))


def test_score_stream_reads_in_any_size():
    ids = np.array([b"a" * 24, b"b" * 24, b"c" * 24])
    whole = services._BinaryScoreRows(b"r" * 24, ids, np.arange(3.0)).read()
    stream = services._BinaryScoreRows(b"r" * 24, ids, np.arange(3.0))
    pieces = []
    while chunk := stream.read(5):
        pieces.append(chunk)
    assert b"".join(pieces) == whole and whole.startswith(b"PGCOPY\n\xff\r\n\x00") and whole.endswith(b"\xff\xff")


@pytest.mark.s3
def test_open_matrix_on_a_real_s3_bucket_maps_a_cached_copy(s3, dataset, settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    X = blobs(40)
    key = storage.save_matrix(f"{dataset.storage_prefix}embeddings/s3.npy", X)
    M = storage.open_matrix(key)
    assert isinstance(M, np.memmap) and np.array_equal(M, X)
    assert [p.suffix for p in storage.matrix_cache_dir().iterdir()] == [".npy"]
    storage.delete_prefix(dataset.storage_prefix)


def test_a_pool_process_gives_freed_heap_back_after_each_task(monkeypatch):
    """After a task, glibc's malloc_trim runs, so the next task's peak does not stand on the last one's heap."""
    from celery.signals import task_postrun

    from winnow import celery as winnow_celery

    calls = []
    monkeypatch.setattr(winnow_celery, "_malloc_trim", lambda pad: calls.append(pad) or 1)
    task_postrun.send(sender=None, task_id="t", task=None, args=(), kwargs={}, retval=None, state="SUCCESS")
    assert calls == [0]
    assert winnow_celery._libc_malloc_trim() is not None  # glibc here: the real function is found
