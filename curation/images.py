"""Pillow work for uploads: identify and check an image, and make its WebP thumbnail fast.

No Django here. Width and height are recorded as the image is displayed, that is after its EXIF
orientation (a portrait photo stored sideways with orientation 6 is recorded as portrait), because
that is what the thumbnail, the browser and a labeling tool show.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# _check_pixels refuses from 1x MAX_IMAGE_PIXELS, so Pillow's warning between 1x and 2x adds nothing; the
# filter is set once for the process because warnings.catch_warnings() is not thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

THUMBNAIL_SIZE = 256
THUMBNAIL_QUALITY = 80
# libwebp effort 0..6: 2 is close to the default's size at about twice its speed.
THUMBNAIL_METHOD = 2

# Formats we accept, with the extension an original is stored under. Anything else Pillow could
# open (EPS through Ghostscript, PSD, ICO, ...) is refused before a decoder runs.
EXTENSIONS = {
    "JPEG": ".jpg",
    "MPO": ".jpg",  # phone cameras' multi-picture JPEGs
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
}
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
}
SUPPORTED = "JPEG, PNG, WebP, GIF, BMP or TIFF"
# Pillow's openers for those (its JPEG opener also yields MPO).
_OPEN_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]

# EXIF orientation -> the transpose that shows the image upright (None: already upright).
_ORIENTATION = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}
_EXIF_ORIENTATION = 0x0112


class ImageRejected(ValueError):
    """The file is not an image we can keep; the message is the reason shown to the user."""


@dataclass(frozen=True)
class ProcessedImage:
    width: int
    height: int
    format: str  # lower-case Pillow format name: "jpeg", "png", ...
    extension: str  # ".jpg", ".png", ...
    thumbnail: bytes  # WebP, longest side THUMBNAIL_SIZE (never upscaled)


def process_image(data: bytes) -> ProcessedImage:
    """Check `data` is a whole, safe image and make its thumbnail; ImageRejected(reason) if not.

    Decompression bombs (more pixels than `Image.MAX_IMAGE_PIXELS`) are refused from the header,
    before any pixel is decoded; a truncated file fails while the thumbnail is decoded.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # a global someone may flip; we must not keep half images
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    try:
        return _process(data)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"decompression bomb: {_bomb_reason(exc)}") from None
    except UnidentifiedImageError:
        raise ImageRejected(f"not an image, or not a supported format ({SUPPORTED})") from None
    except MemoryError:
        raise ImageRejected("the image needs more memory to decode than this server allows") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... on bad data
        raise ImageRejected(f"corrupt or truncated image: {exc}") from None


def _check_pixels(image: Image.Image) -> None:
    """Refuse more pixels than Image.MAX_IMAGE_PIXELS from the header (Pillow itself only warns up to 2x)."""
    width, height = image.size
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        raise ImageRejected(
            f"decompression bomb: image size ({width * height} pixels) exceeds the limit of "
            f"{Image.MAX_IMAGE_PIXELS} pixels"
        )


def _bomb_reason(exc: Exception) -> str:
    return f"{exc}".split(" could be")[0].rstrip(".") + f" (the limit is {Image.MAX_IMAGE_PIXELS} pixels)"


def _process(data: bytes) -> ProcessedImage:
    with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as probe:
        _check_pixels(probe)
        probe.verify()  # PNG chunk CRCs and structure; cheap, decodes no pixels
    with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as image:
        fmt = image.format
        orientation = _orientation(image)
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageRejected("the image has no pixels")
        # thumbnail() puts JPEG decoding in draft mode (DCT scaling) and reduces by whole factors
        # before resampling, so a large photo is never decoded at full size.
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        thumb = _displayable(image)
        for step in _ORIENTATION.get(orientation, []):
            thumb = thumb.transpose(step)
        buffer = io.BytesIO()
        thumb.save(buffer, "WEBP", quality=THUMBNAIL_QUALITY, method=THUMBNAIL_METHOD)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return ProcessedImage(
        width=width, height=height, format=fmt.lower(), extension=EXTENSIONS[fmt], thumbnail=buffer.getvalue()
    )


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not sink an otherwise good photo
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _displayable(image: Image.Image) -> Image.Image:
    """The image in RGB or RGBA, the modes WebP stores."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # 16-bit and float scans: stretch their actual range onto 0..255.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    has_alpha = "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info)
    return image.convert("RGBA" if has_alpha else "RGB")
