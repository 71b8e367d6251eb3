"""Embeddings as streams: the block parser's edge cases, binary .npy uploads, resumable upload sessions."""

from __future__ import annotations

import io
import json
import os
import re
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from curation import embedding_uploads, embeddings, services, storage
from curation.embedding_uploads import expire_uploads
from curation.embeddings import EmbeddingError
from curation.models import Embedding, EmbeddingUpload
from tests.api.test_embeddings import make_csv, names, vectors

pytestmark = pytest.mark.django_db

N, D = 12, 5


@pytest.fixture
def registered(dataset):
    services.add_samples(dataset, [{"file_name": name} for name in names(N)])
    return dataset


@pytest.fixture
def media(settings):
    return settings.MEDIA_ROOT


@pytest.fixture(params=[7, 64, 1 << 20], ids=["tiny-blocks", "small-blocks", "one-block"])
def block(request, monkeypatch):
    """Blocks small enough that lines, numbers and the BOM straddle block boundaries."""
    monkeypatch.setattr(embeddings, "BLOCK_BYTES", request.param)
    return request.param


def stored(dataset, name="mine") -> np.ndarray:
    embedding = Embedding.objects.get(dataset=dataset, name=name)
    matrix, idx, labels = embeddings.load(embedding)
    return matrix, idx, labels


def nothing_stored(dataset, media) -> None:
    assert not Embedding.objects.filter(dataset=dataset).exists()
    folder = media / "datasets" / dataset.id / "embeddings"
    assert not folder.exists() or not any(folder.iterdir())
    assert not any(storage.spool_dir().iterdir()), "spool files left behind"


def create(dataset, data: bytes):
    return embeddings.create_from_csv(dataset, "mine", io.BytesIO(data))


def ordered_csv(line_end="\n", bom=False, trailing=True, quote=False) -> tuple[bytes, np.ndarray]:
    X = vectors(N, D)
    rows = ["filenames," + ",".join(f"embedding_{i}" for i in range(D)) + ",labels"]
    for i, name in enumerate(names(N)):
        shown = f'"{name}"' if quote and i % 2 else name
        rows.append(f"{shown}," + ",".join(repr(float(v)) for v in X[i]) + f",{i}")
    text = line_end.join(rows) + (line_end if trailing else "")
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode(), X


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("trailing", [False, True])
def test_crlf_bom_and_a_missing_last_newline_parse_the_same(registered, block, line_end, bom, trailing):
    data, X = ordered_csv(line_end, bom, trailing, quote=True)
    create(registered, data)
    matrix, idx, labels = stored(registered)
    np.testing.assert_array_equal(matrix, X)
    assert idx.tolist() == list(range(N)) and labels.tolist() == list(range(N))


def test_quoted_file_names_with_commas(dataset, block):
    odd = ["a,b.jpg", 'say "hi".jpg', "plain.jpg"]
    services.add_samples(dataset, [{"file_name": name} for name in odd])
    X = vectors(3, D)
    create(dataset, make_csv(odd, X))
    np.testing.assert_array_equal(stored(dataset)[0], X)


def test_rows_in_any_order_land_at_their_idx(registered, block):
    X = vectors(N, D)
    order = np.random.default_rng(1).permutation(N)
    create(registered, make_csv([names(N)[i] for i in order], X[order], labels=order.tolist()))
    matrix, _idx, labels = stored(registered)
    np.testing.assert_array_equal(matrix, X)
    assert labels.tolist() == list(range(N))


def test_a_bad_number_straddling_a_block_boundary_is_named_and_nothing_is_stored(registered, media, monkeypatch):
    data, _X = ordered_csv()
    lines = data.split(b"\n")
    lines[7] = lines[7].replace(b",", b",1.2x", 1)  # row 8: the first value is garbage
    data = b"\n".join(lines)
    # The block ends in the middle of the bad value.
    monkeypatch.setattr(embeddings, "BLOCK_BYTES", data.index(b"1.2x") + 2)
    with pytest.raises(EmbeddingError, match=r"row 8 \('cam/006.jpg'\): embedding_0 is '1.2x[^']*', not a number"):
        create(registered, data)
    nothing_stored(registered, media)


def test_wrong_column_count_is_named(registered, media, block):
    data, _X = ordered_csv()
    lines = data.split(b"\n")
    lines[10] = lines[10].rsplit(b",", 2)[0] + b",0"
    with pytest.raises(EmbeddingError, match=r"row 11 \('cam/009.jpg'\): has 4 embedding values, the header names 5"):
        create(registered, b"\n".join(lines))
    nothing_stored(registered, media)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "1e40"])
def test_non_finite_values_are_named(registered, media, block, bad):
    data, _X = ordered_csv()
    lines = data.split(b"\n")
    cells = lines[5].split(b",")
    cells[3] = bad.encode()
    lines[5] = b",".join(cells)
    with pytest.raises(EmbeddingError, match=rf"row 6 \('cam/004.jpg'\): embedding_2 is '{bad}'"):
        create(registered, b"\n".join(lines))
    nothing_stored(registered, media)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "the CSV is empty"),
        (b"\xef\xbb\xbf", "the CSV is empty"),
        (b"filenames,embedding_0,labels\r\n", "header but no rows"),
        (b"filenames,embedding_0,labels", "header but no rows"),
        (b"filenames,embedding_0,labels\n\n\n", "header but no rows"),
        (b"name,embedding_0,labels\nx,1,0\n", "row 1"),
        (b"filenames,embedding_0,labels\ncam/000.jpg,\xff,0\n", "not UTF-8"),
    ],
)
def test_empty_header_only_and_malformed_files(registered, media, block, data, message):
    with pytest.raises(EmbeddingError, match=message):
        create(registered, data)
    nothing_stored(registered, media)


def test_unknown_duplicate_and_missing_names_are_refused_as_before(registered, media, block):
    X = vectors(N, D)
    with pytest.raises(EmbeddingError, match=r"row 4 \('cam/001.jpg'\): the file name is also on row 3"):
        create(registered, make_csv([*names(N)[:2], names(N)[1], names(N)[1], *names(N)[3:]], X))
    with pytest.raises(
        EmbeddingError,
        match=r"2 file name\(s\) are not samples of this dataset: row 3 \('x.jpg'\), "
        r"row 5 \('y.jpg'\)",
    ):
        create(registered, make_csv([names(N)[0], "x.jpg", names(N)[2], "y.jpg", *names(N)[4:]], X))
    with pytest.raises(EmbeddingError, match=r"row 5 \('x.jpg'\): the file name is also on row 3"):
        create(registered, make_csv([names(N)[0], "x.jpg", names(N)[2], "x.jpg", *names(N)[4:]], X))
    with pytest.raises(
        EmbeddingError,
        match=r"must cover every sample; 2 of 12 are missing: 'cam/010.jpg', "
        r"'cam/011.jpg'",
    ):
        create(registered, make_csv(names(N)[:10], X[:10]))
    nothing_stored(registered, media)


def test_a_storage_failure_leaves_no_row_and_no_files(registered, media, monkeypatch):
    real = storage.save_bytes

    def fail_on_rows_file(key, data):
        if key.endswith(".rows.npz"):
            raise OSError("disk full")
        return real(key, data)

    monkeypatch.setattr(storage, "save_bytes", fail_on_rows_file)
    with pytest.raises(OSError):
        create(registered, ordered_csv()[0])
    nothing_stored(registered, media)


# --- binary .npy uploads -------------------------------------------------------------------------------


def npy_bytes(array) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def post_npy(api, dataset, matrix: bytes, file_names: bytes, labels: bytes | None = None, name="bin"):
    body = {
        "name": name,
        "matrix": SimpleUploadedFile("m.npy", matrix),
        "names": SimpleUploadedFile("n.txt", file_names),
    }
    if labels is not None:
        body["labels"] = SimpleUploadedFile("l.npy", labels)
    return api.post(f"/api/v1/datasets/{dataset.id}/embeddings", body, format="multipart")


def test_npy_upload_with_names_one_a_line_or_json_and_labels(editor_api, registered, monkeypatch):
    monkeypatch.setattr(embeddings, "NPY_BLOCK_ROWS", 5)
    X = vectors(N, D)
    order = np.random.default_rng(2).permutation(N)
    text = "\r\n".join(names(N)[i] for i in order).encode()  # CRLF, no final newline
    response = post_npy(editor_api, registered, npy_bytes(X[order]), text, npy_bytes(order.astype(np.int32)))
    assert response.status_code == 201, response.json()
    assert response.json()["dimension"] == D and response.json()["count"] == N
    matrix, _idx, labels = stored(registered, "bin")
    np.testing.assert_array_equal(matrix, X)
    assert labels.tolist() == list(range(N))

    listed = json.dumps(names(N)).encode()
    response = post_npy(editor_api, registered, npy_bytes(X), listed, name="json")
    assert response.status_code == 201, response.json()
    np.testing.assert_array_equal(stored(registered, "json")[0], X)


@pytest.mark.parametrize(
    "matrix, file_names, field, message",
    [
        (npy_bytes(vectors(N, D).astype(np.float64)), "\n".join(names(N)), "matrix", "must be float32"),
        (npy_bytes(vectors(N, D)[:, 0]), "\n".join(names(N)), "matrix", "must have 2 dimension"),
        (npy_bytes(np.asfortranarray(vectors(N, D))), "\n".join(names(N)), "matrix", "C order"),
        (b"not a npy file at all", "\n".join(names(N)), "matrix", "not a .npy file"),
        (npy_bytes(vectors(N, D))[:-7], "\n".join(names(N)), "matrix", "cut short"),
        (npy_bytes(vectors(N, D)), "\n".join(names(N)[:-1]), "names", "12 rows but there are only 11 file names"),
        (npy_bytes(vectors(N, D)), "\n".join([*names(N), "extra.jpg"]), "names", "13 file names but the matrix has 12"),
        (npy_bytes(vectors(N, D)), "\n".join([*names(N)[:-1], "zz.jpg"]), "file", r"line 12 \('zz.jpg'\)"),
        (npy_bytes(vectors(N, D)), "\n".join([*names(N)[:-1], names(N)[0]]), "file", "also on line 1"),
        (npy_bytes(np.full((N, D), np.nan, dtype=np.float32)), "\n".join(names(N)), "matrix", "finite"),
        (npy_bytes(vectors(N, D)), '["a", 1]', "names", "list of strings"),
    ],
)
def test_bad_npy_uploads_are_refused_naming_the_part(editor_api, registered, media, matrix, file_names, field, message):
    response = post_npy(editor_api, registered, matrix, file_names.encode())
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors.keys() == {field}, errors
    assert any(re.search(message, m) for m in errors[field]), errors
    nothing_stored(registered, media)


@pytest.mark.parametrize("as_json", [False, True], ids=["lines", "json"])
def test_npy_names_with_backslashes_name_the_registered_samples(editor_api, registered, as_json):
    """As in the CSV (winnow.client.embeddings_csv) and at registration, a backslash is a path separator."""
    windows = [name.replace("/", "\\") for name in names(N)]
    text = json.dumps(windows) if as_json else "\r\n".join(windows)
    response = post_npy(editor_api, registered, npy_bytes(vectors(N, D)), text.encode())
    assert response.status_code == 201, response.json()
    np.testing.assert_array_equal(stored(registered, "bin")[0], vectors(N, D))


def test_npy_labels_of_the_wrong_length_are_refused(editor_api, registered, media):
    response = post_npy(
        editor_api, registered, npy_bytes(vectors(N, D)), "\n".join(names(N)).encode(), npy_bytes(np.arange(N - 1))
    )
    assert response.status_code == 400 and "labels" in response.json()["errors"]
    nothing_stored(registered, media)


# --- resumable upload sessions -----------------------------------------------------------------------


def uploads_url(dataset, rest=""):
    return f"/api/v1/datasets/{dataset.id}/embeddings/uploads{rest}"


def put_chunk(api, dataset, upload_id, part, data: bytes, offset: int, total: int, range_header=True):
    if range_header:
        return api.put(
            uploads_url(dataset, f"/{upload_id}/{part}"),
            data,
            content_type="application/octet-stream",
            HTTP_CONTENT_RANGE=f"bytes {offset}-{offset + len(data) - 1}/{total}",
        )
    return api.put(
        uploads_url(dataset, f"/{upload_id}/{part}?offset={offset}"), data, content_type="application/octet-stream"
    )


def chunk_files(media, dataset):
    folder = media / "datasets" / dataset.id / "uploads"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_a_chunked_csv_resumes_after_a_dropped_connection_then_a_worker_stores_it(
    editor_api, registered, media, django_capture_on_commit_callbacks
):
    data, X = ordered_csv("\r\n")
    response = editor_api.post(
        uploads_url(registered), {"kind": "csv", "name": "big", "size": len(data)}, format="json"
    )
    assert response.status_code == 201, response.json()
    upload = response.json()
    assert upload["status"] == "receiving" and upload["received"] == {"file": 0}

    first = put_chunk(editor_api, registered, upload["id"], "file", data[:100], 0, len(data))
    assert first.status_code == 200 and first.json()["received"] == {"file": 100}
    # The connection drops while the second chunk is sent: the client does not know what arrived.
    # It asks, then sends a chunk at a stale offset (as a naive retry would): 409 and the right offset.
    assert editor_api.get(uploads_url(registered, f"/{upload['id']}")).json()["received"] == {"file": 100}
    stale = put_chunk(editor_api, registered, upload["id"], "file", data[:100], 0, len(data))
    assert stale.status_code == 409 and stale.json()["offset"] == 100
    assert (
        put_chunk(
            editor_api, registered, upload["id"], "file", data[100:300], 100, len(data), range_header=False
        ).status_code
        == 200
    )
    early = editor_api.post(uploads_url(registered, f"/{upload['id']}/complete"))
    assert early.status_code == 400 and "not complete" in early.json()["errors"]["status"][0]
    past_end = put_chunk(editor_api, registered, upload["id"], "file", data[300:] + b"x", 300, len(data) + 1)
    assert past_end.status_code == 400
    assert put_chunk(editor_api, registered, upload["id"], "file", data[300:], 300, len(data)).status_code == 200
    assert len(chunk_files(media, registered)) == 3

    with django_capture_on_commit_callbacks(execute=True):
        done = editor_api.post(uploads_url(registered, f"/{upload['id']}/complete"))
    assert done.status_code == 202
    state = editor_api.get(uploads_url(registered, f"/{upload['id']}")).json()
    assert state["status"] == "succeeded" and state["progress"] == 1.0, state
    np.testing.assert_array_equal(stored(registered, "big")[0], X)
    assert state["embedding"] == Embedding.objects.get(name="big").id
    assert chunk_files(media, registered) == []
    late = put_chunk(editor_api, registered, upload["id"], "file", b"more", len(data), len(data) + 4)
    assert late.status_code == 400


def test_a_chunked_upload_that_fails_names_the_row_and_stores_nothing(
    editor_api, registered, media, django_capture_on_commit_callbacks
):
    data, _X = ordered_csv()
    data = data.replace(b"cam/005.jpg", b"nobody.jpg")
    upload = editor_api.post(
        uploads_url(registered), {"kind": "csv", "name": "bad", "sizes": {"file": len(data)}}, format="json"
    ).json()
    for offset in range(0, len(data), 256):
        assert (
            put_chunk(
                editor_api, registered, upload["id"], "file", data[offset : offset + 256], offset, len(data)
            ).status_code
            == 200
        )
    with django_capture_on_commit_callbacks(execute=True):
        assert editor_api.post(uploads_url(registered, f"/{upload['id']}/complete")).status_code == 202
    state = editor_api.get(uploads_url(registered, f"/{upload['id']}")).json()
    assert state["status"] == "failed"
    assert "row 7 ('nobody.jpg')" in state["error"] and state["embedding"] is None
    nothing_stored(registered, media)
    assert chunk_files(media, registered) == []


def test_a_chunked_npy_upload(editor_api, registered, django_capture_on_commit_callbacks):
    X = vectors(N, D)
    parts = {"matrix": npy_bytes(X), "names": "\n".join(names(N)).encode()}
    upload = editor_api.post(
        uploads_url(registered),
        {"kind": "npy", "name": "bin", "sizes": {k: len(v) for k, v in parts.items()}},
        format="json",
    ).json()
    for part, data in parts.items():
        for offset in range(0, len(data), 100):
            put_chunk(editor_api, registered, upload["id"], part, data[offset : offset + 100], offset, len(data))
    with django_capture_on_commit_callbacks(execute=True):
        editor_api.post(uploads_url(registered, f"/{upload['id']}/complete"))
    assert editor_api.get(uploads_url(registered, f"/{upload['id']}")).json()["status"] == "succeeded"
    np.testing.assert_array_equal(stored(registered, "bin")[0], X)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"kind": "zip", "name": "x", "size": 10}, "kind"),
        ({"kind": "csv", "name": "x"}, "sizes"),
        ({"kind": "csv", "name": "x", "size": 0}, "size"),
        ({"kind": "npy", "name": "x", "sizes": {"matrix": 10}}, "sizes"),
        ({"kind": "npy", "name": "x", "sizes": {"matrix": 10, "names": 5, "extra": 1}}, "sizes"),
        ({"kind": "csv", "name": "", "size": 10}, "name"),
    ],
)
def test_bad_sessions_are_refused(editor_api, registered, body, field):
    response = editor_api.post(uploads_url(registered), body, format="json")
    assert response.status_code == 400 and field in response.json()["errors"], response.json()
    assert not EmbeddingUpload.objects.exists()


def test_outsiders_and_viewers(outsider_api, viewer_api, editor_api, registered):
    assert (
        outsider_api.post(uploads_url(registered), {"kind": "csv", "name": "x", "size": 5}, format="json").status_code
        == 404
    )
    assert (
        viewer_api.post(uploads_url(registered), {"kind": "csv", "name": "x", "size": 5}, format="json").status_code
        == 403
    )
    upload = editor_api.post(uploads_url(registered), {"kind": "csv", "name": "x", "size": 5}, format="json").json()
    assert outsider_api.get(uploads_url(registered, f"/{upload['id']}")).status_code == 404
    assert put_chunk(outsider_api, registered, upload["id"], "file", b"abc", 0, 5).status_code == 404
    assert put_chunk(viewer_api, registered, upload["id"], "file", b"abc", 0, 5).status_code == 403
    assert viewer_api.get(uploads_url(registered, f"/{upload['id']}")).status_code == 200


def test_abandoned_sessions_expire_with_their_chunks(editor_api, registered, media, settings):
    upload = editor_api.post(uploads_url(registered), {"kind": "csv", "name": "x", "size": 50}, format="json").json()
    put_chunk(editor_api, registered, upload["id"], "file", b"filenames,", 0, 50)
    assert len(chunk_files(media, registered)) == 1
    assert expire_uploads() == 0
    settings.WINNOW_EMBEDDING_UPLOAD_HOURS = 0
    assert expire_uploads() == 1
    assert chunk_files(media, registered) == [] and not EmbeddingUpload.objects.exists()


def test_abandoning_a_session_deletes_its_chunks(editor_api, registered, media):
    upload = editor_api.post(uploads_url(registered), {"kind": "csv", "name": "x", "size": 50}, format="json").json()
    put_chunk(editor_api, registered, upload["id"], "file", b"filenames,", 0, 50)
    assert editor_api.delete(uploads_url(registered, f"/{upload['id']}")).status_code == 204
    assert chunk_files(media, registered) == [] and not EmbeddingUpload.objects.exists()


def test_spool_is_clean_after_success(registered):
    create(registered, ordered_csv()[0])
    assert not any(storage.spool_dir().iterdir())
    assert os.path.exists(storage.spool_dir())


def test_an_upload_whose_worker_died_is_taken_over_and_a_live_one_is_left_alone(editor_api, registered, settings):
    """A worker killed while processing leaves the upload 'processing'; the broker hands the task out again."""
    data, X = ordered_csv()
    upload = editor_api.post(uploads_url(registered), {"kind": "csv", "name": "big", "size": len(data)}, format="json")
    upload_id = upload.json()["id"]
    assert put_chunk(editor_api, registered, upload_id, "file", data, 0, len(data)).status_code == 200
    silent_since = timezone.now() - timedelta(seconds=settings.WINNOW_RUN_STALE_SECONDS * 5)
    EmbeddingUpload.objects.filter(pk=upload_id).update(status="processing", updated_at=silent_since)
    assert embedding_uploads.process(upload_id) == embedding_uploads.BUSY  # may still be alive: left alone
    assert not Embedding.objects.filter(name="big").exists()

    dead_since = timezone.now() - timedelta(seconds=settings.WINNOW_RUN_STALE_SECONDS * 11)
    EmbeddingUpload.objects.filter(pk=upload_id).update(status="processing", updated_at=dead_since)
    assert embedding_uploads.process(upload_id) == "succeeded"
    np.testing.assert_array_equal(stored(registered, "big")[0], X)
    assert embedding_uploads.process(upload_id) is None  # done: a late duplicate of the task does nothing
