"""REST API: datasets and their members.

Roles: any member reads; an editor or owner renames; only an owner deletes the dataset or changes
members. Adding a user who is already a member changes their role (200; a new member is 201). A
dataset always keeps an owner: removing or demoting the last one is refused.
"""

from __future__ import annotations

from django.db.models import Count, F, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import services
from curation.access import datasets_for, get_dataset
from curation.models import Dataset, Membership, Role, Tag, UploadMode
from winnow.fields import StringField


class DatasetSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    role = serializers.CharField(read_only=True, help_text="The caller's role in this dataset.")
    sample_count = serializers.IntegerField(read_only=True)
    tag_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Dataset
        fields = ["id", "name", "upload_mode", "owner", "role", "sample_count", "tag_count", "created_at"]
        read_only_fields = fields


class DatasetNameField(StringField):
    """`services.clean_dataset_name`'s rule: a string, stripped, not empty, at most 200 characters, no control
    characters. (Unique among the owner's datasets, any case: checked by the view against the database.)"""

    default_error_messages = {"blank": "must not be empty", "null": "must be a string", "required": "is required"}

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", services.MAX_DATASET_NAME_LENGTH)
        kwargs.setdefault(
            "help_text",
            "Surrounding spaces are dropped; not empty, no control characters, unique (any case) per owner.",
        )
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        try:
            return services.clean_dataset_name(data)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


def _not_one_of(values) -> dict:
    message = f"{{input!r}} is not one of {', '.join(values)}"
    return {"invalid_choice": message, "null": message.format(input=None), "required": message.format(input=None)}


class NewDatasetSerializer(serializers.Serializer):
    name = DatasetNameField(error_messages={"required": "must be a string"})
    upload_mode = serializers.ChoiceField(
        choices=UploadMode.choices,
        default=UploadMode.FULL,
        error_messages=_not_one_of(UploadMode.values),
        help_text="What the dataset keeps: images (full), thumbnails only, or metadata only (meta). Fixed for life.",
    )


class RenameSerializer(serializers.Serializer):
    name = DatasetNameField()


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["username", "role", "created_at"]
        read_only_fields = fields


class NewMemberSerializer(serializers.Serializer):
    username = StringField(
        error_messages=dict.fromkeys(("invalid", "blank", "null", "required"), "must be a non-empty string")
    )
    role = serializers.ChoiceField(choices=Role.choices, error_messages=_not_one_of(Role.values))


def _count(model):
    rows = model.objects.filter(dataset=OuterRef("pk")).order_by().values("dataset").annotate(n=Count("*"))
    return Coalesce(Subquery(rows.values("n"), output_field=IntegerField()), 0)


def _annotated(user):
    """The caller's datasets with their counts and the caller's role, in one query.

    Samples are never deleted one by one, so the sample count is next_idx (no scan over samples);
    tags are a small table, counted through its (dataset, name) index.
    """
    role = Membership.objects.filter(dataset=OuterRef("pk"), user=user).values("role")[:1]
    return (
        datasets_for(user)
        .select_related("owner")
        .annotate(role=Subquery(role), sample_count=F("next_idx"), tag_count=_count(Tag))
        .order_by("-created_at", "id")
    )


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise ValidationError({"body": ["must be a JSON object"]})
    return request.data


def _valid(serializer_class, request) -> dict:
    """The request's JSON object, checked by the serializer that documents it (the OpenAPI schema)."""
    serializer = serializer_class(data=_body(request))
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class DatasetList(APIView):
    @extend_schema(
        operation_id="datasets_list",
        responses={200: DatasetSerializer(many=True)},
        summary="The caller's datasets",
    )
    def get(self, request):
        return Response(DatasetSerializer(_annotated(request.user), many=True).data)

    @extend_schema(
        operation_id="datasets_create",
        request=NewDatasetSerializer,
        responses={201: DatasetSerializer},
        summary="Create a dataset",
    )
    def post(self, request):
        body = _valid(NewDatasetSerializer, request)
        # A dataset name is unique among its owner's datasets (any case): two alike could not be told apart.
        try:
            dataset = services.create_dataset(request.user, body["name"], body["upload_mode"])
        except services.DatasetNameTaken as exc:
            raise ValidationError({"name": [str(exc)]}) from None
        return Response(
            DatasetSerializer(_annotated(request.user).get(pk=dataset.pk)).data, status=status.HTTP_201_CREATED
        )


class DatasetDetail(APIView):
    @extend_schema(operation_id="dataset_retrieve", responses={200: DatasetSerializer}, summary="One dataset")
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        return Response(DatasetSerializer(_annotated(request.user).get(pk=dataset.pk)).data)

    @extend_schema(
        operation_id="dataset_rename",
        request=RenameSerializer,
        responses={200: DatasetSerializer},
        summary="Rename (editor or owner)",
    )
    def patch(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        body = _body(request)
        fixed = sorted(set(body) & {"id", "upload_mode", "owner", "created_at"})
        if fixed:
            raise ValidationError({fixed[0]: ["cannot be changed; only the name can"]})
        try:
            services.rename_dataset(dataset, _valid(RenameSerializer, request)["name"])
        except services.DatasetNameTaken as exc:
            raise ValidationError({"name": [str(exc)]}) from None
        return Response(DatasetSerializer(_annotated(request.user).get(pk=dataset.pk)).data)

    @extend_schema(
        operation_id="dataset_delete",
        responses={204: None},
        summary="Delete the dataset, its samples, tags and files (owner)",
    )
    def delete(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.OWNER)
        services.delete_dataset(dataset)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberList(APIView):
    @extend_schema(
        operation_id="members_list",
        responses={200: MemberSerializer(many=True)},
        summary="Members and their roles",
    )
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        members = Membership.objects.filter(dataset=dataset).select_related("user").order_by("created_at", "id")
        return Response(MemberSerializer(members, many=True).data)

    @extend_schema(
        operation_id="members_set",
        request=NewMemberSerializer,
        responses={201: MemberSerializer, 200: MemberSerializer},
        summary="Add a member, or change a member's role (owner)",
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.OWNER)
        body = _valid(NewMemberSerializer, request)
        try:
            membership, created = services.set_member(dataset, body["username"], body["role"])
        except services.UnknownUser as exc:
            raise ValidationError({"username": [str(exc)]}) from None
        except ValueError as exc:
            raise ValidationError({"role": [str(exc)]}) from None
        return Response(
            MemberSerializer(membership).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class MemberDetail(APIView):
    @extend_schema(operation_id="member_delete", responses={204: None}, summary="Remove a member (owner)")
    def delete(self, request, dataset_id: str, username: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.OWNER)
        membership = get_object_or_404(Membership, dataset=dataset, user__username=username)
        try:
            services.remove_member(dataset, membership)
        except ValueError as exc:
            raise ValidationError({"username": [str(exc)]}) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


urlpatterns = [
    path("datasets", DatasetList.as_view(), name="dataset-list"),
    path("datasets/<str:dataset_id>", DatasetDetail.as_view(), name="dataset-detail"),
    path("datasets/<str:dataset_id>/members", MemberList.as_view(), name="dataset-members"),
    path("datasets/<str:dataset_id>/members/<str:username>", MemberDetail.as_view(), name="dataset-member"),
]
