"""REST API: custom metadata upload, field proposals and the configurator."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.http import Http404
from django.urls import path
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import columns, tasks
from curation import metadata as services
from curation.access import get_dataset
from curation.models import FieldType, MetadataField, Role
from winnow import safejson
from winnow.fields import StringField
from winnow.parsers import MultiPartParser, TextJSONParser


def _reject_constant(name):
    raise ParseError(f"JSON parse error: {name} is not valid JSON (NaN and Infinity are not allowed)")


def _payload(request):
    """The JSON body, or the JSON file sent as multipart field `file` (for `curl -F file=@metadata.json`)."""
    upload = request.FILES.get("file") if hasattr(request, "FILES") else None
    if upload is None:
        return request.data
    try:
        return safejson.loads(upload.read(), "file", text=False)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"file: not valid JSON ({exc})") from None


UPLOAD_RESULT = inline_serializer(
    "MetadataUploadResult",
    {"updated": serializers.IntegerField(), "warnings": serializers.ListField(child=serializers.DictField())},
)


class MetadataUpload(APIView):
    # The document's validation names the entry holding a bad string (NUL, lone surrogate).
    parser_classes = [TextJSONParser, MultiPartParser]

    @extend_schema(
        summary="Upload custom metadata (Lightly's COCO-like format); replaces each listed sample's metadata",
        request=inline_serializer(
            "MetadataDocument",
            {
                "images": serializers.ListField(child=serializers.DictField()),
                "metadata": serializers.ListField(child=serializers.DictField()),
            },
        ),
        responses={200: UPLOAD_RESULT},
        examples=[
            OpenApiExample(
                "two images",
                value={
                    "images": [{"file_name": "a.jpg", "id": 1}, {"file_name": "b.jpg", "id": 2}],
                    "metadata": [{"image_id": 1, "weather": {"temperature": 21.5, "rain": False}}],
                },
                request_only=True,
            )
        ],
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        result = services.upload_metadata(dataset, _payload(request))
        columns.metadata_changed(dataset.pk)  # after the commit: a build meanwhile is left stale, never wrong
        return Response(result)


class FieldProposals(APIView):
    @extend_schema(
        summary="Propose configurator fields: every leaf dot path in the metadata, with type, examples, coverage",
        responses={200: dict},
    )
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        return Response(services.propose_fields(dataset))


class MetadataFieldSerializer(serializers.ModelSerializer):
    path = StringField(max_length=services.MAX_PATH_LENGTH, trim_whitespace=False)
    type = serializers.ChoiceField(choices=FieldType.choices)
    display_name = StringField(max_length=200, required=False, allow_blank=True)
    fallback = serializers.JSONField(required=False, allow_null=True)

    class Meta:
        model = MetadataField
        fields = ["id", "path", "type", "display_name", "fallback", "created_at"]
        read_only_fields = ["id", "created_at"]

    def validate_path(self, value):
        problem = services.path_error(value)
        if problem:
            raise ValidationError(f"{value!r} {problem}")
        dataset = self.context["dataset"]
        taken = MetadataField.objects.filter(dataset=dataset, path=value)
        if self.instance is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise ValidationError(f"a field for path {value!r} already exists in this dataset")
        return value

    def validate(self, attrs):
        # On PATCH, a new type must still fit the stored fallback (and a new fallback the stored type).
        field_type = attrs.get("type", getattr(self.instance, "type", None))
        fallback = attrs.get("fallback", getattr(self.instance, "fallback", None))
        problem = services.fallback_error(field_type, fallback)
        if problem:
            raise ValidationError({"fallback": [problem]})
        path = attrs.get("path", getattr(self.instance, "path", None))
        if "type" in attrs or "path" in attrs:
            problem = services.type_mismatch(self.context["dataset"], path, field_type)
            if problem:
                raise ValidationError({"type": [problem]})
        if not attrs.get("display_name") and self.instance is None:
            attrs["display_name"] = attrs["path"]
        return attrs

    def save(self, **kwargs):
        try:
            with transaction.atomic():
                return super().save(**kwargs)
        except IntegrityError:  # two requests raced for the same path
            raise ValidationError({"path": ["a field for this path already exists in this dataset"]}) from None


def _sync_sort_indexes(field: MetadataField) -> None:
    """After the commit, (re)build or drop the field's sort indexes on a worker: at 10M samples a build
    takes a minute, longer than a request should."""
    dataset_id, field_id = field.dataset_id, field.pk
    transaction.on_commit(lambda: tasks.sync_sort_indexes.delay(dataset_id, field_id), robust=True)
    columns.fields_changed(dataset_id)


class ConfiguratorList(APIView):
    @extend_schema(summary="Configured metadata fields", responses={200: MetadataFieldSerializer(many=True)})
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        return Response(MetadataFieldSerializer(dataset.metadata_fields.all(), many=True).data)

    @extend_schema(
        summary="Add a configured metadata field",
        request=MetadataFieldSerializer,
        responses={201: MetadataFieldSerializer},
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        serializer = MetadataFieldSerializer(data=request.data, context={"dataset": dataset})
        serializer.is_valid(raise_exception=True)
        field = serializer.save(dataset=dataset)
        _sync_sort_indexes(field)
        return Response(serializer.data, status=status.HTTP_201_CREATED)


class ConfiguratorDetail(APIView):
    def _field(self, request, dataset_id: str, field_id: int, need: str):
        dataset = get_dataset(request.user, dataset_id, need=need)
        field = dataset.metadata_fields.filter(pk=field_id).first()
        if field is None:
            raise Http404("No configured field with that id in this dataset.")
        return dataset, field

    @extend_schema(summary="A configured metadata field", responses={200: MetadataFieldSerializer})
    def get(self, request, dataset_id: str, field_id: int):
        _dataset, field = self._field(request, dataset_id, field_id, Role.VIEWER)
        return Response(MetadataFieldSerializer(field).data)

    @extend_schema(
        summary="Change a configured metadata field",
        request=MetadataFieldSerializer(partial=True),
        responses={200: MetadataFieldSerializer},
    )
    def patch(self, request, dataset_id: str, field_id: int):
        dataset, field = self._field(request, dataset_id, field_id, Role.EDITOR)
        before = (field.path, field.fallback)
        kind = field.type
        serializer = MetadataFieldSerializer(field, data=request.data, partial=True, context={"dataset": dataset})
        serializer.is_valid(raise_exception=True)
        field = serializer.save()
        if (field.path, field.fallback) != before:  # the sort expression changed: its index must too
            _sync_sort_indexes(field)
        elif field.type != kind:  # another kind of column (numeric or categorical)
            columns.fields_changed(dataset.pk)
        return Response(serializer.data)

    @extend_schema(summary="Remove a configured metadata field (the samples' metadata stays)", responses={204: None})
    def delete(self, request, dataset_id: str, field_id: int):
        _dataset, field = self._field(request, dataset_id, field_id, Role.EDITOR)
        field_pk = field.pk
        field.delete()
        field.pk = field_pk
        _sync_sort_indexes(field)
        return Response(status=status.HTTP_204_NO_CONTENT)


urlpatterns = [
    path("datasets/<str:dataset_id>/metadata", MetadataUpload.as_view(), name="metadata-upload"),
    path("datasets/<str:dataset_id>/metadata/fields", FieldProposals.as_view(), name="metadata-fields"),
    path("datasets/<str:dataset_id>/configurator", ConfiguratorList.as_view(), name="configurator-list"),
    path(
        "datasets/<str:dataset_id>/configurator/<int:field_id>",
        ConfiguratorDetail.as_view(),
        name="configurator-detail",
    ),
]
