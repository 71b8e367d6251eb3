"""API pieces of the curator's workbench: unique dataset names per owner, "all in filter but these" tags,
error messages without DRF's `non_field_errors` key."""

from __future__ import annotations

import pytest

from curation.models import Dataset, Sample, Tag
from curation.services import add_samples, create_dataset

pytestmark = pytest.mark.django_db

LIST = "/api/v1/datasets"


def test_a_second_dataset_with_the_same_name_is_refused_per_owner(owner_api, editor_api, owner):
    assert owner_api.post(LIST, {"name": "night drive"}, format="json").status_code == 201
    again = owner_api.post(LIST, {"name": "Night Drive "}, format="json")
    assert again.status_code == 400
    assert again.json()["detail"] == "name: olivia already has a dataset named 'Night Drive'; choose another name"
    assert Dataset.objects.filter(owner=owner).count() == 1
    # Another user may use the name.
    assert editor_api.post(LIST, {"name": "night drive"}, format="json").status_code == 201


def test_rename_to_a_name_the_owner_already_uses_is_refused(owner_api, owner, dataset):
    other = create_dataset(owner, "city", "meta")
    response = owner_api.patch(f"{LIST}/{dataset.id}", {"name": "CITY"}, format="json")
    assert response.status_code == 400 and "already has a dataset named 'CITY'" in response.json()["detail"]
    assert Dataset.objects.get(pk=dataset.pk).name != "CITY"
    # Keeping its own name (another case) is fine.
    same = owner_api.patch(f"{LIST}/{other.id}", {"name": "City"}, format="json")
    assert same.status_code == 200 and same.json()["name"] == "City"


@pytest.fixture
def samples(dataset):
    add_samples(dataset, [{"file_name": f"f{i}.jpg", "metadata": {"n": i}} for i in range(20)])
    return dict(Sample.objects.filter(dataset=dataset).values_list("idx", "id"))


def test_a_filter_tag_can_leave_out_deselected_samples(editor_api, dataset, samples):
    url = f"{LIST}/{dataset.id}/tags"
    body = {"name": "most", "filter": {"file_name": "f1"}, "exclude_sample_ids": [samples[1], samples[12]]}
    response = editor_api.post(url, body, format="json")
    assert response.status_code == 201, response.content
    # f1, f10..f19 match; f1 and f12 are left out.
    assert Tag.objects.get(dataset=dataset, name="most").indices().tolist() == [10, 11, 13, 14, 15, 16, 17, 18, 19]


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"exclude_sample_ids": "abc"}, "exclude_sample_ids: must be a list of sample ids"),
        ({"exclude_sample_ids": ["0" * 24]}, "exclude_sample_ids: no sample with id '000000000000000000000000'"),
    ],
)
def test_bad_exclusions_are_named_and_change_nothing(editor_api, dataset, samples, extra, message):
    response = editor_api.post(f"{LIST}/{dataset.id}/tags", {"name": "x", "filter": {}, **extra}, format="json")
    assert response.status_code == 400 and response.json()["detail"].startswith(message)
    assert not Tag.objects.filter(dataset=dataset, name="x").exists()


def test_exclusions_go_only_with_a_filter(editor_api, dataset, samples):
    body = {"name": "x", "sample_ids": [samples[0]], "exclude_sample_ids": [samples[1]]}
    response = editor_api.post(f"{LIST}/{dataset.id}/tags", body, format="json")
    assert (
        response.status_code == 400
        and response.json()["detail"] == "exclude_sample_ids: 'exclude_sample_ids' goes with 'filter'"
    )


def test_errors_about_the_whole_request_carry_no_field_jargon(editor_api, dataset, samples):
    response = editor_api.post(
        f"{LIST}/{dataset.id}/tags", {"name": "x", "filter": {"file_name": "nope"}}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "the tag would be empty: no sample matches"
    assert "non_field_errors" in response.json()["errors"]  # the structured form keeps DRF's key
