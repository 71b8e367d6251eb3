"""Single pages: sign in and out, access rules, Preferences' tokens."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from curation.models import MetadataField, Tag
from curation.services import add_samples, create_dataset
from sampling.models import SamplingRun
from tests.browser.conftest import SCREENSHOTS, sign_in
from tests.browser.data import Api, embeddings_csv
from winnow.accounts.models import ApiToken

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Scroll to the bottom (loading the next page) until the selector matches; remembers the most tiles seen.
SCROLL_TO_END = """(selector) => {
  const tiles = document.querySelectorAll('[data-testid="tile"]').length;
  window.maxTiles = Math.max(window.maxTiles || 0, tiles);
  window.scrollTo(0, document.documentElement.scrollHeight);
  return !!document.querySelector(selector);
}"""


def test_every_page_but_sign_in_needs_a_session(page, live_server, shot, dataset):
    for path in ["/", "/preferences", f"/datasets/{dataset.id}", f"/datasets/{dataset.id}/explore"]:
        page.goto(live_server.url + path)
        expect(page).to_have_url(re.compile(r"/login\?next="))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, "login")


def test_wrong_password_is_told_in_words(page, live_server, owner):
    page.goto(live_server.url + "/login")
    page.get_by_label("User name").fill("olivia")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("did not match")


def test_sign_in_and_out(page, live_server, shot, owner):
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    expect(page.get_by_role("heading", name="My datasets")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    page.goto(live_server.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next="))


def test_a_non_member_gets_404_for_a_dataset_page(page, live_server, dataset, outsider):
    sign_in(page, live_server.url, "oscar", "pw-oscar-1234")
    # The 404 page itself logs a console error for the failed document load; that one is expected here.
    response = page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    assert response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    # The failed document load itself is reported on the console; that one is expected here.
    page.errors.errors = [e for e in page.errors.errors if "404" not in e]


def test_tokens_create_shows_secret_once_then_revoke(page, live_server, shot, owner):
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.get_by_role("link", name="Preferences").click()
    expect(page.get_by_text("No tokens yet")).to_be_visible()
    page.get_by_label("Token name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    key = page.get_by_test_id("new-token-key")
    expect(key).to_have_text(re.compile(r"^wnw_"))
    expect(page.get_by_text("shown only once")).to_be_visible()
    secret = key.text_content()
    token = ApiToken.authenticate(secret)
    assert token is not None and token.name == "laptop"
    rows = page.get_by_test_id("token-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("wnw_" + token.prefix)
    expect(rows.first).not_to_contain_text(secret)
    shot(page, "preferences-token-created")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke token laptop").click()
    expect(rows.first).to_contain_text("revoked")
    assert ApiToken.authenticate(secret) is None
    # After a reload the secret is gone for good.
    page.reload()
    expect(page.get_by_test_id("new-token-key")).to_be_hidden()
    assert secret not in page.content()


# --- data shown as text, thumbnails, roles, widths ------------------------------------------------------

XSS_NAME = "<img src=x onerror=alert(1)>.jpg"


def _dialogs(page):
    seen = []
    page.on("dialog", lambda dialog: (seen.append(dialog.message), dialog.dismiss()))
    return seen


def test_file_names_and_metadata_show_as_text(page, live_server, shot, dataset):
    add_samples(
        dataset,
        [
            {
                "file_name": XSS_NAME,
                "metadata": {"note": "<script>alert(2)</script>", "weather": {"scenario": "<b>rainy</b>"}},
            },
            {"file_name": "plain.jpg", "metadata": {"note": "fine", "weather": {"scenario": "sunny"}}},
        ],
    )
    MetadataField.objects.create(dataset=dataset, path="weather.scenario", type="categorical_string")
    dialogs = _dialogs(page)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    tile = page.get_by_test_id("tile").first
    expect(tile).to_contain_text(XSS_NAME)
    tile.locator(".pick").dblclick()
    view = page.get_by_test_id("sample-view")
    expect(view.get_by_test_id("sample-file-name")).to_have_text(XSS_NAME)
    expect(view).to_contain_text("<script>alert(2)</script>")
    expect(view).to_contain_text("initial-tag")
    shot(page, "xss-sample-view")
    page.get_by_role("button", name="Close").click()
    page.goto(f"{live_server.url}/datasets/{dataset.id}/configurator")
    expect(page.get_by_test_id("proposed-row").first).to_be_visible()
    expect(page.locator("#proposed")).to_contain_text("<script>alert(2)</script>")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/analyze")
    expect(page.locator('[data-path="weather.scenario"]')).to_contain_text("<b>rainy</b>")
    assert page.locator("img[src=x], script:has-text('alert'), b:has-text('rainy')").count() == 0
    assert dialogs == []


def _png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_full_dataset_shows_its_thumbnails_and_images(page, live_server, shot, owner):
    ds = create_dataset(owner, "photos", "full")
    _token, key = ApiToken.issue(owner, "cli")
    colours = [(200, 40, 40), (40, 160, 60), (40, 60, 200), (220, 200, 40), (20, 20, 20), (240, 240, 240)]
    files = [("files", (f"img_{i}.png", _png(c), "image/png")) for i, c in enumerate(colours)]
    Api(live_server.url, key).call("POST", f"/datasets/{ds.id}/samples", files=files, data={"embed": "false"})
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    card = page.get_by_test_id("dataset-card")
    expect(card).to_contain_text("6 samples")
    expect(card.locator("img")).to_have_count(4)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.card img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "datasets-with-thumbnails")
    page.goto(f"{live_server.url}/datasets/{ds.id}/explore")
    expect(page.get_by_test_id("tile")).to_have_count(6)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.tile img')].length === 6 && [...document.querySelectorAll('.tile img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    page.get_by_role("button", name="View img_2.png").click()
    image = page.get_by_test_id("sample-view").locator("img")
    expect(image).to_be_visible()
    page.wait_for_function("() => document.querySelector('dialog img').naturalWidth === 64")
    shot(page, "explore-full-sample-view")


def test_a_viewer_sees_no_edit_controls(page, live_server, dataset, viewer):
    sign_in(page, live_server.url, "vera", "pw-vera-12345")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    expect(page.get_by_test_id("match-count")).to_have_text("0 samples")
    expect(page.get_by_role("button", name="Save selection as tag")).to_have_count(0)
    page.goto(f"{live_server.url}/datasets/{dataset.id}/configurator")
    expect(page.get_by_text("An editor of this dataset can configure fields.")).to_be_visible()
    expect(page.get_by_role("button", name="Save changes")).to_have_count(0)
    page.goto(f"{live_server.url}/datasets/{dataset.id}/sampling")
    expect(page.get_by_text("An editor of this dataset can start one.")).to_be_visible()
    expect(page.get_by_role("button", name="Process")).to_have_count(0)
    page.goto(f"{live_server.url}/datasets/{dataset.id}/tags")
    expect(page.get_by_role("heading", name="Combine tags")).to_have_count(0)


def test_select_all_in_filter_with_the_keyboard_and_save(page, live_server, shot, dataset):
    add_samples(dataset, [{"file_name": f"cam{i % 2}/f{i:03d}.jpg", "metadata": {"speed": i}} for i in range(300)])
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    expect(page.get_by_test_id("match-count")).to_have_text("300 samples")
    page.get_by_label("File name contains").fill("cam1/")
    page.get_by_label("File name contains").press("Enter")
    expect(page.get_by_test_id("match-count")).to_have_text("150 samples")
    # Tiles are buttons: Tab to one and press Space to select it.
    first = page.get_by_test_id("tile").first.locator(".pick")
    first.focus()
    page.keyboard.press("Space")
    expect(page.get_by_test_id("selection-count")).to_have_text("1 selected")
    page.get_by_role("button", name="Select all in filter").click()
    expect(page.get_by_test_id("selection-count")).to_have_text("all 150 in filter selected")
    page.get_by_placeholder("new tag name").fill("camera one")
    page.get_by_role("button", name="Save selection as tag").click()
    expect(page.get_by_text("Tag “camera one” saved with 150 samples")).to_be_visible()
    assert Tag.objects.get(dataset=dataset, name="camera one").indices().tolist() == list(range(1, 300, 2))
    # Scrolling loads further pages (cursor paging) until the last sample of the filter is there.
    page.wait_for_function(SCROLL_TO_END, arg='[data-idx="299"]', polling=200)
    # A tag name already taken is refused in words (the browser logs the 400 response; expected here).
    page.errors.allow(r"status of 400 .*/tags\)")
    page.get_by_role("button", name="Select all in filter").click()
    page.get_by_placeholder("new tag name").fill("camera one")
    page.get_by_role("button", name="Save selection as tag").click()
    expect(page.get_by_role("alert")).to_contain_text("already exists")


def test_explore_keeps_only_rows_near_the_viewport_and_selection_survives_scrolling(page, live_server, dataset):
    add_samples(dataset, [{"file_name": f"f{i:04d}.jpg"} for i in range(3000)])
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    expect(page.get_by_test_id("match-count")).to_have_text("3,000 samples")
    # Click, then shift-click: a range of five at the top.
    page.locator('[data-idx="3"] .pick').click()
    page.locator('[data-idx="7"] .pick').click(modifiers=["Shift"])
    expect(page.get_by_test_id("selection-count")).to_have_text("5 selected")
    # Scroll through all 25 pages: the grid never holds more than a few screens of tiles.
    # Stops early on an error box, so a failed page load is reported in words rather than as a timeout.
    page.wait_for_function(SCROLL_TO_END, arg='[data-idx="2999"], [role="alert"]', polling=100, timeout=120_000)
    expect(page.get_by_role("alert")).to_have_count(0)
    max_tiles = page.evaluate("() => window.maxTiles")
    assert 0 < max_tiles <= 400, max_tiles
    assert page.get_by_test_id("tile").count() <= 400
    expect(page.locator('[data-idx="3"]')).to_have_count(0)  # scrolled out: its tile is gone
    page.locator('[data-idx="2999"] .pick').click()
    expect(page.get_by_test_id("selection-count")).to_have_text("6 selected")
    # The viewport only: a full-page shot of 3,000 rows' worth of height says nothing more.
    page.screenshot(path=str(SCREENSHOTS / "test_explore_windowed-scrolled-to-the-end.png"))
    # Back at the top the tiles are built again and still show the selection.
    page.evaluate("() => window.scrollTo(0, 0)")
    expect(page.locator('[data-idx="3"]')).to_have_class(re.compile(r"\bselected\b"))
    expect(page.locator('[data-idx="8"]')).not_to_have_class(re.compile(r"\bselected\b"))
    page.get_by_placeholder("new tag name").fill("scrolled picks")
    page.get_by_role("button", name="Save selection as tag").click()
    expect(page.get_by_text("Tag “scrolled picks” saved with 6 samples")).to_be_visible()
    assert Tag.objects.get(dataset=dataset, name="scrolled picks").indices().tolist() == [3, 4, 5, 6, 7, 2999]


@pytest.mark.parametrize("width, height", [(1280, 760), (2560, 1400)])
def test_explore_at_laptop_and_large_widths(browser, live_server, shot, dataset, width, height):
    add_samples(dataset, [{"file_name": f"f{i:03d}.jpg"} for i in range(60)])
    context = browser.new_context(viewport={"width": width, "height": height})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(pg, live_server.url, "olivia", "pw-olivia-123")
    pg.goto(f"{live_server.url}/datasets/{dataset.id}/explore")
    expect(pg.get_by_test_id("match-count")).to_have_text("60 samples")
    expect(pg.get_by_test_id("tile").first).to_contain_text("f000.jpg")
    # The grid fills the width: more columns on the wide screen, none overflowing.
    columns = pg.evaluate(
        "() => getComputedStyle(document.querySelector('.grid')).gridTemplateColumns.split(' ').length"
    )
    assert columns >= (7 if width < 2000 else 14)
    assert pg.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    shot(pg, f"explore-{width}")
    context.close()
    assert not errors


def test_a_failed_run_shows_its_error(page, live_server, shot, dataset, owner, monkeypatch):
    from sampling import services as sampling_services
    from sampling.samplers import SamplerError

    names = [f"s{i}.jpg" for i in range(40)]
    add_samples(dataset, [{"file_name": n} for n in names])
    _token, key = ApiToken.issue(owner, "cli")
    csv = embeddings_csv(names, np.random.default_rng(1).normal(size=(40, 4)).astype(np.float32))
    Api(live_server.url, key).call(
        "POST", f"/datasets/{dataset.id}/embeddings", data={"name": "e"}, files={"file": ("e.csv", csv, "text/csv")}
    )

    def broken_matrix(run, inputs):
        raise SamplerError("the embedding matrix could not be read: row 7 holds NaN")

    # The live server runs in this process, so the in-process worker meets the broken matrix.
    monkeypatch.setattr(sampling_services, "attach_matrix", broken_matrix)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/sampling")
    page.get_by_label("Name").fill("doomed")
    page.get_by_label("Samples to score").fill("10")
    page.get_by_role("button", name="Process").click()
    expect(page.get_by_test_id("run-error")).to_contain_text(
        "The run failed: the embedding matrix could not be read: row 7 holds NaN"
    )
    expect(page.get_by_test_id("run-status").first).to_have_text("failed")
    shot(page, "sampling-failed")
    # A bad request is refused in words, naming the field (the browser logs the 400; expected here).
    page.errors.allow(r"status of 400 .*/sampling-runs\)")
    page.get_by_label("Samples to score").fill("1000")
    page.get_by_role("button", name="Process").click()
    expect(page.locator("#run-error")).to_contain_text("n_samples: must be between 1 and 40")


def test_configurator_edits_and_deletes_entries_and_explains_a_bad_fallback(page, live_server, shot, dataset):
    add_samples(
        dataset,
        [{"file_name": f"f{i}.jpg", "metadata": {"speed": i * 1.5, "road": ["a", "b"][i % 2]}} for i in range(10)],
    )
    MetadataField.objects.create(dataset=dataset, path="road", type="categorical_string")
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/configurator")
    expect(page.get_by_test_id("configured-row")).to_have_count(1)
    page.get_by_role("button", name="Add speed").click()
    page.get_by_label("Fallback for speed").fill("fast")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("alert")).to_contain_text("the fallback must be a number")
    assert not dataset.metadata_fields.filter(path="speed").exists()
    page.get_by_label("Fallback for speed").fill("0")
    page.get_by_label("Display name for road").fill("Road type")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("All changes saved.")).to_be_visible()
    assert dataset.metadata_fields.get(path="speed").fallback == 0
    assert dataset.metadata_fields.get(path="road").display_name == "Road type"
    page.get_by_role("button", name="Delete entry road").click()
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("All changes saved.")).to_be_visible()
    assert list(dataset.metadata_fields.values_list("path", flat=True)) == ["speed"]
    # A path the server refuses: the error names it, and the entry stays on screen to fix.
    page.errors.allow(r"status of 400 .*/configurator\)")
    page.get_by_role("button", name="+ Add entry").click()
    page.get_by_label("Path for new entry").fill("bad path!")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("alert")).to_contain_text("bad path!")
    expect(page.get_by_label("Path for bad path!")).to_have_value("bad path!")
    assert list(dataset.metadata_fields.values_list("path", flat=True)) == ["speed"]
    shot(page, "configurator-edited")


def test_tags_intersection_and_delete(page, live_server, dataset):
    from curation import bitmask
    from curation.models import TagOrigin

    add_samples(dataset, [{"file_name": f"f{i}.jpg"} for i in range(10)])
    for name, idx in [("low", [0, 1, 2, 3, 4]), ("even", [0, 2, 4, 6, 8])]:
        Tag.objects.create(
            dataset=dataset, name=name, bitmask=bitmask.from_indices(idx), count=len(idx), origin=TagOrigin.SELECTION
        )
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/tags")
    page.get_by_label("Select even").check()
    page.get_by_label("Select low").check()
    page.get_by_label("Operation").select_option("difference")
    page.get_by_label("New tag name").fill("even not low")
    page.get_by_role("button", name="Create tag").click()
    expect(page.get_by_text("Tag “even not low” created with 2 samples")).to_be_visible()
    assert Tag.objects.get(dataset=dataset, name="even not low").indices().tolist() == [6, 8]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete tag low").click()
    expect(page.get_by_text("Tag “low” deleted")).to_be_visible()
    assert not Tag.objects.filter(dataset=dataset, name="low").exists()
    expect(page.get_by_role("button", name="Delete tag initial-tag")).to_have_count(0)


def test_sampling_offers_auto_by_default_with_its_help_and_runs_it(page, live_server, shot, dataset, owner):
    names = [f"s{i}.jpg" for i in range(40)]
    add_samples(dataset, [{"file_name": n} for n in names])
    _token, key = ApiToken.issue(owner, "cli")
    csv = embeddings_csv(names, np.random.default_rng(2).normal(size=(40, 4)).astype(np.float32))
    Api(live_server.url, key).call(
        "POST", f"/datasets/{dataset.id}/embeddings", data={"name": "e"}, files={"file": ("e.csv", csv, "text/csv")}
    )
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/sampling")
    strategy = page.get_by_label("Strategy")
    expect(strategy).to_have_value("auto")
    help_text = page.locator("#r-strategy-help")
    expect(help_text).to_be_visible()
    expect(help_text).to_contain_text("typicality")
    strategy.select_option("coreset")
    expect(help_text).to_contain_text("Covers the embedding space")  # each strategy says what it is good for
    strategy.select_option("auto")
    expect(help_text).to_contain_text("distance to the picks so far")
    page.get_by_label("Name").fill("label first")
    page.get_by_label("Samples to score").fill("10")
    page.get_by_role("button", name="Process").click()
    expect(page.get_by_test_id("run-status").first).to_have_text("succeeded")
    shot(page, "sampling-auto")
    assert SamplingRun.objects.get(dataset=dataset, name="label first").strategy == "auto"
