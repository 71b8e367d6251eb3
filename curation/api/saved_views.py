"""REST API: saved views of a dataset (a named filter + sort + map colour + hidden boxes, as the pages' URLs hold them).

GET    /datasets/<id>/views                    any member
POST   /datasets/<id>/views                    editor+: {"name", "filter"?, "sort"?, "color"?, "hidden_boxes"?}
GET    /datasets/<id>/views/<view_id>          any member
PATCH  /datasets/<id>/views/<view_id>          editor+: any of name, filter, sort, color, hidden_boxes
DELETE /datasets/<id>/views/<view_id>          editor+
POST   /datasets/<id>/views/<view_id>/tag      editor+: {"name"}: a tag of the samples the view's filter matches now,
                                               to sample from or export
GET    /datasets/<id>/views/<view_id>/export?format=   any member: the samples the view's filter matches now, as a
                                               download (the tag export's formats) in the view's sort, without
                                               making a tag
GET    /datasets/<id>/export?format=&filter=&sort=   any member: the same for a filter and sort as Explore applies them
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.http import Http404
from django.urls import path
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import bitmask, columns, tagging
from curation.access import get_dataset, resolve_tag
from curation.api.analytics import _filter_param
from curation.api.tags import IgnoreFormatParameter, TagSerializer, export_response
from curation.filters import parse_filter, parse_sort
from curation.models import Role, SavedView, Tag

KEYS = ("name", "filter", "sort", "color", "hidden_boxes")
MAX_VIEWS = 500  # per dataset: a list, not a table to page through


class SavedViewSerializer(serializers.ModelSerializer):
    creator = serializers.CharField(source="creator.username", read_only=True, default=None)

    class Meta:
        model = SavedView
        fields = ["id", "name", "filter", "sort", "color", "hidden_boxes", "creator", "created_at", "updated_at"]
        read_only_fields = fields


VIEW_REQUEST = inline_serializer(
    "SavedViewRequest",
    {
        "name": serializers.CharField(max_length=200),
        "filter": serializers.DictField(
            required=False,
            help_text="{tag, file_name, conditions: [{path, op, value}]}; op as in the sample list's `where` (eq ... exists, contains, icontains, ieq, iin)",
        ),
        "sort": serializers.CharField(required=False, help_text="idx, -idx, a metadata path or -path"),
        "color": serializers.CharField(required=False, help_text='the map\'s colour: "", "field:<path>" or "tag:<id>"'),
        "hidden_boxes": serializers.ListField(
            child=serializers.CharField(),
            required=False,
            help_text="names of the dataset's object-detection tasks whose boxes Explore's tiles leave out",
        ),
    },
)


def _clean(dataset, data, *, partial: bool) -> dict:
    """The request's values, each checked against the dataset; a ValidationError names the key at fault."""
    if not isinstance(data, dict):
        raise ValidationError({"body": ["must be a JSON object"]})
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ValidationError({unknown[0]: [f"unknown key; a view has {', '.join(KEYS)}"]})
    if not partial and "name" not in data:
        raise ValidationError({"name": ["is required"]})
    out = {}
    if "name" in data:
        name = data["name"]
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
            raise ValidationError({"name": ["must be a non-empty string of at most 200 characters"]})
        out["name"] = name.strip()
    if "filter" in data:
        obj = data["filter"] if data["filter"] is not None else {}
        parsed = parse_filter(obj)
        if parsed["tag"] is not None:
            resolve_tag(dataset, parsed["tag"], "filter.tag")
        out["filter"] = {k: v for k, v in obj.items() if v not in (None, "", [])}
    if "sort" in data:
        if not isinstance(data["sort"], str):
            raise ValidationError({"sort": ["must be a string: idx, -idx, a metadata path or -path"]})
        out["sort"] = parse_sort(dataset, data["sort"]).text
    if "color" in data:
        color = data["color"] or ""
        if not isinstance(color, str):
            raise ValidationError({"color": ['must be "", "field:<path>" or "tag:<id>"']})
        kind, _, key = color.partition(":")
        if color and (kind not in ("field", "tag") or not key):
            raise ValidationError({"color": [f'{color!r}: give "", "field:<path>" or "tag:<id>"']})
        if kind == "field" and not dataset.metadata_fields.filter(path=key).exists():
            raise ValidationError({"color": [f"{key!r} is not a configured field of this dataset"]})
        if kind == "tag":
            resolve_tag(dataset, key, "color")
        out["color"] = color
    if "hidden_boxes" in data:
        out["hidden_boxes"] = _hidden_boxes(dataset, data["hidden_boxes"])
    return out


def _hidden_boxes(dataset, names) -> list[str]:
    """The object-detection task names whose boxes the view hides, each a task of this dataset, without repeats."""
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValidationError({"hidden_boxes": ["must be a list of task names (strings)"]})
    tasks = set(dataset.prediction_tasks.filter(type="object-detection").values_list("name", flat=True))
    unknown = [n for n in names if n not in tasks]
    if unknown:
        known = ", ".join(sorted(tasks)) or "none"
        raise ValidationError(
            {"hidden_boxes": [f"{unknown[0]!r} is not an object-detection task of this dataset (tasks: {known})"]}
        )
    return list(dict.fromkeys(names))


def _taken(dataset, name: str, view: SavedView | None = None):
    taken = SavedView.objects.filter(dataset=dataset, name__iexact=name)
    if view is not None:
        taken = taken.exclude(pk=view.pk)
    if taken.exists():
        raise ValidationError({"name": [f"a view named {name!r} already exists in this dataset"]})


def _save(view: SavedView, **kwargs):
    try:
        with transaction.atomic():
            view.save(**kwargs)
    except IntegrityError:  # two requests raced for the same name
        raise ValidationError({"name": [f"a view named {view.name!r} already exists in this dataset"]}) from None


def _view(dataset, view_id: str) -> SavedView:
    view = SavedView.objects.select_related("creator").filter(dataset=dataset, pk=view_id).first()
    if view is None:
        raise Http404("No saved view with that id in this dataset.")
    return view


class SavedViewList(APIView):
    @extend_schema(summary="The dataset's saved views, by name", responses={200: SavedViewSerializer(many=True)})
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        views = SavedView.objects.filter(dataset=dataset).select_related("creator")[:MAX_VIEWS]
        return Response(SavedViewSerializer(views, many=True).data)

    @extend_schema(summary="Save a view", request=VIEW_REQUEST, responses={201: SavedViewSerializer})
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        values = _clean(dataset, request.data, partial=False)
        _taken(dataset, values["name"])
        if SavedView.objects.filter(dataset=dataset).count() >= MAX_VIEWS:
            raise ValidationError({"name": [f"a dataset keeps at most {MAX_VIEWS} views; delete one first"]})
        view = SavedView(dataset=dataset, creator=request.user, **values)
        _save(view)
        return Response(SavedViewSerializer(view).data, status=status.HTTP_201_CREATED)


class SavedViewDetail(APIView):
    @extend_schema(summary="A saved view", responses={200: SavedViewSerializer})
    def get(self, request, dataset_id: str, view_id: str):
        dataset = get_dataset(request.user, dataset_id)
        return Response(SavedViewSerializer(_view(dataset, view_id)).data)

    @extend_schema(summary="Rename or change a saved view", request=VIEW_REQUEST, responses={200: SavedViewSerializer})
    def patch(self, request, dataset_id: str, view_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        view = _view(dataset, view_id)
        values = _clean(dataset, request.data, partial=True)
        if "name" in values:
            _taken(dataset, values["name"], view)
        for key, value in values.items():
            setattr(view, key, value)
        view.updated_at = timezone.now()
        _save(view)
        return Response(SavedViewSerializer(view).data)

    @extend_schema(summary="Delete a saved view", responses={204: None})
    def delete(self, request, dataset_id: str, view_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        _view(dataset, view_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class SavedViewTag(APIView):
    @extend_schema(
        summary="Make a tag of the samples a saved view matches now (to sample from or export)",
        request=inline_serializer("SavedViewTagRequest", {"name": serializers.CharField()}),
        responses={201: TagSerializer},
    )
    def post(self, request, dataset_id: str, view_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        view = _view(dataset, view_id)
        data = request.data if isinstance(request.data, dict) else {}
        unknown = sorted(set(data) - {"name"})
        if unknown:
            raise ValidationError({unknown[0]: ["unknown key; give only name"]})
        if "name" not in data:
            raise ValidationError({"name": ["is required"]})
        tag = tagging.tag_from_filter(
            dataset, tagging.check_name(dataset, data["name"]), view.filter, creator=request.user
        )
        return Response(TagSerializer(tag).data, status=status.HTTP_201_CREATED)


def export_matches(request, dataset, name: str, filter_obj, sort_text: str | None) -> object:
    """The samples `filter_obj` matches now in the order of `sort_text` (as the sample list sorts: missing values
    last, ties by idx), streamed by the tag export (same formats and writers) from an unsaved tag that holds their
    bitmask: nothing is stored. The format and sort are checked before the filter is run."""
    fmt = tagging.check_export_format(request.query_params.get("format", ""))
    sort = parse_sort(dataset, sort_text)
    parsed = parse_filter(filter_obj or {})
    if parsed["tag"] is not None:
        parsed["tag"] = resolve_tag(dataset, parsed["tag"], "filter.tag")
    mask = columns.filter_mask(dataset, **parsed)
    matches = Tag(dataset=dataset, name=name, bitmask=mask, count=bitmask.count(mask))
    # idx order is the tag export's own order: its batched range walk, not a sort.
    in_order = sort if (sort.path is not None or sort.descending) else None
    return export_response(request, dataset, matches, fmt, sort=in_order)


EXPORT_RESPONSES = {
    (200, "text/plain"): OpenApiTypes.STR,
    (200, "text/csv"): OpenApiTypes.STR,
    (200, "application/json"): OpenApiTypes.OBJECT,
}
EXPORT_ORDER = (
    "Samples come in the sort's order, as the sample list and Explore's grid show them: by the metadata value "
    "(missing values last), ties by idx ascending; `idx` (the default) is upload order. A tag's own export has no "
    "sort and is always in idx order."
)
FORMAT_PARAMETER = OpenApiParameter("format", str, enum=list(tagging.EXPORT_FORMATS), required=True)


class SavedViewExport(APIView):
    content_negotiation_class = IgnoreFormatParameter

    @extend_schema(
        summary="Download the samples a saved view matches now, in the view's sort (the tag export's formats)",
        description=EXPORT_ORDER,
        parameters=[FORMAT_PARAMETER],
        responses=EXPORT_RESPONSES,
    )
    def get(self, request, dataset_id: str, view_id: str):
        dataset = get_dataset(request.user, dataset_id)
        view = _view(dataset, view_id)
        return export_matches(request, dataset, view.name, view.filter, view.sort)


class FilterExport(APIView):
    content_negotiation_class = IgnoreFormatParameter

    @extend_schema(
        summary="Download the samples a filter matches, in the given sort (the tag export's formats)",
        description=EXPORT_ORDER,
        parameters=[
            FORMAT_PARAMETER,
            OpenApiParameter("sort", str, description="idx (default), -idx, a metadata path or -path"),
            OpenApiParameter(
                "filter",
                str,
                description='JSON {"tag", "file_name", "conditions"} as Explore applies it; none: every sample',
            ),
            OpenApiParameter("name", str, description="The download's file name (default: samples)."),
        ],
        responses=EXPORT_RESPONSES,
    )
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        name = (request.query_params.get("name") or "samples").strip()[:200] or "samples"
        return export_matches(request, dataset, name, _filter_param(request), request.query_params.get("sort"))


urlpatterns = [
    path("datasets/<str:dataset_id>/views", SavedViewList.as_view(), name="saved-view-list"),
    path("datasets/<str:dataset_id>/views/<str:view_id>", SavedViewDetail.as_view(), name="saved-view-detail"),
    path("datasets/<str:dataset_id>/views/<str:view_id>/tag", SavedViewTag.as_view(), name="saved-view-tag"),
    path("datasets/<str:dataset_id>/views/<str:view_id>/export", SavedViewExport.as_view(), name="saved-view-export"),
    path("datasets/<str:dataset_id>/export", FilterExport.as_view(), name="filter-export"),
]
