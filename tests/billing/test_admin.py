"""The Django admin of billing: the read-only ledger and totals, the limits
edited through the services, bounded queries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from django.urls import reverse

from alerts.models import Firing, FiringKind
from alerts.services.changes import custom_limit_set, limit_policy_update, organization_update
from alerts.services.consume import usage_consume
from alerts.services.credit_settings import AutoTopUpInput, auto_top_up_set
from alerts.services.credits import credit_grant_create
from alerts.services.holds import hold_create
from alerts.services.ingest import UsageInput, usage_ingest
from alerts.services.invoicing import BillingThresholdInput, billing_threshold_set
from billing.models import (
    ConsumeAnswer,
    CustomLimit,
    Invoice,
    MemberUsage,
    SourceUsage,
    UsageEvent,
    UserLimitPolicy,
)
from billing.selectors import current_period
from billing.services.grants import GrantInput
from tests.factories import MembershipFactory, MeterFactory
from tests.fixtures import over_budget
from tests.helpers import (
    admin_models,
    admin_url,
    assert_admin_pages_load,
    ingest,
    limits_on,
)

BILLING_MODELS = admin_models("billing")


def limit_firings(member):
    return Firing.objects.filter(kind=FiringKind.USER_LIMIT, membership=member)


@pytest.fixture
def ledger(organization, owner, member):
    """A row of every billing model."""
    limits_on(organization, 100, admins=[owner], excluded_sources=["workflow"])
    custom_limit_set(organization=organization, membership=member, limit=D(50))
    usage_ingest(
        organization=organization,
        events=[
            UsageInput(
                "run-1", D(4), user=member.external_id, source="workflow", properties={"run": 1}
            ),
            UsageInput("batch-7", D(3)),
        ],
    )
    usage_consume(organization=organization, membership=member, credits=D(2), idempotency_key="c1")
    hold_create(organization=organization, membership=member, credits=D(1), idempotency_key="h1")
    credit_grant_create(organization=organization, grant=GrantInput(kind="purchased", credits=D(9)))
    MeterFactory(key="storage_gb", name="Storage", unit="GB", aggregation="max")
    auto_top_up_set(
        organization=organization,
        settings=AutoTopUpInput(enabled=True, threshold=D(1), credits=D(5)),
    )
    # Threshold invoicing (SPEC §11): a price, a threshold, an invoice.
    organization_update(organization=organization, credit_price=D("0.5"))
    billing_threshold_set(
        organization=organization, settings=BillingThresholdInput(enabled=True, amount=D(1))
    )
    Invoice.objects.create(
        organization=organization,
        reason="threshold",
        period_start=datetime(2026, 5, 1, tzinfo=UTC),
        covered_from=datetime(2026, 5, 1, tzinfo=UTC),
        covered_through=datetime(2026, 5, 2, tzinfo=UTC),
        credits=D(4),
        amount=D(2),
        currency="USD",
    )


def test_every_billing_model_is_registered():
    assert {model.__name__ for model in BILLING_MODELS} == {
        "AutoTopUp",
        "BalanceCheck",
        "BillingThreshold",
        "ConsumeAnswer",
        "CreditGrant",
        "CreditHold",
        "CreditLedgerEntry",
        "CustomLimit",
        "DailyUsage",
        "Invoice",
        "InvoiceSchedule",
        "MemberUsage",
        "Meter",
        "OrganizationUsage",
        "SourceUsage",
        "UsageEvent",
        "UserLimitPolicy",
    }


@pytest.mark.parametrize("model", BILLING_MODELS, ids=[m.__name__ for m in BILLING_MODELS])
def test_changelist_change_and_add_pages_load(staff_client, ledger, model):
    for obj, html in assert_admin_pages_load(staff_client, model).items():
        assert str(obj) in html


class TestTheLedgerIsReadOnly:
    def test_usage_events_cannot_be_added_changed_or_deleted(self, staff_client, ledger):
        event = UsageEvent.objects.get(idempotency_key="run-1")

        assert staff_client.get(admin_url(UsageEvent, "add")).status_code == 403
        assert staff_client.post(admin_url(UsageEvent, "add"), {"credits": "1"}).status_code == 403
        page = staff_client.get(admin_url(UsageEvent, "change", event.pk)).content.decode()
        assert 'name="_save"' not in page
        assert admin_url(UsageEvent, "delete", event.pk) not in page
        assert "&quot;run&quot;: 1" in page  # the properties, shown
        refused = staff_client.post(admin_url(UsageEvent, "change", event.pk), {"credits": "999"})
        assert refused.status_code == 403
        assert staff_client.get(admin_url(UsageEvent, "delete", event.pk)).status_code == 403
        deleted = staff_client.post(admin_url(UsageEvent, "delete", event.pk), {"post": "yes"})
        assert deleted.status_code == 403
        changelist = staff_client.get(admin_url(UsageEvent, "changelist"))
        assert "delete_selected" not in changelist.content.decode()
        staff_client.post(
            admin_url(UsageEvent, "changelist"),
            {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
        )

        event.refresh_from_db()
        assert event.credits == D(4)
        assert UsageEvent.objects.count() == 3

    def test_consume_answers_and_totals_are_read_only(self, staff_client, ledger):
        for model in (ConsumeAnswer, MemberUsage, SourceUsage):
            obj = model.objects.first()
            assert staff_client.get(admin_url(model, "add")).status_code == 403
            page = staff_client.get(admin_url(model, "change", obj.pk)).content.decode()
            assert 'name="_save"' not in page
            assert staff_client.post(
                admin_url(model, "delete", obj.pk), {"post": "yes"}
            ).status_code == (403)
            assert model.objects.filter(pk=obj.pk).exists()

    def test_totals_go_with_the_member_they_belong_to(self, staff_client, ledger, member):
        """As when the API deletes a member: its totals go too, its events stay."""
        confirm = staff_client.get(reverse("admin:accounts_membership_delete", args=[member.pk]))
        assert confirm.status_code == 200
        assert not confirm.context["perms_lacking"]

        response = staff_client.post(
            reverse("admin:accounts_membership_delete", args=[member.pk]), {"post": "yes"}
        )

        assert response.status_code == 302
        assert not MemberUsage.objects.filter(membership_id=member.pk).exists()
        assert UsageEvent.objects.filter(idempotency_key="run-1", membership=None).exists()


class TestSearchAndFilters:
    def test_usage_events(self, staff_client, ledger, member, outsider):
        ingest(outsider.organization, 1, key="run-1")
        changelist = admin_url(UsageEvent, "changelist")

        def keys(**params):
            response = staff_client.get(changelist, params)
            assert response.status_code == 200
            return sorted(
                (e.organization.slug, e.idempotency_key) for e in response.context["cl"].result_list
            )

        assert keys(q="globex") == [("globex", "run-1")]
        assert keys(q="run-1") == [("acme", "run-1"), ("globex", "run-1")]
        assert keys(q=member.external_id) == [("acme", "c1"), ("acme", "run-1")]
        assert keys(source="workflow") == [("acme", "run-1")]
        assert len(keys(**{"timestamp__gte": "2000-01-01 00:00:00+00:00"})) == 4

    def test_totals_by_period_and_limit_reached(self, staff_client, ledger, member, owner):
        custom_limit_set(organization=member.organization, membership=member, limit=D(1))
        MemberUsage.objects.create(
            organization=owner.organization,
            membership=owner,
            period_start=current_period(owner.organization).start.replace(year=2000),
            used=D(9),
            counted=D(9),
        )
        changelist = admin_url(MemberUsage, "changelist")

        def rows(**params):
            response = staff_client.get(changelist, params)
            assert response.status_code == 200
            return {
                (row.membership.external_id, row.used) for row in response.context["cl"].result_list
            }

        assert rows(period="current") == {(member.external_id, D(6))}
        assert rows(period="earlier") == {(owner.external_id, D(9))}
        assert rows(limit_reached="yes") == {(member.external_id, D(6))}
        assert rows(limit_reached="no") == {(owner.external_id, D(9))}
        assert rows(q="owner@") == {(owner.external_id, D(9))}

        sources = staff_client.get(admin_url(SourceUsage, "changelist"), {"source": "workflow"})
        assert [row.used for row in sources.context["cl"].result_list] == [D(4)]

    def test_consume_answers_and_custom_limits(self, staff_client, ledger, organization, owner):
        custom_limit_set(organization=organization, membership=owner, limit=None)

        allowed = staff_client.get(admin_url(ConsumeAnswer, "changelist"), {"outcome": "allowed"})
        # A hold's answer is kept with consume's (one namespace of keys, SPEC §13).
        assert [a.idempotency_key for a in allowed.context["cl"].result_list] == ["h1", "c1"]
        refused = staff_client.get(admin_url(ConsumeAnswer, "changelist"), {"outcome": "refused"})
        assert refused.context["cl"].result_count == 0

        unlimited = staff_client.get(admin_url(CustomLimit, "changelist"), {"unlimited": "yes"})
        assert [c.membership for c in unlimited.context["cl"].result_list] == [owner]
        assert "unlimited" in unlimited.content.decode()
        by_email = staff_client.get(admin_url(CustomLimit, "changelist"), {"q": "member@acme"})
        assert [c.limit for c in by_email.context["cl"].result_list] == [D(50)]

        policies = staff_client.get(
            admin_url(UserLimitPolicy, "changelist"), {"enabled__exact": "1"}
        )
        assert [p.organization for p in policies.context["cl"].result_list] == [organization]


class TestLimitsPolicyEdits:
    """The policy's page goes through billing.services.limit_policy_update."""

    def test_lowering_the_default_limit_marks_members_over_budget(
        self, staff_client, organization, owner, member
    ):
        limits_on(organization, 100)
        ingest(organization, 30, user=member, key="k")
        policy = UserLimitPolicy.objects.get()
        assert over_budget(organization) == set()

        response = staff_client.post(
            admin_url(UserLimitPolicy, "change", policy.pk),
            {"enabled": "on", "default_limit": "25", "admins": [owner.pk]},
        )

        assert response.status_code == 302, response.context["adminform"].form.errors
        policy.refresh_from_db()
        assert (policy.default_limit, list(policy.admins.all())) == (D(25), [owner])
        assert over_budget(organization) == {member.external_id}
        assert MemberUsage.objects.get(membership=member).limit_reached_at is not None
        assert limit_firings(member).get().threshold_credits == D(25)

    def test_adding_a_policy(self, staff_client, organization, member):
        ingest(organization, 30, user=member, key="k")

        response = staff_client.post(
            admin_url(UserLimitPolicy, "add"),
            {
                "organization": organization.pk,
                "enabled": "on",
                "default_limit": "20",
                "excluded_sources": ["agent_external"],
            },
        )

        assert response.status_code == 302, response.context["adminform"].form.errors
        policy = UserLimitPolicy.objects.get()
        assert policy.excluded_sources == ["agent_external"]
        assert over_budget(organization) == {member.external_id}
        assert limit_firings(member).exists()

    def test_excluding_a_source_recounts(self, staff_client, organization, member):
        limits_on(organization, 100)
        ingest(organization, 30, user=member, source="workflow", key="k")
        policy = UserLimitPolicy.objects.get()

        staff_client.post(
            admin_url(UserLimitPolicy, "change", policy.pk),
            {"enabled": "on", "default_limit": "100", "excluded_sources": ["workflow"]},
        )

        assert MemberUsage.objects.get(membership=member).counted == D(0)

    @pytest.mark.parametrize(
        ("data", "field", "message"),
        [
            ({"default_limit": "0"}, "default_limit", "greater than or equal to 0.000001"),
            ({"default_limit": "-5"}, "default_limit", "greater than or equal to"),
            ({"default_limit": "1.0000001"}, "default_limit", "6 decimal places"),
            ({"excluded_sources": ["assistant"]}, "excluded_sources", "valid choice"),
        ],
    )
    def test_bad_values_are_form_errors(self, staff_client, organization, data, field, message):
        response = staff_client.post(
            admin_url(UserLimitPolicy, "add"),
            {"organization": organization.pk, "enabled": "on", **data},
        )

        assert response.status_code == 200
        assert message in str(response.context["adminform"].form.errors[field])
        assert not UserLimitPolicy.objects.exists()

    def test_admins_must_be_admins_of_the_organization(
        self, staff_client, organization, owner, member, outsider
    ):
        for wrong in (outsider, member):
            response = staff_client.post(
                admin_url(UserLimitPolicy, "add"),
                {"organization": organization.pk, "enabled": "on", "admins": [owner.pk, wrong.pk]},
            )

            assert response.status_code == 200
            errors = response.context["adminform"].form.errors
            assert "is not an admin of this organization" in str(errors["admins"])
        assert not UserLimitPolicy.objects.exists()

    def test_one_policy_per_organization(self, staff_client, organization):
        limit_policy_update(organization=organization, enabled=False)

        response = staff_client.post(
            admin_url(UserLimitPolicy, "add"), {"organization": organization.pk}
        )

        assert response.status_code == 200
        assert "already exists" in str(response.context["adminform"].form.errors)


class TestCustomLimitEdits:
    """Custom limits' pages go through custom_limit_set and custom_limit_delete."""

    @pytest.fixture
    def spent(self, organization, member):
        limits_on(organization, 100)
        ingest(organization, 30, user=member, key="k")

    def test_adding_a_lower_custom_limit(self, staff_client, spent, organization, member):
        response = staff_client.post(
            admin_url(CustomLimit, "add"),
            {"organization": organization.pk, "membership": member.pk, "limit": "20"},
        )

        assert response.status_code == 302, response.context["adminform"].form.errors
        assert CustomLimit.objects.get().limit == D(20)
        assert over_budget(organization) == {member.external_id}
        assert limit_firings(member).get().threshold_credits == D(20)

    def test_changing_and_deleting(self, staff_client, spent, organization, member):
        custom = custom_limit_set(organization=organization, membership=member, limit=D(200))

        staff_client.post(admin_url(CustomLimit, "change", custom.pk), {"limit": "10"})
        assert over_budget(organization) == {member.external_id}
        assert limit_firings(member).exists()

        staff_client.post(admin_url(CustomLimit, "change", custom.pk), {"limit": ""})
        custom.refresh_from_db()
        assert custom.limit is None  # unlimited
        assert over_budget(organization) == set()

        custom_limit_set(organization=organization, membership=member, limit=D(500))
        response = staff_client.post(admin_url(CustomLimit, "delete", custom.pk), {"post": "yes"})
        assert response.status_code == 302
        assert not CustomLimit.objects.exists()
        assert over_budget(organization) == set()

    def test_deleting_back_to_a_lower_default_re_evaluates(
        self, staff_client, organization, member, owner
    ):
        limits_on(organization, 10)
        custom = custom_limit_set(organization=organization, membership=member, limit=None)
        other = custom_limit_set(organization=organization, membership=owner, limit=None)
        ingest(organization, 30, user=member, key="k")
        assert over_budget(organization) == set()

        response = staff_client.post(
            admin_url(CustomLimit, "changelist"),
            {"action": "delete_selected", "_selected_action": [custom.pk, other.pk], "post": "yes"},
        )

        assert response.status_code == 302
        assert not CustomLimit.objects.exists()
        assert over_budget(organization) == {member.external_id}
        assert MemberUsage.objects.get(membership=member).limit_reached_at is not None
        assert limit_firings(member).get().threshold_credits == D(10)

    def test_the_member_must_belong_to_the_organization(self, staff_client, organization, outsider):
        response = staff_client.post(
            admin_url(CustomLimit, "add"),
            {"organization": organization.pk, "membership": outsider.pk, "limit": "5"},
        )

        assert response.status_code == 200
        errors = response.context["adminform"].form.errors
        assert "is not a member of this organization" in str(errors["membership"])
        assert not CustomLimit.objects.exists()

    def test_one_custom_limit_per_member(self, staff_client, organization, member):
        custom_limit_set(organization=organization, membership=member, limit=D(5))

        response = staff_client.post(
            admin_url(CustomLimit, "add"),
            {"organization": organization.pk, "membership": member.pk, "limit": "9"},
        )

        assert response.status_code == 200
        assert "already exists" in str(response.context["adminform"].form.errors)
        assert CustomLimit.objects.get().limit == D(5)

    def test_a_zero_limit_is_a_form_error(self, staff_client, organization, member):
        response = staff_client.post(
            admin_url(CustomLimit, "add"),
            {"organization": organization.pk, "membership": member.pk, "limit": "0"},
        )

        assert response.status_code == 200
        assert response.context["adminform"].form.errors["limit"]


class TestQueryCounts:
    """Changelists and change pages cost the same with 2 rows or 60."""

    @staticmethod
    def spend(organization, members, start):
        limits_on(organization, 1)
        for membership in members:
            custom_limit_set(organization=organization, membership=membership, limit=D(2))
        usage_ingest(
            organization=organization,
            events=[
                UsageInput(f"k{start}-{index}", D(3), user=m.external_id, source="workflow")
                for index, m in enumerate(members)
            ],
        )
        for index, m in enumerate(members):
            usage_consume(
                organization=organization,
                membership=m,
                credits=D(1),
                idempotency_key=f"c{start}-{index}",
            )

    @pytest.mark.parametrize(
        "model",
        [UsageEvent, ConsumeAnswer, MemberUsage, SourceUsage, CustomLimit],
        ids=lambda model: model.__name__,
    )
    def test_changelists(self, staff_client, organization, django_assert_max_num_queries, model):
        members = MembershipFactory.create_batch(60, organization=organization)
        self.spend(organization, members[:2], start=0)
        with django_assert_max_num_queries(12) as few:
            assert staff_client.get(admin_url(model, "changelist")).status_code == 200

        self.spend(organization, members[2:], start=2)
        with django_assert_max_num_queries(12) as many:
            response = staff_client.get(admin_url(model, "changelist"))

        # Every row is counted and rendered on the one page, so the many rows are measured.
        changelist = response.context["cl"]
        assert changelist.result_count == len(changelist.result_list) == model.objects.count()
        assert changelist.result_count >= 60
        assert len(many) == len(few)
