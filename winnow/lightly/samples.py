"""`/v1/datasets/<ds>/samples` and `/mappings`: register meta samples, read them, set custom metadata, read URLs.

Lightly's `customMetaData` is Winnow's sample `metadata`; `metaData.sizeInBytes` and `metaData.shape`
([height, width, channels]) are the sample's size and dimensions. A custom metadata PUT stores the
entry without its `image_id` (the key that links it to an image in the COCO-style document), exactly
what Winnow's own metadata upload stores for the same document.
"""

from __future__ import annotations

import posixpath

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, JsonResponse
from django.urls import reverse

from curation import bitmask, columns, services, signing, tagging
from curation.access import get_dataset
from curation.api.files import serve_key
from curation.errors import DomainError
from curation.images import CONTENT_TYPES
from curation.models import Dataset, Role, Sample, Tag, TagOrigin
from winnow.lightly.base import ApiError, LightlyView, json_string, ms, no_content, not_found
from winnow.lightly.positions import Positions

CREATE_KEYS = {"fileName", "thumbName", "exif", "metaData", "customMetaData", "videoFrameData", "cropData"}
UPDATE_KEYS = {"fileName", "thumbName", "exif", "metaData", "customMetaData"}
FULL_FIELDS = ("id", "idx", "file_name", "size_bytes", "width", "height", "metadata", "created_at")


# --- serialising -------------------------------------------------------------------------------------


def meta_data(sample: Sample) -> dict:
    """Lightly's SampleMetaData from what Winnow knows of the file."""
    data = {}
    if sample.size_bytes is not None:
        data["sizeInBytes"] = int(sample.size_bytes)
    if sample.width and sample.height:
        data["shape"] = [int(sample.height), int(sample.width), 3]
    return data


def sample_data(sample: Sample, dataset_id: str) -> dict:
    """Lightly's SampleData (also the `full` mode of SampleDataModes)."""
    return {
        "id": sample.id,
        "type": "IMAGE",
        "datasetId": dataset_id,
        "fileName": sample.file_name,
        "index": int(sample.idx),
        "createdAt": ms(sample.created_at),
        "metaData": meta_data(sample),
        "customMetaData": sample.metadata if isinstance(sample.metadata, dict) else {},
    }


# --- initial-tag -------------------------------------------------------------------------------------


def refresh_initial_tag(dataset: Dataset, creator=None) -> Tag:
    """Make `initial-tag` hold every sample of the dataset, as Lightly's does; call inside the write's transaction."""
    positions = Positions(dataset)
    mask = bitmask.from_indices(positions.idx)
    tag = Tag.objects.select_for_update().filter(dataset=dataset, name=services.INITIAL_TAG).first()
    if tag is None:
        return tagging.create_tag(
            dataset,
            services.INITIAL_TAG,
            mask,
            origin=TagOrigin.UPLOAD,
            origin_detail={"samples": positions.size, "via": "lightly"},
            creator=creator,
        )
    if tag.count != positions.size:
        Tag.objects.filter(pk=tag.pk).update(bitmask=mask, count=positions.size)
    return tag


# --- views -------------------------------------------------------------------------------------------


def _row(view: LightlyView, body: dict) -> dict:
    """The add_samples row of a SampleCreateRequest; 400 naming the key at fault."""
    unknown = sorted(set(body) - CREATE_KEYS)
    if unknown:
        raise view.invalid(f"unknown key {unknown[0]!r}; a sample has {', '.join(sorted(CREATE_KEYS))}")
    if body.get("videoFrameData") is not None or body.get("cropData") is not None:
        raise view.invalid(
            "videoFrameData and cropData are not supported: Winnow samples are images.",
            "SAMPLE_CREATE_REQUEST_INVALID_FORMAT",
        )
    name = body.get("fileName")
    if not isinstance(name, str):
        raise view.invalid("fileName is required: the sample's path relative to the dataset's root.")
    row = {"file_name": name}
    meta = body.get("metaData")
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise view.invalid("metaData must be an object.")
    size = meta.get("sizeInBytes")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise view.invalid(f"metaData.sizeInBytes must be a non-negative integer, not {size!r}.")
        row["size_bytes"] = size
    shape = meta.get("shape")
    if shape is not None:
        if (
            not isinstance(shape, list)
            or len(shape) not in (2, 3)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape)
        ):
            raise view.invalid(f"metaData.shape must be [height, width, channels] of positive integers, not {shape!r}.")
        row["height"], row["width"] = shape[0], shape[1]
    try:
        row["metadata"] = services.validate_metadata(body.get("customMetaData"))
    except ValueError as exc:
        raise view.invalid(f"customMetaData: {exc}") from None
    return row


class SampleListView(LightlyView):
    def post(self, request, dataset_id: str):
        dataset = self.dataset(request, dataset_id, need=Role.EDITOR)
        if dataset.has_pixels:
            raise self.invalid(
                f"This dataset keeps pixels ({dataset.upload_mode}): upload its images through Winnow "
                "(/api/v1/ or the winnow CLI). Samples without pixels are registered in meta datasets."
            )
        row = _row(self, self.json_body(request))
        try:
            with transaction.atomic():
                # add_samples keeps initial-tag holding every sample in O(1) (its count follows next_idx); only a
                # dataset whose samples came some other way may lack the tag, and gets it here once.
                result = services.add_samples(dataset, [row], creator=request.user)
                if result.created:
                    columns.samples_added(dataset.pk)
                elif not Tag.objects.filter(dataset=dataset, name=services.INITIAL_TAG).exists():
                    refresh_initial_tag(dataset, request.user)
        except DomainError:  # a tag refused (a name race): the view answers it as itself, not as a bad file name
            raise
        except ValueError as exc:
            raise self.invalid(f"fileName: {exc}") from None
        # A file name already present is the same sample: registering is idempotent by file name.
        sample_id = result.created[0].id if result.created else result.skipped_ids[0]
        return JsonResponse({"id": sample_id}, status=201)


class SamplePartialView(LightlyView):
    retried_methods = ("GET",)

    def get(self, request, dataset_id: str):
        dataset = self.dataset(request, dataset_id)
        mode = request.GET.get("mode", "full")
        if mode not in ("ids", "fileNames", "full"):
            raise self.invalid(f"mode must be ids, fileNames or full, not {mode!r}")
        offset, size = self.page(request)
        rows = Sample.objects.filter(dataset=dataset, **Positions(dataset).page_filter(offset, size)).order_by("idx")
        if mode == "ids":
            return JsonResponse([{"id": sid} for sid in rows.values_list("id", flat=True)], safe=False)
        if mode == "fileNames":
            return JsonResponse(
                [{"id": sid, "fileName": name} for sid, name in rows.values_list("id", "file_name")], safe=False
            )
        return JsonResponse([sample_data(s, dataset.id) for s in rows.only(*FULL_FIELDS)], safe=False)


class SampleDetailView(LightlyView):
    retried_methods = ("PUT",)

    def _sample(self, dataset, sample_id: str) -> Sample:
        sample = Sample.objects.filter(dataset=dataset, pk=sample_id).only(*FULL_FIELDS).first()
        if sample is None:
            raise not_found("SAMPLE_UNKNOWN", f"No sample with id {sample_id!r} in this dataset.")
        return sample

    def get(self, request, dataset_id: str, sample_id: str):
        dataset = self.dataset(request, dataset_id)
        return JsonResponse(sample_data(self._sample(dataset, sample_id), dataset.id))

    def put(self, request, dataset_id: str, sample_id: str):
        """Set the sample's custom metadata: one UPDATE of one row, so 8 parallel PUTs never contend."""
        dataset = self.dataset(request, dataset_id, need=Role.EDITOR)
        body = self.json_body(request)
        unknown = sorted(set(body) - UPDATE_KEYS)
        if unknown:
            raise self.invalid(f"unknown key {unknown[0]!r}; a sample update has {', '.join(sorted(UPDATE_KEYS))}")
        fixed = sorted(key for key in ("fileName", "thumbName", "exif", "metaData") if body.get(key) is not None)
        if fixed:
            raise self.invalid(f"{fixed[0]} cannot be changed here; only customMetaData can.")
        if "customMetaData" not in body:
            raise self.invalid("customMetaData is required.")
        custom = body["customMetaData"]
        if isinstance(custom, dict):
            custom = {key: value for key, value in custom.items() if key != "image_id"}
        try:
            metadata = services.validate_metadata(custom)
        except ValueError as exc:
            raise self.invalid(f"customMetaData: {exc}") from None
        if not Sample.objects.filter(dataset=dataset, pk=sample_id).update(metadata=metadata):
            raise not_found("SAMPLE_UNKNOWN", f"No sample with id {sample_id!r} in this dataset.")
        columns.metadata_changed(dataset.pk)
        return no_content()


class MappingsView(LightlyView):
    """The dataset's file names (or sample ids) in idx order: position i is bit i of every bitmask."""

    retried_methods = ("GET",)
    FIELDS = {"fileName": "file_name", "_id": "id"}

    def get(self, request, dataset_id: str):
        dataset = self.dataset(request, dataset_id)
        field = request.GET.get("field", "fileName")
        if field not in self.FIELDS:
            raise self.invalid(f"field must be fileName or _id, not {field!r}")
        offset, size = self.page(request)
        rows = Sample.objects.filter(dataset=dataset, **Positions(dataset).page_filter(offset, size))
        return JsonResponse(list(rows.order_by("idx").values_list(self.FIELDS[field], flat=True)), safe=False)


# --- read URLs ---------------------------------------------------------------------------------------


# Lightly's word for the file a read URL serves, by Winnow's (Dataset.pixel_kind).
WIRE_PIXEL_KINDS = {"image": "full", "thumbnail": "thumbnail"}


def pixel_kind(dataset: Dataset) -> str | None:
    """Which file a read URL serves: the original (full), the thumbnail (thumbnails), none (meta)."""
    return WIRE_PIXEL_KINDS.get(dataset.pixel_kind)


def read_url(request, dataset: Dataset, sample_id: str, kind: str, ttl: int) -> str:
    path = reverse("lightly-sample-read-redirect", args=[dataset.id, sample_id])
    return signing.sign(request, "GET", path, {"type": kind}, ttl, request.user)


class SampleReadUrlView(LightlyView):
    def get(self, request, dataset_id: str, sample_id: str):
        dataset = self.dataset(request, dataset_id)
        if not Sample.objects.filter(dataset=dataset, pk=sample_id).exists():
            raise not_found("SAMPLE_UNKNOWN", f"No sample with id {sample_id!r} in this dataset.")
        if pixel_kind(dataset) is None:
            raise not_found("NOT_FOUND", "This dataset keeps no pixels (meta): its samples have no read URL.")
        kind = request.GET.get("type") or pixel_kind(dataset)
        if kind not in ("full", "thumbnail"):
            raise self.invalid(f"type must be full or thumbnail, not {kind!r}")
        return json_string(read_url(request, dataset, sample_id, kind, signing.READ_URL_TTL))


class SampleReadRedirectView(LightlyView):
    """A signed URL to a sample's pixels: the file (local storage) or a redirect to a presigned URL (S3)."""

    token_required = False

    def get(self, request, dataset_id: str, sample_id: str):
        user, params = signing.verify(request)
        try:
            dataset = get_dataset(user, dataset_id)
        except (Http404, PermissionDenied):  # not a member any more, or the dataset is gone
            raise ApiError(403, "FORBIDDEN", "The user who asked for this URL cannot read this dataset.") from None
        sample = (
            Sample.objects.filter(dataset=dataset, pk=sample_id)
            .only("id", "file_name", "original_key", "thumbnail_key")
            .first()
        )
        if sample is None:
            raise not_found("SAMPLE_UNKNOWN", f"No sample with id {sample_id!r} in this dataset.")
        if params.get("type") == "thumbnail":
            if not sample.thumbnail_key:
                raise not_found("NOT_FOUND", "This sample has no thumbnail.")
            return serve_key(sample.thumbnail_key, "image/webp")
        if not sample.original_key:
            raise not_found("NOT_FOUND", "This sample has no stored image.")
        extension = posixpath.splitext(sample.original_key)[1]
        return serve_key(
            sample.original_key,
            CONTENT_TYPES.get(extension, "application/octet-stream"),
            download_name=posixpath.basename(sample.file_name),
        )
