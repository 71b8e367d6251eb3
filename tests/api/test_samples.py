"""Samples: JSON registration (meta datasets), the ingestion helpers, listing pages, one sample."""

import json
import re

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from curation import bitmask, services
from curation.models import Dataset, Sample, Tag
from curation.services import add_samples, create_dataset, validate_file_name

pytestmark = pytest.mark.django_db


def url(dataset, suffix=""):
    return f"/api/v1/datasets/{dataset.id}/samples{suffix}"


def register(api, dataset, samples):
    return api.post(url(dataset), {"samples": samples}, format="json")


def nothing_written(dataset):
    assert not Sample.objects.filter(dataset=dataset).exists()
    assert not Tag.objects.filter(dataset=dataset).exists()
    assert Dataset.objects.get(pk=dataset.pk).next_idx == 0


# --- registration -------------------------------------------------------------------------------------


def test_register_creates_samples_with_dense_idx_and_initial_tag(dataset, editor_api):
    entries = [
        {
            "file_name": "cam0/0001.jpg",
            "width": 640,
            "height": 480,
            "size_bytes": 1000,
            "metadata": {"weather": {"temperature": 21.5}, "labels": ["car", 2], "night": False},
        },
        {"file_name": "cam0/0002.jpg"},
        {"file_name": "cam1\\0003.jpg", "metadata": None},
    ]
    response = register(editor_api, dataset, entries)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["created"] == 3 and body["skipped"] == []
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in body["ids"])
    samples = list(Sample.objects.filter(dataset=dataset).order_by("idx"))
    assert [s.idx for s in samples] == [0, 1, 2]
    assert [s.id for s in samples] == body["ids"]
    assert [s.file_name for s in samples] == ["cam0/0001.jpg", "cam0/0002.jpg", "cam1/0003.jpg"]
    assert (samples[0].width, samples[0].height, samples[0].size_bytes) == (640, 480, 1000)
    assert samples[0].metadata == entries[0]["metadata"] and samples[2].metadata == {}
    tag = Tag.objects.get(dataset=dataset, name="initial-tag")
    assert tag.count == 3 and list(tag.indices()) == [0, 1, 2] and tag.origin == "upload"


def test_registering_again_skips_names_already_present(dataset, editor_api):
    first = register(editor_api, dataset, [{"file_name": "a.jpg"}, {"file_name": "b.jpg"}]).json()
    response = register(editor_api, dataset, [{"file_name": "b.jpg", "metadata": {"x": 1}}, {"file_name": "c.jpg"}])
    assert response.status_code == 201
    body = response.json()
    assert body["created"] == 1 and body["skipped"] == ["b.jpg"]
    assert body["ids"][0] == first["ids"][1]
    assert dict(Sample.objects.filter(dataset=dataset).values_list("file_name", "idx")) == {
        "a.jpg": 0,
        "b.jpg": 1,
        "c.jpg": 2,
    }
    assert Sample.objects.get(dataset=dataset, file_name="b.jpg").metadata == {}  # not overwritten
    initial = Tag.objects.get(dataset=dataset, name="initial-tag")
    assert initial.count == 3 and list(initial.indices()) == [0, 1, 2]  # every sample, as Lightly's
    # Everything already there: 200, nothing new.
    again = register(editor_api, dataset, [{"file_name": "a.jpg"}, {"file_name": "c.jpg"}])
    assert again.status_code == 200 and again.json()["created"] == 0
    assert Sample.objects.filter(dataset=dataset).count() == 3


BAD_NAMES = [
    ("", "empty"),
    ("   ", "empty"),
    ("/etc/passwd", "absolute"),
    ("C:\\images\\a.jpg", "absolute"),
    ("c:a.jpg", "absolute"),
    ("\\\\server\\share\\a.jpg", "absolute"),
    ("../a.jpg", "'..'"),
    ("a/../../b.jpg", "'..'"),
    ("a\\..\\b.jpg", "'..'"),
    ("./a.jpg", "'.'"),
    ("a//b.jpg", "empty path segment"),
    ("a/", "empty path segment"),
    ("a/ /b.jpg", "spaces"),
    ("a\x00.jpg", "control character"),
    ("a\nb.jpg", "control character"),
    ("a\x7f.jpg", "control character"),
    ("x" * 1025, "longer than 1024"),
    (123, "string"),
    (None, "required"),
]


@pytest.mark.parametrize("name, reason", BAD_NAMES)
def test_an_invalid_file_name_rejects_the_whole_batch(dataset, editor_api, name, reason):
    entries = [{"file_name": "good/1.jpg"}, {"file_name": "good/2.jpg"}, {"file_name": name}]
    response = register(editor_api, dataset, entries)
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert detail.startswith("samples: entry 2") and reason in detail, detail
    nothing_written(dataset)


def test_validate_file_name_normalises_backslashes_and_keeps_plain_paths():
    assert validate_file_name("dir\\sub\\a.jpg") == "dir/sub/a.jpg"
    assert validate_file_name("a b/c..d.jpg") == "a b/c..d.jpg"
    assert validate_file_name("ünïcode/图像.png") == "ünïcode/图像.png"
    assert validate_file_name("x" * 1024) == "x" * 1024
    for name, _reason in BAD_NAMES:
        with pytest.raises(ValueError):
            validate_file_name(name)


@pytest.mark.parametrize(
    "entry, text",
    [
        ({"file_name": "a.jpg", "width": "640"}, "width must be an integer"),
        ({"file_name": "a.jpg", "width": 0}, "width must be between"),
        ({"file_name": "a.jpg", "height": True}, "height must be an integer"),
        ({"file_name": "a.jpg", "height": 1.5}, "height must be an integer"),
        ({"file_name": "a.jpg", "size_bytes": -1}, "size_bytes must be between"),
        ({"file_name": "a.jpg", "metadata": [1, 2]}, "metadata must be a JSON object"),
        ({"file_name": "a.jpg", "metadata": "x"}, "metadata must be a JSON object"),
        ({"file_name": "a.jpg", "metadata": {"blob": "x" * 70000}}, "bytes"),
        ({"file_name": "a.jpg", "meta": {}}, "unknown field 'meta'"),
        ("a.jpg", "must be an object"),
        ({"width": 3}, "file_name is required"),
    ],
)
def test_invalid_entries_are_named_and_nothing_is_written(dataset, editor_api, entry, text):
    response = register(editor_api, dataset, [{"file_name": "ok.jpg"}, entry])
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert detail.startswith("samples: entry 1") and text in detail, detail
    nothing_written(dataset)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_metadata_are_rejected_naming_the_key(dataset, editor_api, constant):
    body = '{"samples": [{"file_name": "ok.jpg"}, {"file_name": "bad.jpg", "metadata": {"w": {"t": %s}}}]}' % constant
    response = editor_api.post(url(dataset), data=body, content_type="application/json")
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert "entry 1 (file_name 'bad.jpg')" in detail and "metadata.w.t" in detail, detail
    nothing_written(dataset)


def test_every_bad_entry_is_reported(dataset, editor_api):
    response = register(editor_api, dataset, [{"file_name": "../a"}, {"file_name": "ok"}, {"file_name": "/b"}])
    errors = response.json()["errors"]["samples"]
    assert len(errors) == 2 and errors[0].startswith("entry 0") and errors[1].startswith("entry 2")


def test_duplicate_names_in_one_batch_are_rejected(dataset, editor_api):
    response = register(
        editor_api, dataset, [{"file_name": "a/b.jpg"}, {"file_name": "c.jpg"}, {"file_name": "a\\b.jpg"}]
    )
    assert response.status_code == 400
    assert "entry 2" in response.json()["detail"] and "entry 0" in response.json()["detail"]
    nothing_written(dataset)


@pytest.mark.parametrize(
    "body, text",
    [
        ({}, "samples"),
        ({"samples": []}, "empty"),
        ({"samples": {"file_name": "a.jpg"}}, "list"),
        ({"samples": "a.jpg"}, "list"),
        ({"samples": [{"file_name": "a.jpg"}], "overwrite": "yes"}, "overwrite"),
        ({"samples": [{"file_name": "a.jpg"}], "replace": True}, "replace"),
        ([{"file_name": "a.jpg"}], "samples"),
    ],
)
def test_wrong_body_shapes_are_400(dataset, editor_api, body, text):
    response = editor_api.post(url(dataset), body, format="json")
    assert response.status_code == 400, response.content
    assert text in response.json()["detail"]
    nothing_written(dataset)


def test_malformed_json_and_other_content_types(dataset, editor_api):
    response = editor_api.post(url(dataset), data='{"samples": [', content_type="application/json")
    assert response.status_code == 400
    response = editor_api.post(url(dataset), data="file_name=a.jpg", content_type="text/plain")
    assert response.status_code == 415
    nothing_written(dataset)


def test_too_many_entries_in_one_request(dataset, editor_api, settings):
    settings.WINNOW_MAX_SAMPLES_PER_REQUEST = 3
    response = register(editor_api, dataset, [{"file_name": f"{i}.jpg"} for i in range(4)])
    assert response.status_code == 400
    assert "at most 3" in response.json()["detail"]
    nothing_written(dataset)
    assert register(editor_api, dataset, [{"file_name": f"{i}.jpg"} for i in range(3)]).status_code == 201


def test_json_registration_is_for_meta_datasets_only(owner, owner_api):
    full = create_dataset(owner, "photos", "full")
    response = register(owner_api, full, [{"file_name": "a.jpg"}])
    assert response.status_code == 400
    assert response.json()["detail"].startswith("upload_mode") and "full" in response.json()["detail"]
    nothing_written(full)


def test_a_meta_dataset_takes_no_image_files(dataset, editor_api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("a.jpg", b"\xff\xd8\xff", content_type="image/jpeg")
    response = editor_api.post(url(dataset), {"files": [upload]}, format="multipart")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("upload_mode") and "meta" in response.json()["detail"]
    nothing_written(dataset)


def test_who_may_register(dataset, viewer_api, outsider_api, anon_api, owner_api):
    entries = [{"file_name": "a.jpg"}]
    assert register(viewer_api, dataset, entries).status_code == 403
    assert register(outsider_api, dataset, entries).status_code == 404
    assert register(anon_api, dataset, entries).status_code == 401
    assert (
        owner_api.post("/api/v1/datasets/" + "a" * 24 + "/samples", {"samples": entries}, format="json").status_code
        == 404
    )
    nothing_written(dataset)


# --- add_samples, the helper image uploads share --------------------------------------------------------


def test_add_samples_overwrite_keeps_id_and_idx_and_reports_old_keys(owner):
    ds = create_dataset(owner, "photos", "full")
    first = add_samples(
        ds,
        [
            {"file_name": "a.jpg", "original_key": "k/a-1.jpg", "thumbnail_key": "k/a.webp", "width": 10},
            {"file_name": "b.jpg", "original_key": "k/b.jpg"},
        ],
    )
    assert first.initial_tag is not None and first.initial_tag.count == 2
    result = add_samples(
        ds,
        [
            {"file_name": "a.jpg", "original_key": "k/a-2.jpg", "thumbnail_key": "k/a.webp", "width": 20},
            {"file_name": "c.jpg", "id": "c" * 24},
        ],
        overwrite=True,
    )
    assert [s.file_name for s in result.created] == ["c.jpg"] and result.created[0].id == "c" * 24
    assert [s.file_name for s in result.replaced] == ["a.jpg"]
    assert result.replaced_old_keys == ["k/a-1.jpg"]  # the thumbnail key is reused, so it stays
    a = Sample.objects.get(dataset=ds, file_name="a.jpg")
    assert (a.id, a.idx, a.width, a.original_key) == (first.created[0].id, 0, 20, "k/a-2.jpg")
    assert Sample.objects.get(dataset=ds, file_name="c.jpg").idx == 2
    assert result.initial_tag.pk == first.initial_tag.pk and list(result.initial_tag.indices()) == [0, 1, 2]


def test_add_samples_rejects_duplicates_and_bad_names_before_writing(owner):
    ds = create_dataset(owner, "photos", "full")
    with pytest.raises(ValueError, match="more than once"):
        add_samples(ds, [{"file_name": "a.jpg"}, {"file_name": "a.jpg"}])
    with pytest.raises(ValueError, match="'..'"):
        add_samples(ds, [{"file_name": "a.jpg"}, {"file_name": "../a.jpg"}])
    assert not Sample.objects.filter(dataset=ds).exists()


def test_idx_is_never_reused(dataset):
    add_samples(dataset, [{"file_name": "a.jpg"}, {"file_name": "b.jpg"}])
    Sample.objects.filter(dataset=dataset, file_name="b.jpg").delete()
    add_samples(dataset, [{"file_name": "c.jpg"}])
    assert Sample.objects.get(dataset=dataset, file_name="c.jpg").idx == 2


# --- listing and one sample -------------------------------------------------------------------------------


def test_cursor_pages_cover_every_sample_once(dataset, viewer_api):
    add_samples(dataset, [{"file_name": f"{i:03d}.jpg", "metadata": {"i": i}} for i in range(25)])
    seen, link, pages = [], url(dataset) + "?limit=10", 0
    while link:
        body = viewer_api.get(link).json()
        seen += [row["idx"] for row in body["results"]]
        link, pages = body["next"], pages + 1
        assert "count" not in body
    assert seen == list(range(25)) and pages == 3
    body = viewer_api.get(url(dataset) + "?limit=10&count=true").json()
    assert body["count"] == 25 and body["previous"] is None and body["next"].startswith("http://testserver/")


def test_sample_json_has_the_documented_fields(dataset, viewer_api):
    add_samples(dataset, [{"file_name": "a.jpg", "width": 3, "height": 4, "metadata": {"k": "v"}}])
    row = viewer_api.get(url(dataset)).json()["results"][0]
    assert set(row) == {
        "id",
        "idx",
        "file_name",
        "width",
        "height",
        "size_bytes",
        "format",
        "sha256",
        "metadata",
        "created_at",
        "thumbnail_url",
        "image_url",
    }
    assert row["thumbnail_url"] is None and row["image_url"] is None  # a meta dataset keeps no pixels
    one = viewer_api.get(url(dataset, f"/{row['id']}"))
    assert one.status_code == 200 and one.json() == row


def test_urls_point_at_the_pixels_a_dataset_keeps(owner, owner_api):
    ds = create_dataset(owner, "photos", "full")
    (sample,) = add_samples(ds, [{"file_name": "a.jpg", "original_key": "o", "thumbnail_key": "t"}]).created
    row = owner_api.get(url(ds, f"/{sample.id}")).json()
    assert row["thumbnail_url"] == f"http://testserver/api/v1/datasets/{ds.id}/samples/{sample.id}/thumbnail"
    assert row["image_url"] == f"http://testserver/api/v1/datasets/{ds.id}/samples/{sample.id}/image"
    thumbs = create_dataset(owner, "thumbs", "thumbnails")
    (only_thumb,) = add_samples(thumbs, [{"file_name": "a.jpg", "thumbnail_key": "t"}]).created
    row = owner_api.get(url(thumbs, f"/{only_thumb.id}")).json()
    assert row["thumbnail_url"].endswith("/thumbnail") and row["image_url"] is None


def test_one_sample_is_404_outside_its_dataset(dataset, owner, owner_api, outsider_api, anon_api):
    (sample,) = add_samples(dataset, [{"file_name": "a.jpg"}]).created
    other = create_dataset(owner, "other", "meta")
    assert owner_api.get(url(other, f"/{sample.id}")).status_code == 404
    assert owner_api.get(url(dataset, "/" + "0" * 24)).status_code == 404
    assert outsider_api.get(url(dataset, f"/{sample.id}")).status_code == 404
    assert anon_api.get(url(dataset, f"/{sample.id}")).status_code == 401


def test_initial_tag_bitmask_matches_samples(dataset):
    add_samples(dataset, [{"file_name": f"{i}.jpg"} for i in range(11)])
    tag = Tag.objects.get(dataset=dataset, name="initial-tag")
    assert bytes(tag.bitmask) == bitmask.from_indices(range(11))
    assert tag.count == 11
    add_samples(dataset, [{"file_name": f"later-{i}.jpg"} for i in range(3)])
    tag.refresh_from_db()
    assert bytes(tag.bitmask) == bitmask.from_indices(range(14)) and tag.count == 14


def test_overwrite_updates_in_bulk_and_leaves_unnamed_fields_alone(owner, django_assert_max_num_queries):
    ds = create_dataset(owner, "photos", "full")
    add_samples(ds, [{"file_name": f"{i}.jpg", "width": 1, "metadata": {"old": i}} for i in range(60)])
    rows = [
        {"file_name": f"{i}.jpg", "width": 2} if i % 2 else {"file_name": f"{i}.jpg", "metadata": {"new": i}}
        for i in range(60)
    ]
    with django_assert_max_num_queries(8):
        result = add_samples(ds, rows, overwrite=True)
    assert len(result.replaced) == 60 and not result.created
    samples = {s.file_name: s for s in Sample.objects.filter(dataset=ds)}
    assert (samples["1.jpg"].width, samples["1.jpg"].metadata) == (2, {"old": 1})
    assert (samples["2.jpg"].width, samples["2.jpg"].metadata) == (1, {"new": 2})


# --- registration at scale: overwrite, the fast checks, initial-tag --------------------------------------


def test_overwrite_replaces_size_and_metadata_in_place(dataset, editor_api):
    first = register(
        editor_api,
        dataset,
        [{"file_name": "a.jpg", "width": 1, "height": 2, "metadata": {"v": 1}}, {"file_name": "b.jpg", "width": 3}],
    ).json()
    response = editor_api.post(
        url(dataset),
        {
            "samples": [{"file_name": "a.jpg", "width": 5, "metadata": {"v": 2}}, {"file_name": "c.jpg"}],
            "overwrite": True,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["created"], body["replaced"], body["skipped"]) == (1, 1, [])
    assert body["ids"][0] == first["ids"][0]
    a = Sample.objects.get(dataset=dataset, file_name="a.jpg")
    assert (a.idx, a.width, a.height, a.metadata) == (0, 5, None, {"v": 2})
    assert Sample.objects.get(dataset=dataset, file_name="b.jpg").width == 3
    assert Sample.objects.get(dataset=dataset, file_name="c.jpg").idx == 2


@pytest.mark.parametrize(
    "metadata, text",
    [
        ({"deep": json.loads("[" * 34 + "1" + "]" * 34)}, "deeper than"),
        ({"nul": "a\u0000b"}, "NUL"),
        ({"half": "\ud800"}, "lone surrogate"),
        ({"big": 1e400}, "not a finite number"),
        ({"blob": "é" * 40000}, "bytes as JSON"),
    ],
)
def test_metadata_the_quick_check_must_not_let_through(dataset, editor_api, metadata, text):
    # Sent as the raw JSON text a client would send (json.dumps escapes the surrogate and writes 1e400 as inf).
    raw = json.dumps({"samples": [{"file_name": "ok.jpg"}, {"file_name": "x.jpg", "metadata": metadata}]})
    raw = raw.replace("Infinity", "1e400")
    response = editor_api.post(url(dataset), raw, content_type="application/json")
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert "entry 1" in detail and text in detail, detail
    nothing_written(dataset)


def test_nan_is_named_even_though_the_text_cannot_go_to_the_database_as_is(dataset, editor_api):
    raw = '{"samples": [{"file_name": "a.jpg", "metadata": {"t": NaN}}]}'
    response = editor_api.post(url(dataset), raw, content_type="application/json")
    assert response.status_code == 400 and "metadata.t" in response.json()["detail"]
    nothing_written(dataset)


def test_non_ascii_and_escapes_are_stored_as_sent(dataset, editor_api):
    meta = {"città": "Zürich ☂ 😀", "quote": 'a"b\\c', "tab": "x\ty", "n": -0.0, "big": 12345678901234567890}
    response = register(editor_api, dataset, [{"file_name": "straße/😀.jpg", "metadata": meta}])
    assert response.status_code == 201, response.content
    sample = Sample.objects.get(dataset=dataset)
    assert sample.file_name == "straße/😀.jpg" and sample.metadata == meta


@given(st.text(max_size=40))
@hypothesis_settings(max_examples=300, deadline=None)
def test_the_quick_file_name_path_agrees_with_the_full_checks(name):
    def full(value):
        try:
            return "ok", services._validate_file_name_fully(value)
        except ValueError:
            return "error", None

    def quick(value):
        try:
            return "ok", validate_file_name(value)
        except ValueError:
            return "error", None

    for candidate in (name, "a/" + name, name + ".jpg", name.replace("x", "/")):
        assert quick(candidate) == full(candidate), candidate


def test_initial_tag_is_every_sample_however_it_is_loaded(dataset):
    add_samples(dataset, [{"file_name": f"{i}.jpg"} for i in range(5)])
    services.register_samples(dataset, [{"file_name": f"later/{i}.jpg"} for i in range(12)])
    tag_id = Tag.objects.get(dataset=dataset, name="initial-tag").pk
    every = bitmask.from_indices(range(17))
    assert bytes(Tag.objects.only("id", "bitmask").get(pk=tag_id).bitmask) == every  # name not loaded
    deferred = Tag.objects.defer("bitmask").get(pk=tag_id)
    assert deferred.count == 17 and bytes(deferred.bitmask) == every  # loaded on access
    assert Tag.objects.filter(pk=tag_id).values_list("count", flat=True).get() == 17
    assert list(Tag.objects.get(pk=tag_id).indices()) == list(range(17))


def test_a_sample_of_a_later_batch_is_in_initial_tag(dataset, editor_api, viewer_api):
    register(editor_api, dataset, [{"file_name": "a.jpg"}])
    later = register(editor_api, dataset, [{"file_name": f"{i}.jpg"} for i in range(20)]).json()["ids"][-1]
    tags = viewer_api.get(f"/api/v1/datasets/{dataset.id}/samples/{later}/tags").json()
    assert [(t["name"], t["count"]) for t in tags] == [("initial-tag", 21)]
