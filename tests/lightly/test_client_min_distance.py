"""The client's `selection()` with `min_distance`: CORESET stops once no candidate is that far from the selection."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from curation import storage
from curation.models import Dataset
from sampling.models import SamplingRun
from tests.lightly.helpers import register_samples, write_embeddings_csv

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
CLUSTERS, PER_CLUSTER = 5, 8


@pytest.fixture(autouse=True)
def _media_root(transactional_db):
    """The worker process reads the embedding files: use the storage it shares, not a per-test folder."""
    yield
    for dataset_id in Dataset.objects.values_list("id", flat=True):
        storage.delete_prefix(f"datasets/{dataset_id}/")


def test_selection_with_min_distance_takes_one_per_far_cluster(celery_worker, lightly_client, owner, tmp_path):
    from lightly.active_learning.config.selection_config import SelectionConfig

    client = lightly_client(owner)
    client.create_dataset("min-distance")
    names = [f"cluster{c}/img_{i:02d}.jpg" for c in range(CLUSTERS) for i in range(PER_CLUSTER)]
    register_samples(client, names)
    rng = np.random.default_rng(3)
    centers = np.eye(CLUSTERS, 8, dtype=np.float32) * 50  # clusters ~70 apart, each ~2 across
    vectors = np.repeat(centers, PER_CLUSTER, axis=0) + rng.normal(scale=0.5, size=(len(names), 8)).astype(np.float32)
    path = tmp_path / "embeddings.csv"
    write_embeddings_csv(path, names, vectors)
    client.upload_embeddings(str(path), name="default")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # selection() and SelectionConfig are deprecated in 1.5.26
        spread = client.selection(SelectionConfig(method="CORESET", n_samples=-1, min_distance=10.0, name="spread"))
        capped = client.selection(SelectionConfig(method="CORESET", n_samples=3, min_distance=10.0, name="capped"))
        fine = client.selection(SelectionConfig(method="CORESET", n_samples=-1, min_distance=1e-4, name="all-of-it"))

    picked = client.get_filenames_in_tag(spread)
    assert sorted(name.split("/")[0] for name in picked) == [f"cluster{c}" for c in range(CLUSTERS)]
    assert len(client.get_filenames_in_tag(capped)) == 3  # nSamples still caps it
    assert len(client.get_filenames_in_tag(fine)) == len(names)  # every sample is farther than that
    run = SamplingRun.objects.get(name="spread")
    assert (run.strategy, run.min_distance) == ("diversity", 10.0)
