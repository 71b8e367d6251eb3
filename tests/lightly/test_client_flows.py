"""Lightly's own client (1.5.26) against a live Winnow server: flows a to f of the wire contract.

Every read-back is compared with what Winnow's own API (`/api/v1/`) shows for the same dataset.
"""

from __future__ import annotations

import csv
import io
import warnings

import numpy as np
import pytest
import requests

from curation import services
from curation.models import Dataset, Embedding, Membership, Role, Tag
from tests.lightly.helpers import register_samples, write_embeddings_csv

pytestmark = pytest.mark.django_db(transaction=True)


def api_tags(api, dataset_id: str) -> dict[str, list[str]]:
    """{tag name: file names in idx order} as Winnow's own API shows them."""
    names_by_id = {s["id"]: s["file_name"] for s in api_samples(api, dataset_id)}
    tags = {}
    for tag in api.get(f"/api/v1/datasets/{dataset_id}/tags").json():
        detail = api.get(f"/api/v1/datasets/{dataset_id}/tags/{tag['id']}?include=sample_ids").json()
        tags[tag["name"]] = [names_by_id[sid] for sid in detail["sample_ids"]]
    return tags


def api_samples(api, dataset_id: str) -> list[dict]:
    response = api.get(f"/api/v1/datasets/{dataset_id}/samples?limit=1000")
    assert response.status_code == 200, response.content
    return response.json()["results"]


def read_csv(text: str) -> dict[str, list[float]]:
    """{file name: vector} of an embeddings CSV, as float32 values (what Winnow stores)."""
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][0] == "filenames" and rows[0][-1] == "labels"
    return {row[0]: [float(np.float32(v)) for v in row[1:-1]] for row in rows[1:] if row}


# --- a. client and datasets ------------------------------------------------------------------------


def test_datasets_create_find_list_exist_and_delete(lightly_client, owner, outsider, owner_api):
    client = lightly_client(owner)
    client.create_dataset("street-scenes")
    dataset_id = client.dataset_id
    dataset = Dataset.objects.get(pk=dataset_id)
    assert (dataset.name, dataset.upload_mode, dataset.owner) == ("street-scenes", "meta", owner)
    with pytest.raises(ValueError, match="already exists"):
        client.create_dataset("street-scenes")
    # The client's own check is by exact name; the server refuses the same name in another case too, with
    # Lightly's error code, and a create that skips the check is refused the same way.
    from lightly.openapi_generated.swagger_client.rest import ApiException

    for name, create in [
        ("Street-Scenes", lambda n: client.create_dataset(n)),
        ("street-scenes", lambda n: client._create_dataset_without_check_existing(n, "Images")),
    ]:
        with pytest.raises(ApiException) as refused:
            create(name)
        assert refused.value.status == 400 and "DATASET_NAME_EXISTS" in refused.value.body
    assert Dataset.objects.filter(owner=owner).count() == 1
    assert client.dataset_id == dataset_id

    other = lightly_client(owner)
    other.set_dataset_id_by_name("street-scenes")
    assert other.dataset_id == dataset_id

    shared = services.create_dataset(outsider, "shared-scenes", "meta")
    Membership.objects.create(dataset=shared, user=owner, role=Role.VIEWER)
    hidden = services.create_dataset(owner, "v1.2 (odd)", "meta")  # a name Lightly's client would reject

    assert [d.id for d in client.get_datasets()] == [dataset_id]
    assert [d.id for d in client.get_datasets(shared=True)] == [shared.id]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        everything = client.get_all_datasets()
    assert sorted(d.id for d in everything) == sorted([dataset_id, shared.id])
    assert hidden.id not in [d.id for d in everything]

    mine = client.get_datasets()[0]
    native = owner_api.get(f"/api/v1/datasets/{dataset_id}").json()
    assert (mine.name, mine.n_samples, mine.img_type) == (native["name"], native["sample_count"], "meta")

    assert client.dataset_exists(dataset_id)
    assert client.dataset_exists(shared.id)
    assert not client.dataset_exists(hidden.id)
    assert not client.dataset_exists("0" * 24)

    unset = lightly_client(owner)  # no dataset chosen: the client takes the last modified one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert unset.dataset_id == dataset_id

    client.delete_dataset_by_id(dataset_id)
    assert not Dataset.objects.filter(pk=dataset_id).exists()
    assert owner_api.get(f"/api/v1/datasets/{dataset_id}").status_code == 404


# --- setup, d. tags and e. exports --------------------------------------------------------------------

# Long names: the initial tag's file name export passes 5,000 characters, so the client asks for a second page.
NAMES = [f"cam{i % 3}/{'long_directory_name_' * 4}sample_{i:04d}.jpg" for i in range(60)]


def test_samples_initial_tag_tags_and_exports(lightly_client, owner, owner_api):
    from lightly.openapi_generated.swagger_client.api import SamplesApi

    client = lightly_client(owner)
    client.create_dataset("tagging-demo")
    dataset_id = client.dataset_id
    register_samples(client, NAMES)

    # Every sample is in initial-tag, as Winnow's own API shows too.
    tags = client.get_all_tags()
    assert [t.name for t in tags] == ["initial-tag"]
    assert tags[0].tot_size == len(NAMES) and tags[0].prev_tag_id is None
    assert api_tags(owner_api, dataset_id) == {"initial-tag": NAMES}
    assert [s["file_name"] for s in api_samples(owner_api, dataset_id)] == NAMES
    assert client.get_filenames() == NAMES  # mapping order = idx order = upload order

    partial = SamplesApi(client.api_client).get_samples_partial_by_dataset_id(
        dataset_id=dataset_id, mode="full", page_size=25000, page_offset=0
    )
    assert [(s.file_name, s.meta_data.size_in_bytes) for s in partial] == [(n, 1000 + i) for i, n in enumerate(NAMES)]

    every_third = NAMES[::3]
    created = client.create_tag_from_filenames(every_third, "every-third")
    third = client.get_tag_by_name("every-third")
    assert third.id == created.id and third.prev_tag_id == tags[0].id and third.tot_size == len(NAMES)
    assert client.get_filenames_in_tag(third) == every_third

    client.create_tag_from_filenames(NAMES[:6], "first-six", parent_tag_id=third.id)
    first_six = client.get_tag_by_name("first-six")
    assert first_six.prev_tag_id == third.id
    # Tag arithmetic on the server: first-six minus its parent.
    assert client.get_filenames_in_tag(first_six, exclude_parent_tag=True) == [NAMES[i] for i in (1, 2, 4, 5)]

    assert [t.name for t in client.get_all_tags()] == ["first-six", "every-third", "initial-tag"]  # newest first
    native = api_tags(owner_api, dataset_id)
    assert native == {t.name: client.get_filenames_in_tag(t) for t in client.get_all_tags()}

    # A tag whose name the client would reject stays off /v1/ and does not break the list.
    Tag.objects.create(dataset_id=dataset_id, name="x/y", bitmask=b"\x01", count=1, origin="selection")
    assert "x/y" not in [t.name for t in client.get_all_tags()]

    # e. exports
    assert client.export_filenames_by_tag_name("every-third") == "\n".join(every_third)
    assert client.export_filenames_by_tag_name("initial-tag") == "\n".join(NAMES)  # two pages, the second ""
    tasks = [task.to_dict(by_alias=True) for task in client.export_label_studio_tasks_by_tag_name("every-third")]
    assert tasks == [{"id": NAMES.index(n), "data": {"image": n, "lightlyFileName": n}} for n in every_third]
    rows = client.export_filenames_and_read_urls_by_tag_name("initial-tag")
    assert [r["fileName"] for r in rows] == NAMES
    # A meta dataset keeps no pixels: its read and datasource URLs are the file names, as Winnow's exports give.
    assert all(r["readUrl"] == r["fileName"] == r["datasourceUrl"] for r in rows)
    native_export = owner_api.get(f"/api/v1/datasets/{dataset_id}/tags/{third.id}/export?format=filenames")
    assert b"".join(native_export.streaming_content).decode().split() == every_third

    client.delete_tag_by_name("first-six")
    assert "first-six" not in api_tags(owner_api, dataset_id)
    from lightly.openapi_generated.swagger_client.rest import ApiException

    with pytest.raises(ApiException) as refused:
        client.delete_tag_by_name("initial-tag")
    assert refused.value.status == 403
    assert "initial-tag" in api_tags(owner_api, dataset_id)


def test_read_urls_of_a_full_dataset_serve_its_images(lightly_client, owner, owner_api):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    dataset = services.create_dataset(owner, "with-pixels", "full")
    files = []
    for i, color in enumerate(["red", "green"]):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 24), color).save(buffer, format="PNG")
        files.append((f"img_{i}.png", buffer.getvalue()))
    response = owner_api.post(
        f"/api/v1/datasets/{dataset.id}/samples",
        {"files": [SimpleUploadedFile(name, data, content_type="image/png") for name, data in files]},
        format="multipart",
    )
    assert response.status_code == 201, response.content

    client = lightly_client(owner, dataset.id)
    rows = client.export_filenames_and_read_urls_by_tag_name("initial-tag")
    assert [r["fileName"] for r in rows] == ["img_0.png", "img_1.png"]
    for row, (_name, data) in zip(rows, files):
        assert row["readUrl"].startswith("http") and "signature=" in row["readUrl"]
        got = requests.get(row["readUrl"], timeout=10)  # no token: the URL carries its credential
        assert got.status_code == 200 and got.content == data
    tampered = rows[0]["readUrl"].replace("type=full", "type=thumbnail")
    assert requests.get(tampered, timeout=10).status_code == 403
    tasks = [t.to_dict(by_alias=True) for t in client.export_label_studio_tasks_by_tag_name("initial-tag")]
    assert requests.get(tasks[1]["data"]["image"], timeout=10).content == files[1][1]


# --- b. upload_embeddings and f. read-back -----------------------------------------------------------


def test_upload_embeddings_then_read_them_back(lightly_client, owner, owner_api, tmp_path):
    client = lightly_client(owner)
    client.create_dataset("embedding-demo")
    names = [f"frame_{i:03d}.png" for i in range(12)]
    register_samples(client, names)
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(12, 5)).astype(np.float32)
    order = rng.permutation(12)  # the user's file need not be in the server's order
    path = tmp_path / "embeddings.csv"
    write_embeddings_csv(path, [names[i] for i in order], vectors[order], labels=[int(i) % 3 for i in order])

    client.upload_embeddings(str(path), name="default")
    first = client.embedding_id
    [listed] = client.get_all_embedding_data()
    assert (listed.id, listed.name, listed.is_processed) == (first, "default", True)
    # The map's 2D layout was computed for the id the client holds (tasks run in-process in this test).
    assert Embedding.objects.get(pk=first).projection_status == "ready"

    native = owner_api.get(f"/api/v1/datasets/{client.dataset_id}/embeddings").json()
    assert [(e["id"], e["name"], e["dimension"]) for e in native] == [(first, "default", 5)]
    csv_response = owner_api.get(f"/api/v1/datasets/{client.dataset_id}/embeddings/{first}/csv")
    native_values = read_csv(b"".join(csv_response.streaming_content).decode())
    assert native_values == {n: vectors[i].tolist() for i, n in enumerate(names)}

    out = tmp_path / "downloaded.csv"
    client.download_embeddings_csv(str(out))
    assert read_csv(out.read_text()) == native_values
    assert list(read_csv(out.read_text())) == names  # mapping order

    # Uploading under a name that prefixes an existing one merges with it (local rows win) as a new embedding.
    newer = rng.normal(size=(4, 5)).astype(np.float32)
    partial_path = tmp_path / "partial.csv"
    write_embeddings_csv(partial_path, names[:4], newer)
    client.upload_embeddings(str(partial_path), name="default")
    second = client.embedding_id
    assert second != first
    listing = client.get_all_embedding_data()
    assert [e.id for e in listing] == [second, first]  # newest first
    assert listing[0].name.startswith("default_")
    assert client.get_embedding_data_by_name("default").id == first
    client.set_embedding_id_to_latest()
    assert client.embedding_id == second
    merged = read_csv(
        b"".join(
            owner_api.get(f"/api/v1/datasets/{client.dataset_id}/embeddings/{second}/csv").streaming_content
        ).decode()
    )
    assert merged == {n: (newer[i] if i < 4 else vectors[i]).tolist() for i, n in enumerate(names)}

    by_id = tmp_path / "by_id.csv"
    client.download_embeddings_csv_by_id(first, str(by_id))
    assert read_csv(by_id.read_text()) == native_values
    assert Embedding.objects.filter(dataset_id=client.dataset_id).count() == 2


# --- c. upload_custom_metadata -----------------------------------------------------------------------


def test_upload_custom_metadata_eight_in_parallel(lightly_client, owner, owner_api):
    client = lightly_client(owner)
    client.create_dataset("metadata-demo")
    names = [f"scene_{i:03d}.jpg" for i in range(40)]
    register_samples(client, names)
    document = {
        "images": [{"id": i, "file_name": n} for i, n in enumerate(names)] + [{"id": 999, "file_name": "gone.jpg"}],
        "metadata": [
            {"image_id": i, "weather": {"temperature": 10 + i / 4, "rain": i % 2 == 0}, "camera": f"cam{i % 3}"}
            for i in range(36)
        ]
        + [{"image_id": 999, "weather": {"temperature": 0.0}}],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the client warns about gone.jpg, which the server does not have
        client.upload_custom_metadata(document, max_workers=8)

    expected = {
        names[m["image_id"]]: {k: v for k, v in m.items() if k != "image_id"}
        for m in document["metadata"]
        if m["image_id"] != 999
    }
    native = {s["file_name"]: s["metadata"] for s in api_samples(owner_api, client.dataset_id)}
    assert native == {n: expected.get(n, {}) for n in names}

    from lightly.openapi_generated.swagger_client.api import SamplesApi

    full = SamplesApi(client.api_client).get_samples_partial_by_dataset_id(
        dataset_id=client.dataset_id, mode="full", page_size=25000, page_offset=0
    )
    assert {s.file_name: s.custom_meta_data for s in full} == native

    # The same document through Winnow's own upload gives the same metadata.
    twin = services.create_dataset(owner, "metadata-twin", "meta")
    services.add_samples(twin, [{"file_name": n} for n in names])
    response = owner_api.post(
        f"/api/v1/datasets/{twin.id}/metadata",
        {**document, "images": document["images"][:-1], "metadata": document["metadata"][:-1]},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert {s["file_name"]: s["metadata"] for s in api_samples(owner_api, twin.id)} == native


# --- access -------------------------------------------------------------------------------------------


def test_another_users_token_gets_the_access_error_not_the_data(lightly_client, owner, outsider, viewer):
    from lightly.api.retry_utils import DatasetNotFoundError
    from lightly.openapi_generated.swagger_client.rest import ApiException

    mine = lightly_client(owner)
    mine.create_dataset("private-set")
    register_samples(mine, ["a.jpg", "b.jpg", "c.jpg"])

    theirs = lightly_client(outsider)
    with pytest.raises(ValueError, match="does not exist"):
        theirs.dataset_id = mine.dataset_id
    assert [d.id for d in theirs.get_datasets(shared=True)] == []
    with pytest.raises(ValueError, match="does not exist"):
        theirs.set_dataset_id_by_name("private-set", shared=None)

    theirs._dataset_id = mine.dataset_id  # as if the id leaked: every call is refused
    with pytest.raises(ApiException) as refused:
        theirs.get_all_tags()
    assert refused.value.status == 404 and "DATASET_UNKNOWN" in refused.value.body
    with pytest.raises(DatasetNotFoundError):
        theirs.get_filenames()

    from lightly.api import ApiWorkflowClient

    stranger = ApiWorkflowClient(token="wnw_not-a-real-token-at-all-000000")
    with pytest.raises(ApiException) as bad_token:
        stranger.dataset_id = mine.dataset_id
    assert bad_token.value.status == 401 and "UNAUTHORIZED" in bad_token.value.body

    Membership.objects.create(dataset_id=mine.dataset_id, user=viewer, role=Role.VIEWER)
    reader = lightly_client(viewer, mine.dataset_id)
    assert reader.get_filenames() == ["a.jpg", "b.jpg", "c.jpg"]
    with pytest.raises(ApiException) as forbidden:
        reader.create_tag_from_filenames(["a.jpg"], "viewer-tag")
    assert forbidden.value.status == 403
    assert not Tag.objects.filter(name="viewer-tag").exists()
