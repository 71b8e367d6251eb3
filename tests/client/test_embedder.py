"""The built-in embedder: deterministic float32 vectors in which similar pictures are neighbours."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from winnow.client.embedder import PatchEmbedder, embed_folder, embed_images, load_images

SHAPES = ("disc", "square", "triangle", "stripes")


def shape_image(kind: str, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A shape of random position, size and colours on a random background."""
    background = tuple(int(c) for c in rng.integers(0, 90, size=3))
    colour = tuple(int(c) for c in rng.integers(150, 256, size=3))
    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    r = int(rng.integers(11, 17))
    cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, size=2))
    if kind == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        for y in range(0, size, 6):
            draw.rectangle([0, y, size, y + 2], fill=colour)
    return img


@pytest.fixture(scope="module")
def shapes():
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(len(SHAPES)), 30)
    return [shape_image(SHAPES[k], rng) for k in labels], labels


def test_shape_dtype_and_unit_length(shapes):
    images, _ = shapes
    vectors = embed_images(images, seed=0)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(images), 119)  # PCA keeps at most n - 1 dimensions
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_seed_same_vectors_other_seed_other_vectors(shapes):
    images, _ = shapes
    a = embed_images(images[:40], seed=3)
    b = embed_images(images[:40], seed=3)
    c = embed_images(images[:40], seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_nearest_neighbours_share_the_shape(shapes):
    """The vectors carry visual similarity: a picture's nearest neighbour is almost always the same shape."""
    images, labels = shapes
    vectors = embed_images(images, seed=0)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    agreement = float((labels[nearest] == labels).mean())
    assert agreement >= 0.85, agreement  # chance is 0.25; 0.91 when written


def test_a_fitted_model_embeds_new_images_in_batches(shapes):
    images, labels = shapes
    embedder = PatchEmbedder(seed=0, dim=32, batch_size=7).fit(images[::2])
    first = embedder.transform(images[1::2])
    again = embedder.transform(images[1::2])
    np.testing.assert_array_equal(first, again)
    assert first.shape == (60, 32) and first.dtype == np.float32
    # New images land next to fitted images of their own shape.
    known = embedder.transform(images[::2])
    nearest = (first @ known.T).argmax(axis=1)
    assert (labels[::2][nearest] == labels[1::2]).mean() >= 0.7  # chance is 0.25; 0.82 when written


def test_odd_inputs_grayscale_palette_alpha_tiny_and_identical():
    rng = np.random.default_rng(0)
    images = [
        Image.new("L", (10, 7), 128),
        Image.new("P", (64, 20)),
        Image.new("RGBA", (40, 40), (255, 0, 0, 0)),
        shape_image("disc", rng, size=300),
    ]
    vectors = embed_images(images)
    assert vectors.shape[0] == 4 and np.all(np.isfinite(vectors))
    same = embed_images([Image.new("RGB", (32, 32), (9, 9, 9))] * 3)
    assert np.all(np.isfinite(same))
    with pytest.raises(ValueError, match="at least 2"):
        embed_images([images[0]])


def test_embed_folder_reports_unreadable_files(tmp_path, shapes):
    images, _ = shapes
    (tmp_path / "sub").mkdir()
    for i, img in enumerate(images[:6]):
        img.save(tmp_path / ("sub" if i % 2 else "") / f"img{i}.{'png' if i % 3 else 'jpg'}")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    errors = []
    names, vectors = embed_folder(tmp_path, on_error=lambda path, exc: errors.append(path))
    assert sorted(names) == names and len(names) == 6 and "broken.jpg" not in names
    assert "sub/img1.png" in names
    assert vectors.shape[0] == 6
    assert len(errors) == 1 and errors[0].endswith("broken.jpg")
    with pytest.raises(Exception):
        load_images([tmp_path / "broken.jpg"])


def test_client_imports_no_django():
    code = (
        "import sys, winnow.client, winnow.client.embedder, winnow.client.cli, winnow.client.formats; "
        "assert 'django' not in sys.modules, sorted(m for m in sys.modules if m.startswith('django'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
