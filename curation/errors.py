"""The one error type services raise for a request they refuse.

A service takes plain values and never sees a request; when a value makes no sense for the dataset (a tag of
another dataset, more samples than there are candidates, an unknown upload mode) it raises `DomainError`
naming the request field at fault. The API's exception handler (`winnow.api.exception_handler`) answers it
as every validation error: 400 with `{"detail": "<field>: <message>", "errors": {"<field>": ["<message>"]}}`.
An error about a part of a nested value (a filter's condition) carries the nested `errors` itself, in the
shape the API answers (`DomainError.within` puts a part's error under the key of the whole).
Services' own error classes (`InvalidRun`, `EmbeddingError`, `SimilarityError`, `PredictionsInvalid`) are
subclasses, so callers outside the API (the `/v1/` adapter, workers) can still tell them apart.
"""

from __future__ import annotations

REQUEST = "non_field_errors"  # the field name DRF gives a message about the request as a whole


class DomainError(ValueError):
    """A request a service refuses: `field` names the request key at fault, `message` says why.

    `errors` is what the API answers under "errors": `{field: [message]}` unless given (nested, for a part).
    """

    def __init__(self, message: str, field: str = REQUEST, code: str = "invalid", *, errors: dict | None = None):
        super().__init__(message)
        self.message, self.field, self.code = message, field, code
        self.errors = {field: [message]} if errors is None else errors

    @classmethod
    def within(cls, field: str, part: DomainError) -> DomainError:
        """`part`'s error, nested under `field` (the key of the value it was found in)."""
        return cls(part.message, field, part.code, errors={field: part.errors})
