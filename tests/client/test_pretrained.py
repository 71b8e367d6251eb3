"""The pretrained embedder (winnow[model]): the ONNX file in the package against PyTorch's output for a known image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from winnow.client import embedder, pretrained
from winnow.client.cli import main

pytest.importorskip("onnxruntime")  # the `model` extra; the test extra installs it, so CI runs this
DATA = Path(__file__).resolve().parent / "data"


def test_model_loads_from_the_package_and_embeds_a_known_image_like_pytorch():
    # china_112.png: scikit-learn's sample photo at 112 px; the reference is the PyTorch model's pooled features
    # (float32 weights) from scripts/export_efficientnet_lite0.py, L2-normalised.
    assert pretrained.available() and pretrained.MODEL_FILE.parent.name == "models"
    image = np.asarray(Image.open(DATA / "china_112.png").convert("RGB"))
    reference = np.load(DATA / "china_112_efficientnet_lite0.npy")
    vector = pretrained.PretrainedEmbedder().transform(image[None])[0]
    assert vector.shape == (pretrained.DIMENSION,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert float(vector @ reference) > 0.999  # float16 weights cost almost nothing
    np.testing.assert_allclose(vector, reference, atol=3e-3)
    other = np.asarray(Image.open(DATA / "china_112.png").convert("RGB").transpose(Image.Transpose.FLIP_TOP_BOTTOM))
    assert float(pretrained.PretrainedEmbedder().transform(other[None])[0] @ reference) < 0.99


def test_it_is_the_default_when_installed_and_the_built_in_stays_available(tmp_path, capsys):
    assert pretrained.default_model() == pretrained.NAME
    folder = tmp_path / "photos"
    folder.mkdir()
    source = Image.open(DATA / "china_112.png")
    for i in range(3):
        source.rotate(90 * i).save(folder / f"img_{i}.png")
    for model, dim in ((None, pretrained.DIMENSION), ("builtin", None)):
        out = tmp_path / f"{model}.csv"
        args = ["embed", "--input-dir", str(folder), "--output", str(out), "--quiet"]
        assert main(args + (["--model", model] if model else [])) == 0
        printed = capsys.readouterr().out
        assert f"model {model or pretrained.NAME}" in printed
        if dim:
            assert f"({dim} dimensions" in printed
    with pytest.raises(ValueError, match="unknown model"):
        pretrained.check_model("resnet")
    names, vectors = embedder.embed_folder(folder, model=pretrained.NAME)
    assert vectors.shape == (3, pretrained.DIMENSION)
