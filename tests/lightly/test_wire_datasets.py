"""`/v1/` on the wire: authentication, versions, datasets, samples and mappings.

Bodies are parsed with the Lightly client's own models, which refuse any key they do not know.
"""

from __future__ import annotations

import re

import pytest

from curation import services
from curation.models import Dataset, Membership, Role, Sample, Tag
from tests.lightly.helpers import lightly_model

pytestmark = pytest.mark.django_db
HEX24 = re.compile(r"[a-f0-9]{24}")


def add(dataset, names):
    return services.add_samples(dataset, [{"file_name": n} for n in names])


def error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"code", "error"} and body["code"] == code, body
    return body["error"]


# --- authentication and versions -------------------------------------------------------------------


def test_versions_need_no_token(anon_v1):
    for which in ("latest", "minimum"):
        response = anon_v1.get(f"versions/pip/{which}", currentVersion="1.5.26")
        assert response.status_code == 200 and response.json() == "1.5.26"


def test_no_or_bad_token_is_401(anon_v1, owner_v1, dataset):
    assert "token" in error(anon_v1.get("datasets"), 401, "UNAUTHORIZED")
    owner_v1.key = "wnw_deadbeef" + "x" * 30
    error(owner_v1.get(f"datasets/{dataset.id}"), 401, "UNAUTHORIZED")


def test_a_session_cookie_is_not_a_credential(client, owner, dataset):
    client.force_login(owner)  # the views are CSRF-exempt, so cookies must not authenticate
    error(client.get(f"/v1/datasets/{dataset.id}"), 401, "UNAUTHORIZED")


def test_revoked_token_is_refused(owner, dataset):
    from django.test import Client

    from tests.lightly.helpers import V1
    from winnow.accounts.models import ApiToken

    token, key = ApiToken.issue(owner, "soon revoked")
    v1 = V1(Client(), key)
    assert v1.get(f"datasets/{dataset.id}").status_code == 200
    token.revoke()
    error(v1.get(f"datasets/{dataset.id}"), 401, "UNAUTHORIZED")


# --- datasets ----------------------------------------------------------------------------------------


def test_create_dataset_answers_201_with_an_id(owner_v1, owner):
    response = owner_v1.post("datasets", {"name": "new set_1", "type": "Images", "creator": "USER_PIP"})
    assert response.status_code == 201
    assert lightly_model("CreateEntityResponse", response.json()).id == response.json()["id"]
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert HEX24.fullmatch(dataset.id) and dataset.upload_mode == "meta" and dataset.owner == owner
    assert Membership.objects.get(dataset=dataset).role == Role.OWNER

    full = owner_v1.post("datasets", {"name": "with pixels", "type": "Images", "imgType": "full"})
    assert Dataset.objects.get(pk=full.json()["id"]).upload_mode == "full"


def test_registering_one_sample_at_a_time_does_constant_work_for_initial_tag(editor_v1, dataset, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from winnow.lightly import samples as lightly_samples

    add(dataset, [f"old/{i}.jpg" for i in range(300)])
    stored = bytes(Tag.objects.filter(dataset=dataset, name="initial-tag").values_list("bitmask", flat=True).get())

    def refused(*args, **kwargs):
        raise AssertionError("initial-tag rebuilt from every sample")

    monkeypatch.setattr(lightly_samples, "refresh_initial_tag", refused)
    for name in ("new/a.jpg", "new/b.jpg"):
        with CaptureQueriesContext(connection) as queries:
            assert editor_v1.post(f"datasets/{dataset.id}/samples", {"fileName": name}).status_code == 201
        # Nothing reads or counts the dataset's samples, and the stored bits are not rewritten.
        assert not [q["sql"] for q in queries if 'COUNT(*) AS "__count" FROM "curation_sample"' in q["sql"]]
        assert not [
            q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("UPDATE") and "bitmask" in q["sql"]
        ]
    assert editor_v1.post(f"datasets/{dataset.id}/samples", {"fileName": "old/7.jpg"}).status_code == 201
    row = Tag.objects.filter(dataset=dataset, name="initial-tag").values_list("bitmask", "count").get()
    assert bytes(row[0]) == stored
    initial = Tag.objects.get(dataset=dataset, name="initial-tag")
    assert initial.count == 302 and initial.indices().tolist() == list(range(302))


def test_a_known_sample_gives_a_dataset_without_initial_tag_one(editor_v1, dataset):
    from tests.factories import make_samples

    make_samples(dataset, 5)  # samples made without registration: no initial-tag
    response = editor_v1.post(f"datasets/{dataset.id}/samples", {"fileName": "img_000003.jpg"})
    assert response.status_code == 201
    initial = Tag.objects.get(dataset=dataset, name="initial-tag")
    assert initial.count == 5 and initial.indices().tolist() == list(range(5))


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "ab"}, "name"),
        ({"name": "a.b.c"}, "name"),
        ({"name": "-leading"}, "name"),
        ({"name": 12345}, "name"),
        ({"name": "videos", "type": "Videos"}, "type"),
        ({"name": "weird", "imgType": "raw"}, "imgType"),
        ({"name": "child", "parentDatasetId": "a" * 24}, "parentDatasetId"),
    ],
)
def test_create_dataset_refuses_bad_input_and_writes_nothing(owner_v1, body, field):
    message = owner_v1.post("datasets", body).json()["error"]
    assert field in message
    assert not Dataset.objects.exists()


def test_create_dataset_refuses_a_name_the_owner_already_has(owner_v1, owner, outsider):
    first = owner_v1.post("datasets", {"name": "street-scenes", "type": "Images"})
    assert first.status_code == 201
    for name in ("street-scenes", "Street-Scenes"):  # any case: two alike could not be told apart
        message = error(owner_v1.post("datasets", {"name": name, "type": "Images"}), 400, "DATASET_NAME_EXISTS")
        assert message == f"A dataset with the name {name!r} already exists."
    assert Dataset.objects.filter(owner=owner).count() == 1
    # Another user's dataset of that name does not stand in the way.
    services.create_dataset(outsider, "their-scenes", "meta")
    assert owner_v1.post("datasets", {"name": "their-scenes", "type": "Images"}).status_code == 201


def test_create_dataset_refuses_malformed_json(owner_v1):
    error(owner_v1.post("datasets", raw=b"{not json"), 400, "MALFORMED_REQUEST")
    error(owner_v1.post("datasets", raw=b'{"name": NaN}'), 400, "MALFORMED_REQUEST")
    error(owner_v1.post("datasets", raw=b"[1, 2]"), 400, "MALFORMED_REQUEST")
    assert not Dataset.objects.exists()


def test_dataset_data_matches_lightlys_model(owner_v1, dataset):
    services.add_samples(dataset, [{"file_name": "a.jpg", "size_bytes": 10}, {"file_name": "b.jpg", "size_bytes": 32}])
    body = owner_v1.get(f"datasets/{dataset.id}").json()
    data = lightly_model("DatasetData", body)
    assert (data.id, data.name, data.n_samples, data.size_in_bytes, data.img_type) == (
        dataset.id,
        "street scenes",
        2,
        42,
        "meta",
    )
    assert isinstance(body["createdAt"], int) and body["createdAt"] == int(dataset.created_at.timestamp() * 1000)
    assert body["userId"] == "olivia" and body["accessType"] == "WRITE"


def test_dataset_lists_own_shared_and_team(owner_v1, viewer_v1, dataset, outsider):
    theirs = services.create_dataset(outsider, "their set", "meta")
    Membership.objects.create(dataset=theirs, user=dataset.owner, role=Role.EDITOR)

    def ids(v1, **params):
        response = v1.get("datasets", **({"pageSize": 5000, "pageOffset": 0} | params))
        assert response.status_code == 200
        return [lightly_model("DatasetData", d).id for d in response.json()]

    assert ids(owner_v1, shared="False") == [dataset.id]  # booleans arrive capitalised
    assert ids(owner_v1, shared="True") == [theirs.id]
    assert ids(owner_v1, getAssetsOfTeam="True") == []
    assert sorted(ids(owner_v1, getAssetsOfTeamInclusiveSelf="True")) == sorted([dataset.id, theirs.id])
    assert ids(viewer_v1, shared="False") == []
    assert ids(viewer_v1, shared="True") == [dataset.id]
    assert "accessType" not in viewer_v1.get(f"datasets/{dataset.id}").json()  # a viewer cannot write
    assert ids(owner_v1, getAssetsOfTeamInclusiveSelf="True", pageSize=1, pageOffset=1) != ids(
        owner_v1, getAssetsOfTeamInclusiveSelf="True", pageSize=1, pageOffset=0
    )
    error(owner_v1.get("datasets", shared="maybe"), 422, "BAD_REQUEST")  # retried on 400 by the client
    error(owner_v1.get("datasets", pageSize="0"), 422, "BAD_REQUEST")


def test_query_by_name_exact_and_prefix(owner_v1, dataset, owner):
    services.create_dataset(owner, "street scenes 2", "meta")
    exact = owner_v1.get("datasets/query/name/street%20scenes", shared="False", exact="True", pageSize=5000)
    assert [d["id"] for d in exact.json()] == [dataset.id]
    prefix = owner_v1.get("datasets/query/name/street", shared="False", exact="False")
    assert sorted(d["name"] for d in prefix.json()) == ["street scenes", "street scenes 2"]
    assert owner_v1.get("datasets/query/name/nothing-like-it", shared="False", exact="True").json() == []


def test_names_the_client_rejects_stay_off_v1(owner_v1, owner):
    odd = services.create_dataset(owner, "v2.1 (odd)", "meta")
    services.create_dataset(owner, "fine name", "meta")
    listed = owner_v1.get("datasets", shared="False").json()
    assert [d["name"] for d in listed] == ["fine name"]
    assert "rename" in error(owner_v1.get(f"datasets/{odd.id}"), 404, "DATASET_UNKNOWN")
    assert owner_v1.get("datasets/query/name/v2.1%20(odd)", shared="False", exact="True").json() == []


def test_unknown_and_other_users_datasets_are_404(owner_v1, outsider_v1, dataset):
    error(owner_v1.get(f"datasets/{'0' * 24}"), 404, "DATASET_UNKNOWN")
    error(outsider_v1.get(f"datasets/{dataset.id}"), 404, "DATASET_UNKNOWN")
    error(outsider_v1.delete(f"datasets/{dataset.id}"), 404, "DATASET_UNKNOWN")
    assert outsider_v1.get("datasets", getAssetsOfTeamInclusiveSelf="True").json() == []


def test_delete_dataset_needs_the_owner(owner_v1, editor_v1, dataset):
    error(editor_v1.delete(f"datasets/{dataset.id}"), 403, "FORBIDDEN")
    assert Dataset.objects.filter(pk=dataset.id).exists()
    assert owner_v1.delete(f"datasets/{dataset.id}").status_code == 204
    assert not Dataset.objects.filter(pk=dataset.id).exists()


# --- samples -----------------------------------------------------------------------------------------


def test_register_samples_builds_and_grows_initial_tag(editor_v1, dataset):
    first = editor_v1.post(
        f"datasets/{dataset.id}/samples",
        {
            "fileName": "cam0/a.jpg",
            "metaData": {"sizeInBytes": 1000, "shape": [480, 640, 3]},
            "customMetaData": {"weather": "rain"},
        },
    )
    assert first.status_code == 201 and HEX24.fullmatch(first.json()["id"])
    sample = Sample.objects.get(pk=first.json()["id"])
    assert (sample.file_name, sample.size_bytes, sample.width, sample.height, sample.metadata) == (
        "cam0/a.jpg",
        1000,
        640,
        480,
        {"weather": "rain"},
    )
    second = editor_v1.post(f"datasets/{dataset.id}/samples", {"fileName": "cam0/b.jpg"})
    again = editor_v1.post(f"datasets/{dataset.id}/samples", {"fileName": "cam0/a.jpg"})
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]  # idempotent by file name
    initial = Tag.objects.get(dataset=dataset, name="initial-tag")
    assert initial.count == 2 and list(initial.indices()) == [0, 1]
    assert Sample.objects.filter(dataset=dataset).count() == 2
    assert second.json()["id"] != first.json()["id"]

    response = editor_v1.post(f"datasets/{dataset.id}/tags/initial", {"imgType": "meta"})
    assert response.status_code == 201 and response.json()["id"] == initial.id


@pytest.mark.parametrize(
    "body, field",
    [
        ({"fileName": "../escape.jpg"}, "fileName"),
        ({"fileName": "/abs.jpg"}, "fileName"),
        ({}, "fileName"),
        ({"fileName": "a.jpg", "metaData": {"sizeInBytes": -1}}, "sizeInBytes"),
        ({"fileName": "a.jpg", "metaData": {"shape": [0, 3]}}, "shape"),
        ({"fileName": "a.jpg", "customMetaData": "text"}, "customMetaData"),
        ({"fileName": "a.jpg", "videoFrameData": {"sourceVideo": "v.mp4"}}, "videoFrameData"),
        ({"fileName": "a.jpg", "color": "red"}, "color"),
    ],
)
def test_register_sample_refuses_bad_input_and_writes_nothing(editor_v1, dataset, body, field):
    response = editor_v1.post(f"datasets/{dataset.id}/samples", body)
    assert response.status_code == 400 and field in response.json()["error"], response.content
    assert not Sample.objects.exists() and not Tag.objects.exists()


def test_register_sample_refuses_nan_and_roles(editor_v1, viewer_v1, outsider_v1, owner, dataset):
    error(
        editor_v1.post(f"datasets/{dataset.id}/samples", raw=b'{"fileName": "a.jpg", "customMetaData": {"x": NaN}}'),
        400,
        "MALFORMED_REQUEST",
    )
    error(viewer_v1.post(f"datasets/{dataset.id}/samples", {"fileName": "a.jpg"}), 403, "FORBIDDEN")
    error(outsider_v1.post(f"datasets/{dataset.id}/samples", {"fileName": "a.jpg"}), 404, "DATASET_UNKNOWN")
    full = services.create_dataset(owner, "pixels here", "full")
    Membership.objects.create(
        dataset=full, user=Membership.objects.get(dataset=dataset, role="editor").user, role=Role.EDITOR
    )
    assert "pixels" in editor_v1.post(f"datasets/{full.id}/samples", {"fileName": "a.jpg"}).json()["error"]
    assert not Sample.objects.exists()


def test_initial_tag_needs_samples(editor_v1, dataset):
    error(editor_v1.post(f"datasets/{dataset.id}/tags/initial", {"imgType": "meta"}), 400, "TAG_NO_TAG_IN_DATASET")
    assert not Tag.objects.exists()


def test_samples_partial_modes_and_paging(viewer_v1, dataset):
    add(dataset, [f"s{i}.jpg" for i in range(5)])
    Sample.objects.filter(dataset=dataset, idx=1).update(metadata={"k": 1}, size_bytes=7)
    names = viewer_v1.get(f"datasets/{dataset.id}/samples/partial", mode="fileNames", pageSize=25000, pageOffset=0)
    assert [lightly_model("SampleDataModes", s).file_name for s in names.json()] == [f"s{i}.jpg" for i in range(5)]
    assert set(names.json()[0]) == {"id", "fileName"}
    ids = viewer_v1.get(f"datasets/{dataset.id}/samples/partial", mode="ids", pageSize=2, pageOffset=2).json()
    expected = Sample.objects.filter(idx__in=[2, 3]).order_by("idx").values_list("id", flat=True)
    assert [s["id"] for s in ids] == list(expected)
    full = viewer_v1.get(f"datasets/{dataset.id}/samples/partial", mode="full").json()
    model = lightly_model("SampleDataModes", full[1])
    assert (model.custom_meta_data, model.meta_data.size_in_bytes, model.type) == ({"k": 1}, 7, "IMAGE")
    one = viewer_v1.get(f"datasets/{dataset.id}/samples/{full[1]['id']}").json()
    assert lightly_model("SampleData", one).file_name == "s1.jpg"
    error(viewer_v1.get(f"datasets/{dataset.id}/samples/partial", mode="everything"), 422, "BAD_REQUEST")
    error(viewer_v1.get(f"datasets/{dataset.id}/samples/{'0' * 24}"), 404, "SAMPLE_UNKNOWN")


def test_put_custom_metadata(editor_v1, dataset):
    add(dataset, ["a.jpg", "b.jpg"])
    sample = Sample.objects.get(dataset=dataset, file_name="a.jpg")
    response = editor_v1.put(
        f"datasets/{dataset.id}/samples/{sample.id}", {"customMetaData": {"image_id": 4, "weather": {"temp": 3.5}}}
    )
    assert response.status_code == 204
    sample.refresh_from_db()
    assert sample.metadata == {"weather": {"temp": 3.5}}  # image_id only links the entry to its image
    assert Sample.objects.get(file_name="b.jpg").metadata == {}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"customMetaData": {"x": NaN}}',
        b'{"customMetaData": "text"}',
        b'{"customMetaData": {"x": "\\u0000"}}',
        b'{"fileName": "renamed.jpg", "customMetaData": {}}',
        b'{"other": 1}',
        b"{}",
        b"not json",
    ],
)
def test_put_custom_metadata_refuses_bad_input_with_422(editor_v1, dataset, raw):
    add(dataset, ["a.jpg"])
    sample = Sample.objects.get(dataset=dataset)
    Sample.objects.filter(pk=sample.pk).update(metadata={"kept": True})
    response = editor_v1.put(f"datasets/{dataset.id}/samples/{sample.id}", raw=raw)
    assert response.status_code == 422, response.content  # never 400: the client would retry for 31 s
    sample.refresh_from_db()
    assert (sample.file_name, sample.metadata) == ("a.jpg", {"kept": True})


def test_put_custom_metadata_roles_and_unknown_ids(viewer_v1, outsider_v1, editor_v1, dataset):
    add(dataset, ["a.jpg"])
    sample = Sample.objects.get(dataset=dataset)
    body = {"customMetaData": {"x": 1}}
    error(viewer_v1.put(f"datasets/{dataset.id}/samples/{sample.id}", body), 403, "FORBIDDEN")
    error(outsider_v1.put(f"datasets/{dataset.id}/samples/{sample.id}", body), 404, "DATASET_UNKNOWN")
    error(editor_v1.put(f"datasets/{dataset.id}/samples/{'0' * 24}", body), 404, "SAMPLE_UNKNOWN")
    sample.refresh_from_db()
    assert sample.metadata == {}


def test_mappings_are_idx_order_and_page_by_item(viewer_v1, outsider_v1, dataset):
    names = [f"z{9 - i}.jpg" for i in range(10)]  # upload order, not alphabetical
    add(dataset, names)
    url = f"datasets/{dataset.id}/mappings"
    assert viewer_v1.get(url, field="fileName", pageSize=25000, pageOffset=0).json() == names
    assert viewer_v1.get(url, field="fileName", pageSize=4, pageOffset=4).json() == names[4:8]
    assert viewer_v1.get(url, field="fileName", pageSize=4, pageOffset=12).json() == []
    ids = viewer_v1.get(url, field="_id").json()
    assert ids == list(Sample.objects.filter(dataset=dataset).order_by("idx").values_list("id", flat=True))
    error(viewer_v1.get(url, field="width"), 422, "BAD_REQUEST")
    error(viewer_v1.get(url, field="fileName", pageOffset="-1"), 422, "BAD_REQUEST")
    error(outsider_v1.get(url, field="fileName"), 404, "DATASET_UNKNOWN")


def test_other_v1_paths_are_json_404s_without_redirects(owner_v1, dataset):
    for path in (f"datasets/{dataset.id}/predictions/scores", "datasets/", f"datasets/{dataset.id}/", "docker/worker"):
        response = owner_v1.get(path)
        error(response, 404, "NOT_FOUND")
    error(owner_v1.post("datasets/", {"name": "with slash"}), 404, "NOT_FOUND")
    assert not Dataset.objects.filter(name="with slash").exists()
