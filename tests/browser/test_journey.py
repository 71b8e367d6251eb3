"""A curator's whole journey through the web app, in Chromium."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from curation.models import Dataset, Tag
from sampling.models import ImportanceScore, SamplingRun
from tests.browser.conftest import sign_in
from tests.browser.data import Api, embeddings_csv, load_street_scenes
from winnow.accounts.models import ApiToken

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_curator_journey(page, live_server, shot, owner):
    url = live_server.url
    sign_in(page, url, "olivia", "pw-olivia-123")
    expect(page.get_by_text("No datasets yet")).to_be_visible()
    shot(page, "01-datasets-empty")

    # Create a dataset from the form.
    page.get_by_role("button", name="+ New dataset").click()
    page.get_by_label("Name").fill("street scenes")
    page.get_by_label("Upload mode").select_option("meta")
    page.get_by_role("button", name="Create dataset").click()
    expect(page.get_by_test_id("dataset-name")).to_have_text("street scenes")
    dataset = Dataset.objects.get(name="street scenes")
    expect(page.get_by_test_id("dataset-id")).to_have_text(dataset.id)
    expect(page.get_by_test_id("magic-command")).to_contain_text(
        f"winnow magic --dataset-id {dataset.id} --input-dir ./images"
    )

    # Data arrives through the API, as the CLI would send it.
    _token, key = ApiToken.issue(owner, "cli")
    api = Api(url, key)
    names, metadata, _embedding = load_street_scenes(api, dataset.id, n=300)
    page.reload()
    expect(page.locator("#stat-samples")).to_have_text("300")
    shot(page, "02-overview")

    page.goto(url + "/")
    expect(page.get_by_test_id("dataset-card")).to_contain_text("300 samples")
    shot(page, "03-datasets")

    # Configurator: add weather.scenario and weather.temperature.
    page.goto(f"{url}/datasets/{dataset.id}")
    page.get_by_role("navigation", name="Dataset").get_by_role("link", name="Configurator").click()
    expect(page.get_by_test_id("proposed-row").first).to_be_visible()
    page.get_by_role("button", name="Add weather.scenario").click()
    page.get_by_role("button", name="Add weather.temperature").click()
    expect(page.get_by_test_id("configured-row")).to_have_count(2)
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("All changes saved.")).to_be_visible()
    assert sorted(dataset.metadata_fields.values_list("path", "type")) == [
        ("weather.scenario", "categorical_string"),
        ("weather.temperature", "float"),
    ]
    shot(page, "04-configurator")

    # Explore: filter by scenario, select a few, save as tag.
    page.get_by_role("navigation", name="Dataset").get_by_role("link", name="Explore").click()
    expect(page.get_by_test_id("match-count")).to_have_text("300 samples")
    expect(page.get_by_test_id("tile").first).to_be_visible()
    page.get_by_label("Metadata field").select_option("weather.scenario")
    page.get_by_label("Value").fill("snowy")
    page.get_by_role("button", name="Add condition").click()
    n_snowy = sum(1 for m in metadata if m["weather"]["scenario"] == "snowy")
    expect(page.get_by_test_id("match-count")).to_have_text(f"{n_snowy} samples")
    tiles = page.get_by_test_id("tile")
    tiles.nth(0).locator(".pick").click()
    tiles.nth(3).locator(".pick").click(modifiers=["Shift"])
    expect(page.get_by_test_id("selection-count")).to_have_text("4 selected")
    page.get_by_placeholder("new tag name").fill("snowy picks")
    page.get_by_role("button", name="Save selection as tag").click()
    expect(page.get_by_text("Tag “snowy picks” saved with 4 samples")).to_be_visible()
    tag = Tag.objects.get(dataset=dataset, name="snowy picks")
    snowy = [i for i, m in enumerate(metadata) if m["weather"]["scenario"] == "snowy"]
    assert sorted(tag.indices().tolist()) == snowy[:4]
    shot(page, "05-explore")

    # Analyze & Filter: click "rainy", the count follows, save the result as a tag.
    page.get_by_role("navigation", name="Dataset").get_by_role("link", name="Analyze & Filter").click()
    expect(page.get_by_test_id("matched-count")).to_have_text("300")
    expect(page.get_by_test_id("chart")).to_have_count(2)
    page.locator('[data-path="weather.scenario"] [data-value="rainy"]').click()
    n_rainy = sum(1 for m in metadata if m["weather"]["scenario"] == "rainy")
    expect(page.get_by_test_id("matched-count")).to_have_text(str(n_rainy))
    shot(page, "06-analyze")
    page.get_by_placeholder("new tag name").fill("rainy")
    page.get_by_role("button", name="Save as tag").click()
    expect(page.get_by_text(f"Tag “rainy” saved with {n_rainy} samples")).to_be_visible()
    rainy = Tag.objects.get(dataset=dataset, name="rainy")
    assert rainy.indices().tolist() == [i for i, m in enumerate(metadata) if m["weather"]["scenario"] == "rainy"]
    # Brushing a temperature range narrows it further.
    chart = page.locator('[data-path="weather.temperature"] svg')
    box = chart.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.05, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=5)
    page.mouse.up()
    expect(page.get_by_test_id("matched-count")).not_to_have_text(str(n_rainy))
    shot(page, "07-analyze-brushed")

    # Sampling: upload an embedding through the API, run a coreset, follow its progress, keep the top 20.
    api.call(
        "POST",
        f"/datasets/{dataset.id}/embeddings",
        data={"name": "scene-embedding"},
        files={"file": ("embeddings.csv", embeddings_csv(names, _embedding), "text/csv")},
    )
    polls = {"n": 0}

    def pretend_running(route):
        # The in-process worker finishes at once; the first two polls show the run mid-way, as a busy worker would.
        polls["n"] += 1
        if polls["n"] > 2:
            return route.continue_()
        response = route.fetch()
        body = response.json()
        body.update(status="running", progress=35 * polls["n"])
        return route.fulfill(response=response, json=body)

    page.route(re.compile(r".*/sampling-runs/[0-9a-f]{24}$"), pretend_running)
    page.get_by_role("navigation", name="Dataset").get_by_role("link", name="Sampling").click()
    expect(page.get_by_text("No runs yet")).to_be_visible()
    page.get_by_label("Name").fill("coreset run")
    page.get_by_label("Strategy").select_option("coreset")
    page.get_by_label("Samples to score").fill("100")
    page.get_by_role("button", name="Process").click()
    progress = page.get_by_role("progressbar", name="Run progress")
    expect(progress).to_be_visible()
    expect(progress).to_have_attribute("aria-valuenow", re.compile(r"35|70"))
    shot(page, "08-sampling-progress")
    expect(page.get_by_test_id("run-status").last).to_have_text("succeeded")
    slider = page.get_by_label("How many samples to keep")
    expect(slider).to_be_visible()
    slider.fill("20")
    expect(page.get_by_test_id("k-count")).to_have_text("20 of the run's 100 picks")
    expect(page.locator("#run-detail [data-testid=tile]")).to_have_count(20)
    page.get_by_label("Tag name").fill("coreset top 20")
    page.get_by_role("button", name="Create tag").click()
    expect(page.get_by_text("Tag “coreset top 20” created with 20 samples")).to_be_visible()
    shot(page, "09-sampling")
    run = SamplingRun.objects.get(dataset=dataset, name="coreset run")
    top = sorted(ImportanceScore.objects.filter(run=run, rank__lte=20).values_list("sample__idx", flat=True))
    assert Tag.objects.get(dataset=dataset, name="coreset top 20").indices().tolist() == top

    # Tags: union of two tags, then export its file names.
    page.get_by_role("navigation", name="Dataset").get_by_role("link", name="Tags").click()
    expect(page.get_by_test_id("tag-node")).to_have_count(4)
    page.get_by_label("Select rainy").check()
    page.get_by_label("Select snowy picks").check()
    page.get_by_label("Operation").select_option("union")
    page.get_by_label("New tag name").fill("rainy or picked")
    page.get_by_role("button", name="Create tag").click()
    expect(page.get_by_text("Tag “rainy or picked” created")).to_be_visible()
    union = Tag.objects.get(dataset=dataset, name="rainy or picked")
    assert union.count == n_rainy + 4 and union.parent == rainy
    # The new tag sits under its parent in the tree.
    expect(page.locator(f'[data-tag-id="{rainy.id}"] [data-tag-id="{union.id}"]')).to_be_visible()
    shot(page, "10-tags")
    page.get_by_label("Tag", exact=True).select_option(union.id)
    page.get_by_label("Format").select_option("filenames")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download").click()
    exported = open(download.value.path()).read().split()
    assert exported == [names[i] for i in union.indices()]

    # Preferences: a token created and revoked.
    page.get_by_role("link", name="Preferences").click()
    expect(page.get_by_test_id("token-row")).to_have_count(1)  # the CLI's
    page.get_by_label("Token name").fill("notebook")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_test_id("new-token-key")).to_have_text(re.compile(r"^wnw_"))
    shot(page, "11-preferences")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke token notebook").click()
    expect(page.get_by_test_id("token-row").filter(has_text="notebook")).to_contain_text("revoked")
    assert not ApiToken.objects.get(name="notebook").is_active
