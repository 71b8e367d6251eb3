"""Smoke test of the embedded default (SQLite, in-process tasks, local files): what `scripts/demo` runs on."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_on_embedded_default(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "SECRET_KEY",
            "AWS_STORAGE_BUCKET_NAME",
            "WINNOW_REQUIRE_SERVICES",
            "DJANGO_SETTINGS_MODULE",
        }
    }
    env["WINNOW_VAR_DIR"] = str(tmp_path / "var")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True)
    made = subprocess.run(
        [*manage, "createtoken", "demo", "--create-user"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    key = made.stdout.strip().splitlines()[-1]
    assert (tmp_path / "var" / "winnow.sqlite3").exists()

    port = _free_port()
    server = subprocess.Popen(
        [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                health = requests.get(f"{base}/api/v1/health", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            raise AssertionError(server.stderr.read().decode() if server.poll() is not None else "no answer")
        assert health.status_code == 200
        assert health.json()["database"]["vendor"] == "sqlite"
        assert health.json()["broker"] == {"ok": True, "mode": "in-process"}

        auth = {"Authorization": f"Token {key}"}
        created = requests.post(
            f"{base}/api/v1/datasets", json={"name": "smoke", "upload_mode": "meta"}, headers=auth, timeout=10
        )
        assert created.status_code == 201, created.text
        listed = requests.get(f"{base}/api/v1/datasets", headers=auth, timeout=10).json()
        names = [d["name"] for d in (listed["results"] if isinstance(listed, dict) else listed)]
        assert names == ["smoke"]
        # Registration on SQLite: dense idx, skips what is there, initial-tag over every sample.
        samples = f"{base}/api/v1/datasets/{created.json()['id']}/samples"
        first = requests.post(
            samples,
            json={"samples": [{"file_name": "a.jpg", "metadata": {"k": 1}}, {"file_name": "b.jpg"}]},
            headers=auth,
            timeout=10,
        )
        again = requests.post(
            samples, json={"samples": [{"file_name": "b.jpg"}, {"file_name": "c\\d.jpg"}]}, headers=auth, timeout=10
        )
        assert (first.status_code, first.json()["created"]) == (201, 2), first.text
        assert (again.json()["created"], again.json()["skipped"]) == (1, ["b.jpg"]), again.text
        rows = requests.get(samples, headers=auth, timeout=10).json()["results"]
        assert [(r["idx"], r["file_name"]) for r in rows] == [(0, "a.jpg"), (1, "b.jpg"), (2, "c/d.jpg")]
        tags = requests.get(f"{base}/api/v1/datasets/{created.json()['id']}/tags", headers=auth, timeout=10).json()
        tags = tags["results"] if isinstance(tags, dict) else tags
        assert [(t["name"], t["count"]) for t in tags] == [("initial-tag", 3)]
        assert requests.get(f"{base}/api/v1/datasets", timeout=10).status_code == 401

        # An embedding: its map projection runs in a child process of the server (bounded in time and memory),
        # on the same SQLite file and media folder, and is ready when the upload answers.
        header = "filenames,embedding_0,embedding_1,embedding_2,labels\n"
        rows_csv = "a.jpg,0.1,0.2,0.3,0\nb.jpg,0.4,0.1,0.9,0\nc/d.jpg,0.7,0.5,0.2,0\n"
        embeddings_url = f"{base}/api/v1/datasets/{created.json()['id']}/embeddings"
        stored = requests.post(
            embeddings_url,
            files={"file": ("e.csv", header + rows_csv, "text/csv")},
            data={"name": "e"},
            headers=auth,
            timeout=120,
        )
        assert stored.status_code == 201, stored.text
        projection = requests.get(f"{embeddings_url}/{stored.json()['id']}/projection", headers=auth, timeout=30)
        assert projection.status_code == 200, projection.text
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=20)
