"""The Similar and Duplicates pages in a browser: more like this from the sample view, the duplicate review."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from curation.models import Tag
from curation.services import create_dataset
from tests.browser.conftest import sign_in
from tests.browser.data import Api
from winnow.accounts.models import ApiToken

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _picture(seed: int, shift: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (96, 72), tuple(int(c) for c in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(0, 80, 2))
        draw.ellipse([x + shift, y, x + shift + 20, y + 16], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def photos(owner, live_server):
    ds = create_dataset(owner, "street", "full")
    _token, key = ApiToken.issue(owner, "cli")
    files = [(f"img_{i:02d}.png", _picture(i)) for i in range(16)]
    files.append(("img_03_copy.png", _picture(3)))  # the same bytes
    files.append(("img_07_burst.png", _picture(7, shift=1)))  # the next frame of a burst
    Api(live_server.url, key).call(
        "POST", f"/datasets/{ds.id}/samples", files=[("files", (n, b, "image/png")) for n, b in files]
    )
    return ds


def test_more_like_this_from_the_sample_view(page, live_server, shot, photos):
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{photos.id}/explore")
    expect(page.get_by_test_id("tile")).to_have_count(18)
    page.get_by_role("button", name="View img_03.png").click()
    page.get_by_test_id("more-like-this").click()
    page.wait_for_url("**/similar?run=*")
    tiles = page.get_by_test_id("similar-tile")
    expect(tiles).to_have_count(17)  # every other sample, nearest first
    expect(tiles.first).to_contain_text("img_03_copy.png")
    expect(page.get_by_test_id("similar-query")).to_contain_text("Query: img_03.png")
    expect(tiles.first.locator(".rank")).to_have_text("#1 · 0")
    shot(page, "similar-results")
    page.get_by_placeholder("new tag name").fill("like-3")
    page.get_by_role("spinbutton", name="How many of the first results").fill("2")
    page.get_by_role("button", name="Save the first as tag").click()
    expect(page.locator("#toasts")).to_contain_text("Saved tag like-3 (2 samples)")
    assert Tag.objects.get(dataset=photos, name="like-3").count == 2


def test_more_like_these_from_an_explore_selection(page, live_server, photos):
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{photos.id}/explore")
    expect(page.get_by_test_id("tile")).to_have_count(18)
    more = page.get_by_test_id("more-like-selection")
    expect(more).to_be_disabled()  # nothing selected
    page.get_by_role("button", name="Select img_03.png", exact=True).click()
    page.get_by_role("button", name="Select img_07.png", exact=True).click()
    expect(page.get_by_test_id("selection-count")).to_have_text("2 selected")
    more.click()
    page.wait_for_url("**/similar?run=*")
    tiles = page.get_by_test_id("similar-tile")
    expect(tiles).to_have_count(16)  # every sample but the two selected
    expect(page.get_by_text("16 samples like 2 selected samples (centroid)")).to_be_visible()
    names = {tiles.nth(i).get_attribute("title") for i in range(16)}
    assert "img_03.png" not in names and "img_07.png" not in names and "img_03_copy.png" in names
    page.goto(f"{live_server.url}/datasets/{photos.id}/explore")
    page.get_by_role("button", name="Select all in filter").click()
    expect(page.get_by_test_id("more-like-selection")).to_be_disabled()  # ids only: a whole filter is a tag first


def test_duplicates_review_keeps_one_per_group(page, live_server, shot, photos):
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{photos.id}/duplicates")
    expect(page.get_by_text("No duplicate search yet")).to_be_visible()
    page.get_by_role("button", name="Find duplicates").click()
    groups = page.get_by_test_id("dup-group")
    expect(groups.first).to_be_visible()
    summary = page.get_by_test_id("dup-summary")
    expect(summary).to_contain_text("(1 exact)")
    exact = groups.filter(has_text="exact")
    expect(exact.get_by_test_id("dup-member")).to_have_count(2)
    expect(exact.locator('[data-kept="1"]')).to_contain_text("img_03.png")  # the first uploaded
    page.wait_for_function("() => [...document.querySelectorAll('.tile img')].every((i) => i.complete)")
    shot(page, "duplicates-review")
    page.get_by_label("Which sample a group keeps").select_option("sharpest")
    expect(exact.locator('[data-kept="1"]')).to_have_count(1)
    page.get_by_label("Which sample a group keeps").select_option("largest")
    page.get_by_label("New tag name").fill("deduplicated")
    page.get_by_role("button", name="Save as tag").click()
    expect(page.locator("#toasts")).to_contain_text("Saved tag deduplicated")
    tag = Tag.objects.get(dataset=photos, name="deduplicated")
    removable = int(
        page.evaluate("() => document.querySelector('[data-testid=dup-summary]').textContent.match(/(\\d+) extra/)[1]")
    )
    assert removable >= 1 and tag.count == 18 - removable


def test_the_search_and_the_duplicate_review_are_in_the_url(page, live_server, shot, photos, owner):
    import re

    from curation import tagging

    tagging.create_tag(photos, "first two", [0, 1], origin="selection", origin_detail={}, creator=owner)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{photos.id}/explore")
    page.get_by_role("button", name="View img_03.png").click()
    page.get_by_test_id("more-like-this").click()
    page.wait_for_url("**/similar?run=*")
    expect(page.get_by_test_id("similar-query")).to_contain_text("Query: img_03.png", timeout=60_000)
    first_url = page.url
    # A second search is a new history entry: back shows the first one again, forward the second.
    page.get_by_label("Like the tag").select_option(label="first two (2)")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("16 samples like a tag (centroid)")).to_be_visible(timeout=60_000)
    assert page.url != first_url and re.search(r"\?run=[0-9a-f]{24}$", page.url)
    page.go_back()
    expect(page).to_have_url(first_url)
    expect(page.get_by_test_id("similar-query")).to_contain_text("Query: img_03.png", timeout=60_000)
    page.go_forward()
    expect(page.get_by_text("16 samples like a tag (centroid)")).to_be_visible(timeout=60_000)
    page.reload()
    expect(page.get_by_text("16 samples like a tag (centroid)")).to_be_visible(timeout=60_000)
    # A link to a search that is gone says so.
    page.errors.allow(r"status of 404")
    page.goto(f"{live_server.url}/datasets/{photos.id}/similar?run=" + "0" * 24)
    expect(page.get_by_role("alert").first).to_be_visible(timeout=60_000)
    # Duplicates: the run under review and the keeper choice are in the URL.
    page.goto(f"{live_server.url}/datasets/{photos.id}/duplicates")
    expect(page.get_by_text("No duplicate search yet")).to_be_visible(timeout=60_000)  # the page is ready
    page.get_by_role("button", name="Find duplicates").click()
    expect(page.get_by_test_id("dup-group").first).to_be_visible(timeout=60_000)
    expect(page).to_have_url(re.compile(r"\?run=[0-9a-f]{24}$"))
    exact = page.get_by_test_id("dup-group").filter(has_text="exact")
    page.get_by_label("Which sample a group keeps").select_option("largest")
    expect(page).to_have_url(re.compile(r"keep=largest"))
    page.reload()
    expect(page.get_by_label("Which sample a group keeps")).to_have_value("largest", timeout=60_000)
    expect(exact.locator('[data-kept="1"]')).to_have_count(1)
    page.go_back()
    expect(page.get_by_label("Which sample a group keeps")).to_have_value("first", timeout=60_000)
    expect(exact.locator('[data-kept="1"]')).to_contain_text("img_03.png")
    shot(page, "duplicates-from-the-url")
    page.goto(page.url + "&keep=biggest")
    expect(page.get_by_role("alert").filter(has_text="keep=biggest is not a choice")).to_be_visible(timeout=60_000)


def test_find_duplicates_waits_for_the_embeddings_instead_of_reloading_the_page(page, live_server, photos):
    """A click on Find duplicates before the embeddings list arrives used to submit the form natively (a reload)."""
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    held = []
    page.route("**/api/v1/datasets/*/embeddings", lambda route: held.append(route))
    page.goto(f"{live_server.url}/datasets/{photos.id}/duplicates")
    run = page.get_by_role("button", name="Find duplicates")
    page.wait_for_function("() => window.__heldEmbeddings = true")  # the page's script has run
    expect(run).to_be_disabled()
    page.locator("#dup-form").evaluate("(form) => form.requestSubmit()")  # what Enter in the form does
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.__heldEmbeddings") is True, "the form was submitted natively: the page reloaded"
    assert held, "the page did not ask for the embeddings"
    for route in held:
        route.continue_()
    expect(run).to_be_enabled()
    run.click()
    expect(page.get_by_test_id("dup-group").first).to_be_visible()
