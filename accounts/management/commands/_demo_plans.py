"""seed_demo's plans (SPEC §12): Free and Team, the demo organization on Team,
and one alert on Team that the organization inherits (90 % of the
allowance, to all admins). The organization keeps its own allowance: the
plan gives what it sets none of (here, the alert).

Like the rest of seed_demo, a rerun adds only what is missing: the plans by
key, the organization's plan only if it has none, the plan's alert only if
the plan has none.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from accounts.models import Organization, Plan
from accounts.plans import plan_create
from alerts.models import PlanAlert, ThresholdType
from alerts.services.changes import organization_update
from alerts.services.plan_alerts import plan_alert_create


class DemoPlan(NamedTuple):
    key: str
    name: str
    credit_allowance: Decimal
    default_limit: Decimal | None


DEMO_PLANS = (
    DemoPlan("free", "Free", Decimal(1000), Decimal(100)),
    DemoPlan("team", "Team", Decimal(10000), None),
)
DEMO_PLAN = "team"
DEMO_PLAN_ALERT_PERCENT = Decimal(90)


def seed_plans(organization: Organization) -> int:
    """The demo plans, the organization on Team with its alert; how many
    of these were added (plans, the organization's plan, the alert).
    """
    added = 0
    for demo in DEMO_PLANS:
        if not Plan.objects.filter(key=demo.key).exists():
            plan_create(
                key=demo.key,
                name=demo.name,
                credit_allowance=demo.credit_allowance,
                default_limit=demo.default_limit,
            )
            added += 1
    team = Plan.objects.get(key=DEMO_PLAN)
    if not PlanAlert.objects.filter(plan=team).exists():
        plan_alert_create(
            plan=team, threshold_type=ThresholdType.PERCENTAGE, threshold=DEMO_PLAN_ALERT_PERCENT
        )
        added += 1
    if organization.plan_id is None:
        organization_update(organization=organization, plan=team)
        added += 1
    return added
