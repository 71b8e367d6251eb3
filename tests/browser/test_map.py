"""The embedding map: 120,000 points drawn with WebGL, a lasso that selects exactly one cluster, and one past
100,000 points (the selection travels as a bitmask)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from curation import embeddings as emb_service
from curation import storage
from curation.models import Embedding, Tag
from curation.services import add_samples, create_dataset
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

N = 120_000
BACKGROUND = (15, 20, 32)  # the map's clear colour, rgb(0.06, 0.08, 0.125)


def _map_dataset(owner):
    """120,000 samples; idx % 50 == 7 sit in a tight cluster at (10, 10), the rest in three blobs far away."""
    dataset = create_dataset(owner, "map of 120k", "meta")
    add_samples(dataset, [{"file_name": f"frame_{i:06d}.jpg"} for i in range(N)])
    rng = np.random.default_rng(3)
    layout = np.empty((N, 2), dtype=np.float32)
    target = np.arange(N) % 50 == 7
    layout[target] = rng.normal([10, 10], 0.5, size=(target.sum(), 2))
    centers = np.array([[-8, -8], [-8, 4], [4, -8]])
    rest = np.flatnonzero(~target)
    layout[rest] = centers[rest % 3] + rng.normal(0, 1.5, size=(rest.size, 2))
    embedding = Embedding.objects.create(
        dataset=dataset,
        name="pixels-pca",
        dimension=2,
        count=N,
        matrix_key="x",
        projection_status=emb_service.Status.READY,
    )
    embedding.matrix_key = emb_service.matrix_key(dataset.id, embedding.id)
    storage.save_matrix(embedding.matrix_key, layout)
    embedding.projection_key = storage.save_matrix(emb_service.layout_key(embedding, "pca"), layout)
    embedding.save(update_fields=["matrix_key", "projection_key"])
    return dataset, np.flatnonzero(target)


def _drawn_pixels(canvas) -> int:
    image = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
    return int((np.abs(image - np.array(BACKGROUND)).sum(axis=2) > 30).sum())


def test_map_draws_120k_points_and_the_lasso_selects_one_cluster(page, live_server, shot, owner):
    dataset, target = _map_dataset(owner)
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/map")
    expect(page.get_by_test_id("map-status")).to_contain_text("120,000 points", timeout=60_000)
    state = page.evaluate("() => ({renderer: winnowMap.renderer, points: winnowMap.points})")
    assert state == {"renderer": "webgl", "points": N}
    page.wait_for_function("() => winnowMap.frames > 0")
    canvas = page.get_by_test_id("map-canvas")
    assert _drawn_pixels(canvas) > 20_000, "the map canvas shows (almost) nothing but background"
    shot(page, "map-120k")

    # Hover over the cluster shows a sample's card with its file name.
    box = canvas.bounding_box()
    cx, cy = page.evaluate("() => winnowMap.toScreen(10, 10)")
    page.mouse.move(box["x"] + cx, box["y"] + cy)
    expect(page.get_by_test_id("map-hover")).to_contain_text("frame_")

    # Lasso around the cluster at (10, 10): a circle of radius 3 in data units.
    page.get_by_role("button", name="Lasso").click()
    ring = [
        page.evaluate(f"() => winnowMap.toScreen({10 + 3 * np.cos(t)}, {10 + 3 * np.sin(t)})")
        for t in np.linspace(0, 2 * np.pi, 24)
    ]
    page.mouse.move(box["x"] + ring[0][0], box["y"] + ring[0][1])
    page.mouse.down()
    for x, y in ring[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y)
    page.mouse.up()
    expect(page.get_by_test_id("lasso-count")).to_have_text(f"{target.size:,}")
    assert page.evaluate("() => winnowMap.selectedIdx") == target.tolist()
    expect(page.locator("#selgrid [data-testid=tile]").first).to_be_visible()
    shot(page, "map-lasso")

    page.get_by_label("Save as tag").fill("far cluster")
    page.get_by_role("button", name="Save selection as tag").click()
    expect(page.get_by_text(f"Tag “far cluster” saved with {target.size:,} samples")).to_be_visible()
    assert Tag.objects.get(dataset=dataset, name="far cluster").indices().tolist() == target.tolist()

    # Colour by the new tag: the legend names it.
    page.get_by_label("Colour by").select_option(label="tag: far cluster")
    expect(page.locator("#legend")).to_contain_text("far cluster")

    # A lasso around everything: 120,000 points, past the 100,000 an idx list could carry.
    # The view fits every point: a lasso along the canvas's edges holds them all.
    w, h = box["width"], box["height"]
    ring = [
        (2, 2),
        (w / 2, 1),
        (w - 2, 2),
        (w - 1, h / 2),
        (w - 2, h - 2),
        (w / 2, h - 1),
        (2, h - 2),
        (1, h / 2),
        (2, 3),
    ]
    page.mouse.move(box["x"] + ring[0][0], box["y"] + ring[0][1])
    page.mouse.down()
    for x, y in ring[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y)
    page.mouse.up()
    expect(page.get_by_test_id("lasso-count")).to_have_text(f"{N:,}")
    page.get_by_label("Save as tag").fill("everything")
    page.get_by_role("button", name="Save selection as tag").click()
    expect(page.get_by_text(f"Tag “everything” saved with {N:,} samples")).to_be_visible(timeout=30_000)
    assert Tag.objects.get(dataset=dataset, name="everything").count == N


def test_map_falls_back_to_a_2d_canvas(page, live_server, shot, owner):
    dataset = create_dataset(owner, "small map", "meta")
    add_samples(dataset, [{"file_name": f"s{i}.jpg"} for i in range(500)])
    layout = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
    embedding = Embedding.objects.create(
        dataset=dataset, name="e", dimension=2, count=500, matrix_key="x", projection_status=emb_service.Status.READY
    )
    embedding.matrix_key = emb_service.matrix_key(dataset.id, embedding.id)
    storage.save_matrix(embedding.matrix_key, layout)
    embedding.projection_key = storage.save_matrix(emb_service.layout_key(embedding, "pca"), layout)
    embedding.save(update_fields=["matrix_key", "projection_key"])
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/map?renderer=2d")
    expect(page.get_by_test_id("map-status")).to_contain_text("500 points")
    assert page.evaluate("() => winnowMap.renderer") == "2d"
    page.wait_for_function("() => winnowMap.frames > 0")
    assert _drawn_pixels(page.get_by_test_id("map-canvas")) > 500
    shot(page, "map-2d-fallback")


def test_map_without_embeddings_says_how_to_add_one(page, live_server, shot, dataset):
    sign_in(page, live_server.url, "olivia", "pw-olivia-123")
    page.goto(f"{live_server.url}/datasets/{dataset.id}/map")
    expect(page.get_by_text("No embeddings yet")).to_be_visible()
    expect(page.get_by_text(f"winnow magic --dataset-id {dataset.id}").first).to_be_visible()
    shot(page, "map-empty")
