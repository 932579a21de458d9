"""Changes to a lower app that can move an alert, each with its alerts
evaluated in the same transaction (STYLE: the higher layer owns the
service; accounts and billing never reach up). The API, the pages and the
admin call these, never the lower apps' own writes for the same change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar, Unpack

from django.db import transaction

from accounts import plans
from accounts import services as accounts_services
from accounts.models import Membership, Organization, Plan
from accounts.plans import PlanChanges
from accounts.services import MembershipChanges, OrganizationChanges, OrganizationFields
from alerts.services.credits import balance_reevaluate
from alerts.services.invoicing import invoice_schedule_ensure
from alerts.services.plan_alerts import inherited_alerts_sync, plan_lock_shared
from alerts.services.plan_settling import plan_changed
from alerts.services.rules import alerts_evaluate_organization
from billing.models import CustomLimit
from billing.services import limits
from billing.services.anchor import organization_anchor_day_set
from config.dbretry import retry_on_conflict

P = ParamSpec("P")
R = TypeVar("R")

# A plan's values that organizations on it use where they set none (SPEC §12).
PLAN_VALUES = ("credit_allowance", "default_limit", "credit_price")


def _then_evaluate(
    write: Callable[P, R], organization_of: Callable[[R], Organization]
) -> Callable[P, R]:
    """`write`, then the alerts of the organization it changed, in one
    transaction, retried whole on a deadlock (config/dbretry.py).
    """

    @retry_on_conflict
    @functools.wraps(write)
    def write_then_evaluate(*args: P.args, **kwargs: P.kwargs) -> R:
        with transaction.atomic():
            result = write(*args, **kwargs)
            alerts_evaluate_organization(organization=organization_of(result))
        return result

    return write_then_evaluate


limit_policy_update = _then_evaluate(limits.limit_policy_update, lambda policy: policy.organization)
custom_limit_set = _then_evaluate(limits.custom_limit_set, lambda custom: custom.organization)


@retry_on_conflict
def custom_limit_delete(*, custom_limit: CustomLimit) -> None:
    with transaction.atomic():
        limits.custom_limit_delete(custom_limit=custom_limit)
        alerts_evaluate_organization(organization=custom_limit.organization)


def organization_update(
    *,
    organization: Organization,
    anchor_day: int | None = None,
    **changes: Unpack[OrganizationChanges],
) -> Organization:
    """Change only what is given (accounts), and the anchor day (billing);
    a new allowance, period or price re-evaluates the alerts, and a price
    has the organization's periods closed with a `period_end` invoice.
    Another plan swaps the alerts inherited from the plan (SPEC §12).
    """
    if anchor_day is not None:
        accounts_services.validate_anchor_day(anchor_day)
    plan = changes.get("plan")
    with transaction.atomic():
        if plan is not None:
            plan_lock_shared([plan.pk])
        changed = accounts_services.organization_update(organization=organization, **changes)
        if anchor_day is not None:
            changed += organization_anchor_day_set(organization=organization, anchor_day=anchor_day)
        if "plan" in changed:
            inherited_alerts_sync(organization=organization)
        if {"own_credit_allowance", "plan", "anchor_day"} & set(changed):
            alerts_evaluate_organization(organization=organization)
            balance_reevaluate(organization=organization)
        elif {"own_credit_price", "currency"} & set(changed):
            alerts_evaluate_organization(organization=organization)
        # A plan may bring a price (SPEC §12): the price in force is what counts.
        if {"own_credit_price", "plan"} & set(changed):
            invoice_schedule_ensure(organization=organization)
    return organization


def organization_create(
    *, slug: str, name: str, plan: Plan | None = None, **fields: Unpack[OrganizationFields]
) -> Organization:
    """Create an organization (accounts), with its plan's alerts if on a plan."""
    with transaction.atomic():
        if plan is not None:
            plan_lock_shared([plan.pk])
        organization = accounts_services.organization_create(
            slug=slug, name=name, plan=plan, **fields
        )
        if plan is not None:
            inherited_alerts_sync(organization=organization)
        invoice_schedule_ensure(organization=organization)
    return organization


def plan_update(*, plan: Plan, **changes: Unpack[PlanChanges]) -> Plan:
    """Change a plan (accounts). Every organization using a value that moved
    has its alerts evaluated off the request (alerts/services/plan_settling.py):
    the gate reads the values in force at each write, at once.
    """
    with transaction.atomic():
        Plan.objects.select_for_update().filter(pk=plan.pk).first()
        changed = plans.plan_update(plan=plan, **changes)
        moved = [field for field in changed if field in PLAN_VALUES]
        if moved:
            plan_changed(plan=plan, fields=moved)
    return plan


def membership_update(
    *, membership: Membership, **changes: Unpack[MembershipChanges]
) -> Membership:
    """Change a member (accounts); a new role can change who is limited and
    who is told, so it re-evaluates the alerts.
    """
    role_before = membership.role
    with transaction.atomic():
        accounts_services.membership_update(membership=membership, **changes)
        if membership.role != role_before:
            alerts_evaluate_organization(organization=membership.organization)
    return membership
