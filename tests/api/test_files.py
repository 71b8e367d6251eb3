"""Thumbnails and originals behind the dataset's permissions (local storage streams them)."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client

from curation import services
from curation.models import Membership, Role, Sample
from tests.api.test_upload import full_dataset, jpeg, png, stored_files, thumbs_dataset, upload  # noqa: F401

pytestmark = pytest.mark.django_db


def file_url(sample, kind: str) -> str:
    return f"/api/v1/datasets/{sample.dataset_id}/samples/{sample.id}/{kind}"


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def read(key: str) -> bytes:
    with default_storage.open(key, "rb") as handle:
        return handle.read()


@pytest.fixture
def photo_sample(editor_api, full_dataset):
    data = jpeg(1, size=(400, 300))
    upload(editor_api, full_dataset, [("x.jpg", data)], file_names=["day one/x.jpg"], embed=False)
    sample = Sample.objects.get(dataset=full_dataset)
    sample.uploaded = data
    return sample


def test_viewer_gets_the_thumbnail(viewer_api, photo_sample):
    response = viewer_api.get(file_url(photo_sample, "thumbnail"))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert response["Cache-Control"].startswith("private")
    assert body(response) == read(photo_sample.thumbnail_key)


def test_viewer_gets_the_original(viewer_api, photo_sample):
    response = viewer_api.get(file_url(photo_sample, "image"))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert 'filename="x.jpg"' in response["Content-Disposition"]
    assert response["Content-Disposition"].startswith("inline")
    assert body(response) == photo_sample.uploaded


def test_png_original_keeps_its_type(editor_api, full_dataset):
    upload(editor_api, full_dataset, [("d.png", png(4))], embed=False)
    sample = Sample.objects.get(dataset=full_dataset)
    assert editor_api.get(file_url(sample, "image"))["Content-Type"] == "image/png"


def test_a_browser_session_works_and_any_accept_header(viewer, photo_sample):
    browser = Client()
    browser.force_login(viewer)
    response = browser.get(file_url(photo_sample, "thumbnail"), HTTP_ACCEPT="image/avif,image/webp")
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"


@pytest.mark.parametrize("kind", ["thumbnail", "image"])
@pytest.mark.parametrize("client, code", [("outsider_api", 404), ("anon_api", 401)])
def test_non_members_get_nothing(kind, client, code, request, photo_sample):
    response = request.getfixturevalue(client).get(file_url(photo_sample, kind))
    assert response.status_code == code
    assert not hasattr(response, "streaming_content")


def test_anonymous_browser_gets_401(photo_sample):
    assert Client().get(file_url(photo_sample, "thumbnail")).status_code == 401


def test_unknown_sample_or_other_dataset_is_404(viewer_api, owner, photo_sample):
    assert viewer_api.get(f"/api/v1/datasets/{photo_sample.dataset_id}/samples/{'0' * 24}/thumbnail").status_code == 404
    other = services.create_dataset(owner, "other", "full")
    assert viewer_api.get(f"/api/v1/datasets/{other.id}/samples/{photo_sample.id}/thumbnail").status_code == 404
    owner_client = Client()
    owner_client.force_login(owner)
    assert owner_client.get(f"/api/v1/datasets/{other.id}/samples/{photo_sample.id}/image").status_code == 404


def test_thumbnails_mode_has_no_original(editor_api, thumbs_dataset):
    upload(editor_api, thumbs_dataset, [("t.jpg", jpeg(2))], embed=False)
    sample = Sample.objects.get(dataset=thumbs_dataset)
    assert editor_api.get(file_url(sample, "thumbnail")).status_code == 200
    response = editor_api.get(file_url(sample, "image"))
    assert response.status_code == 404
    assert "only thumbnails" in response.json()["detail"]


@pytest.mark.parametrize("kind", ["thumbnail", "image"])
def test_meta_mode_has_no_pixels(kind, viewer_api, dataset):
    services.add_samples(dataset, [{"file_name": "secret.jpg"}])
    sample = Sample.objects.get(dataset=dataset)
    response = viewer_api.get(file_url(sample, kind))
    assert response.status_code == 404
    assert "keeps no pixels" in response.json()["detail"]


def test_a_file_missing_from_storage_is_404(viewer_api, photo_sample):
    default_storage.delete(photo_sample.thumbnail_key)
    response = viewer_api.get(file_url(photo_sample, "thumbnail"))
    assert response.status_code == 404 and "missing" in response.json()["detail"]


def test_deleting_the_dataset_deletes_its_files(owner_api, photo_sample, django_capture_on_commit_callbacks, settings):
    other_key = f"datasets/{'f' * 24}/keep.txt"
    default_storage.save(other_key, ContentFile(b"another dataset's file"))
    assert default_storage.exists(photo_sample.original_key)
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_api.delete(f"/api/v1/datasets/{photo_sample.dataset_id}")
    assert response.status_code == 204
    assert not default_storage.exists(photo_sample.original_key)
    assert not default_storage.exists(photo_sample.thumbnail_key)
    assert stored_files(settings.MEDIA_ROOT) == [other_key]  # the other dataset's file stays
    # No empty folders left behind: the dataset's folder itself is gone.
    assert not (settings.MEDIA_ROOT / "datasets" / photo_sample.dataset_id).exists()
    assert (settings.MEDIA_ROOT / "datasets" / ("f" * 24)).is_dir()


def test_delete_prefix_removes_nested_folders_and_keeps_a_folder_with_new_files(settings):
    from curation import storage

    for key in ("datasets/a/x/1.txt", "datasets/a/x/y/2.txt", "datasets/a/3.txt", "datasets/b/4.txt"):
        default_storage.save(key, ContentFile(b"."))
    assert storage.delete_prefix("datasets/a/") == 3
    assert not (settings.MEDIA_ROOT / "datasets" / "a").exists()
    assert stored_files(settings.MEDIA_ROOT) == ["datasets/b/4.txt"]
    assert storage.delete_prefix("datasets/missing/") == 0


# --- signed links (tag exports) ----------------------------------------------------------------------


def exported_links(api, sample, fmt="label-studio"):
    from curation.models import Tag

    tag = Tag.objects.get(dataset_id=sample.dataset_id, name="initial-tag")
    response = api.get(f"/api/v1/datasets/{sample.dataset_id}/tags/{tag.id}/export?format={fmt}")
    assert response.status_code == 200
    items = json.loads(b"".join(response.streaming_content))
    return [item["data"]["image"] if fmt == "label-studio" else item["image_url"] for item in items]


@pytest.mark.parametrize("fmt", ["label-studio", "json"])
def test_an_exported_link_opens_without_credentials(viewer_api, photo_sample, fmt):
    [link] = exported_links(viewer_api, photo_sample, fmt)
    response = Client().get(link)  # no token, no session: as Label Studio fetches it
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "image/jpeg"
    assert body(response) == photo_sample.uploaded


def test_an_exported_thumbnail_link_of_a_thumbnails_dataset(editor_api, thumbs_dataset):
    upload(editor_api, thumbs_dataset, [("t.jpg", jpeg(2))], embed=False)
    sample = Sample.objects.get(dataset=thumbs_dataset)
    [link] = exported_links(editor_api, sample)
    response = Client().get(link)
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"
    assert body(response) == read(sample.thumbnail_key)


def _replace(link: str, key: str, value: str) -> str:
    path, query = link.split("?")
    params = dict(part.split("=") for part in query.split("&"))
    params[key] = value
    return path + "?" + "&".join(f"{k}={v}" for k, v in params.items())


def test_a_tampered_link_is_refused(viewer_api, owner, photo_sample):
    [link] = exported_links(viewer_api, photo_sample)
    other = services.add_samples(Sample.objects.get(pk=photo_sample.pk).dataset, [{"file_name": "other.jpg"}]).created[
        0
    ]
    tampered = [
        _replace(link, "expires", str(int(time.time()) + 10**8)),  # longer life
        _replace(link, "user", str(owner.pk)),  # someone else's rights
        _replace(link, "signature", "0" * 64),
        link.replace(photo_sample.id, other.id),  # another sample
        link.replace("/image/signed", "/thumbnail/signed"),  # another file
        link.split("?")[0],  # no signature at all
        link + "&user=1",  # a parameter twice
    ]
    for bad in tampered:
        response = Client().get(bad)
        assert response.status_code == 403, bad
        assert not hasattr(response, "streaming_content")


def test_an_expired_link_is_refused(viewer_api, photo_sample, monkeypatch):
    from curation import signing

    [link] = exported_links(viewer_api, photo_sample)
    later = time.time() + 7 * 24 * 3600 + 5
    monkeypatch.setattr(signing, "time", SimpleNamespace(time=lambda: later))
    response = Client().get(link)
    assert response.status_code == 403 and "expired" in response.json()["detail"]


def test_the_link_lifetime_is_a_setting(viewer_api, photo_sample, settings):
    settings.WINNOW_EXPORT_URL_SECONDS = 3600
    [link] = exported_links(viewer_api, photo_sample)
    expires = int(dict(p.split("=") for p in link.split("?")[1].split("&"))["expires"])
    assert 3500 < expires - time.time() <= 3600


def test_a_removed_members_links_stop_working(viewer, viewer_api, photo_sample):
    [link] = exported_links(viewer_api, photo_sample)
    assert Client().get(link).status_code == 200
    Membership.objects.filter(dataset_id=photo_sample.dataset_id, user=viewer).delete()
    response = Client().get(link)
    assert response.status_code == 403 and "can no longer read" in response.json()["detail"]
    Membership.objects.create(dataset_id=photo_sample.dataset_id, user=viewer, role=Role.VIEWER)
    viewer.is_active = False
    viewer.save(update_fields=["is_active"])
    assert Client().get(link).status_code == 403


def test_a_link_to_a_deleted_sample_is_404(viewer_api, photo_sample):
    [link] = exported_links(viewer_api, photo_sample)
    Sample.objects.filter(pk=photo_sample.pk).delete()
    assert Client().get(link).status_code == 404
