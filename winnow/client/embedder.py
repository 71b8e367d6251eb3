"""The built-in embedder: image vectors that carry visual similarity, learned on the images themselves.

A single-layer network of k-means patch features (Coates, Lee & Ng 2011, "An Analysis of
Single-Layer Networks in Unsupervised Feature Learning"):

1. every image is resized to `image_size` x `image_size` RGB;
2. random `patch_size` x `patch_size` patches are normalised (mean 0, unit contrast) and ZCA-whitened;
3. k-means learns `n_centroids` patch prototypes;
4. every patch of an image (dense, `stride` apart) is encoded by the "triangle" activation
   max(0, mean_k(z) - z_k), z_k its distance to centroid k, and summed over each cell of a
   `grid` x `grid` partition of the image (Coates et al. use 2 x 2; 4 x 4 keeps more layout,
   which k-NN search needs: 0.86 against 0.80 on Fashion-MNIST, see benchmarks/);
5. the pooled features are square-rooted, standardised, reduced by PCA to `dim` and L2-normalised.

No labels, no network, no downloaded weights: numpy and Pillow only. The same seed and
the same images give the same vectors. No Django: this module runs in the client and in the worker.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from winnow.client import pretrained

Progress = Callable[[int], object] | None
# Contrast normalisation and whitening regularisers from Coates et al. (pixel values 0..255).
_CONTRAST_EPS = 10.0
_ZCA_EPS = 0.1


def load_image(path: str | os.PathLike, image_size: int = 32) -> np.ndarray:
    """Decode one image file into a (image_size, image_size, 3) uint8 array, cheaply.

    JPEGs are decoded in draft mode at a reduced scale; EXIF orientation is applied.
    """
    with Image.open(path) as img:
        img.draft("RGB", (image_size * 2, image_size * 2))
        return to_array(img, image_size)


def to_array(img: Image.Image, image_size: int = 32) -> np.ndarray:
    """A PIL image as a (image_size, image_size, 3) uint8 array (whole image, aspect not kept)."""
    img = ImageOps.exif_transpose(img)
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if "A" in img.getbands() or img.mode == "P" else img.convert("RGB")
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img, dtype=np.uint8)


def load_images(
    paths: Sequence[str | os.PathLike],
    image_size: int = 32,
    *,
    workers: int = 4,
    progress: Progress = None,
    on_error: Callable[[str, Exception], object] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Decode many files, in parallel threads, into an (m, image_size, image_size, 3) uint8 array.

    Returns the array and the positions in `paths` it holds. A file that cannot be decoded raises,
    or, when `on_error(path, exc)` is given, is reported there and left out.
    """
    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)

    def one(i: int) -> bool:
        try:
            out[i] = load_image(paths[i], image_size)
        except Exception as exc:  # Pillow raises many types for a bad file
            if on_error is None:
                raise
            on_error(str(paths[i]), exc)
            return False
        return True

    kept: list[int] = []
    # Pillow releases the GIL while decoding, so threads give real parallelism here.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, ok in enumerate(pool.map(one, range(len(paths)))):
            if ok:
                kept.append(i)
            if progress is not None:
                progress(1)
    return out[kept] if len(kept) < len(paths) else out, kept


def _as_array(images, image_size: int) -> np.ndarray:
    if isinstance(images, np.ndarray):
        if images.ndim == 3:  # grayscale stack
            images = np.repeat(images[..., None], 3, axis=3)
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected an (n, h, w, 3) array, got shape {images.shape}")
        if images.shape[1:3] != (image_size, image_size):
            return np.stack([to_array(Image.fromarray(np.asarray(im, dtype=np.uint8)), image_size) for im in images])
        return images
    return (
        np.stack([to_array(img, image_size) for img in images])
        if len(images)
        else np.empty((0, image_size, image_size, 3), dtype=np.uint8)
    )


class PatchEmbedder:
    """k-means patch features (Coates & Ng 2011) with PCA: `fit` on a sample, `transform` any number.

    Images are PIL images or an (n, h, w, 3) uint8 array (see `load_images`).
    """

    def __init__(
        self,
        *,
        image_size: int = 32,
        patch_size: int = 6,
        stride: int = 1,
        n_centroids: int = 128,
        grid: int = 4,
        dim: int = 128,
        max_fit_images: int = 20_000,
        max_fit_patches: int = 50_000,
        kmeans_iterations: int = 10,
        batch_size: int = 64,
        seed: int = 0,
    ):
        if patch_size >= image_size:
            raise ValueError("patch_size must be smaller than image_size")
        self.image_size, self.patch_size, self.stride = image_size, patch_size, stride
        self.n_centroids, self.grid, self.dim, self.seed = n_centroids, grid, dim, seed
        self.max_fit_images, self.max_fit_patches, self.batch_size = max_fit_images, max_fit_patches, batch_size
        self.kmeans_iterations = kmeans_iterations
        self.fitted = False

    # --- fitting ---------------------------------------------------------------------------------

    def fit(self, images, progress: Progress = None) -> PatchEmbedder:
        """Learn whitening, centroids and the PCA from (a seeded sample of) `images`."""
        self._fit(_as_array(images, self.image_size), progress)
        return self

    def fit_transform(self, images, progress: Progress = None) -> np.ndarray:
        """Fit on `images` and return their vectors, float32 (n, dim)."""
        arrays = _as_array(images, self.image_size)
        if len(arrays) <= self.max_fit_images:
            _chosen, pooled = self._fit(arrays, progress)
            return self._finish(pooled)  # the fit already encoded every image
        self._fit(arrays, None)
        return self.transform(arrays, progress)

    def _fit(self, arrays: np.ndarray, progress: Progress):
        n = len(arrays)
        if n < 2:
            raise ValueError("the embedder needs at least 2 images to learn from")
        rng = np.random.default_rng(self.seed)
        chosen = np.sort(rng.choice(n, size=min(n, self.max_fit_images), replace=False))
        fit_images = arrays[chosen]

        patches = self._random_patches(fit_images, rng)
        patches = _normalise(patches)
        self.patch_mean_ = patches.mean(axis=0)
        cov = np.cov(patches - self.patch_mean_, rowvar=False)
        eigvals, eigvecs = np.linalg.eigh(cov)
        self.whiten_ = ((eigvecs / np.sqrt(np.clip(eigvals, 0, None) + _ZCA_EPS)) @ eigvecs.T).astype(np.float32)
        white = ((patches - self.patch_mean_) @ self.whiten_).astype(np.float32)

        self.centroids_ = _kmeans(white, min(self.n_centroids, len(white)), self.kmeans_iterations, rng)
        self.centroid_sq_ = (self.centroids_**2).sum(axis=1)

        pooled = self._pool_all(fit_images, progress)
        self.feature_mean_ = pooled.mean(axis=0)
        self.feature_scale_ = pooled.std(axis=0) + 1e-2
        standard = (pooled - self.feature_mean_) / self.feature_scale_
        dim = min(self.dim, standard.shape[0] - 1, standard.shape[1])
        with warnings.catch_warnings():
            # Images without any variation leave PCA a zero total variance: harmless, the vectors are zero.
            warnings.simplefilter("ignore", RuntimeWarning)
            self.pca_ = _PCA.fit(standard, dim, seed=self.seed)
        self.fitted = True
        return chosen, pooled

    def _random_patches(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, size, p = len(images), self.image_size, self.patch_size
        count = min(self.max_fit_patches, n * (size - p + 1) ** 2)
        which = rng.integers(0, n, count)
        rows = rng.integers(0, size - p + 1, count)
        cols = rng.integers(0, size - p + 1, count)
        offsets = np.arange(p)
        patches = images[
            which[:, None, None],
            rows[:, None, None] + offsets[None, :, None],
            cols[:, None, None] + offsets[None, None, :],
        ]
        return patches.reshape(count, -1).astype(np.float32)

    # --- the fitted model as arrays (the server keeps it beside the embedding to embed a query image) ---

    _STATE = ("patch_mean_", "whiten_", "centroids_", "centroid_sq_", "feature_mean_", "feature_scale_")
    _SETTINGS = ("image_size", "patch_size", "stride", "n_centroids", "grid", "dim", "seed")

    def state(self) -> dict[str, np.ndarray]:
        """The fitted model as plain arrays (for np.savez); `from_state` makes the same embedder again."""
        if not self.fitted:
            raise RuntimeError("fit the embedder before saving it")
        arrays = {name: np.asarray(getattr(self, name)) for name in self._STATE}
        arrays["pca_mean"], arrays["pca_components"] = self.pca_.mean_, self.pca_.components_
        arrays["settings"] = np.array([getattr(self, name) for name in self._SETTINGS], dtype=np.int64)
        return arrays

    @classmethod
    def from_state(cls, arrays) -> PatchEmbedder:
        """The embedder `state()` described, fitted."""
        settings = dict(zip(cls._SETTINGS, (int(v) for v in arrays["settings"]), strict=True))
        model = cls(**settings)
        for name in cls._STATE:
            setattr(model, name, np.asarray(arrays[name]))
        model.pca_ = _PCA(np.asarray(arrays["pca_mean"]), np.asarray(arrays["pca_components"]))
        model.fitted = True
        return model

    # --- encoding --------------------------------------------------------------------------------

    def transform(self, images, progress: Progress = None) -> np.ndarray:
        """Vectors of `images` with the fitted model: float32 (n, dim), each of unit length."""
        if not self.fitted:
            raise RuntimeError("fit the embedder before transform")
        arrays = _as_array(images, self.image_size)
        out = np.empty((len(arrays), self.pca_.n_components_), dtype=np.float32)
        # Reduced batch by batch: the pooled features are 16x wider than the vectors.
        for start in range(0, len(arrays), self.batch_size):
            batch = arrays[start : start + self.batch_size]
            out[start : start + len(batch)] = self._finish(self._pool(batch))
            if progress is not None:
                progress(len(batch))
        return out

    def _finish(self, pooled: np.ndarray) -> np.ndarray:
        reduced = self.pca_.transform((pooled - self.feature_mean_) / self.feature_scale_)
        norms = np.linalg.norm(reduced, axis=1, keepdims=True)
        return (reduced / np.maximum(norms, 1e-12)).astype(np.float32)

    def _pool_all(self, arrays: np.ndarray, progress: Progress) -> np.ndarray:
        out = np.empty((len(arrays), self.grid**2 * len(self.centroids_)), dtype=np.float32)
        for start in range(0, len(arrays), self.batch_size):
            batch = arrays[start : start + self.batch_size]
            out[start : start + len(batch)] = self._pool(batch)
            if progress is not None:
                progress(len(batch))
        return out

    def _pool(self, batch: np.ndarray) -> np.ndarray:
        p, s = self.patch_size, self.stride
        windows = np.lib.stride_tricks.sliding_window_view(batch, (p, p), axis=(1, 2))[:, ::s, ::s]
        b, h, w = windows.shape[:3]
        # (b, h, w, C, p, p) -> (b, h, w, p, p, C): the same pixel order as the random patches.
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(b * h * w, -1).astype(np.float32)
        white = (_normalise(patches) - self.patch_mean_) @ self.whiten_
        sq = (white**2).sum(axis=1, keepdims=True) + self.centroid_sq_[None, :] - 2.0 * (white @ self.centroids_.T)
        z = np.sqrt(np.maximum(sq, 0.0))
        act = np.maximum(z.mean(axis=1, keepdims=True) - z, 0.0).reshape(b, h, w, -1)
        rows = np.linspace(0, h, self.grid + 1).astype(int)
        cols = np.linspace(0, w, self.grid + 1).astype(int)
        cells = [
            act[:, rows[i] : rows[i + 1], cols[j] : cols[j + 1]].sum(axis=(1, 2))
            for i in range(self.grid)
            for j in range(self.grid)
        ]
        # The square root tames the few very active centroids (power normalisation).
        return np.sqrt(np.concatenate(cells, axis=1))


def _kmeans(points: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Plain Lloyd k-means from k random points; an emptied cluster restarts at a random point."""
    centroids = points[rng.choice(len(points), size=k, replace=False)].copy()
    for _ in range(iterations):
        nearest = ((centroids**2).sum(axis=1)[None, :] - 2.0 * (points @ centroids.T)).argmin(axis=1)
        counts = np.bincount(nearest, minlength=k)
        # Each cluster's points summed in point order (a row-wise reduction: float32, one row at a time).
        order = np.argsort(nearest, kind="stable")
        grouped, bounds = points[order], np.concatenate(([0], np.cumsum(counts)))
        sums = np.stack([grouped[bounds[c] : bounds[c + 1]].sum(axis=0) for c in range(k)])
        restart = points[rng.choice(len(points), size=k)]
        centroids = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], restart).astype(np.float32)
    return centroids


class _PCA:
    """PCA by randomized SVD (Halko, Martinsson & Tropp 2011), as scikit-learn's PCA(svd_solver="randomized").

    numpy only, so the client installs without scikit-learn and scipy. Same random sketch, oversampling,
    power iterations and sign convention as scikit-learn 1.x; the power iterations are orthonormalised
    by QR instead of LU (the same subspace), so the components agree up to float rounding.
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray):
        self.mean_, self.components_ = mean, components
        self.n_components_ = len(components)

    @classmethod
    def fit(cls, data: np.ndarray, n_components: int, *, seed: int, n_oversamples: int = 10) -> _PCA:
        mean = data.mean(axis=0)
        centred = data - mean
        n_samples, n_features = centred.shape
        n_random = n_components + n_oversamples
        n_iter = 7 if n_components < 0.1 * min(n_samples, n_features) else 4
        transpose = n_samples < n_features
        m = centred.T if transpose else centred
        sketch = np.random.RandomState(seed).normal(size=(m.shape[1], n_random)).astype(m.dtype, copy=False)
        for _ in range(n_iter):  # power iterations sharpen the sketch towards the top singular vectors
            sketch, _r = np.linalg.qr(m @ sketch)
            sketch, _r = np.linalg.qr(m.T @ sketch)
        basis, _r = np.linalg.qr(m @ sketch)
        u_small, _s, vt = np.linalg.svd(basis.T @ m, full_matrices=False)
        u = basis @ u_small
        u, vt = (vt.T, u.T) if transpose else (u, vt)
        vt = vt[:n_components]
        # Signs as scikit-learn: each component's largest-magnitude coordinate is positive.
        signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
        return cls(mean, vt * signs[:, None])

    def transform(self, data: np.ndarray) -> np.ndarray:
        return (data - self.mean_) @ self.components_.T


def _normalise(patches: np.ndarray) -> np.ndarray:
    """Per-patch brightness and contrast normalisation."""
    centred = patches - patches.mean(axis=1, keepdims=True)
    return centred / np.sqrt(centred.var(axis=1, keepdims=True) + _CONTRAST_EPS)


def embed_images(
    images: Sequence[Image.Image] | np.ndarray,
    *,
    seed: int = 0,
    progress: Progress = None,
    model: str = pretrained.BUILTIN,
    fitted: list | None = None,
    **options,
) -> np.ndarray:
    """Embed images with a model fitted on these same images: float32 (n, d), rows of unit length.

    `options` go to PatchEmbedder (e.g. `dim`, `n_centroids`). `progress(k)` is called as images
    are encoded (a tqdm bar's `update` fits). `model` "efficientnet-lite0" uses the pretrained model
    instead (nothing fitted; `options` do not apply). The embedder used is appended to `fitted` when given.
    """
    pretrained.check_model(model)
    embedder = PatchEmbedder(seed=seed, **options) if model == pretrained.BUILTIN else pretrained.PretrainedEmbedder()
    if fitted is not None:
        fitted.append(embedder)
    return embedder.fit_transform(images, progress)


def embed_folder(
    input_dir: str | os.PathLike,
    file_names: Sequence[str] | None = None,
    *,
    seed: int = 0,
    workers: int = 4,
    progress: Progress = None,
    on_error: Callable[[str, Exception], object] | None = None,
    model: str = pretrained.BUILTIN,
    **options,
) -> tuple[list[str], np.ndarray]:
    """Embed the images of a folder (every image under it, or `file_names` relative to it).

    Each file is decoded once, in parallel, to a small array; a model is fitted on them and encodes
    them. Returns (file names embedded, float32 (n, d) vectors); unreadable files go to `on_error`
    (or raise when it is None). `progress(k)` counts decoding, then encoding: 2 per image. `model` is "builtin"
    (fitted on these images) or "efficientnet-lite0" (pretrained, needs the `model` extra).
    """
    from winnow.client.formats import find_images

    root = Path(input_dir)
    names = list(file_names) if file_names is not None else find_images(root)
    pretrained.check_model(model)
    embedder = PatchEmbedder(seed=seed, **options) if model == pretrained.BUILTIN else pretrained.PretrainedEmbedder()
    arrays, kept = load_images(
        [root / name for name in names], embedder.image_size, workers=workers, progress=progress, on_error=on_error
    )
    kept_names = [names[i] for i in kept]
    if len(kept_names) < 2:
        raise ValueError(f"the embedder needs at least 2 readable images; found {len(kept_names)}")
    return kept_names, embedder.fit_transform(arrays, progress)
