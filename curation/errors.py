"""The one error type services raise for a request they refuse.

A service takes plain values and never sees a request; when a value makes no sense for the dataset (a tag of
another dataset, more samples than there are candidates, an unknown upload mode) it raises `DomainError`
naming the request field at fault. The API's exception handler (`winnow.api.exception_handler`) answers it
as every validation error: 400 with `{"detail": "<field>: <message>", "errors": {"<field>": ["<message>"]}}`.
Services' own error classes (`InvalidRun`, `EmbeddingError`, `SimilarityError`, `PredictionsInvalid`) are
subclasses, so callers outside the API (the `/v1/` adapter, workers) can still tell them apart.
"""

from __future__ import annotations

REQUEST = "non_field_errors"  # the field name DRF gives a message about the request as a whole


class DomainError(ValueError):
    """A request a service refuses: `field` names the request key at fault, `message` says why."""

    def __init__(self, message: str, field: str = REQUEST, code: str = "invalid"):
        super().__init__(message)
        self.message, self.field, self.code = message, field, code
