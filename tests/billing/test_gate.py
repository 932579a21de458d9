from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from alerts.services.consume import usage_consume
from alerts.services.ingest import UsageInput, usage_ingest
from billing.balance import usage_check
from billing.models import (
    ConsumeAnswer,
    CustomLimit,
    MemberUsage,
    Meter,
    OrganizationUsage,
    UsageEvent,
    UserLimitPolicy,
)
from billing.rules import ORGANIZATION_CREDITS_EXHAUSTED, USER_LIMIT_REACHED
from billing.selectors import (
    current_period,
    member_usage_get,
    organization_used,
    usage_by_source,
)
from config.errors import Conflict
from tests.factories import MembershipFactory
from tests.fixtures import run_in_threads
from tests.helpers import consume, counted, ingest

pytestmark = pytest.mark.django_db

D = Decimal


def set_limits(organization, *, default=None, excluded=(), enabled=True):
    UserLimitPolicy.objects.update_or_create(
        organization=organization,
        defaults={"enabled": enabled, "default_limit": default, "excluded_sources": list(excluded)},
    )


class TestExactness:
    def test_a_tenth_ten_times_is_exactly_one(self, organization, member):
        for _ in range(10):
            assert consume(organization, member, "0.1").allowed
        assert counted(member) == D("1")
        assert organization_used(
            organization=organization, period=current_period(organization)
        ) == D(1)
        assert str(MemberUsage.objects.get().used) == "1.000000"

    def test_ingest_of_tenths_is_exact(self, organization, member):
        usage_ingest(
            organization=organization,
            events=[
                UsageInput(idempotency_key=f"k{i}", credits=D("0.1"), user=member.external_id)
                for i in range(10)
            ],
        )
        assert counted(member) == D(1)


class TestPerUserLimits:
    def test_no_policy_means_no_limit(self, organization, member):
        decision = consume(organization, member, "1000000")
        assert decision.allowed and decision.limit is None and decision.remaining is None

    def test_default_limit(self, organization, member):
        set_limits(organization, default=D(10))
        first = consume(organization, member, 6)
        assert (first.allowed, first.used, first.limit, first.remaining) == (
            True,
            D(6),
            D(10),
            D(4),
        )
        refused = consume(organization, member, 5)
        assert not refused.allowed
        assert refused.reason == USER_LIMIT_REACHED
        assert (refused.used, refused.limit) == (D(6), D(10))
        assert refused.resets_at == current_period(organization).end
        assert "6 of your 10" in refused.message
        assert consume(organization, member, 4).allowed  # exactly up to the limit
        assert counted(member) == D(10)

    def test_disabled_policy_has_no_limit(self, organization, member):
        set_limits(organization, default=D(1), enabled=False)
        assert consume(organization, member, 5).allowed

    def test_custom_limit_overrides_default(self, organization, member, owner):
        set_limits(organization, default=D(10))
        CustomLimit.objects.create(organization=organization, membership=member, limit=D(50))
        assert consume(organization, member, 40).allowed
        assert not consume(organization, owner, 40).allowed

    def test_custom_lower_than_default(self, organization, member):
        set_limits(organization, default=D(100))
        CustomLimit.objects.create(organization=organization, membership=member, limit=D(2))
        assert not consume(organization, member, 3).allowed

    def test_unlimited_custom_limit(self, organization, member):
        set_limits(organization, default=D(10))
        CustomLimit.objects.create(organization=organization, membership=member, limit=None)
        decision = consume(organization, member, 500)
        assert decision.allowed and decision.limit is None

    @pytest.mark.parametrize("source", ["agent_external", "workflow"])
    def test_excluded_source_is_allowed_and_not_counted(self, organization, member, source):
        set_limits(organization, default=D(10), excluded=[source])
        assert consume(organization, member, 8).allowed
        assert consume(organization, member, 50, source=source).allowed
        assert counted(member) == D(8)
        assert member_usage_get(membership=member, period=current_period(organization))[0] == D(58)
        assert not consume(organization, member, 3).allowed

    def test_exclusion_of_one_source_does_not_exclude_the_other(self, organization, member):
        set_limits(organization, default=D(10), excluded=["workflow"])
        assert not consume(organization, member, 11, source="agent_external").allowed

    def test_excluded_source_allowed_even_when_over_budget(self, organization, member):
        set_limits(organization, default=D(5), excluded=["workflow"])
        ingest(organization, 9, user=member, key="a")
        assert not consume(organization, member, 1).allowed
        assert consume(organization, member, 1, source="workflow").allowed

    def test_refused_consume_records_nothing(self, organization, member):
        set_limits(organization, default=D(5))
        consume(organization, member, 6)
        assert not UsageEvent.objects.exists()
        assert counted(member) == 0

    def test_limit_reached_time_is_recorded_once(self, organization, member):
        set_limits(organization, default=D(10))
        consume(organization, member, 9)
        assert MemberUsage.objects.get().limit_reached_at is None
        consume(organization, member, 1)
        reached = MemberUsage.objects.get().limit_reached_at
        assert reached is not None
        CustomLimit.objects.create(organization=organization, membership=member, limit=D(20))
        consume(organization, member, 10)
        assert MemberUsage.objects.get().limit_reached_at == reached


class TestOrganizationMaximum:
    def test_exhausted_organization_blocks(self, organization, member, owner):
        organization.credit_allowance = D(100)
        organization.save()
        assert consume(organization, member, 60).allowed
        refused = consume(organization, owner, 41)
        assert not refused.allowed
        assert refused.reason == ORGANIZATION_CREDITS_EXHAUSTED
        assert (refused.used, refused.limit) == (D(60), D(100))
        assert consume(organization, owner, 40).allowed
        assert organization_used(
            organization=organization, period=current_period(organization)
        ) == D(100)

    def test_refused_by_organization_leaves_member_totals_untouched(self, organization, member):
        organization.credit_allowance = D(10)
        organization.save()
        set_limits(organization, default=D(100))
        consume(organization, member, 11)
        assert counted(member) == 0
        assert not OrganizationUsage.objects.exclude(used=0).exists()

    def test_refused_by_organization_does_not_mark_the_limit_reached(self, organization, member):
        from alerts.models import Firing

        organization.credit_allowance = D(4)
        organization.save()
        set_limits(organization, default=D(5))
        assert consume(organization, member, 5).reason == ORGANIZATION_CREDITS_EXHAUSTED
        assert MemberUsage.objects.get().limit_reached_at is None
        organization.credit_allowance = D(100)
        organization.save()
        assert consume(organization, member, 5).allowed
        assert MemberUsage.objects.get().limit_reached_at is not None
        assert Firing.objects.get().kind == "user_limit"

    def test_not_blocking_when_block_when_exhausted_is_off(self, organization, member):
        organization.credit_allowance = D(10)
        organization.block_when_exhausted = False
        organization.save()
        assert consume(organization, member, 50).allowed

    def test_both_refuse_gives_the_user_reason(self, organization, member):
        organization.credit_allowance = D(10)
        organization.save()
        set_limits(organization, default=D(5))
        assert consume(organization, member, 20).reason == USER_LIMIT_REACHED

    def test_excluded_sources_still_count_toward_the_organization(self, organization, member):
        organization.credit_allowance = D(10)
        organization.save()
        set_limits(organization, default=D(5), excluded=["workflow"])
        decision = consume(organization, member, 11, source="workflow")
        assert decision.reason == ORGANIZATION_CREDITS_EXHAUSTED


class TestCheck:
    def test_check_decides_without_recording(self, organization, member):
        set_limits(organization, default=D(10))
        consume(organization, member, 4)
        decision = usage_check(organization=organization, membership=member, credits=D(6))
        assert (decision.allowed, decision.used, decision.remaining) == (True, D(4), D(6))
        assert not usage_check(
            organization=organization, membership=member, credits=D("6.000001")
        ).allowed
        assert counted(member) == D(4)
        assert UsageEvent.objects.count() == 1


class TestIdempotency:
    def test_repeated_consume_key_gets_the_first_answer(self, organization, member):
        set_limits(organization, default=D(10))
        first = consume(organization, member, 7, key="k1")
        again = usage_consume(
            organization=organization, membership=member, credits=D(7), idempotency_key="k1"
        )
        assert again.replayed and again.decision == first
        assert counted(member) == D(7)

    def test_repeated_refusal_is_replayed_even_after_room_appears(self, organization, member):
        set_limits(organization, default=D(5))
        first = consume(organization, member, 6, key="k1")
        CustomLimit.objects.create(organization=organization, membership=member, limit=D(100))
        assert consume(organization, member, 6, key="k1") == first

    def test_consume_key_reused_with_another_body(self, organization, member):
        consume(organization, member, 1, key="k1")
        with pytest.raises(Conflict) as raised:
            consume(organization, member, 2, key="k1")
        assert raised.value.code == "idempotency_key_reused"

    def test_ingest_and_consume_share_keys(self, organization, member):
        ingest(organization, 1, user=member, key="shared")
        with pytest.raises(Conflict):
            consume(organization, member, 1, key="shared")
        consume(organization, member, 1, key="consumed")
        with pytest.raises(Conflict):
            ingest(organization, 1, user=member, key="consumed")
        assert counted(member) == D(2)

    def test_ingest_key_is_refused_to_a_consume_the_gate_would_refuse(self, organization, member):
        set_limits(organization, default=D(5))
        ingest(organization, 1, user=member, key="shared")
        with pytest.raises(Conflict):
            consume(organization, member, 9, key="shared")
        assert not ConsumeAnswer.objects.exists()

    def test_a_refused_consumes_key_is_refused_to_an_ingest(self, organization, member):
        # A refused consume leaves no ledger row: only its recorded answer holds the key.
        set_limits(organization, default=D(5))
        assert not consume(organization, member, 9, key="k").allowed
        with pytest.raises(Conflict) as raised:
            ingest(organization, 9, user=member, key="k")
        assert (raised.value.status, raised.value.code) == (409, "idempotency_key_reused")
        assert raised.value.field == "events[0].idempotency_key"
        assert not UsageEvent.objects.exists()
        assert counted(member) == D(0)

    def test_retry_of_an_allowed_consume_at_the_cap_replays_and_records_nothing(
        self, organization, member
    ):
        set_limits(organization, default=D(10))
        first = consume(organization, member, 6, key="k1")
        consume(organization, member, 4, key="k2")
        again = usage_consume(
            organization=organization, membership=member, credits=D(6), idempotency_key="k1"
        )
        assert again.replayed and again.decision == first and first.allowed
        assert counted(member) == D(10)
        assert UsageEvent.objects.count() == 2

    def test_repeated_ingest_is_a_duplicate(self, organization, member):
        event = UsageInput("e1", D(3), user=member.external_id)
        assert usage_ingest(organization=organization, events=[event]).accepted == 1
        result = usage_ingest(organization=organization, events=[event, UsageInput("e2", D(1))])
        assert (result.accepted, result.duplicates) == (1, 1)
        assert organization_used(
            organization=organization, period=current_period(organization)
        ) == D(4)

    def test_ingest_key_reused_with_another_body_refuses_the_batch(self, organization, member):
        ingest(organization, 3, key="e1")
        with pytest.raises(Conflict) as raised:
            usage_ingest(
                organization=organization, events=[UsageInput("e2", D(1)), UsageInput("e1", D(4))]
            )
        assert raised.value.field == "events[1].idempotency_key"
        assert UsageEvent.objects.count() == 1

    def test_same_key_twice_in_one_batch(self, organization):
        result = usage_ingest(
            organization=organization, events=[UsageInput("x", D(1)), UsageInput("x", D(1))]
        )
        assert (result.accepted, result.duplicates) == (1, 1)
        with pytest.raises(Conflict):
            usage_ingest(
                organization=organization, events=[UsageInput("y", D(1)), UsageInput("y", D(2))]
            )


class TestIngest:
    def test_never_refused_for_limits(self, organization, member):
        organization.credit_allowance = D(10)
        organization.save()
        set_limits(organization, default=D(1))
        result = ingest(organization, 500, user=member, key="big")
        assert result.accepted == 1
        assert counted(member) == D(500)
        assert MemberUsage.objects.get().limit_reached_at is not None

    def test_usage_by_source_and_userless_usage(self, organization, member):
        usage_ingest(
            organization=organization,
            events=[
                UsageInput("a", D(1), user=member.external_id, source="agent"),
                UsageInput("b", D(2), source="agent"),
                UsageInput("c", D(4), source="workflow"),
                UsageInput("d", D(8), source="workflow"),
            ],
        )
        assert usage_by_source(organization=organization, period=current_period(organization)) == {
            "agent": D(3),
            "workflow": D(12),
        }

    def test_the_credits_of_another_meter_count_like_any_others(self, organization, member):
        Meter.objects.create(key="tokens", name="Tokens", unit="tokens", aggregation="sum")
        usage_ingest(
            organization=organization,
            events=[UsageInput("t", D(99), user=member.external_id, meter="tokens", quantity=D(5))],
        )
        event = UsageEvent.objects.get()
        assert (event.meter, event.quantity, event.credits) == ("tokens", D(5), D(99))
        assert counted(member) == 99

    def test_properties_are_kept(self, organization):
        usage_ingest(
            organization=organization,
            events=[UsageInput("p", D(1), properties={"model": "x", "n": [1]})],
        )
        assert UsageEvent.objects.get().properties == {"model": "x", "n": [1]}

    def test_batch_query_count_is_constant(self, organization, django_assert_max_num_queries):
        members = MembershipFactory.create_batch(20, organization=organization)
        set_limits(organization, default=D(1))  # both batches take members past their limit

        def batch(prefix, size):
            return [
                UsageInput(
                    f"{prefix}-{i}",
                    D("1.5"),
                    user=members[i % 20].external_id,
                    source=["assistant", "workflow"][i % 2],
                )
                for i in range(size)
            ]

        with django_assert_max_num_queries(20) as small:
            usage_ingest(organization=organization, events=batch("small", 10))
        with django_assert_max_num_queries(20) as large:
            usage_ingest(organization=organization, events=batch("large", 1000))
        assert len(large.captured_queries) == len(small.captured_queries)


class TestPeriods:
    def test_usage_lands_in_its_period_and_limits_reset(self, organization, member):
        set_limits(organization, default=D(10))
        with time_machine.travel(datetime(2026, 3, 31, 23, 59, tzinfo=UTC), tick=False):
            assert consume(organization, member, 10).allowed
            assert not consume(organization, member, 1).allowed
        with time_machine.travel(datetime(2026, 4, 1, 0, 0, tzinfo=UTC), tick=False):
            decision = consume(organization, member, 10)
            assert decision.allowed
            assert decision.resets_at == datetime(2026, 5, 1, tzinfo=UTC)
        assert sorted(MemberUsage.objects.values_list("period_start", "counted")) == [
            (datetime(2026, 3, 1, tzinfo=UTC), D(10)),
            (datetime(2026, 4, 1, tzinfo=UTC), D(10)),
        ]

    def test_ingested_events_count_toward_the_period_of_their_timestamp(self, organization, member):
        organization.anchor_day = 15
        organization.save()
        with time_machine.travel(datetime(2026, 3, 15, 0, 2, tzinfo=UTC), tick=False):
            usage_ingest(
                organization=organization,
                events=[
                    UsageInput(
                        "before",
                        D(1),
                        user=member.external_id,
                        timestamp=datetime(2026, 3, 14, 23, 59, 59, tzinfo=UTC),
                    ),
                    UsageInput(
                        "after",
                        D(2),
                        user=member.external_id,
                        timestamp=datetime(2026, 3, 15, 0, 0, tzinfo=UTC),
                    ),
                ],
            )
        assert dict(OrganizationUsage.objects.values_list("period_start", "used")) == {
            datetime(2026, 2, 15, tzinfo=UTC): D(1),
            datetime(2026, 3, 15, tzinfo=UTC): D(2),
        }


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    def test_forty_concurrent_consumers_never_pass_a_user_limit(self, organization, member):
        set_limits(organization, default=D(100))
        results = run_in_threads(
            40, lambda i: consume(organization, member, 5, key=f"c{i}").allowed
        )
        assert results.count(True) == 20
        assert counted(member) == D(100)
        assert UsageEvent.objects.count() == 20

    def test_concurrent_consumers_never_pass_the_organization_maximum(self, organization):
        organization.credit_allowance = D(100)
        organization.save()
        members = MembershipFactory.create_batch(8, organization=organization)
        results = run_in_threads(
            40, lambda i: consume(organization, members[i % 8], 5, key=f"o{i}").allowed
        )
        assert results.count(True) == 20
        assert organization_used(
            organization=organization, period=current_period(organization)
        ) == D(100)
        assert sum(MemberUsage.objects.values_list("used", flat=True)) == D(100)

    def test_concurrent_retries_of_one_key_record_once(self, organization, member):
        results = run_in_threads(10, lambda i: consume(organization, member, 5, key="same").allowed)
        assert results == [True] * 10
        assert counted(member) == D(5)
        assert UsageEvent.objects.count() == 1

    def test_concurrent_retries_of_one_refused_key_record_nothing(self, organization, member):
        """A refusal inserts its ledger row first (the key, in the lock order)
        and takes it back with its answer: the retries waiting on the key get
        the refusal replayed, and no row is left.
        """
        set_limits(organization, default=D(4))
        results = run_in_threads(10, lambda i: consume(organization, member, 5, key="same").reason)
        assert results == [USER_LIMIT_REACHED] * 10
        assert not UsageEvent.objects.exists()
        assert ConsumeAnswer.objects.get().status_code == 402
        assert counted(member) == D(0)
