"""Dataset and sample logic shared by the REST API, the pages, the admin and the tasks."""

from __future__ import annotations

from django.db import transaction

from curation import storage
from curation.models import Dataset, Membership, Role


@transaction.atomic
def create_dataset(owner, name: str, upload_mode: str) -> Dataset:
    dataset = Dataset.objects.create(owner=owner, name=name, upload_mode=upload_mode)
    Membership.objects.create(dataset=dataset, user=owner, role=Role.OWNER)
    return dataset


def delete_dataset(dataset: Dataset) -> None:
    """Delete the dataset's rows, then its files (rows first: a failure leaves orphan files, never dangling rows)."""
    prefix = dataset.storage_prefix
    with transaction.atomic():
        dataset.delete()
    transaction.on_commit(lambda: storage.delete_prefix(prefix))
