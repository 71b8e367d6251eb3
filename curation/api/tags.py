"""REST API: tags (list, create in one of five ways, get, delete, export)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from django.http import Http404, StreamingHttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import tagging
from curation.access import get_dataset, resolve_tag
from curation.models import Role, Tag, TagOrigin


class TagSerializer(serializers.ModelSerializer):
    parent = serializers.PrimaryKeyRelatedField(read_only=True)
    creator = serializers.CharField(source="creator.username", read_only=True, default=None)

    class Meta:
        model = Tag
        fields = ["id", "name", "count", "origin", "origin_detail", "parent", "creator", "created_at"]
        read_only_fields = fields


# Ways to make a tag that apps above curation provide, by the request key that names them:
# mode -> callable(dataset, name, data, *, parent, creator) -> Tag. sampling adds "sampling_run".
TAG_SOURCES: dict[str, Callable] = {}

CREATE_MODES = ("sample_ids", "file_names", "bitmask", "filter", "operation", "sampling_run")
# Keys that only make sense with one mode.
COMPANIONS = {"tags": "operation", "top_k": "sampling_run"}
# Keys that may go with one mode, but need not.
OPTIONAL_COMPANIONS = {"exclude_sample_ids": "filter"}

TAG_CREATE = inline_serializer(
    "TagCreate",
    {
        "name": serializers.CharField(),
        "parent": serializers.CharField(required=False, help_text="tag id; defaults to the operand / input tag"),
        "sample_ids": serializers.ListField(child=serializers.CharField(), required=False),
        "file_names": serializers.ListField(child=serializers.CharField(), required=False),
        "bitmask": serializers.CharField(
            required=False,
            help_text=(
                "base64 of a bitmask over sample idx (bit i, least significant first, is idx i), as the map's "
                "lasso sends; any number of samples"
            ),
        ),
        "filter": serializers.DictField(
            required=False,
            help_text="{tag, file_name, conditions: [{path, op, value}]}; op as in the sample list's `where` (eq ... exists, contains, icontains, ieq, iin)",
        ),
        "exclude_sample_ids": serializers.ListField(
            child=serializers.CharField(),
            required=False,
            help_text="with filter: sample ids to leave out (deselected after selecting all in the filter)",
        ),
        "operation": serializers.ChoiceField(choices=list(tagging.OPERATIONS), required=False),
        "tags": serializers.ListField(child=serializers.CharField(), required=False),
        "sampling_run": serializers.CharField(required=False),
        "top_k": serializers.IntegerField(required=False, min_value=1),
    },
)


def decode_selection(dataset, text, field: str = "bitmask") -> bytes:
    """A base64 bitmask over the dataset's idx, checked: no bit at or past next_idx. Raises naming `field`."""
    if not isinstance(text, str):
        raise ValidationError({field: ["must be a base64 string of a bitmask over sample idx"]})
    try:
        mask = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError({field: ["is not valid base64"]}) from None
    size = dataset.next_idx
    if len(mask) > (size + 7) // 8:
        raise ValidationError(
            {field: [f"has {len(mask)} bytes; the dataset's {size} samples need at most {(size + 7) // 8}"]}
        )
    if size % 8 and len(mask) == (size + 7) // 8 and mask[-1] >> (size % 8):
        raise ValidationError({field: [f"sets bits past the last sample (idx {size - 1})"]})
    return mask


def create_from_request(dataset, data, creator) -> Tag:
    """Dispatch a create request to the one tagging service its keys name; anything else is a 400."""
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["expected a JSON object"]})
    modes = [mode for mode in CREATE_MODES if mode in data]
    if len(modes) != 1:
        given = f" (got {', '.join(modes)})" if modes else ""
        raise ValidationError(
            {
                "non_field_errors": [
                    "give exactly one of: sample_ids, file_names, bitmask, filter, operation (with tags), "
                    f"sampling_run (with top_k){given}"
                ]
            }
        )
    mode = modes[0]
    for key, owner in COMPANIONS.items():
        if key in data and owner != mode:
            raise ValidationError({key: [f"'{key}' goes with '{owner}'"]})
        if owner == mode and key not in data:
            raise ValidationError({key: [f"'{key}' is required with '{owner}'"]})
    for key, owner in OPTIONAL_COMPANIONS.items():
        if key in data and owner != mode:
            raise ValidationError({key: [f"'{key}' goes with '{owner}'"]})
    if "name" not in data:
        raise ValidationError({"name": ["this field is required"]})
    name = tagging.check_name(dataset, data["name"])
    parent = resolve_tag(dataset, data["parent"], "parent") if data.get("parent") is not None else None
    if mode == "sample_ids":
        return tagging.tag_from_sample_ids(dataset, name, data["sample_ids"], parent=parent, creator=creator)
    if mode == "file_names":
        return tagging.tag_from_file_names(dataset, name, data["file_names"], parent=parent, creator=creator)
    if mode == "bitmask":
        mask = decode_selection(dataset, data["bitmask"])
        return tagging.create_tag(
            dataset,
            name,
            mask,
            origin=TagOrigin.SELECTION,
            origin_detail={"method": "bitmask"},
            parent=parent,
            creator=creator,
        )
    if mode == "filter":
        return tagging.tag_from_filter(
            dataset,
            name,
            data["filter"],
            parent=parent,
            creator=creator,
            exclude_sample_ids=data.get("exclude_sample_ids"),
        )
    if mode == "operation":
        return tagging.tag_from_operation(
            dataset, name, data["operation"], data["tags"], parent=parent, creator=creator
        )
    source = TAG_SOURCES.get(mode)
    if source is None:
        raise ValidationError({mode: ["this installation cannot make tags that way"]})
    return source(dataset, name, data, parent=parent, creator=creator)


class TagList(APIView):
    @extend_schema(summary="The dataset's tags", responses={200: TagSerializer(many=True)})
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        # The bitmasks stay in the database: a list needs only the counts.
        tags = dataset.tags.select_related("creator").defer("bitmask")
        return Response(TagSerializer(tags, many=True).data)

    @extend_schema(
        summary="Create a tag from sample ids, file names, a filter, tag arithmetic or a sampling run's top K",
        request=TAG_CREATE,
        responses={201: TagSerializer},
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        tag = create_from_request(dataset, request.data, request.user)
        return Response(TagSerializer(tag).data, status=status.HTTP_201_CREATED)


def _tag(dataset, tag_id: str) -> Tag:
    tag = Tag.objects.select_related("creator").filter(dataset=dataset, pk=tag_id).first()
    if tag is None:
        raise Http404("No tag with that id in this dataset.")
    return tag


class TagDetail(APIView):
    @extend_schema(
        summary="A tag; `?include=sample_ids` adds its sample ids in idx order",
        parameters=[OpenApiParameter("include", str, enum=["sample_ids"], required=False)],
        responses={200: TagSerializer},
    )
    def get(self, request, dataset_id: str, tag_id: str):
        dataset = get_dataset(request.user, dataset_id)
        tag = _tag(dataset, tag_id)
        body = TagSerializer(tag).data
        include = {part.strip() for part in request.query_params.get("include", "").split(",") if part.strip()}
        unknown = include - {"sample_ids"}
        if unknown:
            raise ValidationError({"include": [f"unknown value(s) {sorted(unknown)}; accepted: sample_ids"]})
        if "sample_ids" in include:
            body["sample_ids"] = tagging.sample_ids_of(dataset, tag)
        return Response(body)

    @extend_schema(summary="Delete a tag (initial-tag cannot be deleted)", responses={204: None})
    def delete(self, request, dataset_id: str, tag_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        tagging.delete_tag(_tag(dataset, tag_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class IgnoreFormatParameter(DefaultContentNegotiation):
    """`?format=` names the export format here, not a DRF renderer; errors still render as JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class TagExport(APIView):
    content_negotiation_class = IgnoreFormatParameter

    @extend_schema(
        summary="Download a tag's samples (in idx order: upload order)",
        parameters=[OpenApiParameter("format", str, enum=list(tagging.EXPORT_FORMATS), required=True)],
        responses={
            (200, "text/plain"): OpenApiTypes.STR,
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/json"): OpenApiTypes.OBJECT,
        },
    )
    def get(self, request, dataset_id: str, tag_id: str):
        dataset = get_dataset(request.user, dataset_id)
        tag = _tag(dataset, tag_id)
        fmt = request.query_params.get("format", "")
        return export_response(request, dataset, tag, fmt)


def export_response(request, dataset, tag, fmt: str, *, sort=None) -> StreamingHttpResponse:
    """The tag export as a streamed download (idx order, or `sort`'s), its links signed for the requesting user."""
    export = tagging.export_tag(
        dataset, tag, fmt, base_url=request.build_absolute_uri("/").rstrip("/"), user=request.user, sort=sort
    )
    response = StreamingHttpResponse(export.body, content_type=export.content_type)
    response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
    return response


urlpatterns = [
    path("datasets/<str:dataset_id>/tags", TagList.as_view(), name="tag-list"),
    path("datasets/<str:dataset_id>/tags/<str:tag_id>", TagDetail.as_view(), name="tag-detail"),
    path("datasets/<str:dataset_id>/tags/<str:tag_id>/export", TagExport.as_view(), name="tag-export"),
]
