"""The HTML views without a browser: who gets which page."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.django_db

PAGES = ["", "/explore", "/map", "/configurator", "/analyze", "/sampling", "/tags"]


@pytest.mark.parametrize("suffix", PAGES)
def test_dataset_pages_by_role(client, dataset, viewer, outsider, suffix):
    url = f"/datasets/{dataset.id}{suffix}"
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login?next=")
    client.force_login(outsider)
    assert client.get(url).status_code == 404
    client.force_login(viewer)
    response = client.get(url)
    assert response.status_code == 200
    body = response.content.decode()
    assert f'data-dataset-id="{dataset.id}"' in body and 'data-can-edit="0"' in body
    assert 'name="csrf-token"' in body


def test_unknown_dataset_and_page(client, owner):
    client.force_login(owner)
    assert client.get("/datasets/" + "0" * 24).status_code == 404
    assert client.get("/datasets/" + "0" * 24 + "/nonsense").status_code == 404


def test_a_dataset_name_is_escaped_in_the_page(client, owner):
    from curation.services import create_dataset

    ds = create_dataset(owner, '<script>alert("x")</script>', "meta")
    client.force_login(owner)
    body = client.get(f"/datasets/{ds.id}").content.decode()
    assert '<script>alert("x")</script>' not in body
    assert "&lt;script&gt;" in body


def test_sign_out_needs_a_post(client, owner):
    client.force_login(owner)
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 302
    assert client.get("/").status_code == 302


def test_the_sampling_form_offers_auto_first_and_selected_with_its_help(client, owner, dataset):
    client.force_login(owner)
    body = client.get(f"/datasets/{dataset.id}/sampling").content.decode()
    options = body[body.index('id="r-strategy"') :]
    assert options.index('<option value="auto" selected>') < options.index('<option value="coreset">')
    # The help line is filled by the page's script from its table of one line per strategy.
    assert 'id="r-strategy-help"' in body
    script = (Path(__file__).resolve().parents[2] / "static/js/pages/sampling.js").read_text()
    assert 'auto: "Recommended for what to label first' in script
