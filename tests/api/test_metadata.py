"""Custom metadata upload (Lightly's COCO-like format) and the field proposals."""

import json

import pytest

from curation.models import Sample
from tests.factories import make_samples
from winnow.values import MAX_METADATA_BYTES

pytestmark = pytest.mark.django_db


def url(dataset, suffix=""):
    return f"/api/v1/datasets/{dataset.id}/metadata{suffix}"


def metadata_of(dataset):
    return dict(Sample.objects.filter(dataset=dataset).values_list("file_name", "metadata"))


def document(entries):
    """entries: {file_name: metadata} -> the Lightly document with integer ids."""
    images = [{"file_name": name, "id": i} for i, name in enumerate(entries)]
    metadata = [{"image_id": i, **meta} for i, meta in enumerate(entries.values())]
    return {"images": images, "metadata": metadata}


@pytest.fixture
def samples(dataset):
    make_samples(dataset, 4)
    return dataset


def test_upload_replaces_metadata_and_warns_about_samples_left_without(samples, editor_api):
    Sample.objects.filter(dataset=samples, idx=0).update(metadata={"old": 1})
    body = document(
        {
            "img_000000.jpg": {"weather": {"temperature": 21.5, "rain": False}, "camera": "front", "tags": ["a", 1]},
            "img_000001.jpg": {"weather": {"temperature": -3}, "camera": "rear"},
        }
    )
    response = editor_api.post(url(samples), body, format="json")
    assert response.status_code == 200, response.content
    result = response.json()
    assert result["updated"] == 2
    [warning] = result["warnings"]
    assert warning["count"] == 2
    assert warning["examples"] == ["img_000002.jpg", "img_000003.jpg"]
    stored = metadata_of(samples)
    # Replaced, not merged: the old key is gone, and image_id is not kept.
    assert stored["img_000000.jpg"] == {
        "weather": {"temperature": 21.5, "rain": False},
        "camera": "front",
        "tags": ["a", 1],
    }
    assert stored["img_000001.jpg"] == {"weather": {"temperature": -3}, "camera": "rear"}
    assert stored["img_000002.jpg"] == {}


def test_upload_accepts_string_ids_and_a_file(samples, owner_api):
    body = {
        "images": [{"file_name": f"img_00000{i}.jpg", "id": f"im-{i}"} for i in range(4)],
        "metadata": [{"image_id": f"im-{i}", "n": i} for i in range(4)],
    }
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("meta.json", json.dumps(body).encode(), content_type="application/json")
    response = owner_api.post(url(samples), {"file": upload}, format="multipart")
    assert response.status_code == 200, response.content
    assert response.json() == {"updated": 4, "warnings": []}
    assert metadata_of(samples)["img_000003.jpg"] == {"n": 3}


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"metadata": []}, "images"),
        ({"images": [], "metadata": {}}, "metadata"),
        ({"images": [{"id": 1}], "metadata": []}, "images[0]"),
        ({"images": [{"file_name": "img_000000.jpg", "id": 1.5}], "metadata": []}, "images[0] ('img_000000.jpg')"),
        ({"images": [{"file_name": "img_000000.jpg", "id": True}], "metadata": []}, "'id'"),
        (
            {
                "images": [{"file_name": "img_000000.jpg", "id": 1}, {"file_name": "img_000001.jpg", "id": 1}],
                "metadata": [],
            },
            "images[1] ('img_000001.jpg'): id 1 is used by another image",
        ),
        (
            {
                "images": [{"file_name": "img_000000.jpg", "id": 1}, {"file_name": "img_000000.jpg", "id": 2}],
                "metadata": [],
            },
            "already listed at images[0]",
        ),
        (
            {"images": [{"file_name": "img_000000.jpg", "id": 1}], "metadata": [{"image_id": 2, "a": 1}]},
            "metadata[0]: image_id 2 is not the id",
        ),
        ({"images": [{"file_name": "img_000000.jpg", "id": 1}], "metadata": [{"a": 1}]}, "metadata[0]: 'image_id'"),
        (
            {
                "images": [{"file_name": "img_000000.jpg", "id": 1}],
                "metadata": [{"image_id": 1, "a": 1}, {"image_id": 1, "a": 2}],
            },
            "already has metadata at metadata[0]",
        ),
        ({"images": [{"file_name": "img_000000.jpg", "id": 1}], "metadata": ["x"]}, "metadata[0]"),
        ({"images": [{"file_name": "nope.jpg", "id": 1}], "metadata": [{"image_id": 1, "a": 1}]}, "'nope.jpg'"),
        (
            {"images": [{"file_name": "img_000000.jpg", "id": 1}], "metadata": [{"image_id": 1, "a": ["x", "b\x00"]}]},
            "metadata[0] (image_id 1, file 'img_000000.jpg'): a[1]: text contains a NUL",
        ),
    ],
)
def test_invalid_documents_name_the_entry_and_write_nothing(samples, editor_api, body, fragment):
    before = metadata_of(samples)
    response = editor_api.post(url(samples), body, format="json")
    assert response.status_code == 400, response.content
    assert fragment in json.dumps(response.json()["errors"]) or fragment in response.json()["detail"], response.json()
    assert metadata_of(samples) == before


def test_one_bad_entry_among_good_ones_writes_nothing(samples, editor_api):
    body = document({"img_000000.jpg": {"a": 1}, "img_000001.jpg": {"a": 2}, "img_000002.jpg": {"deep": {"x": 0}}})
    raw = json.dumps(body).replace('"x": 0', '"x": 1e999')
    response = editor_api.post(url(samples), raw, content_type="application/json")
    assert response.status_code == 400
    message = response.json()["detail"]
    # 1e999 parses to Infinity: named with its entry, file and key.
    assert "metadata[2]" in message and "img_000002.jpg" in message and "deep.x" in message
    assert all(meta == {} for meta in metadata_of(samples).values())


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_rejected(samples, editor_api, literal):
    raw = '{"images": [{"file_name": "img_000000.jpg", "id": 1}], "metadata": [{"image_id": 1, "v": %s}]}' % literal
    response = editor_api.post(url(samples), raw, content_type="application/json")
    assert response.status_code == 400
    assert metadata_of(samples)["img_000000.jpg"] == {}


def test_malformed_json_is_a_400(samples, editor_api):
    response = editor_api.post(url(samples), '{"images": [', content_type="application/json")
    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]


def test_too_deep_metadata_is_rejected(samples, editor_api):
    deep = {}
    node = deep
    for _ in range(40):
        node["k"] = {}
        node = node["k"]
    response = editor_api.post(url(samples), document({"img_000000.jpg": {"d": deep}}), format="json")
    assert response.status_code == 400
    assert "deeper" in response.json()["detail"]


def test_oversized_metadata_is_rejected_as_in_sample_registration(samples, editor_api):
    body = document({"img_000000.jpg": {"a": 1}, "img_000001.jpg": {"notes": "x" * MAX_METADATA_BYTES}})
    response = editor_api.post(url(samples), body, format="json")
    assert response.status_code == 400
    message = response.json()["detail"]
    assert "metadata[1]" in message and "img_000001.jpg" in message and f"at most {MAX_METADATA_BYTES}" in message
    assert all(meta == {} for meta in metadata_of(samples).values())


def test_access(samples, viewer_api, outsider_api, anon_api):
    body = document({"img_000000.jpg": {"a": 1}})
    assert viewer_api.post(url(samples), body, format="json").status_code == 403
    assert outsider_api.post(url(samples), body, format="json").status_code == 404
    assert anon_api.post(url(samples), body, format="json").status_code == 401
    assert metadata_of(samples)["img_000000.jpg"] == {}
    assert outsider_api.get(url(samples, "/fields")).status_code == 404
    assert anon_api.get(url(samples, "/fields")).status_code == 401


def test_unknown_dataset_is_a_404(editor_api):
    assert editor_api.post("/api/v1/datasets/" + "0" * 24 + "/metadata", {}, format="json").status_code == 404


def test_large_upload_is_written_in_bulk(dataset, editor_api, django_assert_max_num_queries):
    n = 100_000
    make_samples(dataset, n)
    body = {
        "images": [{"file_name": f"img_{i:06d}.jpg", "id": i} for i in range(n)],
        "metadata": [{"image_id": i, "weather": {"temperature": i % 40}, "night": i % 2 == 0} for i in range(n)],
    }
    # Lookups and writes in batches of 5,000: about 20 + 20 queries, never one per sample.
    with django_assert_max_num_queries(80):
        response = editor_api.post(url(dataset), body, format="json")
    assert response.status_code == 200, response.content[:500]
    assert response.json() == {"updated": n, "warnings": []}
    assert Sample.objects.get(dataset=dataset, idx=99_999).metadata == {"weather": {"temperature": 39}, "night": False}
    assert Sample.objects.filter(dataset=dataset, metadata__weather__temperature=7).count() == n // 40


# --- proposals -----------------------------------------------------------------------------------


def test_field_proposals(dataset, viewer_api):
    def meta(i):
        base = {
            "weather": {"temperature": i * 0.5, "station": {"id": i % 3}},
            "camera": ["front", "rear"][i % 2],
            "night": i % 2 == 0,
            "frame": i,
            "boxes": [1, 2],
        }
        if i % 4 == 0:
            base["note"] = "check"
        return base

    make_samples(dataset, 40, meta)
    make_samples(dataset, 10)  # no metadata at all
    response = viewer_api.get(url(dataset, "/fields"))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["sampled"] is False and body["total_samples"] == 50
    fields = {f["path"]: f for f in body["fields"]}
    assert set(fields) == {"weather.temperature", "weather.station.id", "camera", "night", "frame", "note"}
    assert fields["weather.temperature"]["type"] == "float"
    assert fields["weather.station.id"]["type"] == "categorical_int"
    assert fields["weather.station.id"]["distinct_values"] == 3
    assert fields["camera"]["type"] == "categorical_string"
    assert sorted(fields["camera"]["examples"]) == ["front", "rear"]
    assert fields["night"]["type"] == "boolean"
    assert fields["frame"]["type"] == "int"
    assert fields["frame"]["distinct_values"] == 40
    assert len(fields["frame"]["examples"]) == 5
    assert fields["camera"]["coverage"] == pytest.approx(0.8)
    assert fields["note"]["coverage"] == pytest.approx(0.2)


def test_field_proposals_read_a_bounded_sample(dataset, viewer_api):
    make_samples(dataset, 12_000, lambda i: {"score": i})
    body = viewer_api.get(url(dataset, "/fields")).json()
    assert body["sampled"] is True
    assert body["total_samples"] == 12_000
    assert body["samples_read"] <= 5_000
    [field] = body["fields"]
    assert field["path"] == "score" and field["type"] == "int" and field["coverage"] == 1.0
    assert field["distinct_values"] is None  # many


# One reader (issue 13): the client's load_custom_metadata decodes a file as the server decodes an uploaded one.
GOOD_FILE = '{"images": [{"file_name": "img_000001.jpg", "id": 1}], "metadata": [{"image_id": 1, "t": 2.5}]}'
BAD_FILES = {
    "nan": GOOD_FILE.replace("2.5", "NaN"),
    "too deep": GOOD_FILE.replace("2.5", "[" * 70 + "]" * 70),
    "cut short": GOOD_FILE[:40],
    "not utf-8": GOOD_FILE.replace("img_", "\udcff"),
}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_the_client_and_the_server_read_the_same_metadata_file(samples, editor_api, tmp_path, encoding):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from winnow.client.formats import load_custom_metadata

    data = GOOD_FILE.encode(encoding)
    (tmp_path / "m.json").write_bytes(data)
    assert load_custom_metadata(tmp_path / "m.json") == json.loads(GOOD_FILE)
    upload = SimpleUploadedFile("m.json", data, content_type="application/json")
    response = editor_api.post(url(samples), {"file": upload}, format="multipart")
    assert response.status_code == 200, response.content
    assert metadata_of(samples)["img_000001.jpg"] == {"t": 2.5}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_the_client_refuses_a_bad_metadata_file_in_the_servers_words(case, samples, editor_api, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from winnow.client.formats import FormatError, load_custom_metadata

    data = BAD_FILES[case].encode("utf-8", "surrogateescape")
    path = tmp_path / "m.json"
    path.write_bytes(data)
    with pytest.raises(FormatError) as refused:
        load_custom_metadata(path)
    upload = SimpleUploadedFile("m.json", data, content_type="application/json")
    response = editor_api.post(url(samples), {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert str(refused.value) == f"{path}: {response.json()['detail'].removeprefix('file: ')}"
    assert all(meta == {} for meta in metadata_of(samples).values())
