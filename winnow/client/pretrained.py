"""The pretrained embedder: EfficientNet-Lite0 (ImageNet weights) on ONNX Runtime, offline.

`pip install winnow[model]` adds onnxruntime; the ONNX file ships inside this package (models/, with its licence
notice in models/NOTICE.txt; scripts/export_efficientnet_lite0.py made it). Images are resized to IMAGE_SIZE
square, the network's 1280 pooled features are L2-normalised. Nothing is fitted: the same image always gives the
same vector, on the client and on the server. No Django here.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

NAME = "efficientnet-lite0"
BUILTIN = "builtin"
MODELS = (BUILTIN, NAME)
IMAGE_SIZE = 112  # about as fast as the built-in embedder on 2 cores; 224 is 4x the arithmetic
DIMENSION = 1280
MODEL_FILE = Path(__file__).resolve().parent / "models" / "efficientnet_lite0.onnx"
_BATCH = 32


def available() -> bool:
    """True when onnxruntime is installed (the `model` extra) and the ONNX file is in the package."""
    return importlib.util.find_spec("onnxruntime") is not None and MODEL_FILE.exists()


def default_model() -> str:
    """The model an embedding uses when none is asked for: the pretrained one when installed."""
    return NAME if available() else BUILTIN


def check_model(name: str) -> str:
    """`name` if it can run here, else a ValueError saying what to install."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: one of {', '.join(MODELS)}")
    if name == NAME and not available():
        raise ValueError(f"the {NAME} model needs onnxruntime: pip install 'winnow[model]'")
    return name


class PretrainedEmbedder:
    """EfficientNet-Lite0 features; `transform` takes an (n, IMAGE_SIZE, IMAGE_SIZE, 3) uint8 array."""

    image_size = IMAGE_SIZE
    dim = DIMENSION

    def __init__(self, threads: int | None = None):
        import onnxruntime  # the `model` extra: imported only when the model is used

        options = onnxruntime.SessionOptions()
        threads = threads or int(os.environ.get("WINNOW_MODEL_THREADS", "0") or 0)
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(MODEL_FILE), options, providers=["CPUExecutionProvider"])

    def transform(self, arrays: np.ndarray, progress=None) -> np.ndarray:
        arrays = np.asarray(arrays)
        if arrays.ndim != 4 or arrays.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"expected (n, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) images, got {arrays.shape}")
        out = np.empty((len(arrays), DIMENSION), dtype=np.float32)
        for start in range(0, len(arrays), _BATCH):
            batch = arrays[start : start + _BATCH].astype(np.float32)
            (features,) = self.session.run(["features"], {"images": batch})
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            out[start : start + len(batch)] = features / np.maximum(norms, 1e-12)
            if progress is not None:
                progress(len(batch))
        return out

    def fit_transform(self, arrays: np.ndarray, progress=None) -> np.ndarray:
        """Nothing to fit: the same as transform (so it stands in for the built-in embedder)."""
        return self.transform(arrays, progress)
