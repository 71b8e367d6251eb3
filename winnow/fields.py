"""Serializer fields stricter than DRF's, for request bodies."""

from __future__ import annotations

from rest_framework import serializers


class StringField(serializers.CharField):
    """A CharField that takes only a JSON string: DRF's turns 5 into "5", so a client's mistake went unnoticed."""

    default_error_messages = {"invalid": "must be a string, not {kind}."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", kind=type(data).__name__)
        return super().to_internal_value(data)
