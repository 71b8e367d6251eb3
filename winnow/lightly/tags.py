"""`/v1/datasets/<ds>/tags`: list, get, create from a bitmask, `initial`, arithmetic, delete, exports.

`totSize` is the dataset's sample count and `bitMaskData` is over mapping positions (positions.py).
Tags are listed newest first, as Lightly lists them.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db import transaction
from django.http import JsonResponse

from curation import bitmask, signing, tagging
from curation.models import Dataset, Role, Sample, Tag, TagOrigin
from winnow.lightly.base import ApiError, LightlyView, json_string, ms, no_content, not_found, tag_name_ok
from winnow.lightly.positions import Positions
from winnow.lightly.samples import pixel_kind, read_url, refresh_initial_tag

HEX = re.compile(r"0x[0-9a-fA-F]+")
OPERATIONS = {"UNION": bitmask.union, "INTERSECTION": bitmask.intersection, "DIFFERENCE": bitmask.difference}
FILE_NAME_FORMATS = ("NAME", "REDIRECTED_READ_URL", "DATASOURCE_FULL")
LOOKUP_BATCH = 5000


def tag_data(tag: Tag, positions: Positions) -> dict:
    """Lightly's TagData; `prevTagId` is always present (null for a root tag)."""
    return {
        "id": tag.id,
        "datasetId": tag.dataset_id,
        "prevTagId": tag.parent_id,
        "name": tag.name,
        "bitMaskData": positions.to_hex(bytes(tag.bitmask)),
        "totSize": positions.size,
        "createdAt": ms(tag.created_at),
        "lastModifiedAt": ms(tag.created_at),
    }


def any_tag(view: LightlyView, dataset: Dataset, tag_id, field: str, code: str = "TAG_UNKNOWN") -> Tag:
    """A tag of the dataset named as a parent or operand; its name need not suit the client (none is returned)."""
    tag = Tag.objects.filter(dataset=dataset, pk=tag_id).first() if isinstance(tag_id, str) else None
    if tag is None:
        raise view.invalid(f"{field}: no tag with id {tag_id!r} in this dataset", code)
    return tag


def listed_tag(dataset: Dataset, tag_id: str) -> Tag:
    """A tag addressed by id in the path: 404 if unknown or if its name is not one the client accepts."""
    tag = Tag.objects.filter(dataset=dataset, pk=tag_id).first()
    if tag is None:
        raise not_found("TAG_UNKNOWN", f"No tag with id {tag_id!r} in this dataset.")
    if not tag_name_ok(tag.name):
        raise not_found(
            "TAG_UNKNOWN",
            f"The tag's name {tag.name!r} is not valid for the Lightly client; "
            "rename or recreate it in Winnow to use it through /v1/.",
        )
    return tag


class TagListView(LightlyView):
    def get(self, request, dataset_id: str):
        dataset = self.dataset(request, dataset_id)
        positions = Positions(dataset)
        tags = Tag.objects.filter(dataset=dataset).order_by("-created_at", "-id")
        # Names the client's validator rejects would fail the whole list: they are not listed here.
        return JsonResponse([tag_data(tag, positions) for tag in tags if tag_name_ok(tag.name)], safe=False)

    def post(self, request, dataset_id: str):
        """Create a tag from a hex bitmask over mapping positions (create_tag_from_filenames)."""
        dataset = self.dataset(request, dataset_id, need=Role.EDITOR)
        body = self.json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not tag_name_ok(name):
            raise self.invalid(
                "name must be at least 3 characters: a letter or digit, then letters, digits, space or . : ; = @ _ -"
            )
        parent = any_tag(self, dataset, body.get("prevTagId"), "prevTagId", "TAG_PREVTAG_NOT_IN_DATASET")
        mask_text = body.get("bitMaskData")
        if not isinstance(mask_text, str) or not HEX.fullmatch(mask_text):
            raise self.invalid(f"bitMaskData must be 0x followed by hex digits, not {mask_text!r}")
        positions = Positions(dataset)
        total = body.get("totSize")
        if total is not None and total != positions.size:
            raise self.invalid(
                f"totSize is {total!r} but the dataset has {positions.size} samples: "
                "the samples changed, fetch the mappings again"
            )
        try:
            mask = positions.from_hex(mask_text)
        except ValueError as exc:
            raise self.invalid(f"bitMaskData {exc}") from None
        tag = tagging.create_tag(
            dataset,
            name,
            mask,
            origin=TagOrigin.SELECTION,
            origin_detail={"method": "bitmask", "via": "lightly"},
            parent=parent,
            creator=request.user,
        )
        return JsonResponse({"id": tag.id}, status=201)


class InitialTagView(LightlyView):
    def post(self, request, dataset_id: str):
        """The Lightly Worker's last step: `initial-tag` over every sample (created or brought up to date)."""
        dataset = self.dataset(request, dataset_id, need=Role.EDITOR)
        body = self.json_body(request)
        if body.get("name") not in (None, tagging.INITIAL_TAG):
            raise self.invalid(f"name: the initial tag is called {tagging.INITIAL_TAG!r}")
        if not Sample.objects.filter(dataset=dataset).exists():
            raise self.invalid("The dataset has no samples yet: register samples first.", "TAG_NO_TAG_IN_DATASET")
        with transaction.atomic():
            tag = refresh_initial_tag(dataset, request.user)
        return JsonResponse({"id": tag.id}, status=201)


class TagDetailView(LightlyView):
    def get(self, request, dataset_id: str, tag_id: str):
        dataset = self.dataset(request, dataset_id)
        return JsonResponse(tag_data(listed_tag(dataset, tag_id), Positions(dataset)))

    def delete(self, request, dataset_id: str, tag_id: str):
        dataset = self.dataset(request, dataset_id, need=Role.EDITOR)
        tag = listed_tag(dataset, tag_id)
        if tag.name == tagging.INITIAL_TAG:
            raise ApiError(403, "TAG_UNDELETABLE_IS_INITIAL", "initial-tag holds every sample and cannot be deleted.")
        tagging.delete_tag(tag)
        return no_content()


class TagArithmeticsBitmaskView(LightlyView):
    def post(self, request, dataset_id: str):
        """`tagId1 <operation> tagId2` as a bitmask, nothing saved (get_filenames_in_tag(exclude_parent_tag))."""
        dataset = self.dataset(request, dataset_id)
        body = self.json_body(request)
        operation = body.get("operation")
        if operation not in OPERATIONS:
            raise self.invalid(f"operation must be one of {', '.join(OPERATIONS)}, not {operation!r}")
        first = any_tag(self, dataset, body.get("tagId1"), "tagId1")
        second = any_tag(self, dataset, body.get("tagId2"), "tagId2")
        mask = OPERATIONS[operation](bytes(first.bitmask), bytes(second.bitmask))
        return JsonResponse({"bitMaskData": Positions(dataset).to_hex(mask)})


# --- exports -----------------------------------------------------------------------------------------


def tag_samples(dataset: Dataset, tag: Tag, offset: int, size: int | None) -> list[tuple[str, str, int]]:
    """(sample id, file name, idx) of the tag's samples offset..offset+size, in idx order."""
    indices = tag.indices()
    chosen = indices[offset:] if size is None else indices[offset : offset + size]
    rows: list[tuple[str, str, int]] = []
    for start in range(0, len(chosen), LOOKUP_BATCH):
        batch = chosen[start : start + LOOKUP_BATCH].tolist()
        rows.extend(
            Sample.objects.filter(dataset=dataset, idx__in=batch).order_by("idx").values_list("id", "file_name", "idx")
        )
    return rows


class _ExportView(LightlyView):
    retried_methods = ("GET",)

    def _expires_in(self, request) -> int:
        # The same default lifetime as Winnow's own export links (WINNOW_EXPORT_URL_SECONDS).
        default = min(settings.WINNOW_EXPORT_URL_SECONDS, signing.MAX_EXPORT_TTL)
        return self._int_param(request, "expiresIn", default, 1, signing.MAX_EXPORT_TTL)

    def _image(self, request, dataset: Dataset, ttl: int):
        """How an export points at a sample's pixels: a signed read URL, or the file name for meta datasets."""
        kind = pixel_kind(dataset)
        if kind is None:
            return lambda sample_id, file_name: file_name
        return lambda sample_id, file_name: read_url(request, dataset, sample_id, kind, ttl)


class ExportFilenamesView(_ExportView):
    def get(self, request, dataset_id: str, tag_id: str):
        """One page of `\\n`-joined names (no trailing newline); a page past the end is `""`."""
        dataset = self.dataset(request, dataset_id)
        tag = listed_tag(dataset, tag_id)
        fmt = request.GET.get("fileNameFormat") or "NAME"
        if fmt not in FILE_NAME_FORMATS:
            raise self.invalid(f"fileNameFormat must be one of {', '.join(FILE_NAME_FORMATS)}, not {fmt!r}")
        ttl = self._expires_in(request)
        offset, size = self.page(request)
        rows = tag_samples(dataset, tag, offset, size)
        if fmt == "REDIRECTED_READ_URL":
            image = self._image(request, dataset, ttl)
            lines = [image(sid, name) for sid, name, _idx in rows]
        else:  # Winnow has no datasource: DATASOURCE_FULL is the path relative to the dataset's root too
            lines = [name for _sid, name, _idx in rows]
        return json_string("\n".join(lines))


class ExportLabelStudioView(_ExportView):
    def get(self, request, dataset_id: str, tag_id: str):
        dataset = self.dataset(request, dataset_id)
        tag = listed_tag(dataset, tag_id)
        ttl = self._expires_in(request)
        offset, size = self.page(request)
        image = self._image(request, dataset, ttl)
        tasks = [
            {"id": int(idx), "data": {"image": image(sid, name), "lightlyFileName": name}}
            for sid, name, idx in tag_samples(dataset, tag, offset, size)
        ]
        return JsonResponse(tasks, safe=False)
