"""`/v1/datasets`: list (own / shared / team), query by name, create, get, delete.

Winnow has no teams: `shared=False` lists the datasets the caller owns, `shared=True` those shared
with them (any other role), `getAssetsOfTeam=True` nothing and `getAssetsOfTeamInclusiveSelf=True`
all of theirs. The client de-duplicates the three lists of `get_datasets(shared=None)` by id.
"""

from __future__ import annotations

from django.db.models import Count, IntegerField, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import JsonResponse

from curation import services
from curation.access import datasets_for
from curation.models import Dataset, Membership, Role, Sample, UploadMode
from winnow.lightly.base import ApiError, LightlyView, dataset_name_ok, ms, no_content, paged

IMG_TYPES = {UploadMode.FULL: "full", UploadMode.THUMBNAILS: "thumbnail", UploadMode.META: "meta"}
UPLOAD_MODES = {value: mode for mode, value in IMG_TYPES.items()}


def _samples(aggregate, field: str):
    rows = Sample.objects.filter(dataset=OuterRef("pk")).order_by().values("dataset").annotate(v=aggregate(field))
    return Coalesce(Subquery(rows.values("v"), output_field=IntegerField()), 0)


def _listed(user):
    """The caller's datasets with their sample counts and sizes and the caller's role (one query)."""
    role = Membership.objects.filter(dataset=OuterRef("pk"), user=user).values("role")[:1]
    return (
        datasets_for(user)
        .select_related("owner")
        .annotate(role=Subquery(role), n_samples=_samples(Count, "id"), size_in_bytes=_samples(Sum, "size_bytes"))
        .order_by("-created_at", "id")
    )


def dataset_data(dataset: Dataset) -> dict:
    """Lightly's DatasetData; `dataset` comes from `_listed` (annotated)."""
    data = {
        "id": dataset.id,
        "name": dataset.name,
        "userId": dataset.owner.username,
        "type": "Images",
        "imgType": IMG_TYPES.get(dataset.upload_mode, "full"),
        "nSamples": int(dataset.n_samples),
        "sizeInBytes": int(dataset.size_in_bytes),
        "createdAt": ms(dataset.created_at),
        "lastModifiedAt": max(ms(dataset.updated_at), ms(dataset.created_at)),
    }
    if dataset.role in (Role.EDITOR, Role.OWNER):
        data["accessType"] = "WRITE"  # Lightly's only access type; viewers get none
    return data


class _DatasetLists(LightlyView):
    retried_methods = ("GET",)

    def _select(self, request, queryset):
        if self.flag(request, "getAssetsOfTeamInclusiveSelf"):
            return queryset
        if self.flag(request, "getAssetsOfTeam"):
            return queryset.none()
        if self.flag(request, "shared"):
            return queryset.exclude(role=Role.OWNER)
        return queryset.filter(role=Role.OWNER)

    def _answer(self, request, queryset):
        offset, size = self.page(request)
        # Names the client's validator rejects would fail the whole list: they are not listed here.
        rows = [dataset_data(d) for d in self._select(request, queryset) if dataset_name_ok(d.name)]
        return JsonResponse(paged(rows, offset, size), safe=False)


class DatasetListView(_DatasetLists):
    def get(self, request):
        return self._answer(request, _listed(request.user))

    def post(self, request):
        body = self.json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not dataset_name_ok(name):
            raise self.invalid(
                "name must be at least 3 characters: a letter or digit, then letters, digits, space, '_' or '-'."
            )
        try:
            name = services.clean_dataset_name(name)
        except ValueError as exc:
            raise self.invalid(f"name {exc}") from None
        kind = body.get("type", "Images")
        if kind != "Images":
            raise self.invalid(
                f"type {kind!r} is not supported: Winnow datasets hold images (type Images).", "DATASET_NOT_SUPPORTED"
            )
        img_type = body.get("imgType") or "meta"  # the client cannot upload pixels: default to metadata only
        if not isinstance(img_type, str) or img_type not in UPLOAD_MODES:
            raise self.invalid(f"imgType must be one of full, thumbnail, meta (got {img_type!r}).")
        if body.get("parentDatasetId"):
            raise self.invalid(
                "parentDatasetId is not supported: Winnow datasets have no parent.", "DATASET_NOT_SUPPORTED"
            )
        # As Lightly: one owner's dataset names are unique (here in any case), and a second create is refused.
        try:
            dataset = services.create_dataset(request.user, name, UPLOAD_MODES[img_type])
        except services.DatasetNameTaken:
            raise self.invalid(f"A dataset with the name {name!r} already exists.", "DATASET_NAME_EXISTS") from None
        return JsonResponse({"id": dataset.id}, status=201)


class DatasetQueryByNameView(_DatasetLists):
    def get(self, request, name: str):
        queryset = _listed(request.user)
        exact = self.flag(request, "exact")
        queryset = queryset.filter(name=name) if exact else queryset.filter(name__startswith=name)
        return self._answer(request, queryset)


class DatasetDetailView(LightlyView):
    def get(self, request, dataset_id: str):
        dataset = self.dataset(request, dataset_id)
        return JsonResponse(dataset_data(_listed(request.user).get(pk=dataset.pk)))

    def delete(self, request, dataset_id: str):
        dataset = self.dataset(request, dataset_id, need=Role.OWNER)
        services.delete_dataset(dataset)
        return no_content()

    def put(self, request, dataset_id: str):
        raise ApiError(405, "NOT_IMPLEMENTED", "Rename datasets in Winnow (PATCH /api/v1/datasets/<id>).")
