"""Image upload (multipart) in each mode: what lands, what is refused, and that nothing is half-written."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from curation import services
from curation.models import Embedding, EmbeddingSource, Membership, Role, Sample, Tag
from curation.services import create_dataset

pytestmark = pytest.mark.django_db


# --- helpers shared with the other test files of this area ---------------------------------------


def photo(seed: int = 0, size=(320, 240), color=None) -> np.ndarray:
    """A photo-like RGB array: a gradient, blotches and noise (or one flat colour)."""
    w, h = size
    if color is not None:
        return np.broadcast_to(np.array(color, dtype=np.uint8), (h, w, 3)).copy()
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 128 / (w + h)], axis=-1)
    blotches = rng.normal(0, 40, (h // 16 + 1, w // 16 + 1, 3)).repeat(16, 0).repeat(16, 1)[:h, :w]
    return np.clip(base + blotches + rng.normal(0, 5, (h, w, 3)), 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(seed: int = 0, size=(320, 240), color=None, **options) -> bytes:
    return encode(photo(seed, size, color), "JPEG", quality=90, **options)


def png(seed: int = 0, size=(320, 240)) -> bytes:
    return encode(photo(seed, size), "PNG")


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (10^10 by default)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 4))
        + chunk(b"IEND", b"")
    )


def samples_url(dataset) -> str:
    return f"/api/v1/datasets/{dataset.id}/samples"


def upload(api, dataset, files, *, file_names=None, **fields):
    """POST a multipart batch: `files` is a list of (part name, bytes)."""
    parts = [SimpleUploadedFile(name, data, content_type="application/octet-stream") for name, data in files]
    body = {"files": parts}
    if file_names is not None:
        body["file_names"] = json.dumps(file_names)
    for key, value in fields.items():
        body[key] = value if isinstance(value, str) else json.dumps(value)
    return api.post(samples_url(dataset), body, format="multipart")


def stored_files(root) -> list[str]:
    """Every file under the test's media folder, as storage keys."""
    base = Path(root)
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.exists() else []


def make_dataset(owner, editor, viewer, mode: str, name: str = "photos"):
    ds = create_dataset(owner, name, mode)
    Membership.objects.create(dataset=ds, user=editor, role=Role.EDITOR)
    Membership.objects.create(dataset=ds, user=viewer, role=Role.VIEWER)
    return ds


@pytest.fixture
def full_dataset(owner, editor, viewer):
    return make_dataset(owner, editor, viewer, "full")


@pytest.fixture
def thumbs_dataset(owner, editor, viewer):
    return make_dataset(owner, editor, viewer, "thumbnails")


@pytest.fixture
def media(settings):
    return settings.MEDIA_ROOT


@pytest.fixture
def commit(django_capture_on_commit_callbacks):
    """Run the on-commit work (file deletion, queued tasks) of what happens inside the block."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def small_embedder(monkeypatch):
    """The real built-in embedder with fewer centroids: same code path, seconds instead of a minute."""
    from winnow.client import embedder

    real = embedder.embed_images
    monkeypatch.setattr(embedder, "embed_images", lambda images, **kw: real(images, **{"n_centroids": 16, **kw}))


def webp_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP"
        return image.size


# --- modes ------------------------------------------------------------------------------------------


def test_full_mode_keeps_original_and_thumbnail(editor_api, full_dataset, media, commit):
    big, small, drawing = jpeg(1, size=(1024, 768)), jpeg(2, size=(120, 90)), png(3, size=(300, 500))
    with commit():
        response = upload(
            editor_api,
            full_dataset,
            [("a.jpg", big), ("b.jpg", small), ("c.png", drawing)],
            file_names=["cams/front/a.jpg", "cams/back/b.jpg", "c.png"],
            metadata={"cams/front/a.jpg": {"weather": {"scenario": "rain"}}},
            embed=False,
        )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert [c["file_name"] for c in body["created"]] == ["cams/front/a.jpg", "cams/back/b.jpg", "c.png"]
    assert [c["idx"] for c in body["created"]] == [0, 1, 2]
    assert body["skipped"] == [] and body["rejected"] == [] and body["replaced"] == []

    a = Sample.objects.get(dataset=full_dataset, file_name="cams/front/a.jpg")
    assert (a.width, a.height, a.format, a.size_bytes) == (1024, 768, "jpeg", len(big))
    assert a.sha256 == hashlib.sha256(big).hexdigest()
    assert a.metadata == {"weather": {"scenario": "rain"}}
    assert a.original_key == f"datasets/{full_dataset.id}/originals/{a.id}.jpg"
    assert a.thumbnail_key == f"datasets/{full_dataset.id}/thumbnails/{a.id}.webp"
    with default_storage.open(a.original_key, "rb") as handle:
        assert handle.read() == big
    with default_storage.open(a.thumbnail_key, "rb") as handle:
        assert webp_size(handle.read()) == (256, 192)

    b = Sample.objects.get(dataset=full_dataset, file_name="cams/back/b.jpg")
    with default_storage.open(b.thumbnail_key, "rb") as handle:
        assert webp_size(handle.read()) == (120, 90)  # never upscaled
    c = Sample.objects.get(dataset=full_dataset, file_name="c.png")
    assert (c.width, c.height, c.format) == (300, 500, "png") and c.original_key.endswith(".png")
    assert len(stored_files(media)) == 6
    assert Tag.objects.get(dataset=full_dataset, name="initial-tag").count == 3


def test_large_files_stream_from_temporary_files(editor_api, full_dataset, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # every part goes to a temporary file, as big photos do
    data = jpeg(4, size=(800, 600))
    assert upload(editor_api, full_dataset, [("big.jpg", data)], embed=False).status_code == 201
    sample = Sample.objects.get(dataset=full_dataset)
    with default_storage.open(sample.original_key, "rb") as handle:
        assert handle.read() == data
    assert sample.sha256 == hashlib.sha256(data).hexdigest()


def test_thumbnails_mode_keeps_only_the_thumbnail(editor_api, thumbs_dataset, media):
    response = upload(editor_api, thumbs_dataset, [("x.jpg", jpeg(1, size=(640, 480)))], embed=False)
    assert response.status_code == 201, response.json()
    sample = Sample.objects.get(dataset=thumbs_dataset)
    assert sample.original_key == "" and (sample.width, sample.height) == (640, 480)
    assert stored_files(media) == [sample.thumbnail_key]


def test_meta_mode_takes_no_pixels(editor_api, dataset, media):
    response = upload(editor_api, dataset, [("x.jpg", jpeg())])
    assert response.status_code == 400
    message = (
        "this dataset keeps metadata only (meta): it takes no image files; "
        'register samples as JSON {"samples": [{"file_name": ...}]}'
    )
    assert response.json() == {"detail": f"upload_mode: {message}", "errors": {"upload_mode": [message]}}
    assert not Sample.objects.filter(dataset=dataset).exists()
    assert stored_files(media) == []


def test_file_names_default_to_the_part_names(editor_api, full_dataset):
    response = upload(editor_api, full_dataset, [("one.jpg", jpeg(1)), ("two.png", png(2))], embed=False)
    assert response.status_code == 201
    assert sorted(Sample.objects.values_list("file_name", flat=True)) == ["one.jpg", "two.png"]


def test_exif_orientation_is_applied(editor_api, full_dataset):
    # Stored 200 wide x 100 high, left half red and right half blue; orientation 6 means "rotate
    # 90 degrees clockwise to display", so the photo is shown 100 x 200 with red on top.
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, :100] = (255, 0, 0)
    pixels[:, 100:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(pixels, "JPEG", quality=95, exif=exif.tobytes())
    response = upload(editor_api, full_dataset, [("portrait.jpg", data)], embed=False)
    assert response.status_code == 201
    sample = Sample.objects.get(dataset=full_dataset)
    assert (sample.width, sample.height) == (100, 200)
    with default_storage.open(sample.thumbnail_key, "rb") as handle:
        thumb = Image.open(io.BytesIO(handle.read())).convert("RGB")
    assert thumb.size == (100, 200)
    top, bottom = thumb.getpixel((50, 20)), thumb.getpixel((50, 180))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


# --- bad files: each fails alone, the rest lands ---------------------------------------------------


def _truncated() -> bytes:
    data = jpeg(7, size=(400, 300))
    return data[: len(data) // 2]


BAD_FILES = {
    "corrupt": (lambda: b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20, "not an image"),
    "truncated": (_truncated, "truncated"),
    "not an image": (lambda: b"filenames,embedding_0,labels\n", "not an image"),
    "empty": (lambda: b"", "empty"),
    "bomb": (png_bomb, "decompression bomb"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_rejected_alone(case, editor_api, full_dataset, media):
    make, reason = BAD_FILES[case]
    response = upload(
        editor_api, full_dataset, [("good1.jpg", jpeg(1)), ("bad.jpg", make()), ("good2.png", png(2))], embed=False
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert [c["file_name"] for c in body["created"]] == ["good1.jpg", "good2.png"]
    assert len(body["rejected"]) == 1
    assert body["rejected"][0]["file_name"] == "bad.jpg"
    assert reason in body["rejected"][0]["reason"]
    assert sorted(Sample.objects.filter(dataset=full_dataset).values_list("idx", flat=True)) == [0, 1]
    assert not Sample.objects.filter(file_name="bad.jpg").exists()
    keys = {k for s in Sample.objects.filter(dataset=full_dataset) for k in (s.original_key, s.thumbnail_key)}
    assert set(stored_files(media)) == keys and len(keys) == 4


def test_bomb_between_one_and_two_times_the_limit_is_rejected(editor_api, full_dataset, monkeypatch, media):
    # Pillow only warns in that range; we refuse from the limit itself.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    response = upload(
        editor_api,
        full_dataset,
        [("ok.jpg", jpeg(1, size=(90, 90))), ("big.jpg", jpeg(2, size=(120, 100)))],
        embed=False,
    )
    body = response.json()
    assert [c["file_name"] for c in body["created"]] == ["ok.jpg"]
    assert body["rejected"][0]["file_name"] == "big.jpg"
    assert "decompression bomb" in body["rejected"][0]["reason"]
    assert "10000" in body["rejected"][0]["reason"]
    assert len(stored_files(media)) == 2


def test_a_file_over_the_size_limit_is_rejected(editor_api, full_dataset, settings, media):
    small, large = jpeg(1, size=(64, 48)), jpeg(2, size=(800, 600))
    settings.WINNOW_MAX_UPLOAD_BYTES = len(small) + 10
    response = upload(editor_api, full_dataset, [("small.jpg", small), ("large.jpg", large)], embed=False)
    body = response.json()
    assert [c["file_name"] for c in body["created"]] == ["small.jpg"]
    assert body["rejected"] == [
        {"file_name": "large.jpg", "reason": f"the file is {len(large)} bytes; the limit is {len(small) + 10} bytes"}
    ]
    assert len(stored_files(media)) == 2


@pytest.mark.parametrize("name", ["../escape.jpg", "/etc/passwd.jpg", "a/../../b.jpg", "C:\\x.jpg", "a\x00b.jpg", ""])
def test_unsafe_file_names_are_rejected(name, editor_api, full_dataset, media):
    response = upload(
        editor_api,
        full_dataset,
        [("x.jpg", jpeg(1)), ("y.jpg", jpeg(2))],
        file_names=["fine/x.jpg", name],
        embed=False,
    )
    body = response.json()
    assert [c["file_name"] for c in body["created"]] == ["fine/x.jpg"]
    assert body["rejected"][0]["file_name"] == name and body["rejected"][0]["reason"]
    assert Sample.objects.filter(dataset=full_dataset).count() == 1
    assert len(stored_files(media)) == 2
    assert all(key.startswith(f"datasets/{full_dataset.id}/") for key in stored_files(media))


def test_backslash_paths_are_normalised(editor_api, full_dataset):
    response = upload(editor_api, full_dataset, [("x.jpg", jpeg(1))], file_names=["cam\\front\\x.jpg"], embed=False)
    assert response.json()["created"][0]["file_name"] == "cam/front/x.jpg"


def test_a_name_twice_in_one_upload_keeps_the_first(editor_api, full_dataset, media):
    first, second = jpeg(1), jpeg(2)
    response = upload(editor_api, full_dataset, [("a.jpg", first), ("a.jpg", second)], embed=False)
    body = response.json()
    assert [c["file_name"] for c in body["created"]] == ["a.jpg"]
    assert body["rejected"][0]["file_name"] == "a.jpg" and "more than once" in body["rejected"][0]["reason"]
    assert Sample.objects.get(dataset=full_dataset).sha256 == hashlib.sha256(first).hexdigest()
    assert len(stored_files(media)) == 2


# --- resume and overwrite ------------------------------------------------------------------------------


def test_an_interrupted_upload_resumes(editor_api, full_dataset, media):
    files = [(f"img_{i:02d}.jpg", jpeg(i, size=(160, 120))) for i in range(8)]
    first = upload(editor_api, full_dataset, files[:3], embed=False)
    assert first.status_code == 201
    again = upload(editor_api, full_dataset, files, embed=False)
    assert again.status_code == 201
    body = again.json()
    assert body["skipped"] == [name for name, _ in files[:3]]
    assert [c["file_name"] for c in body["created"]] == [name for name, _ in files[3:]]
    rows = list(Sample.objects.filter(dataset=full_dataset).order_by("idx").values_list("idx", "file_name"))
    assert rows == [(i, name) for i, (name, _) in enumerate(files)]
    assert len(stored_files(media)) == 16  # no second copy of the first three

    nothing_new = upload(editor_api, full_dataset, files[:2], embed=False)
    assert nothing_new.status_code == 200
    assert nothing_new.json()["created"] == [] and len(nothing_new.json()["skipped"]) == 2


def test_overwrite_replaces_the_files_in_place(editor_api, full_dataset, media, commit):
    red, blue = jpeg(size=(200, 100), color=(250, 0, 0)), jpeg(size=(300, 300), color=(0, 0, 250))
    upload(editor_api, full_dataset, [("a.jpg", red), ("b.jpg", jpeg(5))], embed=False)
    before = Sample.objects.get(dataset=full_dataset, file_name="a.jpg")
    old_keys = [before.original_key, before.thumbnail_key]

    skipped = upload(editor_api, full_dataset, [("a.jpg", blue)], embed=False)
    assert skipped.json()["skipped"] == ["a.jpg"]
    assert Sample.objects.get(pk=before.pk).sha256 == before.sha256

    with commit():
        response = upload(editor_api, full_dataset, [("a.jpg", blue)], overwrite="true", embed=False)
    assert response.status_code == 201
    assert response.json()["replaced"] == [{"id": before.id, "idx": before.idx, "file_name": "a.jpg"}]
    after = Sample.objects.get(pk=before.pk)
    assert after.idx == before.idx
    assert after.sha256 == hashlib.sha256(blue).hexdigest() and (after.width, after.height) == (300, 300)
    files = stored_files(media)
    assert not set(old_keys) & set(files)
    assert after.original_key in files and after.thumbnail_key in files
    assert len(files) == 4
    with default_storage.open(after.thumbnail_key, "rb") as handle:
        pixel = Image.open(io.BytesIO(handle.read())).convert("RGB").getpixel((10, 10))
    assert pixel[2] > 200 and pixel[0] < 50


def test_a_failed_database_step_leaves_no_files(editor_api, full_dataset, monkeypatch, media):
    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "add_samples", broken)
    with pytest.raises(RuntimeError):
        upload(editor_api, full_dataset, [("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))], embed=False)
    assert stored_files(media) == []
    assert not Sample.objects.filter(dataset=full_dataset).exists()


def test_metadata_of_a_file_rejected_by_name_does_not_sink_the_batch(editor_api, full_dataset, media, commit):
    with commit():
        response = upload(
            editor_api,
            full_dataset,
            [("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))],
            file_names=["ok/a.jpg", "../b.jpg"],
            metadata={"ok/a.jpg": {"n": 1}, "../b.jpg": {"n": 2}},
            embed=False,
        )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert [c["file_name"] for c in body["created"]] == ["ok/a.jpg"]
    assert [r["file_name"] for r in body["rejected"]] == ["../b.jpg"] and "'..'" in body["rejected"][0]["reason"]
    assert Sample.objects.get(dataset=full_dataset).metadata == {"n": 1}


# --- request-level bad input: nothing is written ---------------------------------------------------------


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"file_names": "not json"}, "file_names"),
        ({"file_names": json.dumps({"a": 1})}, "file_names"),
        ({"file_names": json.dumps(["a.jpg"])}, "file_names"),  # two files, one name
        ({"file_names": json.dumps(["a.jpg", 7])}, "file_names"),
        ({"metadata": "[1, 2]"}, "metadata"),
        ({"metadata": "{bad"}, "metadata"),
        ({"metadata": json.dumps({"missing.jpg": {"a": 1}})}, "metadata"),
        ({"metadata": json.dumps({"a.jpg": 5})}, "metadata"),
        ({"overwrite": "perhaps"}, "overwrite"),
        ({"embed": "2"}, "embed"),
    ],
)
def test_bad_request_fields_write_nothing(fields, field, editor_api, full_dataset, media):
    response = upload(editor_api, full_dataset, [("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))], **fields)
    assert response.status_code == 400, response.json()
    assert response.json()["detail"].startswith(field)
    assert not Sample.objects.filter(dataset=full_dataset).exists()
    assert stored_files(media) == []


def test_no_files_is_a_400(editor_api, full_dataset):
    response = editor_api.post(samples_url(full_dataset), {"overwrite": "false"}, format="multipart")
    assert response.status_code == 400
    assert not Sample.objects.filter(dataset=full_dataset).exists()


def test_too_many_files_is_a_400(editor_api, full_dataset, settings, media):
    settings.WINNOW_MAX_SAMPLES_PER_REQUEST = 2
    response = upload(editor_api, full_dataset, [(f"{i}.jpg", jpeg(i, size=(32, 32))) for i in range(3)])
    assert response.status_code == 400 and "at most 2" in response.json()["detail"]
    assert stored_files(media) == []


# --- who may upload ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client, code", [("outsider_api", 404), ("viewer_api", 403), ("anon_api", 401)])
def test_only_editors_upload(client, code, request, full_dataset, media):
    response = upload(request.getfixturevalue(client), full_dataset, [("a.jpg", jpeg(1))])
    assert response.status_code == code
    assert not Sample.objects.filter(dataset=full_dataset).exists()
    assert stored_files(media) == []


def test_owner_uploads_too(owner_api, full_dataset):
    assert upload(owner_api, full_dataset, [("a.jpg", jpeg(1))], embed=False).status_code == 201


# --- the built-in embedder after an upload ---------------------------------------------------------------------


def test_an_upload_gives_the_dataset_a_default_embedding(editor_api, full_dataset, commit, small_embedder):
    files = [(f"{i}.jpg", jpeg(i, size=(96, 72))) for i in range(12)]
    with commit():
        assert upload(editor_api, full_dataset, files).status_code == 201
    embedding = Embedding.objects.get(dataset=full_dataset, name="default")
    assert embedding.source == EmbeddingSource.BUILTIN and embedding.count == 12
    assert embedding.projection_status == "ready"
    from curation import embeddings

    matrix, idx, _labels = embeddings.load(embedding)
    assert matrix.shape[0] == 12 and matrix.dtype == np.float32 and idx.tolist() == list(range(12))
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-4)

    # The next batch replaces the default embedding, so it covers every sample.
    with commit():
        upload(editor_api, full_dataset, [("late.jpg", jpeg(99, size=(96, 72)))])
    replaced = Embedding.objects.get(dataset=full_dataset, name="default")
    assert replaced.pk != embedding.pk and replaced.count == 13
    assert not default_storage.exists(embedding.matrix_key)


def test_embed_false_defers_the_embedder(editor_api, thumbs_dataset, commit):
    with commit():
        upload(editor_api, thumbs_dataset, [(f"{i}.jpg", jpeg(i, size=(64, 48))) for i in range(3)], embed=False)
    assert not Embedding.objects.filter(dataset=thumbs_dataset).exists()


def test_a_run_stands_down_for_a_later_upload(full_dataset, editor_api):
    from curation import embeddings

    upload(editor_api, full_dataset, [(f"{i}.jpg", jpeg(i, size=(64, 48))) for i in range(4)], embed=False)
    stale = "2000-01-01T00:00:00+00:00"
    assert embeddings.embed_dataset(full_dataset.id, requested_at=stale) is None
    assert not Embedding.objects.filter(dataset=full_dataset).exists()


def test_samples_changing_during_a_run_discard_its_result(full_dataset, editor_api, monkeypatch, small_embedder):
    from curation import embeddings
    from winnow.client import embedder

    upload(editor_api, full_dataset, [(f"{i}.jpg", jpeg(i, size=(64, 48))) for i in range(4)], embed=False)
    real = embedder.embed_images

    def embed_while_an_upload_lands(images, **kwargs):
        upload(editor_api, full_dataset, [("meanwhile.jpg", jpeg(50, size=(64, 48)))], embed=False)
        return real(images, **kwargs)

    monkeypatch.setattr(embedder, "embed_images", embed_while_an_upload_lands)
    assert embeddings.embed_dataset(full_dataset.id) is None
    assert not Embedding.objects.filter(dataset=full_dataset).exists()


def test_an_uploaded_default_embedding_is_not_overwritten(full_dataset, editor_api, commit):
    from curation import embeddings

    upload(editor_api, full_dataset, [(f"{i}.jpg", jpeg(i, size=(64, 48))) for i in range(3)], embed=False)
    rows = "\n".join(f"{i}.jpg,{i},1,0" for i in range(3))
    with commit():
        mine = embeddings.create_from_csv(
            full_dataset, "default", f"filenames,embedding_0,embedding_1,labels\n{rows}\n".encode()
        )
    assert embeddings.embed_dataset(full_dataset.id) is None
    assert Embedding.objects.get(dataset=full_dataset, name="default").pk == mine.pk


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_embeds_after_an_upload(fresh_worker, editor_api, full_dataset, media):
    fresh_worker(WINNOW_MEDIA_ROOT=str(media))
    files = [(f"{i}.jpg", jpeg(i, size=(96, 72))) for i in range(10)]
    assert upload(editor_api, full_dataset, files).status_code == 201
    deadline = time.monotonic() + 120
    embedding = None
    while time.monotonic() < deadline:
        embedding = Embedding.objects.filter(dataset=full_dataset, name="default", projection_status="ready").first()
        if embedding is not None:
            break
        time.sleep(0.5)
    assert embedding is not None, "the worker made no default embedding"
    assert embedding.source == EmbeddingSource.BUILTIN and embedding.count == 10
    response = editor_api.get(f"/api/v1/datasets/{full_dataset.id}/embeddings/{embedding.id}/projection")
    assert response.status_code == 200 and int(response["X-Projection-Count"]) == 10
