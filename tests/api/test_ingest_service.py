"""curation.ingest.store_images is a service: plain values in (files, names, metadata, flags, user), a plain
outcome out; the HTTP form is read by the view (tests/api/test_upload.py covers that path end to end)."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from curation import ingest, storage
from curation.errors import DomainError
from curation.models import Sample
from tests.api.test_upload import full_dataset, jpeg, thumbs_dataset  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def _files(*names: str) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(name.rsplit("/", 1)[-1], jpeg(seed=i), "image/jpeg") for i, name in enumerate(names)]


def test_store_images_takes_plain_values_and_returns_the_outcome(full_dataset, editor):
    outcome = ingest.store_images(
        full_dataset,
        _files("cams/a.jpg", "cams/b.jpg"),
        file_names=["cams/a.jpg", "cams/b.jpg"],
        metadata={"cams/a.jpg": {"weather": "rain"}},
        embed=False,
        creator=editor,
    )
    assert outcome.stored and [s["file_name"] for s in outcome.created] == ["cams/a.jpg", "cams/b.jpg"]
    a = Sample.objects.get(dataset=full_dataset, file_name="cams/a.jpg")
    assert a.metadata == {"weather": "rain"}
    assert a.original_key == storage.original_key(full_dataset.pk, a.id, ".jpg")
    assert a.thumbnail_key == storage.thumbnail_key(full_dataset.pk, a.id)
    assert default_storage.exists(a.original_key) and default_storage.exists(a.thumbnail_key)

    again = ingest.store_images(full_dataset, _files("a.jpg"), file_names=["cams/a.jpg"], embed=False, creator=editor)
    assert not again.stored and again.skipped == ["cams/a.jpg"]
    assert again.as_dict() == {"created": [], "replaced": [], "skipped": ["cams/a.jpg"], "rejected": []}


def test_a_thumbnails_dataset_keeps_no_original(thumbs_dataset, editor):
    (created,) = ingest.store_images(thumbs_dataset, _files("a.jpg"), embed=False, creator=editor).created
    sample = Sample.objects.get(pk=created["id"])
    assert sample.original_key == "" and default_storage.exists(sample.thumbnail_key)


def test_a_meta_dataset_takes_no_image_files(dataset, editor):
    with pytest.raises(DomainError, match="keeps metadata only") as caught:
        ingest.store_images(dataset, _files("a.jpg"), creator=editor)
    assert caught.value.errors == {"upload_mode": [ingest.META_MODE_MESSAGE]}
    assert not Sample.objects.filter(dataset=dataset).exists()


def test_save_new_writes_bytes_and_file_objects_at_exactly_the_key(full_dataset):
    prefix = storage.dataset_prefix(full_dataset.pk)
    upload = SimpleUploadedFile("client-name.png", b"from a file")
    upload.read()  # a file already read is written from its start
    try:
        assert storage.save_new(f"{prefix}x/one.bin", b"bytes") == f"{prefix}x/one.bin"
        assert storage.save_new(f"{prefix}x/two.jpg", upload.file) == f"{prefix}x/two.jpg"
        assert storage.read_bytes(f"{prefix}x/one.bin") == b"bytes"
        assert storage.read_bytes(f"{prefix}x/two.jpg") == b"from a file"
    finally:
        storage.delete_prefix(prefix)
