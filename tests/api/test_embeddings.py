"""Embeddings: Lightly's CSV in and out, validation that names the row, storage by idx, the 2D projection."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from curation import embeddings, services
from curation.embeddings import EmbeddingError, parse_csv
from curation.models import Embedding, EmbeddingSource, Sample
from tests.api.test_upload import stored_files
from winnow.client.formats import FormatError, load_embeddings

pytestmark = pytest.mark.django_db

N, D = 12, 5


def names(n: int = N) -> list[str]:
    return [f"cam/{i:03d}.jpg" for i in range(n)]


def vectors(n: int = N, d: int = D, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def make_csv(file_names, matrix, labels=None, *, header=None) -> bytes:
    """Lightly's format, written as Lightly's client writes it (csv module, str of each float32)."""
    out = io.StringIO()
    writer = csv.writer(out)
    d = matrix.shape[1] if len(matrix) else 0
    writer.writerow(header or ["filenames", *(f"embedding_{i}" for i in range(d)), "labels"])
    labels = labels if labels is not None else [0] * len(file_names)
    for name, row, label in zip(file_names, matrix, labels):
        writer.writerow([name, *(str(v) for v in row), str(label)])
    return out.getvalue().encode()


@pytest.fixture
def registered(dataset):
    """The meta dataset with N samples (idx 0..N-1)."""
    services.add_samples(dataset, [{"file_name": name} for name in names()])
    return dataset


@pytest.fixture
def commit(django_capture_on_commit_callbacks):
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def media(settings):
    return settings.MEDIA_ROOT


def url(dataset, rest: str = "") -> str:
    return f"/api/v1/datasets/{dataset.id}/embeddings{rest}"


def post_csv(api, dataset, data: bytes, name="mine"):
    body = {"file": SimpleUploadedFile("embeddings.csv", data, content_type="text/csv")}
    if name is not None:
        body["name"] = name
    return api.post(url(dataset), body, format="multipart")


def decode_projection(response) -> np.ndarray:
    assert response["Content-Type"] == "application/octet-stream"
    return np.frombuffer(response.content, dtype="<f4").reshape(-1, 2)


# --- upload and storage -------------------------------------------------------------------------------


def test_upload_stores_the_matrix_by_idx_and_a_projection(editor_api, registered, commit):
    X = vectors()
    order = list(reversed(range(N)))  # rows in any order; stored by idx
    with commit():
        response = post_csv(editor_api, registered, make_csv([names()[i] for i in order], X[order], labels=order))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["name"], body["dimension"], body["count"], body["source"]) == ("mine", D, N, "csv")
    embedding = Embedding.objects.get(pk=body["id"])
    matrix, idx, labels = embeddings.load(embedding)
    assert matrix.dtype == np.float32 and np.array_equal(matrix, X)
    assert idx.tolist() == list(range(N)) and labels.tolist() == list(range(N))
    assert embedding.projection_status == "ready"

    projection = editor_api.get(url(registered, f"/{embedding.id}/projection"))
    assert projection.status_code == 200
    assert projection["X-Projection-Count"] == str(N)
    layout = decode_projection(projection)
    assert layout.shape == (N, 2) and np.isfinite(layout).all()
    assert projection["X-Projection-Method"] == "tsne"  # N >= 10 and below WINNOW_TSNE_MAX_POINTS
    pca = decode_projection(editor_api.get(url(registered, f"/{embedding.id}/projection?method=pca")))
    centred = X - X.mean(axis=0)
    variance_explained = np.var(pca, axis=0).sum() / np.var(centred, axis=0).sum()
    top_two = np.sort(np.linalg.eigvalsh(np.cov(centred.T)))[-2:].sum() / np.trace(np.cov(centred.T))
    assert variance_explained == pytest.approx(top_two, rel=1e-3)


def test_raw_text_csv_body_with_name_in_the_query(editor_api, registered, commit):
    with commit():
        response = editor_api.post(url(registered) + "?name=raw", make_csv(names(), vectors()), content_type="text/csv")
    assert response.status_code == 201, response.json()
    assert Embedding.objects.get(dataset=registered).name == "raw"


def test_csv_round_trip_gives_the_same_float32_values(editor_api, registered, commit):
    X = vectors(d=64, seed=3) * np.float32(1e-3)
    X[0, 0], X[1, 1], X[2, 2] = np.float32(3.4e38), np.float32(-1.17549435e-38), np.float32(1 / 3)
    with commit():
        created = post_csv(editor_api, registered, make_csv(names(), X, labels=[i % 3 for i in range(N)]))
    response = editor_api.get(url(registered, f"/{created.json()['id']}/csv"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="mine.csv"' in response["Content-Disposition"]
    parsed = parse_csv(b"".join(response.streaming_content))
    assert parsed.file_names == names()
    assert parsed.matrix.dtype == np.float32 and np.array_equal(parsed.matrix, X)
    assert parsed.labels.tolist() == [i % 3 for i in range(N)]


def test_idx_gaps_stay_empty_rows(editor_api, registered, commit):
    Sample.objects.filter(dataset=registered, idx=4).delete()
    remaining = [n for i, n in enumerate(names()) if i != 4]
    X = vectors(n=N - 1)
    with commit():
        created = post_csv(editor_api, registered, make_csv(remaining, X))
    assert created.status_code == 201, created.json()
    embedding = Embedding.objects.get(pk=created.json()["id"])
    matrix, idx, _ = embeddings.load(embedding)
    assert matrix.shape == (N, D) and embedding.count == N
    assert not matrix[4].any() and np.array_equal(np.delete(matrix, 4, axis=0), X)
    assert 4 not in idx.tolist()
    layout = decode_projection(editor_api.get(url(registered, f"/{embedding.id}/projection?method=pca")))
    assert np.isnan(layout[4]).all() and np.isfinite(np.delete(layout, 4, axis=0)).all()
    downloaded = parse_csv(b"".join(editor_api.get(url(registered, f"/{embedding.id}/csv")).streaming_content))
    assert downloaded.file_names == remaining


def test_quoted_file_names_bom_and_crlf(editor_api, dataset, commit):
    odd = ["a,b.jpg", 'say "hi".jpg', "plain.jpg"]
    services.add_samples(dataset, [{"file_name": n} for n in odd])
    data = "\ufeff" + make_csv(odd, vectors(n=3)).decode().replace("\r\n", "\n").replace("\n", "\r\n")
    with commit():
        response = post_csv(editor_api, dataset, data.encode())
    assert response.status_code == 201, response.json()
    embedding = Embedding.objects.get(dataset=dataset)
    back = parse_csv(b"".join(editor_api.get(url(dataset, f"/{embedding.id}/csv")).streaming_content))
    assert back.file_names == odd and np.array_equal(back.matrix, vectors(n=3))


# --- validation: the error names the row, and nothing is written -----------------------------------------------


def _rows_with(change):
    X, file_names, labels = vectors(), names(), [0] * N
    lines = make_csv(file_names, X, labels).decode().splitlines()
    return "\n".join(change(lines)).encode() + b"\n"


def _set_row(row: int, text: str):
    def change(lines):
        lines[row - 1] = text
        return lines

    return change


BAD = {
    "header": (
        lambda: _rows_with(_set_row(1, "file,embedding_0,embedding_1,embedding_2,embedding_3,embedding_4,labels")),
        "row 1",
    ),
    "header gap": (
        lambda: _rows_with(_set_row(1, "filenames,embedding_0,embedding_2,embedding_1,embedding_3,embedding_4,labels")),
        "expected 'embedding_1'",
    ),
    "short row": (lambda: _rows_with(_set_row(4, "cam/002.jpg,1,2,3,4,0")), "row 4 ('cam/002.jpg'): has 4"),
    "long row": (lambda: _rows_with(_set_row(5, "cam/003.jpg,1,2,3,4,5,6,0")), "row 5 ('cam/003.jpg'): has 6"),
    "nan": (
        lambda: _rows_with(_set_row(3, "cam/001.jpg,1,2,nan,4,5,0")),
        "row 3 ('cam/001.jpg'): embedding_2 is 'nan'",
    ),
    "inf": (lambda: _rows_with(_set_row(6, "cam/004.jpg,1,2,3,-inf,5,0")), "row 6 ('cam/004.jpg'): embedding_3"),
    "overflow": (lambda: _rows_with(_set_row(6, "cam/004.jpg,1e39,2,3,4,5,0")), "float32 range"),
    "text": (
        lambda: _rows_with(_set_row(7, "cam/005.jpg,1,2,3,4,abc,0")),
        "row 7 ('cam/005.jpg'): embedding_4 is 'abc'",
    ),
    "empty value": (lambda: _rows_with(_set_row(7, "cam/005.jpg,1,,3,4,5,0")), "row 7 ('cam/005.jpg')"),
    "label": (lambda: _rows_with(_set_row(8, "cam/006.jpg,1,2,3,4,5,cat")), "row 8 ('cam/006.jpg'): labels is 'cat'"),
    "duplicate": (
        lambda: _rows_with(_set_row(9, "cam/000.jpg,1,2,3,4,5,0")),
        "row 9 ('cam/000.jpg'): the file name is also on row 2",
    ),
    "unknown": (lambda: _rows_with(_set_row(10, "elsewhere.jpg,1,2,3,4,5,0")), "row 10 ('elsewhere.jpg')"),
    "missing": (
        lambda: _rows_with(lambda lines: lines[:-3]),
        "3 of 12 are missing: 'cam/009.jpg', 'cam/010.jpg', 'cam/011.jpg'",
    ),
    "header only": (lambda: _rows_with(lambda lines: lines[:1]), "no rows"),
    "not utf-8": (lambda: b"filenames,embedding_0,labels\n\xff\xfe,1,0\n", "not UTF-8"),
    "quotes": (lambda: _rows_with(_set_row(3, '"cam/001.jpg,1,2,3,4,5,0')), "row 3"),
    "empty name": (lambda: _rows_with(_set_row(3, ",1,2,3,4,5,0")), "row 3 (''): not a file name"),
    "nul in a name": (lambda: _rows_with(_set_row(4, "cam/0\x0002.jpg,1,2,3,4,5,0")), "row 4 ('cam/0\\x0002.jpg')"),
    "masked row short": (
        lambda: _rows_with(
            lambda lines: [
                lines[0].replace(",labels", ",masked,labels"),
                *(line.rsplit(",", 1)[0] + ",0," + line.rsplit(",", 1)[1] for line in lines[1:-1]),
                lines[-1],
            ]
        ),
        "row 13 ('cam/011.jpg'): has 5 values between the file name and labels, the header names 6 columns",
    ),
}
# The faults found in the file itself, which the client's load_embeddings finds too (the others need the dataset).
FILE_FAULTS = sorted(set(BAD) - {"unknown", "missing"})


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_csv_is_rejected_naming_the_row(case, editor_api, registered, media):
    make, message = BAD[case]
    response = post_csv(editor_api, registered, make())
    assert response.status_code == 400
    assert response.json()["detail"].startswith("file: ")
    assert message in response.json()["detail"], response.json()["detail"]
    assert not Embedding.objects.filter(dataset=registered).exists()
    assert stored_files(media) == []


@pytest.mark.parametrize("case", FILE_FAULTS)
def test_the_client_names_a_bad_file_in_the_servers_words(case, editor_api, registered, tmp_path):
    """One parser (issue 13): the client's load_embeddings refuses the file with the API's message, word for word."""
    data = BAD[case][0]()
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    with pytest.raises(FormatError) as refused:
        load_embeddings(path)
    response = post_csv(editor_api, registered, data)
    assert response.status_code == 400
    assert response.json()["detail"] == f"file: {refused.value}"


def _dialect(kind: str) -> bytes:
    """The same 12 rows (reversed, labels 0..11) written the ways a Lightly CSV comes."""
    X, file_names, labels = vectors()[::-1], names()[::-1], list(range(N))[::-1]
    if kind == "quoted":
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL)
        writer.writerow(["filenames", *(f"embedding_{i}" for i in range(D)), "labels"])
        writer.writerows([name, *map(str, row), str(label)] for name, row, label in zip(file_names, X, labels))
        return out.getvalue().encode()
    text = make_csv(file_names, X, labels).decode()
    lines = text.split("\r\n")[:-1]
    if kind == "lightly":
        return text.encode()
    if kind == "bom, lf, blank lines":
        return ("\ufeff" + "\n\n".join(lines[:6]) + "\n  \n" + "\n".join(lines[6:]) + "\n\n").encode()
    if kind == "backslashes":
        return text.replace("cam/", "cam\\").encode()
    if kind == "header spaces":
        return (lines[0].replace(",", ", ") + "\r\n" + "\r\n".join(lines[1:]) + "\r\n").encode()
    if kind == "masked and selected":
        head = lines[0].replace("embedding_2", "masked,embedding_2").replace(",labels", ",selected,labels")
        rows = []
        for line in lines[1:]:
            fields = line.split(",")
            rows.append(",".join([*fields[:3], "1", *fields[3:-1], "0", fields[-1]]))
        return ("\r\n".join([head, *rows]) + "\r\n").encode()
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["lightly", "quoted", "bom, lf, blank lines", "backslashes", "header spaces", "masked and selected"]
)
def test_the_client_and_the_server_read_every_dialect_to_the_same_matrix(
    kind, editor_api, registered, tmp_path, commit
):
    """One parser (issue 13): load_embeddings gives the names, values and labels the server stores."""
    data = _dialect(kind)
    path = tmp_path / "e.csv"
    path.write_bytes(data)
    client_matrix, client_labels, client_names = load_embeddings(path)
    assert client_names == names()[::-1] and client_labels == list(range(N))[::-1]
    with commit():
        response = post_csv(editor_api, registered, data)
    assert response.status_code == 201, response.json()
    matrix, idx, labels = embeddings.load(Embedding.objects.get(pk=response.json()["id"]))
    order = [names().index(name) for name in client_names]  # the sample idx of each client row
    assert np.array_equal(np.asarray(matrix)[order], client_matrix.astype(np.float32))
    assert np.array_equal(client_matrix.astype(np.float32), vectors()[::-1])
    assert labels[np.searchsorted(idx, order)].tolist() == client_labels


def test_missing_lists_at_most_ten(editor_api, registered):
    more = [{"file_name": f"extra/{i}.jpg"} for i in range(20)]
    services.add_samples(registered, more)
    detail = post_csv(editor_api, registered, make_csv(names(), vectors())).json()["detail"]
    assert "20 of 32 are missing" in detail and detail.count("extra/") == 10 and detail.endswith("...")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "x"}, "file"),
        ({"file": SimpleUploadedFile("e.csv", b"", content_type="text/csv"), "name": "x"}, "file"),
        ({"file": SimpleUploadedFile("e.csv", b"filenames,embedding_0,labels\n", content_type="text/csv")}, "name"),
        ({"file": SimpleUploadedFile("e.csv", b"x", content_type="text/csv"), "name": "   "}, "name"),
        ({"file": SimpleUploadedFile("e.csv", b"x", content_type="text/csv"), "name": "n" * 201}, "name"),
    ],
)
def test_bad_request_fields(body, field, editor_api, registered, media):
    response = editor_api.post(url(registered), body, format="multipart")
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}: ")
    assert not Embedding.objects.exists() and stored_files(media) == []


def test_json_body_is_unsupported(editor_api, registered):
    response = editor_api.post(url(registered), {"name": "x", "file": "a,b"}, format="json")
    assert response.status_code == 415
    assert not Embedding.objects.exists()


def test_names_are_unique_in_a_dataset(editor_api, registered, commit, media):
    with commit():
        assert post_csv(editor_api, registered, make_csv(names(), vectors())).status_code == 201
    files = stored_files(media)
    again = post_csv(editor_api, registered, make_csv(names(), vectors(seed=1)))
    assert (
        again.status_code == 400
        and again.json()["detail"] == "name: this dataset already has an embedding named 'mine'"
    )
    assert Embedding.objects.count() == 1 and stored_files(media) == files


def test_a_name_taken_by_a_concurrent_upload_is_a_400_naming_the_name(editor_api, registered, monkeypatch, media):
    real_parse = embeddings._csv_blocks

    def parse_while_another_upload_lands(stream, *args):
        # The rival commits after this request checked the name and before it inserts.
        Embedding.objects.create(
            dataset=registered,
            name="mine",
            dimension=D,
            count=N,
            matrix_key=f"datasets/{registered.id}/embeddings/rival.npy",
        )
        return real_parse(stream, *args)

    monkeypatch.setattr(embeddings, "_csv_blocks", parse_while_another_upload_lands)
    response = post_csv(editor_api, registered, make_csv(names(), vectors()))
    assert response.status_code == 400
    assert response.json()["detail"] == "name: this dataset already has an embedding named 'mine'"
    assert list(Embedding.objects.values_list("matrix_key", flat=True)) == [
        f"datasets/{registered.id}/embeddings/rival.npy"
    ]
    assert stored_files(media) == []  # the losing upload's files are gone


def test_a_failed_database_step_leaves_no_files(editor_api, registered, monkeypatch, media):
    def broken(self, *args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(Embedding, "save", broken)
    with pytest.raises(RuntimeError):
        post_csv(editor_api, registered, make_csv(names(), vectors()))
    assert stored_files(media) == []


# --- list, get, delete, permissions ---------------------------------------------------------------------


@pytest.fixture
def stored(editor_api, registered, commit):
    with commit():
        response = post_csv(editor_api, registered, make_csv(names(), vectors()))
    return Embedding.objects.get(pk=response.json()["id"])


def test_list_and_get(viewer_api, registered, stored):
    listed = viewer_api.get(url(registered))
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()] == [stored.id]
    one = viewer_api.get(url(registered, f"/{stored.id}"))
    assert one.status_code == 200
    assert one.json()["projection_methods"] == ["pca", "tsne"] and one.json()["creator"] == "ed"
    assert viewer_api.get(url(registered, "/0123456789abcdef01234567")).status_code == 404


def test_delete_removes_row_and_files(editor_api, registered, stored, commit, media):
    assert len(stored_files(media)) == 4  # matrix, rows, pca, tsne
    with commit():
        response = editor_api.delete(url(registered, f"/{stored.id}"))
    assert response.status_code == 204
    assert not Embedding.objects.filter(pk=stored.pk).exists()
    assert stored_files(media) == []


@pytest.mark.parametrize("client, code", [("outsider_api", 404), ("anon_api", 401)])
@pytest.mark.parametrize("path", ["", "/{id}", "/{id}/csv", "/{id}/projection"])
def test_non_members_see_nothing(client, code, path, request, registered, stored):
    response = request.getfixturevalue(client).get(url(registered, path.format(id=stored.id)))
    assert response.status_code == code


@pytest.mark.parametrize("client, code", [("outsider_api", 404), ("viewer_api", 403), ("anon_api", 401)])
def test_only_editors_write(client, code, request, registered, stored, media):
    api = request.getfixturevalue(client)
    files = stored_files(media)
    assert post_csv(api, registered, make_csv(names(), vectors()), name="other").status_code == code
    assert api.delete(url(registered, f"/{stored.id}")).status_code == code
    assert list(Embedding.objects.values_list("id", flat=True)) == [stored.id]
    assert stored_files(media) == files


def test_an_embedding_of_another_dataset_is_a_404(editor_api, owner, registered, stored):
    other = services.create_dataset(owner, "other", "meta")
    from curation.models import Membership, Role

    Membership.objects.create(dataset=other, user=stored.creator, role=Role.EDITOR)
    assert editor_api.get(url(other, f"/{stored.id}")).status_code == 404
    assert editor_api.delete(url(other, f"/{stored.id}")).status_code == 404
    assert Embedding.objects.filter(pk=stored.pk).exists()


# --- projection states ----------------------------------------------------------------------------------------


def test_projection_is_202_until_computed_then_200(editor_api, registered):
    response = post_csv(editor_api, registered, make_csv(names(), vectors()))  # on-commit work not run
    embedding_id = response.json()["id"]
    assert response.json()["projection_status"] == "pending"
    pending = editor_api.get(url(registered, f"/{embedding_id}/projection"))
    assert pending.status_code == 202 and pending.json()["projection_status"] == "pending"
    embeddings.compute_projection(embedding_id)
    assert editor_api.get(url(registered, f"/{embedding_id}/projection")).status_code == 200


def test_failed_projection_is_409(editor_api, registered, stored):
    Embedding.objects.filter(pk=stored.pk).update(projection_status="failed")
    response = editor_api.get(url(registered, f"/{stored.id}/projection"))
    assert response.status_code == 409 and "failed" in response.json()["detail"]


def test_no_tsne_above_the_limit(editor_api, registered, settings, commit):
    settings.WINNOW_TSNE_MAX_POINTS = 5
    with commit():
        created = post_csv(editor_api, registered, make_csv(names(), vectors()))
    embedding_id = created.json()["id"]
    best = editor_api.get(url(registered, f"/{embedding_id}/projection"))
    assert best.status_code == 200 and best["X-Projection-Method"] == "pca"
    assert editor_api.get(url(registered, f"/{embedding_id}/projection?method=tsne")).status_code == 404
    bad = editor_api.get(url(registered, f"/{embedding_id}/projection?method=umap"))
    assert bad.status_code == 400 and bad.json()["detail"].startswith("method")


def test_projection_answers_whatever_the_client_accepts(editor_api, registered, stored):
    response = editor_api.get(url(registered, f"/{stored.id}/projection"), HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 200


# --- parser details ----------------------------------------------------------------------------------------------


def test_parser_reads_many_rows_exactly():
    X = vectors(n=20_000, d=16, seed=9)
    file_names = [f"f{i}.jpg" for i in range(20_000)]
    parsed = parse_csv(make_csv(file_names, X, labels=list(range(20_000))))
    assert parsed.file_names == file_names and np.array_equal(parsed.matrix, X)
    assert parsed.labels[-1] == 19_999 and parsed.line_numbers[-1] == 20_001


def test_parser_rejects_a_header_without_embedding_columns():
    with pytest.raises(EmbeddingError, match="row 1"):
        parse_csv(b"filenames,labels\na.jpg,0\n")


def test_source_of_an_uploaded_csv(registered, commit):
    with commit():
        embedding = embeddings.create_from_csv(registered, "x", make_csv(names(), vectors()))
    assert embedding.source == EmbeddingSource.CSV


def test_pca_layout_of_a_one_dimensional_embedding():
    from curation.embeddings import pca_2d

    layout = pca_2d(np.array([[1.0], [3.0], [2.0]], dtype=np.float32))
    assert layout.shape == (3, 2)
    assert np.allclose(layout[:, 1], 0)
    assert np.allclose(np.abs(layout[:, 0]), [1, 1, 0])
