"""The one place that answers "may this user read / write this dataset", for the API and the pages.

A dataset the caller is not a member of does not exist for them (404); a member whose role is too
low for the action gets a 403.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from curation.errors import DomainError
from curation.models import ROLE_RANK, Dataset, Membership, Role, Tag


def datasets_for(user):
    """Every dataset the user is a member of."""
    if not user.is_authenticated:
        return Dataset.objects.none()
    return Dataset.objects.filter(memberships__user=user)


def role_of(user, dataset: Dataset) -> str | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(dataset=dataset, user=user).values_list("role", flat=True).first()


def get_dataset(user, dataset_id: str, *, need: str = Role.VIEWER) -> Dataset:
    """The dataset, if the user is a member; 404 if not; 403 if the member's role is below `need`."""
    membership = (
        Membership.objects.select_related("dataset").filter(dataset_id=str(dataset_id), user=user).first()
        if user.is_authenticated
        else None
    )
    if membership is None:
        raise Http404("No dataset with that id.")
    if ROLE_RANK[Role(membership.role)] < ROLE_RANK[Role(need)]:
        raise PermissionDenied(f"Your role in this dataset ({membership.role}) does not allow this; it needs {need}.")
    dataset = membership.dataset
    dataset.caller_role = membership.role
    return dataset


def resolve_tag(dataset: Dataset, tag, field: str = "tag") -> Tag:
    """The dataset's tag (a Tag or its id), or a DomainError on `field` (another dataset's tag is unknown here)."""
    if isinstance(tag, Tag):
        if tag.dataset_id != dataset.pk:
            raise DomainError(f"no tag with id {tag.pk!r} in this dataset", field)
        return tag
    if not isinstance(tag, str) or not tag:
        raise DomainError(f"must be a tag id (a string), not {tag!r}", field)
    found = Tag.objects.filter(dataset=dataset, pk=tag).first()
    if found is None:
        raise DomainError(f"no tag with id {tag!r} in this dataset", field)
    return found
