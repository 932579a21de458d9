from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Membership, Organization, User
from config.errors import NotFound


def membership_get(*, organization: Organization, external_id: str) -> Membership:
    membership = (
        Membership.objects.select_related("user")
        .filter(organization=organization, external_id=external_id)
        .first()
    )
    if membership is None:
        raise NotFound(f"No member {external_id!r} in this organization.", code="member_not_found", field="user")
    return membership


def membership_list(*, organization: Organization) -> QuerySet[Membership]:
    return Membership.objects.filter(organization=organization).select_related("user")


def memberships_of_user(*, user: User) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(user=user)
        .select_related("organization")
        .order_by("organization__name", "organization_id")
    )


def organization_get_by_slug(*, slug: str) -> Organization:
    organization = Organization.objects.filter(slug=slug).first()
    if organization is None:
        raise NotFound(f"No organization with the slug {slug!r}.", code="organization_not_found", field="slug")
    return organization
