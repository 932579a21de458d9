from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypedDict, Unpack

from django.core.exceptions import ValidationError
from django.core.validators import validate_email, validate_slug
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import (
    ANCHOR_DAY_MAX,
    ANCHOR_DAY_MIN,
    ApiKey,
    Membership,
    Organization,
    Plan,
    Role,
    User,
    normalize_email,
)
from config import rawsql
from config.errors import Conflict, InvalidInput
from config.money import currency_error

API_KEY_PREFIX = "hr_"
API_KEY_PREFIX_LENGTH = 10
API_KEY_LAST_USED_RESOLUTION = timedelta(minutes=1)


def _validate_slug(slug: str) -> None:
    try:
        validate_slug(slug)
    except ValidationError:
        raise InvalidInput(
            f"{slug!r} is not a valid slug: use letters, numbers, hyphens or underscores.",
            code="invalid_slug",
            field="slug",
        ) from None
    if len(slug) > Organization._meta.get_field("slug").max_length:  # type: ignore[operator]
        raise InvalidInput(
            "The slug is too long (64 characters at most).", code="invalid_slug", field="slug"
        )


def validate_anchor_day(anchor_day: int) -> None:
    if not ANCHOR_DAY_MIN <= anchor_day <= ANCHOR_DAY_MAX:
        raise InvalidInput(
            f"The anchor day must be between {ANCHOR_DAY_MIN} and {ANCHOR_DAY_MAX}.",
            code="invalid_anchor_day",
            field="anchor_day",
        )


def _validate_name(name: str, *, field: str = "name", max_length: int = 200) -> str:
    name = name.strip()
    if not name:
        raise InvalidInput("The name must not be empty.", code="invalid_name", field=field)
    if len(name) > max_length:
        raise InvalidInput(
            f"The name is too long ({max_length} characters at most).",
            code="invalid_name",
            field=field,
        )
    return name


class OrganizationFields(TypedDict, total=False):
    """What `organization_create` takes besides the slug, name and plan."""

    credit_allowance: Decimal | None
    anchor_day: int
    block_when_exhausted: bool


def organization_create(
    *,
    slug: str,
    name: str,
    credit_allowance: Decimal | None = None,
    anchor_day: int = 1,
    block_when_exhausted: bool = True,
    plan: Plan | None = None,
) -> Organization:
    _validate_slug(slug)
    validate_anchor_day(anchor_day)
    organization = Organization(
        slug=slug,
        name=_validate_name(name),
        own_credit_allowance=credit_allowance,
        anchor_day=anchor_day,
        block_when_exhausted=block_when_exhausted,
        plan=plan,
    )
    _save_organization(organization)
    return organization


class OrganizationChanges(TypedDict, total=False):
    """What `organization_update` may change; `clear_allowance` removes the allowance."""

    slug: str | None
    name: str | None
    credit_allowance: Decimal | None
    clear_allowance: bool
    block_when_exhausted: bool | None
    credit_price: Decimal | None
    clear_price: bool
    currency: str | None
    plan: Plan | None
    clear_plan: bool


def organization_update(
    *, organization: Organization, **changes: Unpack[OrganizationChanges]
) -> list[str]:
    """Change only what is given; returns the names of the fields changed.
    The anchor day is billing's (billing/services/anchor.py); a change of
    both, with the alerts they move, is alerts.services.changes.organization_update.
    """
    slug = changes.get("slug")
    name = changes.get("name")
    credit_allowance = changes.get("credit_allowance")
    clear_allowance = changes.get("clear_allowance", False)
    block_when_exhausted = changes.get("block_when_exhausted")
    credit_price = changes.get("credit_price")
    clear_price = changes.get("clear_price", False)
    currency = changes.get("currency")
    plan = changes.get("plan")
    clear_plan = changes.get("clear_plan", False)
    changed: list[str] = []
    if slug is not None and slug != organization.slug:
        _validate_slug(slug)
        organization.slug = slug
        changed.append("slug")
    if name is not None:
        organization.name = _validate_name(name)
        changed.append("name")
    if clear_allowance or credit_allowance is not None:
        organization.own_credit_allowance = None if clear_allowance else credit_allowance
        changed.append("own_credit_allowance")
    if block_when_exhausted is not None:
        organization.block_when_exhausted = block_when_exhausted
        changed.append("block_when_exhausted")
    if clear_price or credit_price is not None:
        organization.own_credit_price = None if clear_price else _validate_price(credit_price)
        changed.append("own_credit_price")
    if currency is not None and currency != organization.currency:
        organization.currency = _validate_currency(currency)
        changed.append("currency")
    if (clear_plan and organization.plan_id is not None) or (
        plan is not None and plan.pk != organization.plan_id
    ):
        organization.plan = None if clear_plan else plan
        changed.append("plan")
    if changed:
        _save_organization(organization, update_fields=changed)
    return changed


def _validate_price(price: Decimal | None) -> Decimal | None:
    if price is not None and price < 0:
        raise InvalidInput(
            "credit_price: must not be negative.", code="invalid", field="credit_price"
        )
    return price


def _validate_currency(code: str) -> str:
    error = currency_error(code)
    if error:
        raise InvalidInput(f"currency: {error}.", code="invalid", field="currency")
    return code


def _save_organization(organization: Organization, update_fields: list[str] | None = None) -> None:
    """Save; a slug another organization has is a 409, nothing saved."""
    try:
        with transaction.atomic():
            organization.save(update_fields=update_fields)
    except IntegrityError:
        raise Conflict(
            f"An organization with the slug {organization.slug!r} already exists.",
            code="slug_taken",
            field="slug",
        ) from None


def organization_cap_check(
    *, organization: Organization, existing: QuerySet[Any], cap: int, refusal: InvalidInput
) -> None:
    """Refuse one more of `existing` past `cap`. Locks the organization's row
    first, so that two concurrent creations cannot pass the cap together:
    call it inside the creating transaction.
    """
    Organization.objects.select_for_update().filter(pk=organization.pk).first()
    if existing.count() >= cap:
        raise refusal


def _validate_email(email: str) -> str:
    email = normalize_email(email)
    try:
        validate_email(email)
    except ValidationError:
        raise InvalidInput(
            f"{email!r} is not a valid email address.", code="invalid_email", field="email"
        ) from None
    return email


def _validate_external_id(external_id: str) -> str:
    external_id = external_id.strip()
    if not external_id:
        raise InvalidInput("The user id must not be empty.", code="invalid_user", field="user")
    if len(external_id) > 255:
        raise InvalidInput(
            "The user id is too long (255 characters at most).", code="invalid_user", field="user"
        )
    return external_id


def _validate_role(role: str) -> str:
    if role not in Role.values:
        raise InvalidInput(
            f"{role!r} is not a role: use 'admin' or 'member'.", code="invalid_role", field="role"
        )
    return role


def _validate_member_name(name: str) -> str:
    name = name.strip()
    if len(name) > 150:
        raise InvalidInput(
            "The name is too long (150 characters at most).", code="invalid_name", field="name"
        )
    return name


@transaction.atomic
def membership_create(
    *,
    organization: Organization,
    email: str,
    role: str = Role.MEMBER,
    name: str = "",
    password: str | None = None,
    external_id: str | None = None,
) -> Membership:
    """Add a person to an organization, creating their user if the email is new.

    `name` is their name in this organization; a new user also gets it as
    their own (the name shown where no organization has set one). An
    existing user keeps theirs, which other organizations may show, and
    their password unless a new one is given.
    """
    email = _validate_email(email)
    role = _validate_role(role)
    external_id = _validate_external_id(external_id if external_id is not None else email)
    name = _validate_member_name(name)

    user = User.objects.select_for_update().filter(email=email).first()
    if user is None:
        try:
            with transaction.atomic():
                user = User.objects.create_user(email, password, name=name)
        except IntegrityError:  # created concurrently
            user = User.objects.get(email=email)
    elif password is not None:
        user.set_password(password)
        user.save(update_fields=["password"])

    if Membership.objects.filter(organization=organization, user=user).exists():
        raise Conflict(
            f"{email} is already a member of {organization.slug}.",
            code="member_exists",
            field="email",
        )
    if Membership.objects.filter(organization=organization, external_id=external_id).exists():
        raise Conflict(
            f"The user id {external_id!r} is already taken in {organization.slug}.",
            code="user_taken",
            field="user",
        )
    try:
        with transaction.atomic():
            return Membership.objects.create(
                organization=organization,
                user=user,
                role=role,
                external_id=external_id,
                name=name,
            )
    except IntegrityError:
        raise Conflict(
            f"{email} or the user id {external_id!r} is already in {organization.slug}.",
            code="member_exists",
        ) from None


class MembershipChanges(TypedDict, total=False):
    """What `membership_update` may change. `name` is the member's name in this
    organization only ('': their user's own name again). With `keep_an_admin`,
    the only admin cannot be made a member (`_refuse_removing_the_last_admin`).
    """

    role: str | None
    name: str | None
    external_id: str | None
    keep_an_admin: bool


def membership_update(
    *, membership: Membership, **changes: Unpack[MembershipChanges]
) -> Membership:
    """Change what is given; the user is never changed, so that no other
    organization sees it.
    """
    role = changes.get("role")
    name = changes.get("name")
    external_id = changes.get("external_id")
    keep_an_admin = changes.get("keep_an_admin", False)
    if name is not None:
        name = _validate_member_name(name)
    changed: list[str] = []
    if role is not None and role != membership.role:
        membership.role = _validate_role(role)
        changed.append("role")
    if external_id is not None and external_id != membership.external_id:
        membership.external_id = _validate_external_id(external_id)
        changed.append("external_id")
    if name is not None and name != membership.name:
        membership.name = name
        changed.append("name")
    if changed:
        try:
            with transaction.atomic():
                if keep_an_admin and "role" in changed and membership.role != Role.ADMIN:
                    _refuse_removing_the_last_admin(membership=membership, action="demote")
                membership.save(update_fields=changed)
        except IntegrityError:
            raise Conflict(
                f"The user id {external_id!r} is already taken.",
                code="user_taken",
                field="user",
            ) from None
    return membership


@transaction.atomic
def membership_delete(*, membership: Membership, keep_an_admin: bool = False) -> None:
    """Remove a member; with `keep_an_admin`, never the only admin."""
    if keep_an_admin and membership.is_admin:
        _refuse_removing_the_last_admin(membership=membership, action="remove")
    membership.delete()


def _refuse_removing_the_last_admin(*, membership: Membership, action: str) -> None:
    """Refuse to leave the organization without an admin: nobody could then
    manage it from its pages. The admins' rows are locked (in id order, one
    lock order for all) so that two admins demoting each other at once
    cannot both pass. Call inside the transaction of the change.
    """
    admin_ids = list(
        Membership.objects.select_for_update()
        .filter(organization_id=membership.organization_id, role=Role.ADMIN)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if admin_ids == [membership.pk]:
        raise InvalidInput(
            f"{membership.display_name} is the only admin of this organization: make"
            f" another member an admin before you {action} them.",
            code="last_admin",
            field="role",
        )


def _hash_api_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(*, organization: Organization, name: str = "") -> tuple[ApiKey, str]:
    """Create a key and return it with its raw value, which is never stored."""
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        organization=organization,
        name=name.strip()[:100],
        prefix=raw_key[:API_KEY_PREFIX_LENGTH],
        key_hash=_hash_api_key(raw_key),
    )
    return api_key, raw_key


def api_key_revoke(*, api_key: ApiKey) -> None:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """The active key with this value, with its organization; None if there is none.

    `last_used_at` is written at most once a minute per key, so that a busy
    client does not turn every request into a write.
    """
    if not raw_key.startswith(API_KEY_PREFIX) or len(raw_key) > 200:
        return None
    api_key = _active_api_key(key_hash=_hash_api_key(raw_key))
    if api_key is None:
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= API_KEY_LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


def _active_api_key(*, key_hash: str) -> ApiKey | None:
    """The unrevoked key with this digest, its organization and its plan, in
    one query written as SQL: every API request runs it (see config/rawsql.py).
    """
    rows = rawsql.fetch_all(
        f"""
        SELECT {rawsql.columns(ApiKey, "k")}, {rawsql.columns(Organization, "o")},
            {rawsql.columns(Plan, "p")}
        FROM {ApiKey._meta.db_table} k
        JOIN {Organization._meta.db_table} o ON o.id = k.organization_id
        LEFT JOIN {Plan._meta.db_table} p ON p.id = o.plan_id
        WHERE k.key_hash = %s AND k.revoked_at IS NULL
        """,
        [key_hash],
    )
    if not rows:
        return None
    row = rows[0]
    split = rawsql.column_count(ApiKey) + rawsql.column_count(Organization)
    api_key, organization = rawsql.instance_pair(row[:split], ApiKey, Organization)
    organization.plan = rawsql.instance(Plan, row[split:]) if row[split] is not None else None
    api_key.organization = organization
    return api_key
