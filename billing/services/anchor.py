"""The anchor day: the day of the month an organization's periods begin."""

from __future__ import annotations

from django.utils import timezone

from accounts.models import Organization
from accounts.services import validate_anchor_day
from billing.periods import anchor_day_change


def organization_anchor_day_set(*, organization: Organization, anchor_day: int) -> list[str]:
    """Move the anchor day without touching the period under way (SPEC §16):
    it keeps its end, and the next period runs from there to the new anchor
    day with a prorated allowance (billing.periods). Saves the fields on
    `organization` and returns their names. Call it inside the caller's
    transaction: the row stays locked until it ends, so that two changes at
    once both count.
    """
    validate_anchor_day(anchor_day)
    stored = (
        Organization.objects.select_for_update()
        .values("anchor_day", "anchor_history")
        .get(pk=organization.pk)
    )
    organization.anchor_history = stored["anchor_history"]
    if stored["anchor_day"] == anchor_day:
        organization.anchor_day = anchor_day
        return []
    change = anchor_day_change(
        anchor_day=stored["anchor_day"],
        history=stored["anchor_history"],
        new_anchor_day=anchor_day,
        now=timezone.now(),
    )
    organization.anchor_day = anchor_day
    organization.anchor_history = change.anchor_history
    organization.regular_periods_from = change.regular_from
    changed = ["anchor_day", "anchor_history", "regular_periods_from"]
    organization.save(update_fields=changed)
    return changed
