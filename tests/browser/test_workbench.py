"""The curator's workbench (issue 11): what a full curation pass tripped over, each checked in Chromium."""

from __future__ import annotations

import re

import numpy as np
import pytest
from playwright.sync_api import expect

from curation.models import Tag
from curation.services import add_samples
from sampling.models import SamplingRun
from tests.browser.conftest import sign_in
from tests.browser.data import Api, embeddings_csv
from winnow.accounts.models import ApiToken

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG = 60_000  # ms: a loaded 2-core machine can be slow; every wait is on a condition, never a sleep


def _with_embedding(dataset, owner, n: int = 120):
    names = [f"s{i:03d}.jpg" for i in range(n)]
    add_samples(dataset, [{"file_name": name, "metadata": {"speed": i % 7}} for i, name in enumerate(names)])
    _token, key = ApiToken.issue(owner, "cli")
    return names, key, None


def _upload_embedding(live_server, key, dataset, names):
    x = np.random.default_rng(5).normal(size=(len(names), 8)).astype(np.float32)
    api = Api(live_server.url, key)
    emb = api.call(
        "POST",
        f"/datasets/{dataset.id}/embeddings",
        data={"name": "e"},
        files={"file": ("e.csv", embeddings_csv(names, x), "text/csv")},
    )
    return api, emb


def test_sampling_slider_ends_at_the_picks_reload_keeps_the_run_and_a_larger_run_is_one_click(
    page, live_server, shot, dataset, owner
):
    names, key, _ = _with_embedding(dataset, owner)
    api, emb = _upload_embedding(live_server, key, dataset, names)
    first = api.call(
        "POST",
        f"/datasets/{dataset.id}/sampling-runs",
        json={"name": "ten", "strategy": "coreset", "embedding": emb["id"], "n_samples": 10},
    )
    api.call(
        "POST",
        f"/datasets/{dataset.id}/sampling-runs",
        json={"name": "fifteen", "strategy": "coreset", "embedding": emb["id"], "n_samples": 15},
    )
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/sampling")
    detail = page.locator("#run-detail")
    expect(detail.get_by_role("heading", name="fifteen")).to_be_visible(timeout=LONG)
    page.get_by_test_id("run-link").filter(has_text="ten").click()
    expect(detail.get_by_role("heading", name="ten")).to_be_visible(timeout=LONG)
    expect(page).to_have_url(re.compile(r"\?run=" + first["id"]))
    # The slider ends at the run's 10 picks, and says so; 120 samples were scored.
    slider = page.locator("#k-slider")
    expect(slider).to_have_attribute("max", "10")
    expect(page.get_by_test_id("slider-end")).to_contain_text("ends at this run's 10 picks")
    expect(page.get_by_test_id("slider-end")).to_contain_text("near-duplicates")
    page.get_by_role("spinbutton", name="Samples to keep").fill("30")
    page.get_by_role("spinbutton", name="Samples to keep").press("Enter")
    expect(page.get_by_test_id("k-count")).to_have_text("10 of the run's 10 picks")
    shot(page, "sampling-slider-end")
    # A reload shows the run being viewed, not the newest; back walks to the run seen before.
    page.reload()
    expect(detail.get_by_role("heading", name="ten")).to_be_visible(timeout=LONG)
    page.go_back()
    expect(detail.get_by_role("heading", name="fifteen")).to_be_visible(timeout=LONG)
    page.go_forward()
    expect(detail.get_by_role("heading", name="ten")).to_be_visible(timeout=LONG)
    # More picks: one click starts the same run with K = 20.
    page.get_by_test_id("larger-run").click()
    expect(detail.get_by_role("heading", name="ten (K=20)")).to_be_visible(timeout=LONG)
    expect(page.locator("#k-slider")).to_have_attribute("max", "20", timeout=LONG)
    larger = SamplingRun.objects.get(name="ten (K=20)")
    assert (larger.n_samples, larger.strategy, larger.embedding_id) == (20, "coreset", emb["id"])
    expect(page).to_have_url(re.compile(r"\?run=" + larger.id))


def test_each_strategy_says_what_it_is_for_and_diversity_shows_the_distance_scale(
    page, live_server, shot, dataset, owner
):
    names, key, _ = _with_embedding(dataset, owner, n=60)
    _upload_embedding(live_server, key, dataset, names)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/sampling")
    helpline = page.get_by_test_id("strategy-help")
    expect(helpline).to_contain_text("Recommended for what to label first")  # auto, the default
    page.get_by_label("Strategy").select_option("coreset")
    expect(helpline).to_contain_text("rare kinds")
    page.get_by_label("Strategy").select_option("typicality")
    expect(helpline).to_contain_text("small budgets")
    page.get_by_label("Strategy").select_option("diversity")
    expect(helpline).to_contain_text("near-duplicates")
    scale = page.get_by_test_id("distance-scale")
    expect(scale).to_contain_text("nearest neighbour p5", timeout=LONG)
    expect(scale).to_contain_text("from 60 samples")
    shot(page, "sampling-diversity-scale")


def _street(dataset, n: int = 300):
    """n samples with weather.scenario (categorical) and weather.temperature (float), both configured."""
    from curation.models import MetadataField

    scen = ["sunny", "cloudy", "rainy"]
    add_samples(
        dataset,
        [
            {
                "file_name": f"f{i:03d}.jpg",
                "metadata": {"weather": {"scenario": scen[i % 3], "temperature": float(i % 40)}},
            }
            for i in range(n)
        ],
    )
    MetadataField.objects.create(
        dataset=dataset, path="weather.scenario", type="categorical_string", display_name="Scenario"
    )
    MetadataField.objects.create(dataset=dataset, path="weather.temperature", type="float", display_name="Temperature")


def _map_embedding(dataset, n: int):
    """A ready 2-d embedding whose projection is itself, so the map opens at once."""
    from curation import embeddings as emb_service
    from curation import storage
    from curation.models import Embedding

    layout = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    embedding = Embedding.objects.create(
        dataset=dataset, name="e", dimension=2, count=n, matrix_key="x", projection_status=emb_service.Status.READY
    )
    embedding.matrix_key = emb_service.matrix_key(dataset.id, embedding.id)
    storage.save_matrix(embedding.matrix_key, layout)
    embedding.projection_key = storage.save_matrix(emb_service.layout_key(embedding, "pca"), layout)
    embedding.save(update_fields=["matrix_key", "projection_key"])
    return embedding


def test_explore_select_all_then_deselect_one_keeps_the_rest_and_save_is_off_at_zero(page, live_server, shot, dataset):
    add_samples(dataset, [{"file_name": f"f{i:04d}.jpg"} for i in range(500)])
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    expect(page.get_by_test_id("match-count")).to_have_text("500 samples", timeout=LONG)
    page.get_by_role("button", name="Select all in filter").click()
    expect(page.get_by_test_id("selection-count")).to_have_text("all 500 in filter selected")
    page.locator('[data-idx="3"] .pick').click()
    expect(page.get_by_test_id("selection-count")).to_have_text("499 of 500 in filter selected")
    expect(page.locator('[data-idx="3"]')).not_to_have_class(re.compile(r"\bselected\b"))
    expect(page.locator('[data-idx="4"]')).to_have_class(re.compile(r"\bselected\b"))
    save = page.get_by_role("button", name="Save selection as tag")
    page.get_by_placeholder("new tag name").fill("all but three")
    save.click()
    expect(page.get_by_text("Tag “all but three” saved with 499 samples")).to_be_visible(timeout=LONG)
    indices = Tag.objects.get(dataset=dataset, name="all but three").indices().tolist()
    assert len(indices) == 499 and 3 not in indices
    # Nothing is selected after saving: nothing to save.
    expect(page.get_by_test_id("selection-count")).to_have_text("0 selected")
    expect(save).to_be_disabled()


def test_explore_filter_builder_url_errors_pending_value_back_forward_and_sort_badges(page, live_server, shot, dataset):
    _street(dataset, 120)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    base = f"{live_server.url}/datasets/{dataset.id}/explore"
    # A bad value in the link is an error in words, not "0 samples".
    page.goto(base + '?conditions=[{"path":"weather.temperature","op":"gt","value":"abc"}]')
    expect(page.get_by_test_id("filter-error")).to_contain_text(
        'Temperature > "abc": the value must be a number', timeout=LONG
    )
    expect(page.get_by_test_id("match-count")).not_to_have_text(re.compile("0 samples"))
    shot(page, "explore-bad-url-value")
    page.goto(base)
    expect(page.get_by_test_id("match-count")).to_have_text("120 samples", timeout=LONG)
    # A value typed without "Add condition" is not dropped by Apply.
    page.get_by_label("Metadata field").select_option(label="Temperature")
    page.get_by_label("Condition", exact=True).select_option(label="<")
    page.get_by_label("Value", exact=True).fill("10")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_test_id("match-count")).to_have_text("30 samples", timeout=LONG)
    # Several values of a category at once.
    page.get_by_label("Metadata field").select_option(label="Scenario")
    page.get_by_label("Condition", exact=True).select_option(label="is one of")
    page.get_by_label("Value", exact=True).fill("sunny, rainy")
    page.get_by_role("button", name="Add condition").click()
    expect(page.get_by_test_id("match-count")).to_have_text("20 samples", timeout=LONG)
    # Sorting by a field shows its value on each tile.
    page.get_by_label("Sort by").select_option(label="Temperature ↓")
    expect(page.get_by_test_id("tile-badge").first).to_have_text("Temperature: 9", timeout=LONG)
    shot(page, "explore-sorted-badges")
    # Back walks the filter changes, and stays on the page.
    page.go_back()
    expect(page.get_by_test_id("tile-badge")).to_have_count(0, timeout=LONG)
    expect(page.get_by_test_id("match-count")).to_have_text("20 samples", timeout=LONG)
    page.go_back()
    expect(page.get_by_test_id("match-count")).to_have_text("30 samples", timeout=LONG)
    page.go_back()
    expect(page.get_by_test_id("match-count")).to_have_text("120 samples", timeout=LONG)
    expect(page).to_have_url(re.compile(r"/explore$"))
    page.go_forward()
    expect(page.get_by_test_id("match-count")).to_have_text("30 samples", timeout=LONG)
    expect(page.get_by_test_id("condition")).to_have_count(1)


def test_sample_view_walks_with_arrow_keys_and_shows_display_names(page, live_server, shot, dataset):
    _street(dataset, 12)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    expect(page.get_by_test_id("match-count")).to_have_text("12 samples", timeout=LONG)
    page.locator('[data-idx="0"] .pick').focus()
    page.keyboard.press("o")
    view = page.get_by_test_id("sample-view")
    expect(view.get_by_test_id("sample-file-name")).to_have_text("f000.jpg", timeout=LONG)
    expect(view.get_by_test_id("sample-metadata")).to_contain_text("Temperature")
    expect(view.get_by_test_id("sample-metadata")).not_to_contain_text("weather.temperature")
    expect(view.get_by_role("button", name="Previous sample")).to_be_disabled()
    page.keyboard.press("ArrowRight")
    expect(view.get_by_test_id("sample-file-name")).to_have_text("f001.jpg", timeout=LONG)
    page.keyboard.press("ArrowRight")
    expect(view.get_by_test_id("sample-file-name")).to_have_text("f002.jpg", timeout=LONG)
    view.get_by_role("button", name="Previous sample").click()
    expect(view.get_by_test_id("sample-file-name")).to_have_text("f001.jpg", timeout=LONG)
    expect(view.get_by_test_id("sample-position")).to_have_text("2 of 12 loaded")
    shot(page, "sample-view")
    page.keyboard.press("Escape")
    # The grid with the keyboard: one tab stop per tile, arrow keys move between tiles.
    page.locator('[data-idx="1"] .pick').focus()
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.closest('[data-idx]')?.dataset.idx") == "2"
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("() => document.activeElement.closest('[data-idx]')?.dataset.idx") == "1"
    page.keyboard.press("ArrowDown")
    cols = page.evaluate(
        "() => getComputedStyle(document.querySelector('.grid')).gridTemplateColumns.split(' ').length"
    )
    assert page.evaluate("() => document.activeElement.closest('[data-idx]')?.dataset.idx") == str(min(11, 1 + cols))


def test_dataset_rename_and_delete_in_the_ui_and_a_duplicate_name_is_refused(page, live_server, shot, dataset, owner):
    from curation.models import Dataset
    from curation.services import create_dataset

    create_dataset(owner, "night drive", "meta")
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}")
    page.errors.allow(r"status of 400 .*/api/v1/datasets")
    page.get_by_label("Dataset name").fill("Night Drive")
    page.get_by_role("button", name="Rename").click()
    expect(page.locator("#rename-error")).to_contain_text("olivia already has a dataset named 'Night Drive'")
    page.get_by_label("Dataset name").fill("city streets")
    page.get_by_role("button", name="Rename").click()
    expect(page.get_by_test_id("dataset-name")).to_have_text("city streets", timeout=LONG)
    expect(page.get_by_test_id("sidebar-dataset-name")).to_have_text("city streets")
    assert Dataset.objects.get(pk=dataset.pk).name == "city streets"
    shot(page, "overview-manage")
    # Delete: the name must be typed first.
    page.get_by_role("button", name="Delete dataset").click()
    expect(page.locator("#delete-error")).to_contain_text("Type the dataset's name")
    assert Dataset.objects.filter(pk=dataset.pk).exists()
    page.get_by_label("Type the dataset's name").fill("city streets")
    page.get_by_role("button", name="Delete dataset").click()
    expect(page.get_by_test_id("deleted-note")).to_have_text("Dataset “city streets” deleted.", timeout=LONG)
    assert not Dataset.objects.filter(pk=dataset.pk).exists()
    # A second dataset with a name already taken is refused in words.
    page.get_by_role("button", name="+ New dataset").click()
    page.get_by_label("Name").fill("night drive")
    page.get_by_role("button", name="Create dataset").click()
    expect(page.get_by_role("alert")).to_contain_text("already has a dataset named 'night drive'")
    assert Dataset.objects.filter(owner=owner, name="night drive").count() == 1


def test_configurator_warns_on_an_unknown_path_and_refuses_text_typed_as_integer(page, live_server, shot, dataset):
    add_samples(
        dataset,
        [{"file_name": f"f{i}.jpg", "metadata": {"road": ["a", "b"][i % 2], "speed": i * 1.5}} for i in range(10)],
    )
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/configurator")
    page.get_by_role("button", name="Add road").click()
    page.get_by_label("Type for road").select_option("categorical_int")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "“road” holds text (a, b), not numbers: it cannot be Categorical integer"
    )
    page.get_by_label("Type for road").select_option("float")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("alert")).to_contain_text("cannot be Float")
    assert not dataset.metadata_fields.exists()
    page.get_by_label("Type for road").select_option("categorical_string")
    page.get_by_role("button", name="Add speed").click()
    page.get_by_label("Type for speed").select_option("int")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("alert")).to_contain_text("“speed” holds decimal numbers")
    page.get_by_label("Type for speed").select_option("float")
    # A path that no sample has is saved only after a warning.
    page.get_by_role("button", name="+ Add entry").click()
    page.get_by_label("Path for new entry").fill("wether.temp")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_test_id("configurator-warning")).to_contain_text("No sample has the path “wether.temp”")
    assert not dataset.metadata_fields.exists()
    shot(page, "configurator-warning")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("All changes saved.")).to_be_visible(timeout=LONG)
    assert sorted(dataset.metadata_fields.values_list("path", flat=True)) == ["road", "speed", "wether.temp"]


def test_tokens_of_the_same_name_are_told_apart_and_a_revoked_new_key_disappears(page, live_server, shot, owner):
    ApiToken.issue(owner, "laptop")
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/preferences")
    page.get_by_label("Token name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    key = page.get_by_test_id("new-token-key")
    expect(key).to_have_text(re.compile(r"^wnw_"))
    newest = ApiToken.objects.filter(user=owner, name="laptop").order_by("-created_at").first()
    buttons = page.get_by_role("button", name=re.compile(r"^Revoke token laptop"))
    expect(buttons).to_have_count(2)
    labels = {buttons.nth(i).get_attribute("aria-label") for i in range(2)}
    assert len(labels) == 2 and any(newest.prefix in label for label in labels), labels
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=re.compile(r"^Revoke token laptop \(wnw_" + newest.prefix)).click()
    expect(key).to_be_hidden(timeout=LONG)
    expect(page.get_by_text("Copy your new token now")).to_be_hidden()
    shot(page, "tokens-told-apart")


def test_tag_errors_read_without_field_jargon_and_one_sample_is_singular(page, live_server, dataset):
    add_samples(dataset, [{"file_name": f"f{i}.jpg"} for i in range(3)])
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore?file_name=f1.jpg")
    expect(page.get_by_test_id("match-count")).to_have_text("1 sample", timeout=LONG)
    page.locator('[data-idx="1"] .pick').click()
    page.get_by_placeholder("new tag name").fill("one")
    page.get_by_role("button", name="Save selection as tag").click()
    expect(page.get_by_text("Tag “one” saved with 1 sample")).to_be_visible(timeout=LONG)
    page.goto(f"{live_server.url}/datasets/{dataset.id}/tags")
    page.errors.allow(r"status of 400 .*/tags\)")
    page.get_by_label("Select one").check()
    page.get_by_label("Select initial-tag").check()
    page.get_by_label("Operation").select_option("difference")
    page.get_by_label("New tag name").fill("nothing left")
    page.get_by_role("button", name="Create tag").click()
    alert = page.get_by_role("alert").filter(has_text="empty")
    expect(alert).to_contain_text("the tag would be empty")
    expect(alert).not_to_contain_text("non_field_errors")


def test_analyze_range_inputs_keep_what_is_typed_focus_stays_and_the_filter_is_in_the_url(
    page, live_server, shot, dataset
):
    _street(dataset, 120)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/analyze")
    matched = page.get_by_test_id("matched-count")
    expect(matched).to_have_text("120", timeout=LONG)
    page.get_by_label("Temperature from").fill("5")
    page.keyboard.press("Tab")
    expect(matched).to_have_text("105", timeout=LONG)  # 5..39 of every 40
    expect(page.get_by_label("Temperature to")).to_have_value("")
    page.keyboard.type("12")
    page.keyboard.press("Tab")
    expect(matched).to_have_text("24", timeout=LONG)  # 5..12 of every 40
    expect(page.get_by_label("Temperature to")).to_have_value("12")
    expect(page.get_by_label("Temperature from")).to_have_value("5")
    # Enter on a category row toggles it and keeps the keyboard there.
    sunny = page.locator('[data-path="weather.scenario"] [data-value="sunny"]')
    sunny.focus()
    page.keyboard.press("Enter")
    expect(matched).to_have_text("8", timeout=LONG)
    expect(sunny).to_have_attribute("aria-checked", "true")
    expect(sunny).to_be_focused()
    page.keyboard.press("Space")
    expect(matched).to_have_text("24", timeout=LONG)
    expect(sunny).to_be_focused()
    page.keyboard.press("Enter")
    expect(matched).to_have_text("8", timeout=LONG)
    shot(page, "analyze-filtered")
    # The filter is in the URL: a reload keeps it, back walks it.
    expect(page).to_have_url(re.compile(r"conditions="))
    page.reload()
    expect(matched).to_have_text("8", timeout=LONG)
    expect(page.get_by_label("Temperature to")).to_have_value("12")
    expect(page.locator('[data-path="weather.scenario"] [data-value="sunny"]')).to_have_attribute(
        "aria-checked", "true"
    )
    page.go_back()
    expect(matched).to_have_text("24", timeout=LONG)


def test_analyze_text_contains_match_case_and_any_case_values_are_in_the_url(page, live_server, shot, dataset):
    import json as _json
    from urllib.parse import quote

    _street(dataset, 120)
    odd = [("SUNNY", 0.0), ("Sunny", 5.0), ("RAINY", 7.0)]
    add_samples(
        dataset,
        [
            {"file_name": f"x{i}.jpg", "metadata": {"weather": {"scenario": s, "temperature": t}}}
            for i, (s, t) in enumerate(odd)
        ],
    )
    rows = [(["sunny", "cloudy", "rainy"][i % 3], float(i % 40)) for i in range(120)] + odd

    def count(keep) -> str:
        return str(sum(1 for s, t in rows if keep(s, t)))

    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    url = f"{live_server.url}/datasets/{dataset.id}/analyze"
    page.goto(url)
    matched = page.get_by_test_id("matched-count")
    expect(matched).to_have_text("123", timeout=LONG)
    # Contains, in any case by default; "Aa" makes it exact case. Both go to the URL.
    page.get_by_label("Scenario contains", exact=True).fill("sun")
    page.get_by_label("Scenario contains", exact=True).press("Enter")
    expect(matched).to_have_text(count(lambda s, t: "sun" in s.lower()), timeout=LONG)
    expect(page).to_have_url(re.compile("icontains"))
    page.get_by_label("Scenario: match case").check()
    expect(matched).to_have_text(count(lambda s, t: "sun" in s), timeout=LONG)
    expect(page.get_by_test_id("active-filter")).to_have_text(re.compile("Scenario contains “sun” \\(exact case\\)"))
    page.reload()
    expect(matched).to_have_text(count(lambda s, t: "sun" in s), timeout=LONG)
    expect(page.get_by_label("Scenario contains", exact=True)).to_have_value("sun")
    expect(page.get_by_label("Scenario: match case")).to_be_checked()
    page.go_back()  # back to "contains sun" in any case
    expect(matched).to_have_text(count(lambda s, t: "sun" in s.lower()), timeout=LONG)
    expect(page.get_by_label("Scenario: match case")).not_to_be_checked()
    # Picked values, then "any case": is (any case), is one of (any case).
    page.get_by_label("Scenario contains", exact=True).fill("")
    page.get_by_label("Scenario contains", exact=True).press("Enter")
    expect(matched).to_have_text("123", timeout=LONG)
    page.locator('[data-path="weather.scenario"] [data-value="sunny"]').click()
    expect(matched).to_have_text(count(lambda s, t: s == "sunny"), timeout=LONG)
    page.get_by_label("Scenario: picked values in any case").check()
    expect(matched).to_have_text(count(lambda s, t: s.lower() == "sunny"), timeout=LONG)
    expect(page).to_have_url(re.compile("ieq"))
    page.locator('[data-path="weather.scenario"] [data-value="rainy"]').click()
    expect(matched).to_have_text(count(lambda s, t: s.lower() in ("sunny", "rainy")), timeout=LONG)
    expect(page).to_have_url(re.compile("iin"))
    shot(page, "analyze-any-case")
    # A link from Explore with text operations and a condition no chart edits: all applied, all shown.
    link = [
        {"path": "weather.scenario", "op": "iin", "value": ["SUNNY"]},
        {"path": "weather.temperature", "op": "ne", "value": 0},
    ]
    page.goto(url + "?conditions=" + quote(_json.dumps(link)))
    expected = count(lambda s, t: s.lower() == "sunny" and t != 0)
    expect(matched).to_have_text(expected, timeout=LONG)
    expect(page.locator('[data-path="weather.scenario"] [data-value="sunny"]')).to_have_attribute(
        "aria-checked", "true"
    )
    expect(page.get_by_label("Scenario: picked values in any case")).to_be_checked()
    expect(page.get_by_test_id("active-filter").filter(has_text="Temperature ≠ 0")).to_be_visible()
    # Explore opens the same filter.
    page.get_by_role("link", name="Open in Explore").click()
    expect(page.get_by_test_id("match-count")).to_have_text(f"{expected} samples", timeout=LONG)


def test_map_says_why_a_wrongly_typed_field_cannot_colour_keeps_colour_and_view_in_the_url_and_points_grow(
    page, live_server, shot, dataset
):
    from curation.models import MetadataField

    _street(dataset, 300)
    MetadataField.objects.create(
        dataset=dataset, path="weather.scenario_code", type="int", display_name="Scenario code"
    )
    for sample in dataset.samples.all():  # text where an integer was configured
        sample.metadata["weather"]["scenario_code"] = sample.metadata["weather"]["scenario"]
        sample.save(update_fields=["metadata"])
    _map_embedding(dataset, 300)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/map")
    expect(page.get_by_test_id("map-status")).to_contain_text("300 points", timeout=LONG)
    colour = page.locator("#m-color")
    colour.select_option(label="Scenario code")
    expect(page.get_by_test_id("colour-problem")).to_contain_text(
        "No sample has a number for “Scenario code”", timeout=LONG
    )
    expect(page.locator("#legend")).not_to_contain_text("Infinity")
    shot(page, "map-wrong-type")
    colour.select_option(label="Temperature")
    expect(page).to_have_url(re.compile(r"color=field%3Aweather.temperature"), timeout=LONG)
    # Zooming in makes points bigger, and the viewport goes into the URL.
    small = page.evaluate("() => winnowMap.pointSize")
    page.get_by_test_id("map-canvas").focus()
    for _ in range(8):
        page.keyboard.press("+")
    page.wait_for_function("(before) => winnowMap.pointSize > 2 * before", arg=small, timeout=LONG)
    expect(page).to_have_url(re.compile(r"view="), timeout=LONG)
    zoom = page.evaluate("() => winnowMap.viewport.zoom")
    assert zoom > 5
    page.reload()
    expect(page.get_by_test_id("map-status")).to_contain_text("300 points", timeout=LONG)
    expect(colour).to_have_value("field:weather.temperature")
    page.wait_for_function("(z) => Math.abs(winnowMap.viewport.zoom - z) / z < 0.01", arg=zoom, timeout=LONG)
    # Back: the colour chosen before.
    page.go_back()
    expect(colour).to_have_value("field:weather.scenario_code", timeout=LONG)
    expect(page.get_by_test_id("colour-problem")).to_be_visible(timeout=LONG)


def test_every_page_at_768_px_has_no_horizontal_scroll_and_a_skip_link(browser, live_server, shot, dataset, owner):
    _street(dataset, 40)
    names = [f"f{i:03d}.jpg" for i in range(40)]
    _token, key = ApiToken.issue(owner, "cli")
    _upload_embedding(live_server, key, dataset, names)
    context = browser.new_context(viewport={"width": 768, "height": 1000})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(pg, live_server.url, "olivia", "pw-olivia-123")
    pages = ["", "explore", "analyze", "map", "sampling", "similar", "duplicates", "tags", "configurator"]
    wide = {}

    def measure(key: str) -> None:
        pg.wait_for_load_state("networkidle")
        width = pg.evaluate("() => document.documentElement.scrollWidth")
        if width > 768:
            wide[key] = width
        shot(pg, f"768-{key}")

    for sub in pages:
        pg.goto(f"{live_server.url}/datasets/{dataset.id}" + (f"/{sub}" if sub else ""))
        measure(sub or "overview")
    for path, key in [("/", "datasets"), ("/preferences", "preferences")]:
        pg.goto(live_server.url + path)
        measure(key)
    # The sample view (a dialog over Explore) and the sign-in page, too.
    pg.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    pg.get_by_test_id("tile").first.locator(".pick").press("o")
    expect(pg.get_by_test_id("sample-view")).to_be_visible(timeout=LONG)
    measure("sample-view")
    pg.keyboard.press("Escape")
    pg.get_by_test_id("sign-out").click()
    pg.wait_for_url(re.compile(r".*/login.*"))
    pg.goto(live_server.url + "/login")
    measure("login")
    assert not wide, f"pages wider than 768 px: {wide}"
    sign_in(pg, live_server.url, "olivia", "pw-olivia-123")
    # The first Tab reaches a skip link that moves focus past the navigation.
    pg.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    pg.keyboard.press("Tab")
    skip = pg.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    pg.keyboard.press("Enter")
    assert pg.evaluate("() => document.activeElement.id") == "page"
    context.close()
    assert not errors


def test_saved_views_save_open_rename_and_delete_on_explore(page, live_server, shot, dataset):
    from curation.models import SavedView

    _street(dataset, 120)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    base = f"{live_server.url}/datasets/{dataset.id}/explore"
    page.goto(base + '?sort=-weather.temperature&conditions=[{"path":"weather.scenario","op":"eq","value":"rainy"}]')
    expect(page.get_by_test_id("match-count")).to_have_text("40 samples", timeout=LONG)
    page.get_by_label("View name").fill("rainy, warmest first")
    page.get_by_role("button", name="Save current view").click()
    expect(page.get_by_test_id("view-select")).to_have_value(re.compile(r"^[0-9a-f]{24}$"), timeout=LONG)
    view = SavedView.objects.get(dataset=dataset)
    assert view.sort == "-weather.temperature"
    assert view.filter == {"conditions": [{"path": "weather.scenario", "op": "eq", "value": "rainy"}]}
    # Elsewhere, then open the view again from the list.
    page.goto(base)
    expect(page.get_by_test_id("match-count")).to_have_text("120 samples", timeout=LONG)
    page.get_by_test_id("view-select").select_option(label="rainy, warmest first")
    expect(page.get_by_test_id("match-count")).to_have_text("40 samples", timeout=LONG)
    expect(page.get_by_label("Sort by")).to_have_value("-weather.temperature")
    expect(page.get_by_test_id("tile-badge").first).to_have_text("Temperature: 39", timeout=LONG)
    expect(page).to_have_url(re.compile(r"sort=-weather.temperature"))
    shot(page, "explore-saved-view")
    # A name taken is refused in words; rename; delete.
    page.errors.allow(r"status of 400 .*/views")
    page.get_by_role("button", name="Save current view").click()
    expect(page.locator("#views-error")).to_contain_text("a view named 'rainy, warmest first' already exists")
    page.get_by_label("View name").fill("rainy")
    page.get_by_role("button", name="Rename selected").click()
    expect(page.get_by_test_id("view-select").locator("option:checked")).to_have_text("rainy", timeout=LONG)
    assert SavedView.objects.get(dataset=dataset).name == "rainy"
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete selected").click()
    expect(page.get_by_test_id("view-select").locator("option")).to_have_count(1, timeout=LONG)
    assert not SavedView.objects.filter(dataset=dataset).exists()


def test_a_saved_view_is_the_input_of_a_sampling_run(page, live_server, shot, dataset, owner):
    from curation.models import SavedView

    _street(dataset, 60)
    names = [f"f{i:03d}.jpg" for i in range(60)]
    _token, key = ApiToken.issue(owner, "cli")
    _upload_embedding(live_server, key, dataset, names)
    SavedView.objects.create(
        dataset=dataset,
        name="sunny",
        filter={"conditions": [{"path": "weather.scenario", "op": "eq", "value": "sunny"}]},
    )
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/sampling")
    page.get_by_label("Name").fill("sunny picks")
    page.get_by_role("spinbutton", name="Samples to score").fill("5")
    page.get_by_label("Input tag (candidates)").select_option(label="view: sunny")
    page.get_by_role("button", name="Process").click()
    expect(page.locator("#run-detail").get_by_role("heading", name="sunny picks")).to_be_visible(timeout=LONG)
    expect(page.get_by_test_id("run-status").first).to_have_text("succeeded", timeout=LONG)
    run = SamplingRun.objects.get(name="sunny picks")
    assert run.input_tag.name == "sunny · for sunny picks" and run.input_tag.count == 20
    assert run.score_count == 20


def test_explore_facets_pick_several_values_and_a_range_with_live_counts(page, live_server, shot, dataset):
    _street(dataset, 120)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    expect(page.get_by_test_id("match-count")).to_have_text("120 samples", timeout=LONG)
    facet = page.locator('.facet[data-path="weather.scenario"]')
    sunny = facet.get_by_test_id("facet-value").filter(has_text="sunny")
    expect(sunny.get_by_test_id("facet-count")).to_have_text("40", timeout=LONG)
    sunny.get_by_role("checkbox").check()
    expect(page.get_by_test_id("match-count")).to_have_text("40 samples", timeout=LONG)
    # Counts follow the filter; the keyboard stays on the box just ticked.
    cloudy = facet.get_by_test_id("facet-value").filter(has_text="cloudy")
    expect(cloudy.get_by_test_id("facet-count")).to_have_text("0", timeout=LONG)
    expect(sunny.get_by_role("checkbox")).to_be_focused()
    facet.get_by_test_id("facet-value").filter(has_text="rainy").get_by_role("checkbox").check()
    expect(page.get_by_test_id("match-count")).to_have_text("80 samples", timeout=LONG)
    page.get_by_label("Temperature at most").fill("9")
    page.get_by_label("Temperature at most").press("Enter")
    expect(page.get_by_test_id("match-count")).to_have_text("20 samples", timeout=LONG)
    expect(page.get_by_test_id("condition")).to_have_count(2)
    expect(page.locator('.facet[data-path="weather.temperature"] [data-testid="facet-range"]')).to_contain_text(
        "20 matched"
    )
    shot(page, "explore-facets")
    # The same filter after a reload, from the URL.
    page.reload()
    expect(page.get_by_test_id("match-count")).to_have_text("20 samples", timeout=LONG)
    expect(
        page.locator('.facet[data-path="weather.scenario"]')
        .get_by_test_id("facet-value")
        .filter(has_text="rainy")
        .get_by_role("checkbox")
    ).to_be_checked()
    expect(page.get_by_label("Temperature at most")).to_have_value("9")


def test_the_map_opens_a_saved_views_colour_and_saves_its_own(page, live_server, shot, dataset):
    from curation.models import SavedView

    _street(dataset, 90)
    _map_embedding(dataset, 90)
    SavedView.objects.create(dataset=dataset, name="by temperature", color="field:weather.temperature")
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/map")
    expect(page.get_by_test_id("map-status")).to_contain_text("90 points", timeout=LONG)
    page.get_by_test_id("map-view-select").select_option(label="by temperature")
    expect(page.locator("#m-color")).to_have_value("field:weather.temperature")
    expect(page).to_have_url(re.compile(r"color=field%3Aweather.temperature"), timeout=LONG)
    page.locator("#m-color").select_option(label="Scenario")
    page.get_by_label("Save this colouring as").fill("by scenario")
    page.get_by_role("button", name="Save view").click()
    expect(page.get_by_test_id("map-view-select").locator("option:checked")).to_have_text("by scenario", timeout=LONG)
    assert SavedView.objects.get(dataset=dataset, name="by scenario").color == "field:weather.scenario"
    shot(page, "map-saved-view")


def test_tiles_show_a_chosen_field_beside_the_sorted_by_value(page, live_server, shot, dataset):
    _street(dataset, 120)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    expect(page.get_by_test_id("match-count")).to_have_text("120 samples", timeout=LONG)
    page.get_by_label("Show on tiles").select_option(label="Scenario")
    expect(page.locator('[data-idx="1"] [data-testid="tile-badge"]')).to_have_text("Scenario: cloudy", timeout=LONG)
    expect(page).to_have_url(re.compile(r"show=weather.scenario"))
    page.get_by_label("Sort by").select_option(label="Temperature ↓")
    expect(page.get_by_test_id("tile-badge").first).to_have_text("Temperature: 39 · Scenario: sunny", timeout=LONG)
    page.reload()
    expect(page.get_by_test_id("tile-badge").first).to_have_text("Temperature: 39 · Scenario: sunny", timeout=LONG)
    shot(page, "explore-tile-fields")


def test_sampling_with_the_keyboard_only(page, live_server, shot, dataset, owner):
    names, key, _ = _with_embedding(dataset, owner, n=80)
    api, emb = _upload_embedding(live_server, key, dataset, names)
    api.call(
        "POST",
        f"/datasets/{dataset.id}/sampling-runs",
        json={"name": "keys", "strategy": "coreset", "embedding": emb["id"], "n_samples": 30},
    )
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/sampling")
    expect(page.get_by_test_id("k-count")).to_have_text("20 of the run's 30 picks", timeout=LONG)
    page.locator("#k-slider").focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_test_id("k-count")).to_have_text("18 of the run's 30 picks")
    page.keyboard.press("End")
    expect(page.get_by_test_id("k-count")).to_have_text("30 of the run's 30 picks")
    for _ in range(6):  # on to the tag name, past the larger-run button
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Tag name":
            break
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Tag name"
    page.keyboard.press("Control+A")
    page.keyboard.type("keyboard picks")
    page.keyboard.press("Enter")
    expect(page.get_by_text("Tag “keyboard picks” created with 30 samples")).to_be_visible(timeout=LONG)
    assert Tag.objects.get(dataset=dataset, name="keyboard picks").count == 30


def test_explore_text_contains_and_any_case_in_the_builder_and_the_sidebar(page, live_server, shot, dataset):
    _street(dataset, 120)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    base = f"{live_server.url}/datasets/{dataset.id}/explore"
    page.goto(base)
    expect(page.get_by_test_id("match-count")).to_have_text("120 samples", timeout=LONG)
    # The builder: part of a value, in any case.
    page.get_by_label("Metadata field").select_option(label="Scenario")
    page.get_by_label("Condition", exact=True).select_option(label="contains (any case)")
    page.get_by_label("Value", exact=True).fill("SUN")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_test_id("match-count")).to_have_text("40 samples", timeout=LONG)
    expect(page.get_by_test_id("condition")).to_have_text(re.compile(r'Scenario contains \(any case\) "SUN"'))
    assert '"op":"icontains"' in page.url.replace("%22", '"').replace("%3A", ":").replace("%2C", ",")
    page.get_by_role("button", name="Remove condition Scenario").click()
    expect(page.get_by_test_id("match-count")).to_have_text("120 samples", timeout=LONG)
    # The same as "is (any case)".
    page.get_by_label("Condition", exact=True).select_option(label="is (any case)")
    page.get_by_label("Value", exact=True).fill("Rainy")
    page.get_by_role("button", name="Add condition").click()
    expect(page.get_by_test_id("match-count")).to_have_text("40 samples", timeout=LONG)
    page.get_by_role("button", name="Remove condition Scenario").click()
    expect(page.get_by_test_id("match-count")).to_have_text("120 samples", timeout=LONG)

    # The sidebar: a contains box on the text field, with the value counts following it.
    facet = page.locator('.facet[data-path="weather.scenario"]')
    box = page.get_by_label("Scenario contains", exact=True)
    box.fill("NY")
    box.press("Enter")
    expect(page.get_by_test_id("match-count")).to_have_text("80 samples", timeout=LONG)  # sunny, rainy
    expect(facet.get_by_test_id("facet-value").filter(has_text="cloudy").get_by_test_id("facet-count")).to_have_text(
        "0", timeout=LONG
    )
    expect(facet.get_by_test_id("facet-value").filter(has_text="sunny").get_by_test_id("facet-count")).to_have_text(
        "40"
    )
    shot(page, "explore-text-contains")
    # Match case: "NY" is in no value as typed.
    page.get_by_label("Scenario: match case").check()
    expect(page.get_by_test_id("match-count")).to_have_text("0 samples", timeout=LONG)
    page.get_by_label("Scenario contains", exact=True).fill("ny")
    page.get_by_label("Scenario contains", exact=True).press("Enter")
    expect(page.get_by_test_id("match-count")).to_have_text("80 samples", timeout=LONG)
    # A reload keeps it (from the URL).
    page.reload()
    expect(page.get_by_test_id("match-count")).to_have_text("80 samples", timeout=LONG)
    expect(page.get_by_label("Scenario contains", exact=True)).to_have_value("ny")
    expect(page.get_by_label("Scenario: match case")).to_be_checked()

    # Bad values in a link are said in words, not "0 samples".
    page.goto(base + '?conditions=[{"path":"weather.scenario","op":"icontains","value":5}]')
    expect(page.get_by_test_id("filter-error")).to_contain_text(
        "Scenario contains (any case) 5: the value must be text", timeout=LONG
    )
    page.goto(base + '?conditions=[{"path":"weather.temperature","op":"icontains","value":"1"}]')
    expect(page.get_by_test_id("filter-error")).to_contain_text(
        "“icontains” is not a condition for a float field (it matches text, and this field holds numbers)",
        timeout=LONG,
    )
    expect(page.get_by_test_id("match-count")).not_to_have_text(re.compile("0 samples"))


def test_the_map_highlights_the_samples_the_explore_filter_matches(page, live_server, shot, dataset):
    _street(dataset, 120)
    _map_embedding(dataset, 120)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    expect(page.get_by_test_id("match-count")).to_have_text("120 samples", timeout=LONG)
    page.get_by_label("Scenario contains", exact=True).fill("RAIN")
    page.get_by_label("Scenario contains", exact=True).press("Enter")
    page.get_by_label("Temperature at most").fill("9")
    page.get_by_label("Temperature at most").press("Enter")
    expect(page.get_by_test_id("match-count")).to_have_text("10 samples", timeout=LONG)
    # Explore links to the map with the same filter; the map highlights exactly those samples.
    page.get_by_test_id("explore-map").click()
    expect(page).to_have_url(re.compile(r"/map\?conditions="), timeout=LONG)
    expect(page.get_by_test_id("map-status")).to_contain_text("120 points", timeout=LONG)
    expect(page.get_by_test_id("map-filter-count")).to_contain_text(
        "Highlighting 10 samples that match the filter from Explore", timeout=LONG
    )
    expected = [i for i in range(120) if i % 3 == 2 and i % 40 <= 9]
    assert page.evaluate("() => winnowMap.highlightedIdx") == expected
    shot(page, "map-filter-highlight")
    # A colour keeps the highlight (the URL holds both), and a reload reads both back.
    page.locator("#m-color").select_option(label="Temperature")
    expect(page).to_have_url(re.compile(r"conditions=.*color=field%3Aweather.temperature"), timeout=LONG)
    page.reload()
    expect(page.get_by_test_id("map-filter-count")).to_contain_text("Highlighting 10 samples", timeout=LONG)
    assert page.evaluate("() => winnowMap.highlightedIdx") == expected
    # "Show all samples" drops the filter; back brings it again.
    page.get_by_role("button", name="Show all samples").click()
    expect(page.get_by_test_id("map-filter")).to_be_hidden(timeout=LONG)
    assert page.evaluate("() => winnowMap.highlightedIdx") is None
    page.go_back()
    expect(page.get_by_test_id("map-filter-count")).to_contain_text("Highlighting 10 samples", timeout=LONG)
    # A bad filter in a link is said in words.
    page.goto(
        f"{live_server.url}/datasets/{dataset.id}/map"
        '?conditions=[{"path":"weather.scenario","op":"icontains","value":""}]'
    )
    page.errors.allow("status of 400")
    expect(page.get_by_test_id("map-filter-error")).to_contain_text(
        "weather.scenario icontains: value must be a non-empty string", timeout=LONG
    )


def test_explore_exports_the_current_filter_and_a_saved_view_directly(page, live_server, shot, dataset, owner):
    import json as _json

    from curation.models import SavedView, Tag

    _street(dataset, 120)
    SavedView.objects.create(
        dataset=dataset,
        name="cold rain",
        creator=owner,
        sort="-weather.temperature",
        filter={
            "conditions": [
                {"path": "weather.scenario", "op": "eq", "value": "rainy"},
                {"path": "weather.temperature", "op": "lte", "value": 3},
            ]
        },
    )
    tags_before = Tag.objects.filter(dataset=dataset).count()
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    expect(page.get_by_test_id("match-count")).to_have_text("120 samples", timeout=LONG)
    expect(page.get_by_test_id("export-link")).to_have_text("Export all samples")
    # The current filter, as CSV.
    page.get_by_label("Scenario contains", exact=True).fill("SUN")
    page.get_by_label("Scenario contains", exact=True).press("Enter")
    expect(page.get_by_test_id("match-count")).to_have_text("40 samples", timeout=LONG)
    page.get_by_label("Export as").select_option("csv")
    expect(page.get_by_test_id("export-link")).to_have_text("Export the matching samples")
    with page.expect_download() as caught:
        page.get_by_test_id("export-link").click()
    rows = open(caught.value.path(), encoding="utf-8").read().splitlines()
    assert rows[0].startswith("file_name,sample_id,idx")
    assert [r.split(",")[0] for r in rows[1:]] == [f"f{i:03d}.jpg" for i in range(0, 120, 3)]
    # Sorted, the export comes in the grid's order: temperature descending, ties by idx.
    page.get_by_label("Sort by").select_option(label="Temperature ↓")
    expect(page.get_by_test_id("tile-badge").first).to_have_text("Temperature: 39", timeout=LONG)
    with page.expect_download() as caught:
        page.get_by_test_id("export-link").click()
    rows = open(caught.value.path(), encoding="utf-8").read().splitlines()
    warmest_first = sorted(range(0, 120, 3), key=lambda i: (-(i % 40), i))
    assert [r.split(",")[0] for r in rows[1:]] == [f"f{i:03d}.jpg" for i in warmest_first]
    # The filter and sort saved as a view from this page are that view at once (jsonb orders keys its own way).
    page.get_by_label("View name").fill("warm sun")
    page.get_by_role("button", name="Save current view").click()
    expect(page.get_by_test_id("export-link")).to_have_text("Export view “warm sun”", timeout=LONG)
    # A saved view, opened, exports under its name; changing the filter afterwards exports the filter again.
    page.get_by_test_id("view-select").select_option(label="cold rain")
    expect(page.get_by_test_id("match-count")).to_have_text("4 samples", timeout=LONG)
    expect(page.get_by_test_id("export-link")).to_have_text("Export view “cold rain”")
    page.get_by_label("Export as").select_option("json")
    shot(page, "explore-export-view")
    with page.expect_download() as caught:
        page.get_by_test_id("export-link").click()
    assert caught.value.suggested_filename == "cold_rain.json"
    items = _json.loads(open(caught.value.path(), encoding="utf-8").read())
    cold_rain = sorted((i for i in range(120) if i % 3 == 2 and i % 40 <= 3), key=lambda i: (-(i % 40), i))
    assert [item["file_name"] for item in items] == [f"f{i:03d}.jpg" for i in cold_rain]  # in the view's sort
    page.get_by_role("button", name=re.compile("Remove condition Temperature")).click()
    expect(page.get_by_test_id("match-count")).to_have_text("40 samples", timeout=LONG)
    expect(page.get_by_test_id("export-link")).to_have_text("Export the matching samples")
    assert Tag.objects.filter(dataset=dataset).count() == tags_before  # no tag on the way


def _tab_to(pg, selector: str, limit: int = 120) -> None:
    """Press Tab (only) until the focused element matches `selector`; fails when it never does."""
    for _ in range(limit):
        pg.keyboard.press("Tab")
        if pg.evaluate("(s) => !!document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{limit} presses of Tab never reached {selector}")


def test_explore_and_analyze_with_the_keyboard_only(page, live_server, shot, dataset):
    """No click, no focus(), no fill: Tab, typing, Enter, Space and arrows, as a keyboard user works."""
    _street(dataset, 120)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    count = page.get_by_test_id("match-count")
    expect(count).to_have_text("120 samples", timeout=LONG)
    # The skip link first, then on to the file-name filter.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    _tab_to(page, "#f-name")
    page.keyboard.type("f00")
    page.keyboard.press("Enter")
    expect(count).to_have_text("10 samples", timeout=LONG)  # f000..f009
    # The sidebar's text box: "contains", any case.
    _tab_to(page, '[data-facet-key="weather.scenario:contains"]')
    page.keyboard.type("SUN")
    page.keyboard.press("Enter")
    expect(count).to_have_text("4 samples", timeout=LONG)  # f000, f003, f006, f009
    expect(page.locator('[data-facet-key="weather.scenario:contains"]')).to_be_focused()
    # The tiles: one tab stop, arrows move, Space selects.
    _tab_to(page, '[data-testid="tile"] .pick')
    page.keyboard.press("Space")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Space")
    expect(page.get_by_test_id("selection-count")).to_have_text("2 selected")
    # Save the two as a tag, from the keyboard.
    _tab_to(page, "#save-name")
    page.keyboard.type("picked by keys")
    page.keyboard.press("Enter")
    expect(page.get_by_text("Tag “picked by keys” saved with 2 samples")).to_be_visible(timeout=LONG)
    assert Tag.objects.get(dataset=dataset, name="picked by keys").indices().tolist() == [0, 6]
    # Open a sample with O and walk to the next with the arrow key; Escape closes it.
    _tab_to(page, '[data-testid="tile"] .pick')
    page.keyboard.press("o")
    expect(page.get_by_test_id("sample-view")).to_be_visible(timeout=LONG)
    expect(page.get_by_test_id("sample-view").locator("#sample-title")).to_contain_text("f000.jpg", timeout=LONG)
    page.keyboard.press("ArrowRight")
    expect(page.get_by_test_id("sample-view").locator("#sample-title")).to_contain_text("f003.jpg", timeout=LONG)
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("sample-view")).to_be_hidden(timeout=LONG)
    shot(page, "explore-keyboard")

    # Analyze: a range typed into "from" and "to", a category toggled, a filter removed.
    page.goto(f"{live_server.url}/datasets/{dataset.id}/analyze")
    matched = page.get_by_test_id("matched-count")
    expect(matched).to_have_text("120", timeout=LONG)
    _tab_to(page, '[aria-label="Temperature from"]')
    page.keyboard.type("5")
    page.keyboard.press("Tab")
    page.keyboard.type("12")
    page.keyboard.press("Tab")
    expect(matched).to_have_text("24", timeout=LONG)
    _tab_to(page, '[data-path="weather.scenario"] [data-value="sunny"]')
    page.keyboard.press("Space")
    expect(matched).to_have_text("8", timeout=LONG)
    page.keyboard.press("Enter")
    expect(matched).to_have_text("24", timeout=LONG)
    page.keyboard.press("Shift+Tab")  # back into the page, then on to a chip's remove button
    _tab_to(page, '[aria-label^="Remove filter on"]')
    page.keyboard.press("Enter")
    expect(matched).not_to_have_text("24", timeout=LONG)
    shot(page, "analyze-keyboard")


def test_the_tag_is_in_the_url_of_explore_and_analyze_and_in_a_saved_view(page, live_server, shot, dataset, owner):
    from curation import tagging
    from curation.models import SavedView

    _street(dataset, 120)
    first = tagging.create_tag(
        dataset, "first 30", list(range(30)), origin="selection", origin_detail={}, creator=owner
    )
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    explore = f"{live_server.url}/datasets/{dataset.id}/explore"
    page.goto(explore)
    count = page.get_by_test_id("match-count")
    expect(count).to_have_text("120 samples", timeout=LONG)
    page.get_by_label("Tag", exact=True).select_option(first.id)
    expect(count).to_have_text("30 samples", timeout=LONG)
    expect(page).to_have_url(re.compile(f"tag={first.id}"))
    page.reload()
    expect(count).to_have_text("30 samples", timeout=LONG)
    expect(page.get_by_label("Tag", exact=True)).to_have_value(first.id)
    page.go_back()
    expect(count).to_have_text("120 samples", timeout=LONG)
    page.go_forward()
    expect(count).to_have_text("30 samples", timeout=LONG)
    # A saved view holds the tag with the filter; opening it elsewhere brings the tag back.
    page.get_by_label("View name").fill("first ones")
    page.get_by_role("button", name="Save current view").click()
    expect(page.get_by_test_id("view-select")).to_have_value(re.compile(r"^[0-9a-f]{24}$"), timeout=LONG)
    assert SavedView.objects.get(dataset=dataset).filter == {"tag": first.id}
    page.goto(explore)
    expect(count).to_have_text("120 samples", timeout=LONG)
    page.get_by_test_id("view-select").select_option(label="first ones")
    expect(count).to_have_text("30 samples", timeout=LONG)
    expect(page.get_by_label("Tag", exact=True)).to_have_value(first.id)
    # Analyze: "within tag" is in the URL too, and a reload keeps it.
    page.goto(f"{live_server.url}/datasets/{dataset.id}/analyze")
    matched = page.get_by_test_id("matched-count")
    expect(matched).to_have_text("120", timeout=LONG)
    page.get_by_label("Within tag").select_option(first.id)
    expect(matched).to_have_text("30", timeout=LONG)
    expect(page).to_have_url(re.compile(f"tag={first.id}"))
    page.reload()
    expect(matched).to_have_text("30", timeout=LONG)
    expect(page.get_by_label("Within tag")).to_have_value(first.id)
    shot(page, "analyze-within-tag")
    # A link whose tag the dataset does not have says so.
    page.goto(f"{live_server.url}/datasets/{dataset.id}/analyze?tag=" + "0" * 24)
    expect(page.get_by_role("alert").filter(has_text="The link's tag is not a tag of this dataset")).to_be_visible()
    page.goto(explore + "?tag=" + "0" * 24)
    page.errors.allow(r"status of 400")
    expect(page.get_by_role("alert").filter(has_text="no tag with id").first).to_be_visible(timeout=LONG)


def test_the_sample_view_shows_the_full_resolution_image_not_the_thumbnail(page, live_server, shot, owner):
    import io

    from PIL import Image

    from curation.services import create_dataset

    ds = create_dataset(owner, "big pictures", "full")
    _token, key = ApiToken.issue(owner, "cli")
    buffer = io.BytesIO()
    Image.new("RGB", (600, 400), (30, 120, 200)).save(buffer, "PNG")
    Api(live_server.url, key).call(
        "POST", f"/datasets/{ds.id}/samples", files=[("files", ("big.png", buffer.getvalue(), "image/png"))],
        data={"embed": "false"},
    )  # fmt: skip
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{ds.id}/explore")
    page.wait_for_function("() => { const i = document.querySelector('.tile img'); return i && i.naturalWidth > 0; }")
    # The tile shows the thumbnail (its longest side 256 px) ...
    assert page.evaluate("() => document.querySelector('.tile img').naturalWidth") == 256
    page.get_by_role("button", name="View big.png").click()
    # ... the sample view the original, at its own 600 x 400 pixels.
    page.wait_for_function(
        "() => { const i = document.querySelector('dialog img'); return i && i.naturalWidth === 600; }"
    )
    assert page.evaluate("() => document.querySelector('dialog img').naturalHeight") == 400
    expect(page.get_by_test_id("sample-view")).to_contain_text("600 × 400")
    shot(page, "sample-view-full-resolution")


def test_a_condition_being_typed_survives_the_value_suggestions_arriving(page, live_server, dataset):
    """The known values (suggestions) load after the grid; their arrival must not wipe the condition being typed."""
    _street(dataset, 120)
    held = []

    def hold(route):
        if "filter=" in route.request.url:
            route.continue_()  # the facets' request
        else:
            held.append(route)  # the suggestions' request waits until the condition is typed

    page.route("**/metadata/histograms*", hold)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    expect(page.get_by_test_id("match-count")).to_have_text("120 samples", timeout=LONG)
    page.get_by_label("Metadata field").select_option(label="Scenario")
    page.get_by_label("Condition", exact=True).select_option(label="contains (any case)")
    page.get_by_label("Value", exact=True).fill("SUN")
    page.wait_for_function("() => true")  # let the held request reach the handler
    assert held, "the suggestions' request was not seen"
    for route in held:
        route.continue_()
    page.wait_for_function("() => document.querySelectorAll('#c-values option').length > 0", timeout=LONG)
    expect(page.get_by_label("Value", exact=True)).to_have_value("SUN")
    expect(page.get_by_label("Condition", exact=True)).to_have_value("icontains")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_test_id("match-count")).to_have_text("40 samples", timeout=LONG)
