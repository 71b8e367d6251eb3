"""The operators' console: staff only; tokens revocable and never shown; datasets with counts."""

import pytest
from django.urls import reverse

from curation.models import Dataset, Sample
from winnow.accounts.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-12345")
    client.force_login(admin)
    return client


def test_non_staff_cannot_reach_admin(client, owner):
    client.force_login(owner)
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize(
    "model",
    [
        "auth/user",
        "accounts/apitoken",
        "curation/dataset",
        "curation/membership",
        "curation/tag",
        "curation/embedding",
        "curation/metadatafield",
        "curation/sample",
        "sampling/samplingrun",
    ],
)
def test_changelists_load(staff_client, dataset, model):
    assert staff_client.get(f"/admin/{model}/").status_code == 200


def test_dataset_list_shows_counts(staff_client, dataset):
    Sample.objects.bulk_create([Sample(dataset=dataset, idx=i, file_name=f"{i}.jpg") for i in range(3)])
    page = staff_client.get("/admin/curation/dataset/").content.decode()
    assert "street scenes" in page
    assert '<td class="field-sample_count">3</td>' in page


def test_token_admin_never_shows_secret_and_revokes(staff_client, owner):
    token, key = ApiToken.issue(owner, "laptop")
    page = staff_client.get(reverse("admin:accounts_apitoken_change", args=[token.pk])).content.decode()
    assert key not in page and token.key_hash not in page
    assert staff_client.get(reverse("admin:accounts_apitoken_add")).status_code == 403
    response = staff_client.post(
        reverse("admin:accounts_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert ApiToken.authenticate(key) is None


def test_deleting_a_run_counts_its_scores_instead_of_listing_them(staff_client, dataset):
    import numpy as np

    from sampling import services
    from sampling.models import ImportanceScore, SamplingRun

    samples = Sample.objects.bulk_create([Sample(dataset=dataset, idx=i, file_name=f"{i}.jpg") for i in range(50)])
    run = SamplingRun.objects.create(dataset=dataset, name="old run", strategy="random")
    services.write_scores(run.id, None, np.array([s.id for s in samples], dtype=object), np.arange(50.0))
    url = reverse("admin:sampling_samplingrun_delete", args=[run.pk])
    page = staff_client.get(url).content.decode()
    assert "old run" in page and "50 importance scores" in page
    assert "ImportanceScore object" not in page and "Importance score:" not in page
    assert staff_client.post(url, {"post": "yes"}).status_code == 302
    assert not SamplingRun.objects.exists() and not ImportanceScore.objects.exists()


def test_deleting_a_dataset_from_admin_counts_instead_of_listing_and_deletes_everything(staff_client, dataset):
    Sample.objects.bulk_create([Sample(dataset=dataset, idx=i, file_name=f"{i}.jpg") for i in range(5)])
    url = reverse("admin:curation_dataset_delete", args=[dataset.pk])
    page = staff_client.get(url).content.decode()
    assert "street scenes" in page and "5.jpg" not in page and "0.jpg" not in page
    assert "Samples: 5" in page or "samples: 5" in page.lower()
    response = staff_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not Dataset.objects.filter(pk=dataset.pk).exists()
    assert not Sample.objects.filter(dataset_id=dataset.pk).exists()
