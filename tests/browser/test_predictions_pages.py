"""Predictions on screen: boxes over the image where bbox says; an uncertainty run from the Sampling page."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from playwright.sync_api import expect

from curation.models import Sample
from curation.services import create_dataset
from tests.browser.conftest import sign_in
from tests.browser.data import Api
from winnow.accounts.models import ApiToken

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
CATS = [{"id": 0, "name": "car"}, {"id": 1, "name": "person"}]


def _png(w: int, h: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (w, h), (90, 120, 160)).save(buffer, "PNG")
    return buffer.getvalue()


def test_detection_boxes_are_drawn_where_the_bbox_says(page, live_server, shot, owner):
    ds = create_dataset(owner, "streets", "full")
    _token, key = ApiToken.issue(owner, "cli")
    api = Api(live_server.url, key)
    api.call("POST", f"/datasets/{ds.id}/samples", files=[("files", ("road.png", _png(400, 200), "image/png"))],
             data={"embed": "false"})  # fmt: skip
    boxes = [[40, 20, 100, 50], [300, 100, 80, 90]]
    doc = {
        "schema": {"task_type": "object-detection", "categories": CATS},
        "predictions": [{"file_name": "road.png", "predictions": [
            {"category_id": 0, "score": 0.9, "bbox": boxes[0]}, {"category_id": 1, "score": 0.4, "bbox": boxes[1]}]}],
    }  # fmt: skip
    api.call("PUT", f"/datasets/{ds.id}/predictions/det", data=json.dumps(doc),
             headers={"Content-Type": "application/json"})  # fmt: skip
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{ds.id}/explore")
    page.get_by_role("button", name="View road.png").click()
    view = page.get_by_test_id("sample-view")
    page.wait_for_function(
        "() => document.querySelector('dialog img') && document.querySelector('dialog img').naturalWidth > 0"
    )
    expect(view.get_by_test_id("prediction-box")).to_have_count(2)
    expect(view.get_by_test_id("sample-predictions")).to_contain_text("car 0.90")
    image = view.locator(".imgbox img").bounding_box()
    scale = image["width"] / 400
    assert image["height"] / 200 == pytest.approx(scale, rel=0.02)
    for rect, (x, y, w, h) in zip(view.get_by_test_id("prediction-box").all(), boxes, strict=True):
        got = rect.bounding_box()
        assert got["x"] - image["x"] == pytest.approx(x * scale, abs=2.5)
        assert got["y"] - image["y"] == pytest.approx(y * scale, abs=2.5)
        assert got["width"] == pytest.approx(w * scale, abs=3.5)
        assert got["height"] == pytest.approx(h * scale, abs=3.5)
    shot(page, "sample-view-prediction-boxes")
    view.get_by_label("det (predictions)").uncheck()
    expect(view.get_by_test_id("prediction-layer")).to_be_hidden()


def test_an_uncertainty_run_from_the_sampling_page(page, live_server, owner):
    ds = create_dataset(owner, "pool", "meta")
    _token, key = ApiToken.issue(owner, "cli")
    api = Api(live_server.url, key)
    api.call("POST", f"/datasets/{ds.id}/samples", json={"samples": [{"file_name": f"s{i}.jpg"} for i in range(5)]})
    top = [0.9, 0.55, 0.7, 0.51, 0.8]
    records = [{"file_name": f"s{i}.jpg", "predictions": [{"category_id": 0, "score": p, "probabilities": [p, 1 - p]}]}
               for i, p in enumerate(top)]  # fmt: skip
    doc = {"schema": {"task_type": "classification", "categories": CATS}, "predictions": records}
    api.call(
        "PUT", f"/datasets/{ds.id}/predictions/clf", data=json.dumps(doc), headers={"Content-Type": "application/json"}
    )
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{ds.id}/sampling")
    page.get_by_label("Strategy").select_option("uncertainty")
    expect(page.get_by_label("Prediction task")).to_have_value("clf")
    page.get_by_label("Uncertainty score").select_option("uncertainty_margin")
    page.get_by_label("Samples to score (the slider's maximum)").fill("2")
    page.get_by_role("button", name="Process").click()
    expect(page.get_by_test_id("run-status").last).to_have_text("succeeded", timeout=30_000)
    from sampling.models import ImportanceScore

    top2 = (
        ImportanceScore.objects.filter(run__dataset=ds).order_by("rank").values_list("sample__file_name", flat=True)[:2]
    )
    assert list(top2) == ["s3.jpg", "s1.jpg"]
    assert Sample.objects.filter(dataset=ds).count() == 5


def test_explore_tiles_show_each_tasks_class_and_confidence(page, live_server, owner):
    ds = create_dataset(owner, "tiles", "meta")
    _token, key = ApiToken.issue(owner, "cli")
    api = Api(live_server.url, key)
    api.call("POST", f"/datasets/{ds.id}/samples", json={"samples": [{"file_name": f"s{i}.jpg"} for i in range(3)]})
    probabilities = [[0.9, 0.1], [0.3, 0.7], [0.55, 0.45]]
    records = [{"file_name": f"s{i}.jpg", "predictions": [{"category_id": int(p[1] > p[0]), "score": max(p), "probabilities": p}]}
               for i, p in enumerate(probabilities)]  # fmt: skip
    doc = {"schema": {"task_type": "classification", "categories": CATS}, "predictions": records}
    api.call(
        "PUT", f"/datasets/{ds.id}/predictions/clf", data=json.dumps(doc), headers={"Content-Type": "application/json"}
    )
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{ds.id}/explore")
    badges = page.get_by_test_id("tile-badge")
    expect(badges).to_have_count(3)
    expect(badges.nth(0)).to_contain_text("clf: car 0.90")
    expect(badges.nth(1)).to_contain_text("clf: person 0.70")
    expect(badges.nth(2)).to_contain_text("clf: car 0.55")


def test_explore_tiles_draw_detection_boxes_scaled_to_the_thumbnail(page, live_server, shot, owner):
    ds = create_dataset(owner, "street tiles", "full")
    _token, key = ApiToken.issue(owner, "cli")
    api = Api(live_server.url, key)
    api.call("POST", f"/datasets/{ds.id}/samples", data={"embed": "false"},
             files=[("files", ("wide.png", _png(300, 200), "image/png")), ("files", ("empty.png", _png(120, 160), "image/png"))])  # fmt: skip
    # Inside the part a square tile shows of a 300 x 200 picture (it is cropped to x 50..250).
    boxes = [[60, 20, 100, 50], [150, 100, 80, 90]]
    doc = {
        "schema": {"task_type": "object-detection", "categories": CATS},
        "predictions": [
            {"file_name": "wide.png", "predictions": [
                {"category_id": 0, "score": 0.9, "bbox": boxes[0]}, {"category_id": 1, "score": 0.4, "bbox": boxes[1]}]},
            {"file_name": "empty.png", "predictions": []},
        ],
    }  # fmt: skip
    api.call("PUT", f"/datasets/{ds.id}/predictions/det", data=json.dumps(doc),
             headers={"Content-Type": "application/json"})  # fmt: skip
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{ds.id}/explore")
    tile = page.get_by_test_id("tile").filter(has=page.get_by_role("button", name="Select wide.png"))
    expect(tile.get_by_test_id("prediction-box")).to_have_count(2)
    expect(page.get_by_test_id("tile").filter(has=page.get_by_role("button", name="Select empty.png"))
           .get_by_test_id("prediction-layer")).to_have_count(0)  # fmt: skip
    page.wait_for_function("() => [...document.querySelectorAll('.tile img')].every((i) => i.naturalWidth > 0)")
    image = tile.locator("img").bounding_box()
    # The thumbnail fills the square tile as object-fit: cover does: scaled to cover it, centred, the rest cropped.
    scale = max(image["width"] / 300, image["height"] / 200)
    left = image["x"] + (image["width"] - 300 * scale) / 2
    top = image["y"] + (image["height"] - 200 * scale) / 2
    for rect, (x, y, w, h) in zip(tile.get_by_test_id("prediction-box").all(), boxes, strict=True):
        got = rect.bounding_box()
        assert got["x"] == pytest.approx(left + x * scale, abs=2.5)
        assert got["y"] == pytest.approx(top + y * scale, abs=2.5)
        assert got["width"] == pytest.approx(w * scale, abs=3.5)
        assert got["height"] == pytest.approx(h * scale, abs=3.5)
    assert tile.get_by_test_id("prediction-box").first.get_attribute("data-category") == "car"
    shot(page, "explore-tile-prediction-boxes")
    toggles = page.get_by_test_id("box-tasks")
    toggles.get_by_label("det").uncheck()
    expect(tile.get_by_test_id("prediction-layer")).to_be_hidden()
    toggles.get_by_label("det").check()
    expect(tile.get_by_test_id("prediction-layer")).to_be_visible()


def test_boxes_on_tiles_are_in_the_url_back_forward_and_a_saved_view(page, live_server, shot, owner):
    import re

    from curation.models import SavedView

    ds = create_dataset(owner, "box views", "full")
    _token, key = ApiToken.issue(owner, "cli")
    api = Api(live_server.url, key)
    api.call("POST", f"/datasets/{ds.id}/samples", data={"embed": "false"},
             files=[("files", ("wide.png", _png(300, 200), "image/png"))])  # fmt: skip
    doc = {
        "schema": {"task_type": "object-detection", "categories": CATS},
        "predictions": [{"file_name": "wide.png", "predictions": [{"category_id": 0, "score": 0.9, "bbox": [60, 20, 100, 50]}]}],
    }  # fmt: skip
    api.call("PUT", f"/datasets/{ds.id}/predictions/det", data=json.dumps(doc),
             headers={"Content-Type": "application/json"})  # fmt: skip
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    explore = f"{live_server.url}/datasets/{ds.id}/explore"
    page.goto(explore)
    layer = page.get_by_test_id("tile").get_by_test_id("prediction-layer")
    toggle = page.get_by_test_id("box-tasks").get_by_label("det")
    expect(layer).to_be_visible()
    # Switching a task's boxes off is part of the view: in the URL, kept by a reload, walked by back and forward.
    toggle.uncheck()
    expect(layer).to_be_hidden()
    expect(page).to_have_url(re.compile(r"hide_boxes=det"))
    page.reload()
    expect(page.get_by_test_id("tile")).to_have_count(1)
    expect(layer).to_be_hidden()
    expect(toggle).not_to_be_checked()
    page.go_back()
    expect(page).not_to_have_url(re.compile("hide_boxes"))
    expect(layer).to_be_visible()
    expect(toggle).to_be_checked()
    page.go_forward()
    expect(layer).to_be_hidden()
    expect(toggle).not_to_be_checked()
    # A saved view keeps it; opening the view hides the boxes again.
    page.get_by_label("View name").fill("no boxes")
    page.get_by_role("button", name="Save current view").click()
    expect(page.get_by_test_id("view-select").locator("option", has_text="no boxes")).to_have_count(1)
    assert SavedView.objects.get(dataset=ds, name="no boxes").hidden_boxes == ["det"]
    toggle.check()
    expect(layer).to_be_visible()
    page.get_by_test_id("view-select").select_option(label="no boxes")
    expect(toggle).not_to_be_checked()
    expect(layer).to_be_hidden()
    expect(page).to_have_url(re.compile(r"hide_boxes=det"))
    shot(page, "explore-view-without-boxes")
    # A link that hides the boxes of a task the dataset does not have says so.
    page.goto(explore + "?hide_boxes=ghost")
    expect(page.get_by_role("alert").filter(has_text="“ghost”, which is not an object-detection task")).to_be_visible()
    expect(layer).to_be_visible()
    expect(page).not_to_have_url(re.compile("hide_boxes"))
