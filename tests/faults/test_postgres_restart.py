"""PostgreSQL restarted (cleanly, or crashed) during an image upload (issue 14), on a private server: nothing is
lost or half-written, the upload either finishes through its retries or stops with a clean 503 and resumes, and the
server answers normally once the database is back (its kept connections are checked and replaced)."""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import psycopg2
import pytest
import requests
from PIL import Image

from tests.faults.conftest import serve
from tests.private_postgres import wait_until
from winnow.client.api import Client, WinnowError

IMAGES = 240


def _images(folder: Path) -> dict[str, str]:
    """IMAGES small distinct PNGs in two subfolders; name -> sha256."""
    rng = np.random.default_rng(0)
    digests = {}
    for i in range(IMAGES):
        name = f"{'day' if i % 2 else 'night'}/frame-{i:04d}.png"
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)).save(path)
        digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _rows(pg, dataset_id: str) -> list[tuple]:
    """(file_name, sha256, original_key, thumbnail_key) of the dataset's samples, or [] while the server is down."""
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="winnow", connect_timeout=3)
    except psycopg2.OperationalError:
        return []
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT file_name, sha256, original_key, thumbnail_key FROM curation_sample WHERE dataset_id = %s",
                [dataset_id],
            )
            return cur.fetchall()
    except psycopg2.Error:
        return []
    finally:
        conn.close()


@pytest.mark.parametrize("kind, mode", [("gunicorn", "fast"), ("gunicorn", "immediate"), ("runserver", "immediate")])
def test_postgres_restarted_during_an_upload(private_winnow, tmp_path, kind, mode):
    pg = private_winnow.pg
    digests = _images(tmp_path / "images")
    env = private_winnow.server_env(WEB_CONCURRENCY="1", GUNICORN_THREADS="4", GUNICORN_ACCESS_LOG="-")
    server = serve(kind, env, tmp_path)
    client = Client(private_winnow.token, server=server.base, retries=4)
    try:
        dataset_id = client.create_dataset(f"restart {kind} {mode}", "full")
        outcome: dict = {}

        def upload() -> None:
            try:
                outcome["summary"] = client.upload_dataset(
                    tmp_path / "images", progress=False, embed=False, batch_files=4, workers=3
                )
            except WinnowError as exc:
                outcome["error"] = exc

        uploading = threading.Thread(target=upload)
        uploading.start()
        wait_until(lambda: len(_rows(pg, dataset_id)) >= 16, timeout=120, interval=0.05, what="16 samples")
        assert uploading.is_alive(), "the upload ended before the restart: nothing was tested"
        pg.stop(mode)  # immediate: as a crash; the server recovers from its WAL at start
        pg.start()
        uploading.join(timeout=600)
        assert not uploading.is_alive()

        # Finished through its retries, or refused cleanly: the database is unavailable, try again.
        if "error" in outcome:
            error = outcome["error"]
            assert error.status in (503, None), f"{error.status} {error}"
        resumed = client.upload_dataset(tmp_path / "images", progress=False, embed=False, batch_files=4, workers=3)
        assert resumed["rejected"] == [] and resumed["created"] + resumed["skipped"] == IMAGES
        assert resumed["created"] == (0 if "summary" in outcome else resumed["created"])

        # Nothing lost, nothing twice, nothing half-written: each image once, with its own bytes and thumbnail,
        # and no stored file without its row.
        rows = _rows(pg, dataset_id)
        assert sorted(name for name, *_ in rows) == sorted(digests)
        assert all(sha == digests[name] for name, sha, *_ in rows)
        media = Path(private_winnow.env["WINNOW_MEDIA_ROOT"])
        for name, _sha, original, thumbnail in rows:
            assert hashlib.sha256((media / original).read_bytes()).hexdigest() == digests[name]
            assert (media / thumbnail).stat().st_size > 0
        stored = {str(p.relative_to(media)) for p in (media / "datasets" / dataset_id).rglob("*") if p.is_file()}
        assert stored == {key for _n, _s, original, thumbnail in rows for key in (original, thumbnail)}

        # The server recovered: the first requests on its old (now dead) connections answer normally.
        for _ in range(8):
            listed = requests.get(
                f"{server.base}/api/v1/datasets/{dataset_id}/samples",
                params={"limit": 1, "count": "true"},
                headers={"Authorization": f"Token {private_winnow.token}"},
                timeout=60,
            )
            assert listed.status_code == 200 and listed.json()["count"] == IMAGES
        assert requests.get(f"{server.base}/api/v1/health", timeout=30).json()["database"]["ok"]
        if kind == "gunicorn":  # its access log: requests during the outage were 503s, never a 500
            statuses = re.findall(r'"[A-Z]+ /api/v1/\S* HTTP/1\.1" (\d{3}) ', server.log_path.read_text())
            print(sorted(Counter(statuses).items()))
            assert statuses and "500" not in statuses, server.log()
        print(f"{kind} {mode}: {outcome.get('error') or 'finished through retries'}")
    finally:
        client.close()
        server.stop()
        if not pg.running():
            pg.start()
