"""REST API: a sample's pixels, behind the dataset's permissions.

    GET /datasets/<id>/samples/<sample_id>/thumbnail   WebP, longest side 256 (full and thumbnails modes)
    GET /datasets/<id>/samples/<sample_id>/image       the original as uploaded (full mode only)

Any member may read. Local storage streams the file; S3 answers 302 to a presigned URL that
expires (settings WINNOW_URL_EXPIRE_SECONDS). Session login works as well as a token, so a page's
<img> tags load these URLs directly.

    GET .../thumbnail/signed?user=&expires=&signature=   the same, through a signed expiring link
    GET .../image/signed?user=&expires=&signature=       (tag exports; no token needed)
"""

from __future__ import annotations

import posixpath

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.views import APIView

from curation import signing
from curation.access import get_dataset
from curation.images import CONTENT_TYPES
from curation.models import Sample

# Pixels change only when a file is re-uploaded with overwrite; a short private cache keeps grids fast.
CACHE_CONTROL = "private, max-age=300"


class AnyAcceptNegotiation(BaseContentNegotiation):
    """Binary views answer with their own content type whatever the client accepts (an <img> tag
    sends `image/webp,...`); errors still render as JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def uses_s3() -> bool:
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # django-storages without boto3: local storage only
        return False
    return isinstance(default_storage, S3Storage)


def serve_key(key: str, content_type: str, *, download_name: str | None = None, cache: str = CACHE_CONTROL):
    """A response for one stored object: the file itself (local) or a redirect to a presigned URL (S3)."""
    if uses_s3():
        response = HttpResponseRedirect(default_storage.url(key))
        # The presigned URL expires: never cache the redirect for longer than a short while.
        response["Cache-Control"] = "private, max-age=60"
        return response
    try:
        handle = default_storage.open(key, "rb")
    except FileNotFoundError:
        raise Http404("The file is missing from storage.") from None
    response = FileResponse(handle, content_type=content_type, filename=download_name)
    response["Cache-Control"] = cache
    return response


def sample_file(dataset, sample_id: str, kind: str):
    """The response for a sample's `kind` file ("thumbnail" or "image"); 404 naming why there is none."""
    sample = (
        Sample.objects.filter(dataset=dataset, pk=sample_id)
        .only("id", "file_name", "original_key", "thumbnail_key")
        .first()
    )
    if sample is None:
        raise Http404("No sample with that id in this dataset.")
    if not dataset.has_pixels:
        raise Http404("This dataset keeps no pixels (upload_mode meta): it has no thumbnails or images.")
    if kind == "thumbnail":
        if not sample.thumbnail_key:
            raise Http404("This sample has no thumbnail.")
        return serve_key(sample.thumbnail_key, "image/webp")
    if not dataset.stores_originals:
        raise Http404("This dataset keeps only thumbnails (upload_mode thumbnails): GET .../thumbnail instead.")
    if not sample.original_key:
        raise Http404("This sample has no stored image.")
    extension = posixpath.splitext(sample.original_key)[1]
    return serve_key(
        sample.original_key,
        CONTENT_TYPES.get(extension, "application/octet-stream"),
        download_name=posixpath.basename(sample.file_name),
    )


FILE_RESPONSES = {
    (200, "image/*"): OpenApiResponse(OpenApiTypes.BINARY, description="The file (local storage)"),
    302: OpenApiResponse(description="Redirect to a presigned URL (S3 storage)"),
    404: OpenApiResponse(description="No such sample, or the dataset keeps no such file"),
}


class SampleFileView(APIView):
    kind = "thumbnail"
    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(responses=FILE_RESPONSES, summary="A sample's thumbnail or original image")
    def get(self, request, dataset_id: str, sample_id: str):
        return sample_file(get_dataset(request.user, dataset_id), sample_id, self.kind)


class SignedSampleFileView(APIView):
    """A sample's file through a signed, expiring link (tag exports): no token, so Label Studio can load it.

    The signer must still be an active member of the dataset; anything else is a 403.
    """

    kind = "thumbnail"
    content_negotiation_class = AnyAcceptNegotiation
    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(
        responses={**FILE_RESPONSES, 403: OpenApiResponse(description="Bad or expired signature, or no access")},
        summary="A sample's thumbnail or original image through a signed link",
        parameters=[
            OpenApiParameter(name, str, required=True, description=text)
            for name, text in (
                ("user", "who signed the link"),
                ("expires", "unix time"),
                ("signature", "HMAC-SHA256, hex"),
            )
        ],
        auth=[],
    )
    def get(self, request, dataset_id: str, sample_id: str):
        user, _params = signing.verify(request)
        try:
            dataset = get_dataset(user, dataset_id)
        except Http404:  # the signer left the dataset, or it is gone
            raise signing.InvalidSignature("The user who signed this link can no longer read this dataset.") from None
        return sample_file(dataset, sample_id, self.kind)


urlpatterns = [
    path(
        "datasets/<str:dataset_id>/samples/<str:sample_id>/thumbnail",
        SampleFileView.as_view(kind="thumbnail"),
        name="sample-thumbnail",
    ),
    path(
        "datasets/<str:dataset_id>/samples/<str:sample_id>/image",
        SampleFileView.as_view(kind="image"),
        name="sample-image",
    ),
    path(
        "datasets/<str:dataset_id>/samples/<str:sample_id>/thumbnail/signed",
        SignedSampleFileView.as_view(kind="thumbnail"),
        name="sample-thumbnail-signed",
    ),
    path(
        "datasets/<str:dataset_id>/samples/<str:sample_id>/image/signed",
        SignedSampleFileView.as_view(kind="image"),
        name="sample-image-signed",
    ),
]
