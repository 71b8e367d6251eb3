"""Flow g: the client's server-side `selection()` runs as a Winnow sampling run on a real Celery worker."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from curation import storage
from curation.models import Dataset
from tests.lightly.helpers import register_samples, write_embeddings_csv

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
CLUSTERS, PER_CLUSTER = 4, 10


@pytest.fixture(autouse=True)
def _media_root(transactional_db):
    """The worker process reads the embedding files: use the storage it shares, not a per-test folder."""
    yield
    for dataset_id in Dataset.objects.values_list("id", flat=True):
        storage.delete_prefix(f"datasets/{dataset_id}/")


def test_selection_random_and_coreset_through_the_worker(celery_worker, lightly_client, owner, owner_api, tmp_path):
    from lightly.active_learning.config.selection_config import SelectionConfig

    client = lightly_client(owner)
    client.create_dataset("selection-demo")
    names = [f"cluster{c}/img_{i:02d}.jpg" for c in range(CLUSTERS) for i in range(PER_CLUSTER)]
    register_samples(client, names)
    rng = np.random.default_rng(11)
    centers = np.eye(CLUSTERS, 8, dtype=np.float32) * 50  # four clusters far apart
    vectors = np.repeat(centers, PER_CLUSTER, axis=0) + rng.normal(scale=0.5, size=(len(names), 8)).astype(np.float32)
    path = tmp_path / "embeddings.csv"
    write_embeddings_csv(path, names, vectors)
    client.upload_embeddings(str(path), name="default")
    dataset_id = client.dataset_id

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # selection() and SelectionConfig are deprecated in 1.5.26
        random_tag = client.selection(SelectionConfig(method="RANDOM", n_samples=10, name="random-10"))
        coreset_tag = client.selection(SelectionConfig(method="CORESET", n_samples=4, name="coreset-4"))

    initial = client.get_tag_by_name("initial-tag")
    picked_random = client.get_filenames_in_tag(random_tag)
    picked_coreset = client.get_filenames_in_tag(coreset_tag)
    assert random_tag.name == "random-10" and len(picked_random) == 10 and random_tag.prev_tag_id == initial.id
    # Greedy k-center over four far-apart clusters takes one sample from each.
    assert sorted(name.split("/")[0] for name in picked_coreset) == [f"cluster{c}" for c in range(CLUSTERS)]

    # Winnow's own API shows the same runs, tags and scores.
    runs = owner_api.get(f"/api/v1/datasets/{dataset_id}/sampling-runs").json()["results"]
    assert sorted((r["name"], r["strategy"], r["status"]) for r in runs) == [
        ("coreset-4", "coreset", "succeeded"),
        ("random-10", "random", "succeeded"),
    ]
    samples = owner_api.get(f"/api/v1/datasets/{dataset_id}/samples?limit=1000").json()["results"]
    name_of = {s["id"]: s["file_name"] for s in samples}
    for tag, picked in ((random_tag, picked_random), (coreset_tag, picked_coreset)):
        detail = owner_api.get(f"/api/v1/datasets/{dataset_id}/tags/{tag.id}?include=sample_ids").json()
        assert (detail["name"], detail["origin"]) == (tag.name, "sampling")
        assert [name_of[sid] for sid in detail["sample_ids"]] == picked
    coreset_run = next(r for r in runs if r["name"] == "coreset-4")
    scores = owner_api.get(f"/api/v1/datasets/{dataset_id}/sampling-runs/{coreset_run['id']}/scores?limit=4").json()
    assert sorted(s["file_name"] for s in scores["results"]) == sorted(picked_coreset)
