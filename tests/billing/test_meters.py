"""Meters (SPEC §10): what an event of a meter counts, what it costs, and
the per-period totals of every aggregation, exact under concurrency.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from alerts.services.ingest import UsageInput, usage_ingest
from billing.models import (
    Meter,
    MeterDailyUsage,
    MeterDistinctValue,
    MeterUsage,
    OrganizationUsage,
    UsageEvent,
)
from billing.periods import period_containing
from config.errors import InvalidInput
from tests.factories import MembershipFactory
from tests.fixtures import run_in_threads

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def meter(key: str, aggregation: str, **values: Any) -> Meter:
    return Meter.objects.create(
        key=key,
        name=values.pop("name", key.title()),
        unit=values.pop("unit", "units"),
        aggregation=aggregation,
        **values,
    )


def send(organization, *events: UsageInput):
    return usage_ingest(organization=organization, events=list(events))


_keys = iter(range(10**9))


def event(meter_key: str, quantity=None, *, user=None, credits=None, at=None, key=None, **props):
    return UsageInput(
        idempotency_key=key or f"e{next(_keys)}",
        credits=None if credits is None else D(str(credits)),
        user=user.external_id if user is not None else None,
        meter=meter_key,
        quantity=None if quantity is None else D(str(quantity)),
        timestamp=at,
        properties=props,
    )


def values(organization, meter_key: str) -> dict[int, Decimal]:
    """The meter's values this period, by member key (0: the organization)."""
    start = period_containing(NOW, anchor_day=organization.anchor_day).start
    return dict(
        MeterUsage.objects.filter(
            organization=organization, meter__key=meter_key, period_start=start
        ).values_list("member_key", "value")
    )


class TestAggregations:
    def test_sum_adds_the_quantities_for_the_organization_and_each_member(
        self, organization, member
    ):
        meter("storage", "sum")
        other = MembershipFactory(organization=organization)
        send(
            organization,
            event("storage", "1.5", user=member),
            event("storage", "2.25", user=other),
            event("storage", "0.000001"),
        )
        send(organization, event("storage", 10, user=member))
        assert values(organization, "storage") == {
            0: D("13.750001"),
            member.pk: D("11.5"),
            other.pk: D("2.25"),
        }

    def test_count_counts_events_whatever_their_quantity(self, organization, member):
        meter("meetings", "count")
        send(organization, event("meetings", user=member), event("meetings", 7, user=member))
        send(organization, event("meetings"))
        assert values(organization, "meetings") == {0: 3, member.pk: 2}

    def test_max_keeps_the_largest_quantity(self, organization, member):
        meter("seats", "max")
        send(organization, event("seats", 4, user=member), event("seats", 9))
        send(organization, event("seats", 6, user=member))
        assert values(organization, "seats") == {0: 9, member.pk: 6}

    def test_unique_count_counts_each_value_once_per_period(self, organization, member):
        meter("active_users", "unique_count", property="user_id")
        other = MembershipFactory(organization=organization)
        send(
            organization,
            event("active_users", user=member, user_id="u1"),
            event("active_users", user=member, user_id="u1"),
            event("active_users", user=other, user_id="u1"),
            event("active_users", user=other, user_id=42),
        )
        send(organization, event("active_users", user=member, user_id="42"))  # 42 and "42": one
        assert values(organization, "active_users") == {0: 2, member.pk: 2, other.pk: 2}

    def test_a_new_period_counts_from_nothing(self, organization):
        meter("active_users", "unique_count", property="user_id")
        meter("seats", "max")
        earlier = NOW - timedelta(days=40)
        send(
            organization,
            event("active_users", at=earlier, user_id="u1"),
            event("seats", 50, at=earlier),
        )
        send(organization, event("active_users", user_id="u1"), event("seats", 3))
        assert values(organization, "active_users") == {0: 1}
        assert values(organization, "seats") == {0: 3}
        assert MeterUsage.objects.filter(organization=organization).count() == 4

    def test_a_repeated_event_counts_once(self, organization, member):
        meter("meetings", "count")
        repeated = event("meetings", user=member, key="same")
        send(organization, repeated, repeated)
        result = send(organization, repeated)
        assert (result.accepted, result.duplicates) == (0, 1)
        assert values(organization, "meetings") == {0: 1, member.pk: 1}

    def test_organizations_are_kept_apart(self, organization, other_organization):
        meter("active_users", "unique_count", property="user_id")
        send(organization, event("active_users", user_id="u1"))
        send(other_organization, event("active_users", user_id="u1"))
        assert values(organization, "active_users") == {0: 1}
        assert values(other_organization, "active_users") == {0: 1}

    def test_daily_values_for_sum_count_and_max_but_not_distinct_values(self, organization):
        meter("storage", "sum")
        meter("seats", "max")
        meter("active_users", "unique_count", property="user_id")
        yesterday = NOW - timedelta(days=1)
        send(
            organization,
            event("storage", 2, at=yesterday),
            event("storage", 3),
            event("storage", 4),
            event("seats", 5),
            event("seats", 2),
            event("active_users", user_id="u1"),
        )
        days = {
            (key, day): value
            for key, day, value in MeterDailyUsage.objects.values_list("meter__key", "day", "value")
        }
        assert days == {
            ("storage", date(2026, 3, 9)): 2,
            ("storage", date(2026, 3, 10)): 7,
            ("seats", date(2026, 3, 10)): 5,
        }

    def test_the_portable_path_agrees_with_postgresqls_one_statement(
        self, organization, other_organization, monkeypatch
    ):
        """SQLite (the local demo) writes the meters in three statements,
        PostgreSQL in one: the same batches leave the same totals.
        """
        from billing import meters as meters_module

        meter("storage", "sum")
        meter("meetings", "count")
        meter("seats", "max")
        meter("active_users", "unique_count", property="user_id")
        rng = random.Random(10)
        members = {
            org.pk: MembershipFactory.create_batch(3, organization=org)
            for org in (organization, other_organization)
        }
        batches = []
        for n in range(6):
            batch = []
            for j in range(15):
                kind = rng.choice(["storage", "meetings", "seats", "active_users"])
                batch.append(
                    (
                        kind,
                        D(rng.randrange(1, 10**5)) / 100,
                        rng.randrange(4),
                        NOW - timedelta(days=rng.choice([0, 0, 1, 40])),
                        f"b{n}-{j}",
                        f"u{rng.randrange(8)}",
                    )
                )
            batches.append(batch)

        def totals(org):
            for batch in batches:
                sent = send(
                    org,
                    *(
                        event(
                            kind,
                            None if kind in ("meetings", "active_users") else quantity,
                            user=None if who == 3 else members[org.pk][who],
                            at=at,
                            key=key,
                            user_id=value,
                        )
                        for kind, quantity, who, at, key, value in batch
                    ),
                )
                assert sent.accepted == 15
            index = {membership.pk: i for i, membership in enumerate(members[org.pk])}
            usage = {
                (key, start, index.get(membership_id), value)
                for key, start, membership_id, value in MeterUsage.objects.filter(
                    organization=org
                ).values_list("meter__key", "period_start", "membership_id", "value")
            }
            daily = set(
                MeterDailyUsage.objects.filter(organization=org).values_list(
                    "meter__key", "day", "value"
                )
            )
            return usage, daily

        one_statement = totals(organization)
        monkeypatch.setattr(
            meters_module, "_add_in_one_statement", meters_module._add_statement_by_statement
        )
        assert totals(other_organization) == one_statement
        assert len(one_statement[0]) > 20


class TestCredits:
    def test_credits_omitted_are_the_quantity_at_the_meters_price(self, organization, member):
        meter("storage", "sum", credits_per_unit=D("0.5"))
        send(organization, event("storage", "3.000001", user=member))
        recorded = UsageEvent.objects.get()
        assert (recorded.quantity, recorded.credits) == (D("3.000001"), D("1.500001"))  # half up
        assert OrganizationUsage.objects.get().used == D("1.500001")

    def test_given_credits_win_and_may_be_0(self, organization):
        meter("storage", "sum", credits_per_unit=D(2))
        send(organization, event("storage", 3, credits=0), event("storage", 3, credits="1.5"))
        assert sorted(UsageEvent.objects.values_list("credits", flat=True)) == [0, D("1.5")]
        assert OrganizationUsage.objects.get().used == D("1.5")

    def test_a_count_event_costs_one_unit_at_the_price(self, organization):
        meter("meetings", "count", credits_per_unit=D(25))
        send(organization, event("meetings"))
        assert UsageEvent.objects.get().credits == 25

    def test_without_a_price_an_event_costs_nothing(self, organization):
        meter("storage", "sum")
        send(organization, event("storage", 1000))
        assert UsageEvent.objects.get().credits == 0
        assert OrganizationUsage.objects.get().used == 0


class TestRefusals:
    """Bad input: a 422 naming the event and field, nothing stored."""

    @pytest.mark.parametrize(
        ("bad", "field", "code"),
        [
            (lambda: event("nope", 1), "events[1].meter", "unknown_meter"),
            (lambda: event("storage"), "events[1].quantity", "quantity_required"),
            (lambda: event("seats"), "events[1].quantity", "quantity_required"),
            (lambda: event("active_users"), "events[1].properties", "missing_property"),
            (
                lambda: event("active_users", user_id=1.5),
                "events[1].properties.user_id",
                "invalid_property",
            ),
            (
                lambda: event("active_users", user_id=["a"]),
                "events[1].properties.user_id",
                "invalid_property",
            ),
            (
                lambda: event("active_users", user_id="x" * 1001),
                "events[1].properties.user_id",
                "invalid_property",
            ),
            (
                lambda: UsageInput("q", D(1), meter="credits", quantity=D(1)),
                "events[1].quantity",
                "invalid_quantity",
            ),
            (lambda: UsageInput("c", None), "events[1].credits", "credits_required"),
            (lambda: UsageInput("z", D(0)), "events[1].credits", "invalid"),
            (
                lambda: event("pricey", "99999999999999"),
                "events[1].quantity",
                "credits_too_large",
            ),
        ],
    )
    def test_refused_whole(self, organization, bad, field, code):
        meter("storage", "sum")
        meter("seats", "max")
        meter("active_users", "unique_count", property="user_id")
        meter("pricey", "sum", credits_per_unit=D(1000))
        with pytest.raises(InvalidInput) as refused:
            send(organization, event("storage", 1), bad())
        assert (refused.value.field, refused.value.code) == (field, code)
        assert not UsageEvent.objects.exists()
        assert not MeterUsage.objects.exists()
        assert not MeterDistinctValue.objects.exists()

    def test_the_api_answers_422_naming_the_event(self, api):
        response = api.post(
            "/api/v1/usage",
            {"events": [{"idempotency_key": "a", "meter": "tokens", "quantity": 1}]},
        )
        assert response.status_code == 422, response.content
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("unknown_meter", "events[0].meter")

    def test_the_api_takes_quantity_and_optional_credits(self, api, organization):
        meter("storage", "sum", credits_per_unit=D("0.1"))
        response = api.post(
            "/api/v1/usage",
            {"events": [{"idempotency_key": "a", "meter": "storage", "quantity": "12.5"}]},
        )
        assert response.status_code == 202, response.content
        assert UsageEvent.objects.get().credits == D("1.25")
        assert values(organization, "storage") == {0: D("12.5")}


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    """20 clients ingesting at once; every aggregation equals an independent
    recount of the ledger, for the organization and each member.
    """

    def test_every_aggregation_is_exact_under_twenty_concurrent_clients(self, organization):
        meter("storage", "sum")
        meter("meetings", "count")
        meter("seats", "max")
        meter("active_users", "unique_count", property="user_id")
        members = MembershipFactory.create_batch(4, organization=organization)
        rng = random.Random(16)
        batches = []
        for client in range(20):
            batch = []
            for n in range(12):
                who = members[rng.randrange(4)]
                kind = rng.choice(["storage", "meetings", "seats", "active_users"])
                quantity = D(rng.randrange(1, 10**6)) / 1000
                batch.append(
                    event(
                        kind,
                        None if kind in ("meetings", "active_users") else quantity,
                        user=who,
                        key=f"c{client}-{n}",
                        user_id=f"u{rng.randrange(15)}",
                    )
                )
            rng.shuffle(batch)
            batches.append(batch)
        # Every client sends its batch twice, so that repeats race the first send too.
        run_in_threads(40, lambda i: send(organization, *batches[i % 20]))

        recount: dict[tuple[str, int], Any] = defaultdict(Decimal)
        seen: dict[tuple[str, int], set[str]] = defaultdict(set)
        for key, membership_id, quantity, props in UsageEvent.objects.filter(
            organization=organization
        ).values_list("meter", "membership_id", "quantity", "properties"):
            for member_key in (0, membership_id):
                if key == "storage":
                    recount[(key, member_key)] += quantity
                elif key == "meetings":
                    recount[(key, member_key)] += 1
                elif key == "seats":
                    recount[(key, member_key)] = max(recount[(key, member_key)], quantity)
                else:
                    seen[(key, member_key)].add(props["user_id"])
        for (key, member_key), distinct in seen.items():
            recount[(key, member_key)] = D(len(distinct))
        assert UsageEvent.objects.count() == 240
        kept = {
            (key, member_key): value
            for key, member_key, value in MeterUsage.objects.values_list(
                "meter__key", "member_key", "value"
            )
        }
        assert kept == dict(recount)
