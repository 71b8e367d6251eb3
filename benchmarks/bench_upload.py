"""Upload throughput through the real upload path, against raw Pillow decode + thumbnail, in one run.

- images: 200 photo-like 1024 x 768 JPEGs (gradients, blotches, noise), made with Pillow;
- reference: Pillow alone, one thread: open, draft-mode decode, thumbnail (longest side 256),
  WebP encode: the least work any upload of these images must do;
- platform: `POST /api/v1/datasets/{id}/samples` (multipart, 20 files a request, a `full` dataset)
  through Django's test client and the whole request stack: token auth, multipart parsing, checks,
  sha256, thumbnail, originals and thumbnails written to local storage, rows in one transaction.
  The multipart bodies are encoded before the clock starts (that is the client's work); the
  built-in embedder is deferred (`embed=false`): bench_embedder.py measures it.
Goal: the platform reaches at least half the reference rate.

Runs on a throwaway test database created from DATABASE_URL (PostgreSQL), or the embedded SQLite
default without it:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/winnow_bench_upload .venv/bin/python benchmarks/bench_upload.py
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import django_environment

django_environment(None)  # a throwaway test database from DATABASE_URL, or the embedded SQLite default
MEDIA = tempfile.mkdtemp(prefix="winnow-bench-upload-")
os.environ["WINNOW_MEDIA_ROOT"] = MEDIA
os.environ.pop("AWS_STORAGE_BUCKET_NAME", None)
os.environ.pop("CELERY_BROKER_URL", None)  # nothing to queue: embed=false

import numpy as np  # noqa: E402
from _report import write_section  # noqa: E402
from PIL import Image  # noqa: E402

BATCH = 20


def photo_jpeg(seed: int, size=(1024, 768)) -> bytes:
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    phase = rng.uniform(0, 2 * np.pi, 3)
    base = np.stack([127 + 100 * np.sin(x / w * 3 + phase[c] + y / h * 2) for c in range(3)], axis=-1)
    blotches = rng.normal(0, 35, (h // 32 + 1, w // 32 + 1, 3)).repeat(32, 0).repeat(32, 1)[:h, :w]
    pixels = np.clip(base + blotches + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def raw_thumbnail(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((256, 256))
        thumb = image.convert("RGB")
        buffer = io.BytesIO()
        thumb.save(buffer, "WEBP", quality=80, method=2)
    return buffer.getvalue()


def rate(seconds: float, count: int) -> float:
    return count / seconds if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
    from django.test.utils import setup_test_environment
    from rest_framework.test import APIClient

    from curation.models import Sample
    from curation.services import create_dataset
    from winnow.accounts.models import ApiToken

    images = [photo_jpeg(i) for i in range(args.images)]
    mean_kb = statistics.mean(len(d) for d in images) / 1024

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.create_user("bench", password="bench-pw-123")
        _token, key = ApiToken.issue(user, "bench")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

        def platform_round(round_no: int) -> float:
            dataset = create_dataset(user, f"bench {round_no}", "full")
            url = f"/api/v1/datasets/{dataset.id}/samples"
            bodies = []
            for start in range(0, len(images), BATCH):
                chunk = images[start : start + BATCH]
                files = [_named(f"img_{start + i:04d}.jpg", data) for i, data in enumerate(chunk)]
                bodies.append(encode_multipart(BOUNDARY, {"files": files, "embed": "false"}))
            started = time.perf_counter()
            for body in bodies:
                response = client.generic("POST", url, body, content_type=MULTIPART_CONTENT)
                if response.status_code != 201 or response.json()["rejected"]:
                    raise SystemExit(f"upload failed: {response.status_code} {response.content[:500]!r}")
            elapsed = time.perf_counter() - started
            stored = Sample.objects.filter(dataset=dataset).count()
            if stored != len(images):
                raise SystemExit(f"{stored} samples stored, expected {len(images)}")
            return elapsed

        def raw_round() -> float:
            started = time.perf_counter()
            for data in images:
                raw_thumbnail(data)
            return time.perf_counter() - started

        raw_times, platform_times = [], []
        for round_no in range(args.rounds):
            raw_times.append(raw_round())
            platform_times.append(platform_round(round_no))
        vendor = connection.vendor
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    raw = rate(statistics.median(raw_times), len(images))
    platform = rate(statistics.median(platform_times), len(images))
    ratio = platform / raw
    verdict = "meets" if ratio >= 0.5 else "misses"
    body = f"""## Upload throughput (`bench_upload.py`)

{len(images)} photo-like JPEGs of 1024 x 768 ({mean_kb:.0f} KiB on average), uploaded into a `full`
dataset, {BATCH} files a request, through Django's test client and the whole request stack (token auth,
multipart parsing, checks, sha256, WebP thumbnail, original + thumbnail to local storage, rows in one
transaction on {vendor}). Reference: Pillow alone in one thread on the same images, open + draft-mode
decode + thumbnail (256) + WebP encode. Median of {args.rounds} alternating rounds.

| path | images/s |
|---|---|
| raw Pillow decode + thumbnail | {raw:.1f} |
| platform upload (`POST /api/v1/datasets/{{id}}/samples`) | {platform:.1f} |
| platform / raw | {ratio:.2f} ({verdict} the goal of at least 0.5) |
"""
    print(body)
    if not args.no_write:
        write_section("upload", body)


def _named(name: str, data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="image/jpeg")


if __name__ == "__main__":
    main()
