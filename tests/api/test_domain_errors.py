"""A service's DomainError reaches the client as the usual 400 validation shape, naming the field."""

from __future__ import annotations

import json

import pytest

from curation.embeddings import EmbeddingError
from curation.errors import DomainError
from curation.predictions import PredictionsInvalid
from curation.similarity import SimilarityError
from sampling.services import InvalidRun
from winnow.api import exception_handler
from winnow.lightly.base import LightlyView


@pytest.mark.parametrize(
    ("error", "body"),
    [
        (
            DomainError("no such tag", "input_tag"),
            {"detail": "input_tag: no such tag", "errors": {"input_tag": ["no such tag"]}},
        ),
        (
            DomainError("refused as a whole"),
            {"detail": "refused as a whole", "errors": {"non_field_errors": ["refused as a whole"]}},
        ),
        (
            DomainError.within("filter", DomainError("no tag with id 'x' in this dataset", "tag")),
            {
                "detail": "filter.tag: no tag with id 'x' in this dataset",
                "errors": {"filter": {"tag": ["no tag with id 'x' in this dataset"]}},
            },
        ),
        (InvalidRun("n_samples", "too many"), {"detail": "n_samples: too many", "errors": {"n_samples": ["too many"]}}),
        (EmbeddingError("row 3: bad", "file"), {"detail": "file: row 3: bad", "errors": {"file": ["row 3: bad"]}}),
        (SimilarityError("k: too big", "k"), {"detail": "k: k: too big", "errors": {"k": ["k: too big"]}}),
        (
            PredictionsInvalid("line 2: bad"),
            {"detail": "predictions: line 2: bad", "errors": {"predictions": ["line 2: bad"]}},
        ),
    ],
)
def test_domain_error_is_a_400_naming_the_field(error, body):
    response = exception_handler(error, {})
    assert response.status_code == 400
    assert response.data == body


def test_every_service_error_is_a_domain_error():
    assert all(
        issubclass(cls, DomainError) for cls in (InvalidRun, EmbeddingError, SimilarityError, PredictionsInvalid)
    )
    # The /v1/ adapter prints "field: message" from these.
    assert str(InvalidRun("n_samples", "too many")) == "n_samples: too many"
    assert str(EmbeddingError("row 3: bad", "file")) == "row 3: bad"


def test_other_errors_are_left_to_django():
    assert exception_handler(KeyError("x"), {}) is None


class _Refusing(LightlyView):
    token_required = False

    def get(self, request):
        raise DomainError("no tag with id 'x' in this dataset", "tagId")


def test_the_v1_adapter_answers_a_domain_error_in_lightly_format(rf):
    response = _Refusing.as_view()(rf.get("/v1/anything"))
    assert response.status_code == 400
    assert json.loads(response.content) == {"code": "BAD_REQUEST", "error": "tagId: no tag with id 'x' in this dataset"}
