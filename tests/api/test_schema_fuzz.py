"""Schemathesis over /api/schema/: no operation answers 5xx to any request its schema allows or breaks.

Every operation runs as the owner of a dataset with samples, a tag and metadata, so path parameters named
`dataset_id` reach real code rather than a 404. Examples per operation are few (the CI budget is about a
minute); hypothesis keeps the failing ones in its database, and test_malformed.py pins the known shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from curation import bitmask, storage
from curation.models import Embedding, Sample, Tag
from curation.services import create_dataset
from sampling.models import RunStatus, SamplingRun
from tests.factories import make_samples
from winnow.accounts.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_schema(db):
    from winnow.wsgi import application

    # As Django's test client does: the test's transaction must outlive each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/schema/", application)
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def fuzz_owner(django_user_model):
    """The caller and the objects whose ids replace generated path parameters, so requests reach real code."""
    user = django_user_model.objects.create_user("fuzz", password="pw-fuzz-12345")
    dataset = create_dataset(user, "fuzzed", "meta")
    make_samples(
        dataset, 8, metadata=lambda i: {"weather": {"temperature": i, "scenario": "rainy" if i % 2 else "sun"}}
    )
    tag = Tag.objects.create(dataset=dataset, name="some", bitmask=bitmask.from_indices(np.arange(4)), count=4)
    X = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    matrix = storage.save_matrix(f"{dataset.storage_prefix}embeddings/e.npy", X)
    embedding = Embedding.objects.create(dataset=dataset, name="e", dimension=4, count=8, matrix_key=matrix)
    run = SamplingRun.objects.create(dataset=dataset, name="r", strategy="random", status=RunStatus.SUCCEEDED)
    _token, key = ApiToken.issue(user, "fuzz")
    ids = {
        "dataset_id": dataset.pk,
        "tag_id": tag.pk,
        "sample_id": Sample.objects.filter(dataset=dataset).first().pk,
        "embedding_id": embedding.pk,
        "run_id": run.pk,
    }
    return {"key": key, "ids": ids}


@schema.parametrize()
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_operation_answers_5xx(case, fuzz_owner):
    for name, value in fuzz_owner["ids"].items():
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = value
    if case.method.upper() == "DELETE" and case.path == "/api/v1/datasets/{dataset_id}":
        return  # deleting the fixture's dataset would leave the other operations 404s
    response = case.call(headers={"Authorization": f"Token {fuzz_owner['key']}"})
    case.validate_response(response, checks=[not_a_server_error])
