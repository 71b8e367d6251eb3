"""What an upload mode means, as Dataset properties (curation.models.PIXEL_KINDS): no database needed."""

from __future__ import annotations

import pytest

from curation.models import Dataset, UploadMode
from winnow.lightly.samples import pixel_kind


@pytest.mark.parametrize(
    ("mode", "kind", "has_pixels", "stores_originals", "wire_kind"),
    [
        (UploadMode.FULL, "image", True, True, "full"),
        (UploadMode.THUMBNAILS, "thumbnail", True, False, "thumbnail"),
        (UploadMode.META, None, False, False, None),
    ],
)
def test_each_upload_mode_says_which_pixels_it_keeps(mode, kind, has_pixels, stores_originals, wire_kind):
    dataset = Dataset(upload_mode=mode)
    assert dataset.pixel_kind == kind
    assert dataset.has_pixels is has_pixels
    assert dataset.stores_originals is stores_originals
    assert pixel_kind(dataset) == wire_kind  # the /v1/ adapter's word for the same file


def test_every_upload_mode_has_a_meaning():
    for mode in UploadMode.values:
        Dataset(upload_mode=mode).pixel_kind  # noqa: B018  (raises KeyError for a mode PIXEL_KINDS forgot)
