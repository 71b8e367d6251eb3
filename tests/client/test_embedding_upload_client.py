"""The client's embeddings upload against a live server: chunked sessions that resume, .npy with names, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from curation import services
from curation.models import Dataset, Embedding, EmbeddingUpload
from tests.client.test_client_cli import client, live, token, winnow  # noqa: F401  (fixtures)
from winnow.client import WinnowError, save_embeddings

N, D = 40, 8


@pytest.fixture
def meta(owner):
    dataset = Dataset.objects.create(name="vectors", owner=owner, upload_mode="meta")
    dataset.memberships.create(user=owner, role="owner")
    services.add_samples(dataset, [{"file_name": f"f/{i:03d}.jpg"} for i in range(N)])
    return dataset


def file_names() -> list[str]:
    return [f"f/{i:03d}.jpg" for i in range(N)]


def matrix(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(N, D)).astype(np.float32)


def stored(name: str) -> np.ndarray:
    from curation import embeddings

    return embeddings.load(Embedding.objects.get(name=name))[0]


@live
def test_a_chunked_csv_upload_resumes_after_dropped_connections(client, meta, tmp_path):
    X = matrix()
    path = tmp_path / "e.csv"
    save_embeddings(path, X, list(range(N)), file_names())
    real = client.session.request
    calls = {"put": 0}

    def flaky(method, url, **kwargs):
        if method == "PUT":
            calls["put"] += 1
            if calls["put"] == 2:  # the chunk arrives, the answer is lost
                real(method, url, **kwargs)
                raise requests.ConnectionError("connection reset by peer")
            if calls["put"] == 4:  # the connection drops before the chunk arrives
                raise requests.ConnectionError("connection reset by peer")
        return real(method, url, **kwargs)

    client.session.request = flaky
    embedding = client.upload_embeddings(path, "big", dataset_id=meta.id, chunked=True, chunk_bytes=700, progress=False)
    assert calls["put"] > 5
    assert embedding["name"] == "big" and embedding["dimension"] == D
    np.testing.assert_allclose(stored("big"), X, rtol=1e-6)
    assert EmbeddingUpload.objects.get().status == "succeeded"


@live
def test_an_array_with_file_names_and_labels_single_and_chunked(client, meta):
    X = matrix(1)
    single = client.upload_embeddings(X, "small", dataset_id=meta.id, file_names=file_names(), progress=False)
    assert single["dimension"] == D
    chunked = client.upload_embeddings(
        X[::-1],
        "chunks",
        dataset_id=meta.id,
        file_names=file_names()[::-1],
        labels=np.arange(N),
        chunked=True,
        chunk_bytes=256,
        progress=False,
    )
    assert chunked["name"] == "chunks"
    np.testing.assert_array_equal(stored("small"), X)
    np.testing.assert_array_equal(stored("chunks"), X)


@live
def test_no_wait_returns_the_upload_and_a_refused_file_raises_its_row(client, meta, tmp_path):
    X = matrix(2)
    names = file_names()
    names[5] = "nobody.jpg"
    with pytest.raises(WinnowError, match=r"line 6 \('nobody.jpg'\)"):
        client.upload_embeddings(X, "bad", dataset_id=meta.id, file_names=names, chunked=True, progress=False)
    assert not Embedding.objects.exists()
    upload = client.upload_embeddings(
        X, "later", dataset_id=meta.id, file_names=file_names(), chunked=True, progress=False, wait=False
    )
    assert upload["status"] in ("queued", "processing", "succeeded")
    assert client.wait_for_embedding_upload(upload["id"], meta.id, progress=False)["name"] == "later"
    with pytest.raises(WinnowError, match="11 file names"):
        client.upload_embeddings(X, "short", dataset_id=meta.id, file_names=file_names()[:11], progress=False)


@live
def test_cli_uploads_a_npy_with_a_names_file(live_server, token, meta, tmp_path):
    X = matrix(3)
    np.save(tmp_path / "m.npy", X)
    (tmp_path / "names.txt").write_text("\n".join(file_names()) + "\n")
    result = winnow(
        live_server,
        token,
        "embeddings",
        "--dataset-id",
        meta.id,
        "--file",
        str(tmp_path / "m.npy"),
        "--file-names",
        str(tmp_path / "names.txt"),
        "--name",
        "cli",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "uploaded embedding 'cli' (8 dimensions" in result.stdout
    np.testing.assert_array_equal(stored("cli"), X)
    missing = winnow(
        live_server, token, "embeddings", "--dataset-id", meta.id, "--file", str(tmp_path / "m.npy"), "--quiet"
    )
    assert missing.returncode == 1 and "file names of its rows" in missing.stderr
