"""Every /api/v1/ endpoint reads flags and whole numbers the same way (winnow.query)."""

from __future__ import annotations

import pytest

from curation.services import add_samples

pytestmark = pytest.mark.django_db


def _url(dataset, suffix):
    return f"/api/v1/datasets/{dataset.id}{suffix}"


def test_samples_count_takes_on_like_every_flag(dataset, viewer_api):
    add_samples(dataset, [{"file_name": f"{i}.jpg"} for i in range(3)])
    for raw in ("on", "1", "yes", "true"):
        assert viewer_api.get(_url(dataset, "/samples"), {"count": raw}).json()["count"] == 3
    assert "count" not in viewer_api.get(_url(dataset, "/samples"), {"count": "off"}).json()


@pytest.mark.parametrize(
    ("suffix", "name", "raw"),
    [
        ("/samples", "count", "maybe"),
        ("/samples", "limit", "0"),
        ("/samples", "limit", "ten"),
        ("/metadata/histograms", "bins", "-3"),
        ("/sampling-runs", "page_size", "500"),
    ],
)
def test_a_bad_value_is_a_400_naming_the_parameter(dataset, viewer_api, suffix, name, raw):
    response = viewer_api.get(_url(dataset, suffix), {name: raw})
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(name)
