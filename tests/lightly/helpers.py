"""Helpers for driving the Lightly client in tests."""

from __future__ import annotations


def register_samples(client, names: list[str], sizes: list[int] | None = None) -> list[str]:
    """What the Lightly Worker did for a meta dataset: one POST per sample, then `initial-tag` if missing."""
    from lightly.openapi_generated.swagger_client.api import SamplesApi, TagsApi
    from lightly.openapi_generated.swagger_client.models import (
        InitialTagCreateRequest,
        SampleCreateRequest,
        SampleMetaData,
    )

    samples_api, tags_api = SamplesApi(client.api_client), TagsApi(client.api_client)
    ids = []
    for i, name in enumerate(names):
        size = sizes[i] if sizes else 1000 + i
        request = SampleCreateRequest(file_name=name, meta_data=SampleMetaData(size_in_bytes=size))
        ids.append(
            samples_api.create_sample_by_dataset_id(dataset_id=client.dataset_id, sample_create_request=request).id
        )
    if not any(tag.name == "initial-tag" for tag in tags_api.get_tags_by_dataset_id(client.dataset_id)):
        tags_api.create_initial_tag_by_dataset_id(
            dataset_id=client.dataset_id, initial_tag_create_request=InitialTagCreateRequest(img_type="meta")
        )
    return ids


def write_embeddings_csv(path, names: list[str], vectors, labels=None) -> None:
    """Lightly's embeddings CSV: filenames,embedding_0..embedding_{d-1},labels."""
    import csv

    d = len(vectors[0])
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filenames", *(f"embedding_{i}" for i in range(d)), "labels"])
        for i, (name, vector) in enumerate(zip(names, vectors)):
            writer.writerow([name, *(repr(float(v)) for v in vector), labels[i] if labels else 0])


class V1:
    """Raw `/v1/` calls through Django's test client, authenticated the way Lightly's client is (`?token=`)."""

    def __init__(self, client, key: str | None):
        self.client, self.key = client, key

    def url(self, path: str, **params) -> str:
        from urllib.parse import urlencode

        query = ({"token": self.key} if self.key else {}) | {k: v for k, v in params.items() if v is not None}
        return f"/v1/{path}" + (f"?{urlencode(query)}" if query else "")

    def get(self, path: str, **params):
        return self.client.get(self.url(path, **params))

    def post(self, path: str, body=None, raw: bytes | None = None, **params):
        import json

        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return self.client.post(self.url(path, **params), data=data, content_type="application/json")

    def put(self, path: str, body=None, raw: bytes | None = None, **params):
        import json

        data = raw if raw is not None else json.dumps(body)
        return self.client.put(self.url(path, **params), data=data, content_type="application/json")

    def delete(self, path: str, **params):
        return self.client.delete(self.url(path, **params))


def lightly_model(name: str, data):
    """Parse a response body with the Lightly client's own pydantic model (extra keys are refused there)."""
    from lightly.openapi_generated.swagger_client import models

    return getattr(models, name).from_dict(data)
