"""`/v1/` on the wire: tags (list, get, create from a bitmask, arithmetic, delete) and exports."""

from __future__ import annotations

import pytest

from curation import bitmask, services
from curation.models import Sample, Tag
from tests.lightly.helpers import lightly_model

pytestmark = pytest.mark.django_db
NAMES = [f"img_{i:02d}.jpg" for i in range(10)]


@pytest.fixture
def samples(dataset):
    """Ten samples (idx 0..9) and their initial-tag."""
    services.add_samples(dataset, [{"file_name": n} for n in NAMES])
    return dataset


def initial(dataset) -> Tag:
    return Tag.objects.get(dataset=dataset, name="initial-tag")


def new_tag(editor_v1, dataset, name, mask_hex, prev=None, tot=10):
    body = {
        "name": name,
        "prevTagId": prev or initial(dataset).id,
        "bitMaskData": mask_hex,
        "totSize": tot,
        "creator": "USER_PIP",
    }
    return editor_v1.post(f"datasets/{dataset.id}/tags", body)


def test_tag_list_and_detail_match_lightlys_model(viewer_v1, samples):
    tags = viewer_v1.get(f"datasets/{samples.id}/tags").json()
    [tag] = [lightly_model("TagData", t) for t in tags]
    assert (tag.name, tag.bit_mask_data, tag.tot_size, tag.prev_tag_id) == ("initial-tag", "0x3ff", 10, None)
    assert "prevTagId" in tags[0]  # required by the model, even when null
    detail = viewer_v1.get(f"datasets/{samples.id}/tags/{tag.id}").json()
    assert detail == tags[0]


def test_create_tag_from_a_bitmask(editor_v1, samples):
    response = new_tag(editor_v1, samples, "odd-ones", hex(0b1010101010))
    assert response.status_code == 201
    tag = Tag.objects.get(pk=lightly_model("CreateEntityResponse", response.json()).id)
    assert (tag.name, tag.count, list(tag.indices()), tag.parent_id) == (
        "odd-ones",
        5,
        [1, 3, 5, 7, 9],
        initial(samples).id,
    )
    listed = editor_v1.get(f"datasets/{samples.id}/tags").json()
    assert [t["name"] for t in listed] == ["odd-ones", "initial-tag"]  # newest first
    assert listed[0]["bitMaskData"] == "0x2aa" and listed[0]["prevTagId"] == initial(samples).id


@pytest.mark.parametrize(
    "name, mask, tot, field",
    [
        ("ok-name", "0x400", 10, "bit 10"),  # past the last sample
        ("ok-name", "0x0", 10, "empty"),
        ("ok-name", "ff", 10, "bitMaskData"),
        ("ok-name", "0xzz", 10, "bitMaskData"),
        ("ok-name", "0x1", 9, "totSize"),
        ("no", "0x1", 10, "name"),
        ("a/b", "0x1", 10, "name"),
        ("initial-tag", "0x1", 10, "already exists"),
    ],
)
def test_create_tag_refuses_bad_input_and_writes_nothing(editor_v1, samples, name, mask, tot, field):
    response = new_tag(editor_v1, samples, name, mask, tot=tot)
    assert response.status_code == 400 and field in response.json()["error"], response.content
    assert Tag.objects.filter(dataset=samples).count() == 1


def test_create_tag_refuses_unknown_parent_and_roles(editor_v1, viewer_v1, outsider_v1, samples, owner):
    other = services.create_dataset(owner, "other set", "meta")
    services.add_samples(other, [{"file_name": "x.jpg"}])
    foreign = initial(other).id
    response = new_tag(editor_v1, samples, "child-tag", "0x1", prev=foreign)
    assert response.status_code == 400 and response.json()["code"] == "TAG_PREVTAG_NOT_IN_DATASET"
    assert new_tag(viewer_v1, samples, "child-tag", "0x1").status_code == 403
    assert new_tag(outsider_v1, samples, "child-tag", "0x1").status_code == 404
    assert editor_v1.post(f"datasets/{samples.id}/tags", raw=b"{oops").status_code == 400
    assert not Tag.objects.filter(name="child-tag").exists()


def test_tags_with_names_the_client_rejects_stay_off_v1(viewer_v1, samples):
    odd = Tag.objects.create(
        dataset=samples,
        name="a.b/c",
        bitmask=bitmask.from_indices([1]),
        count=1,
        origin="selection",
        parent=initial(samples),
    )
    two = Tag.objects.create(dataset=samples, name="ok", bitmask=bitmask.from_indices([2]), count=1, origin="selection")
    assert [t["name"] for t in viewer_v1.get(f"datasets/{samples.id}/tags").json()] == ["initial-tag"]
    for tag in (odd, two):
        assert viewer_v1.get(f"datasets/{samples.id}/tags/{tag.id}").json()["code"] == "TAG_UNKNOWN"
    # Named as an operand it still works: the answer carries no name.
    response = viewer_v1.post(
        f"datasets/{samples.id}/tags/arithmetics/bitmask", {"tagId1": odd.id, "tagId2": two.id, "operation": "UNION"}
    )
    assert response.json() == {"bitMaskData": "0x6"}


def test_tag_arithmetics_bitmask(viewer_v1, editor_v1, samples):
    a = new_tag(editor_v1, samples, "first-half", hex(0b0000011111)).json()["id"]
    b = new_tag(editor_v1, samples, "evens", hex(0b0101010101)).json()["id"]
    url = f"datasets/{samples.id}/tags/arithmetics/bitmask"
    expected = {"UNION": 0b0101011111, "INTERSECTION": 0b0000010101, "DIFFERENCE": 0b0000001010}
    for operation, value in expected.items():
        response = viewer_v1.post(url, {"tagId1": a, "tagId2": b, "operation": operation})
        assert response.status_code == 200
        assert lightly_model("TagBitMaskResponse", response.json()).bit_mask_data == hex(value)
    assert viewer_v1.post(url, {"tagId1": a, "tagId2": b, "operation": "XOR"}).status_code == 400
    assert viewer_v1.post(url, {"tagId1": a, "tagId2": "0" * 24, "operation": "UNION"}).json()["code"] == "TAG_UNKNOWN"
    assert Tag.objects.filter(dataset=samples).count() == 3  # nothing saved


def test_delete_tag(editor_v1, viewer_v1, samples):
    tag_id = new_tag(editor_v1, samples, "to-delete", "0x3").json()["id"]
    assert viewer_v1.delete(f"datasets/{samples.id}/tags/{tag_id}").status_code == 403
    assert editor_v1.delete(f"datasets/{samples.id}/tags/{tag_id}").status_code == 204
    assert not Tag.objects.filter(pk=tag_id).exists()
    assert editor_v1.delete(f"datasets/{samples.id}/tags/{tag_id}").json()["code"] == "TAG_UNKNOWN"
    response = editor_v1.delete(f"datasets/{samples.id}/tags/{initial(samples).id}")
    assert response.status_code == 403 and response.json()["code"] == "TAG_UNDELETABLE_IS_INITIAL"
    assert Tag.objects.filter(name="initial-tag").exists()


def test_export_file_names_pages_by_item_and_ends_with_empty(viewer_v1, samples):
    url = f"datasets/{samples.id}/tags/{initial(samples).id}/export/basic/filenames"
    assert viewer_v1.get(url, pageSize=5000, pageOffset=0).json() == "\n".join(NAMES)
    assert viewer_v1.get(url, pageSize=4, pageOffset=4).json() == "\n".join(NAMES[4:8])
    assert viewer_v1.get(url, pageSize=5000, pageOffset=5000).json() == ""
    for fmt in ("NAME", "DATASOURCE_FULL", "REDIRECTED_READ_URL"):  # meta: no pixels, so file names
        assert viewer_v1.get(url, fileNameFormat=fmt).json() == "\n".join(NAMES)
    assert viewer_v1.get(url, fileNameFormat="S3").status_code == 422
    assert viewer_v1.get(url, expiresIn="0").status_code == 422


def test_export_label_studio_tasks(viewer_v1, outsider_v1, editor_v1, samples):
    tag_id = new_tag(editor_v1, samples, "two-of-them", hex(0b1000000100)).json()["id"]
    url = f"datasets/{samples.id}/tags/{tag_id}/export/LabelStudio/tasks"
    tasks = viewer_v1.get(url, pageSize=2500, pageOffset=0).json()
    assert [lightly_model("LabelStudioTask", t).to_dict(by_alias=True) for t in tasks] == [
        {"id": 2, "data": {"image": "img_02.jpg", "lightlyFileName": "img_02.jpg"}},
        {"id": 9, "data": {"image": "img_09.jpg", "lightlyFileName": "img_09.jpg"}},
    ]
    assert viewer_v1.get(url, pageSize=2500, pageOffset=2500).json() == []
    assert outsider_v1.get(url).json()["code"] == "DATASET_UNKNOWN"
    assert viewer_v1.get(f"datasets/{samples.id}/tags/{'0' * 24}/export/LabelStudio/tasks").status_code == 404


def test_export_read_urls_of_a_full_dataset_are_signed(owner_v1, owner, client):
    dataset = services.create_dataset(owner, "full set", "full")
    services.add_samples(dataset, [{"file_name": "a.png", "original_key": f"{dataset.storage_prefix}a.png"}])
    from curation import storage

    storage.save_bytes(f"{dataset.storage_prefix}a.png", b"\x89PNG fake bytes")
    tag = initial(dataset)
    [url] = (
        owner_v1.get(
            f"datasets/{dataset.id}/tags/{tag.id}/export/basic/filenames", fileNameFormat="REDIRECTED_READ_URL"
        )
        .json()
        .split("\n")
    )
    assert url.startswith("http://testserver/v1/datasets/") and "token" not in url
    path = url.removeprefix("http://testserver")
    response = client.get(path)  # no token, no cookie: the URL is the credential
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"\x89PNG fake bytes"
    assert client.get(path.replace("expires=", "expires=1")).status_code == 403
    assert client.get(path.split("&signature=")[0]).status_code == 403
    sample = Sample.objects.get(dataset=dataset)
    read_url = owner_v1.get(f"datasets/{dataset.id}/samples/{sample.id}/readurl", type="full").json()
    assert client.get(read_url.removeprefix("http://testserver")).status_code == 200


def test_export_links_live_as_long_as_the_settings_say(owner_v1, owner, settings):
    import time
    from urllib.parse import parse_qs, urlsplit

    settings.WINNOW_EXPORT_URL_SECONDS = 3600
    dataset = services.create_dataset(owner, "full set", "full")
    services.add_samples(dataset, [{"file_name": "a.png", "original_key": f"{dataset.storage_prefix}a.png"}])
    url = f"datasets/{dataset.id}/tags/{initial(dataset).id}/export/basic/filenames"
    [link] = owner_v1.get(url, fileNameFormat="REDIRECTED_READ_URL").json().split("\n")
    expires = int(parse_qs(urlsplit(link).query)["expires"][0])
    assert 3500 < expires - time.time() <= 3600
    [link] = owner_v1.get(url, fileNameFormat="REDIRECTED_READ_URL", expiresIn="60").json().split("\n")
    assert int(parse_qs(urlsplit(link).query)["expires"][0]) - time.time() <= 60
