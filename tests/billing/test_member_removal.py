"""Removing a member keeps their usage everywhere it counted (SPEC §16): the
organization's totals, the per-source figures and the alert history, whether
the API removes them or the Django admin's Delete does; their ledger rows
stay. The same person added again starts afresh.
"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from django.urls import reverse

from accounts.models import Membership, Organization
from alerts.models import Firing, FiringKind
from alerts.services.consume import usage_consume
from alerts.services.ingest import UsageInput, usage_ingest
from billing.models import DailyUsage, MemberUsage, SourceUsage, UsageEvent
from billing.selectors import current_period, organization_used, usage_by_source
from tests.fixtures import ApiClient, logged_in
from tests.helpers import limits_on

pytestmark = pytest.mark.django_db

MEMBER = "member@acme.test"


@pytest.fixture
def usage(organization: Organization, owner: Membership, member: Membership) -> None:
    """The member used 15 credits from two sources and reached their limit
    (12); the owner and a caller without a user used some too.
    """
    limits_on(organization, 12)
    usage_ingest(
        organization=organization,
        events=[
            UsageInput("m-assistant", D(10), user=MEMBER, source="assistant"),
            UsageInput("m-workflow", D(5), user=MEMBER, source="workflow"),
            UsageInput("o-agent", D(3), user=owner.external_id, source="agent"),
            UsageInput("nobody-api", D("0.5"), source="api"),
        ],
    )


def by_source(organization: Organization) -> dict[str, D]:
    return usage_by_source(organization=organization, period=current_period(organization))


def used(organization: Organization) -> D:
    return organization_used(organization=organization, period=current_period(organization))


def remove_with_the_api(organization: Organization, member: Membership, api: ApiClient, _: Any):
    response = api.delete(f"/api/v1/members/{MEMBER}")
    assert response.status_code == 204, response.content


def remove_in_the_admin(organization: Organization, member: Membership, _: Any, staff_client):
    delete = reverse("admin:accounts_membership_delete", args=[member.pk])
    assert staff_client.get(delete).status_code == 200
    response = staff_client.post(delete, {"post": "yes"})
    assert response.status_code == 302


@pytest.mark.parametrize("remove", [remove_with_the_api, remove_in_the_admin])
def test_removal_keeps_the_members_usage_everywhere_it_counted(
    remove, usage, organization, owner, member, api, staff_client
):
    expected_by_source = {
        "agent": D(3),
        "api": D("0.5"),
        "assistant": D(10),
        "workflow": D(5),
    }
    assert by_source(organization) == expected_by_source
    [firing] = Firing.objects.filter(kind=FiringKind.USER_LIMIT)
    assert firing.membership == member
    daily = list(DailyUsage.objects.values_list("day", "used"))

    remove(organization, member, api, staff_client)

    assert not Membership.objects.filter(pk=member.pk).exists()
    # The organization's totals and the per-source figures, which sum to them.
    assert used(organization) == D("18.5")
    assert by_source(organization) == expected_by_source
    assert sum(by_source(organization).values()) == used(organization)
    assert list(DailyUsage.objects.values_list("day", "used")) == daily
    summary = api.get("/api/v1/usage/summary").json()
    assert summary["used"] == "18.5"
    page = logged_in(owner).get("/usage/")
    assert {row["source"].value: row["used"] for row in page.context["sources"]} == {
        **expected_by_source,
        "agent_external": D(0),
    }
    assert page.context["used"] == D("18.5")
    # Their ledger rows stay, no longer linked to anyone.
    assert sorted(
        UsageEvent.objects.filter(membership=None).values_list("idempotency_key", flat=True)
    ) == ["m-assistant", "m-workflow", "nobody-api"]
    # The history still says who it was about.
    events = api.get("/api/v1/alert-events").json()["data"]
    assert [(event["kind"], event["user"]) for event in events] == [("user_limit", MEMBER)]
    history = logged_in(owner).get("/settings/limits/")
    assert [f.pk for f in history.context["firings"]] == [firing.pk]
    assert MEMBER in history.content.decode()


def test_the_same_person_added_again_starts_afresh(usage, organization, member, api):
    assert api.delete(f"/api/v1/members/{MEMBER}").status_code == 204

    added = api.post("/api/v1/members", {"email": MEMBER})
    assert added.status_code == 201, added.content
    readded = Membership.objects.get(organization=organization, external_id=MEMBER)
    assert readded.pk != member.pk
    result = usage_consume(
        organization=organization,
        membership=readded,
        credits=D(2),
        source="assistant",
        idempotency_key="after-readding",
    )

    # Their limit counts only what they used since: the 15 before stay with the organization.
    assert result.decision.allowed
    assert MemberUsage.objects.get(membership=readded).used == D(2)
    summary = api.get("/api/v1/usage/summary").json()
    assert summary["used"] == "20.5"
    assert {user["user"]: user["used"] for user in summary["users"]}[MEMBER] == "2"
    assert by_source(organization)["assistant"] == D(12)
    assert sum(by_source(organization).values()) == used(organization)
    # The removed membership's per-source rows stay apart from the new one's.
    assert SourceUsage.objects.filter(membership=None, source="assistant").exists()
    assert SourceUsage.objects.get(membership=readded).used == D(2)
