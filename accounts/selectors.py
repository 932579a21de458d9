from __future__ import annotations

from collections.abc import Sequence

from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Coalesce, NullIf

from accounts.models import ApiKey, Membership, Organization, User
from config import rawsql
from config.errors import InvalidInput, NotFound


def membership_get(*, organization: Organization, external_id: str) -> Membership:
    # Written as SQL: every API call about a member runs it (see config/rawsql.py).
    rows = rawsql.fetch_all(
        f"""
        SELECT {rawsql.columns(Membership, "m")}, {rawsql.columns(User, "u")}
        FROM {Membership._meta.db_table} m
        JOIN {User._meta.db_table} u ON u.id = m.user_id
        WHERE m.organization_id = %s AND m.external_id = %s
        """,
        [organization.pk, external_id],
    )
    if not rows:
        raise NotFound(
            f"No member {external_id!r} in this organization.",
            code="member_not_found",
            field="user",
        )
    membership, user = rawsql.instance_pair(rows[0], Membership, User)
    membership.user = user
    membership.organization = organization
    return membership


def member_ids_by_external_id(
    *, organization: Organization, external_ids: Sequence[str]
) -> dict[str, int]:
    """The membership ids of these members (those that exist): one query
    written as SQL, as every ingest runs it (see config/rawsql.py).
    """
    condition, params = rawsql.any_of("external_id", external_ids)
    return dict(
        rawsql.fetch_all(
            f"SELECT external_id, id FROM {Membership._meta.db_table}"
            f" WHERE organization_id = %s AND {condition}",
            [organization.pk, *params],
        )
    )


def member_name_expression(path: str = "") -> Coalesce:
    """`Membership.member_name` in a query, for ordering by it: the
    membership's own name, else its user's. `path` leads to the membership
    ("membership__" from a row that refers to one).
    """
    return Coalesce(NullIf(F(f"{path}name"), Value("")), F(f"{path}user__name"))


def membership_list(*, organization: Organization) -> QuerySet[Membership]:
    return Membership.objects.filter(organization=organization).select_related("user")


def memberships_of_user(*, user: User) -> QuerySet[Membership]:
    # With the user: the layout shows their name as each organization has it.
    return (
        Membership.objects.filter(user=user)
        .select_related("organization", "user")
        .order_by("organization__name", "organization_id")
    )


def organization_get_by_slug(*, slug: str) -> Organization:
    organization = Organization.objects.filter(slug=slug).first()
    if organization is None:
        raise NotFound(
            f"No organization with the slug {slug!r}.", code="organization_not_found", field="slug"
        )
    return organization


def validate_admins(*, organization: Organization, admins: Sequence[Membership]) -> None:
    """Every one of `admins` must be an admin of `organization`."""
    for admin in admins:
        if admin.organization_id != organization.pk or not admin.is_admin:
            raise InvalidInput(
                f"{admin.external_id!r} is not an admin of this organization.",
                code="not_an_admin",
                field="admins",
            )


def memberships_by_external_id(
    *, organization: Organization, external_ids: list[str], field: str
) -> list[Membership]:
    """The members named, in the order given; an unknown name is an input error."""
    found = {
        membership.external_id: membership
        for membership in Membership.objects.filter(
            organization=organization, external_id__in=external_ids
        ).select_related("user")
    }
    for external_id in external_ids:
        if external_id not in found:
            raise InvalidInput(
                f"No member {external_id!r} in this organization.", code="unknown_user", field=field
            )
    return [found[external_id] for external_id in dict.fromkeys(external_ids)]


def members_search(
    *, organization: Organization, query: str, role: str | None = None, limit: int = 20
) -> list[Membership]:
    """Members whose name (as this organization has it), email or external id
    contains `query`, by that name: one query.
    """
    members = (
        Membership.objects.filter(organization=organization)
        .select_related("user")
        .annotate(shown_name=member_name_expression())
    )
    if role:
        members = members.filter(role=role)
    if query:
        members = members.filter(
            Q(shown_name__icontains=query)
            | Q(user__email__icontains=query)
            | Q(external_id__icontains=query)
        )
    return list(members.order_by("shown_name", "user__email")[:limit])


def members_filter(*, organization: Organization, query: str = "") -> QuerySet[Membership]:
    """The organization's members whose name (as this organization has it),
    email or external id contains `query`, by that name: a queryset for the
    Members page to paginate, so that thousands of members cost one page.
    """
    members = (
        Membership.objects.filter(organization=organization)
        .select_related("user")
        .annotate(shown_name=member_name_expression())
    )
    if query:
        members = members.filter(
            Q(shown_name__icontains=query)
            | Q(user__email__icontains=query)
            | Q(external_id__icontains=query)
        )
    return members.order_by("shown_name", "user__email", "pk")


def membership_get_by_id(*, organization: Organization, membership_id: int) -> Membership | None:
    """A member of `organization` by id, with their user; None for anyone else's."""
    return (
        Membership.objects.filter(organization=organization, pk=membership_id)
        .select_related("user", "organization")
        .first()
    )


def api_keys_list(*, organization: Organization) -> QuerySet[ApiKey]:
    """The organization's keys: active ones first, newest first."""
    return ApiKey.objects.filter(organization=organization).order_by(
        F("revoked_at").asc(nulls_first=True), "-created_at", "-pk"
    )


def api_key_get_by_id(*, organization: Organization, api_key_id: int) -> ApiKey | None:
    """A key of `organization` by id; None for another organization's."""
    return ApiKey.objects.filter(organization=organization, pk=api_key_id).first()
