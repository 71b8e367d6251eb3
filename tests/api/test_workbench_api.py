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


def test_the_database_refuses_a_second_name_per_owner_in_any_case(owner, editor):
    from django.db import IntegrityError, transaction

    from curation.services import DatasetNameTaken

    first = create_dataset(owner, "Harbour", "meta")
    with pytest.raises(IntegrityError), transaction.atomic():
        Dataset.objects.create(owner=owner, name="HARBOUR", upload_mode="meta")  # past every check in Python
    with pytest.raises(DatasetNameTaken, match="olivia already has a dataset named 'harbour'"):
        create_dataset(owner, "harbour", "meta")
    assert create_dataset(editor, "harbour", "meta").owner == editor  # another owner may
    assert Dataset.objects.filter(owner=owner).get() == first


def test_a_create_that_loses_the_race_is_refused_in_words(owner_api, owner, monkeypatch):
    from curation import services

    create_dataset(owner, "race", "meta")
    # The other create committed between this one's check and its insert: the constraint decides.
    answers = iter([False, True])
    monkeypatch.setattr(services, "dataset_name_taken", lambda *a, **k: next(answers))
    response = owner_api.post(LIST, {"name": "Race"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "name: olivia already has a dataset named 'Race'; choose another name"
    assert Dataset.objects.filter(owner=owner).count() == 1


def test_the_migration_renames_existing_duplicates_with_a_suffix(owner, editor):
    """0010 on data made before the constraint: the oldest keeps its name, later ones get (2), (3), ..."""
    import importlib

    from django.apps import apps as django_apps
    from django.db import connection
    from django.utils import timezone

    migration = importlib.import_module("curation.migrations.0010_rename_duplicate_dataset_names")
    with connection.schema_editor() as editor_schema:
        editor_schema.remove_constraint(Dataset, Dataset._meta.constraints[0])
    try:
        now = timezone.now()
        made = {}
        for age, (user, name) in enumerate(
            [
                (owner, "Street"),
                (owner, "street"),
                (owner, "STREET"),
                (owner, "street (2)"),  # the first free suffix is (3) for the second one
                (owner, "x" * 200),
                (owner, "X" * 200),
                (editor, "street"),  # another owner's: untouched
                (owner, "other"),
            ]
        ):
            ds = Dataset.objects.create(owner=user, name=name, upload_mode="meta")
            Dataset.objects.filter(pk=ds.pk).update(created_at=now - timezone.timedelta(minutes=100 - age))
            made[(user.username, name)] = ds.pk
        migration.rename_duplicates(django_apps, connection.schema_editor())
        names = {key: Dataset.objects.get(pk=pk).name for key, pk in made.items()}
    finally:
        Dataset.objects.all().delete()
        with connection.cursor() as cursor:  # the deletes' deferred checks run now, so the index can be built
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        with connection.schema_editor() as editor_schema:
            editor_schema.add_constraint(Dataset, Dataset._meta.constraints[0])
    assert names[("olivia", "Street")] == "Street"
    assert names[("olivia", "street (2)")] == "street (2)"
    assert names[("olivia", "street")] == "street (3)"
    assert names[("olivia", "STREET")] == "STREET (4)"
    assert names[("olivia", "x" * 200)] == "x" * 200
    assert names[("olivia", "X" * 200)] == "X" * 196 + " (2)"  # cut to fit 200 characters
    assert names[(editor.username, "street")] == "street"
    assert names[("olivia", "other")] == "other"
