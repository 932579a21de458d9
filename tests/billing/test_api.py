from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from billing.models import CustomLimit, UsageEvent
from tests.factories import AdminMembershipFactory, MembershipFactory
from tests.helpers import absolute_alert, assert_error, post_usage

pytestmark = pytest.mark.django_db


class TestIngest:
    def test_accepts_and_reports_duplicates(self, api, member):
        event = {"idempotency_key": "e1", "user": member.external_id, "credits": 2.5}
        response = post_usage(api, event, {"idempotency_key": "e2", "credits": "1"})
        assert response.status_code == 202, response.content
        assert response.json() == {"accepted": 2, "duplicates": 0}
        assert post_usage(api, event).json() == {"accepted": 0, "duplicates": 1}
        assert UsageEvent.objects.count() == 2

    def test_every_field(self, api, member):
        moment = (timezone.now() - timedelta(hours=1)).replace(microsecond=0)
        event = {
            "idempotency_key": "full",
            "user": member.external_id,
            "credits": "0.000001",
            "source": "agent_external",
            "meter": "credits",
            "timestamp": moment.isoformat(),
            "properties": {"agent": "researcher"},
        }
        assert post_usage(api, event).status_code == 202
        stored = UsageEvent.objects.get()
        assert (stored.credits, stored.source, stored.timestamp) == (
            Decimal("0.000001"),
            "agent_external",
            moment,
        )
        assert stored.properties == {"agent": "researcher"}

    def test_invalid_event_refuses_the_whole_batch_naming_its_index(self, api):
        response = post_usage(
            api, {"idempotency_key": "ok", "credits": 1}, {"idempotency_key": "bad", "credits": -1}
        )
        error = assert_error(response, 422, field="events[1].credits")
        assert "events[1].credits" in error["message"]
        assert not UsageEvent.objects.exists()

    @pytest.mark.parametrize(
        ("event", "field"),
        [
            ({"credits": 1}, "events[0].idempotency_key"),
            ({"idempotency_key": "k"}, "events[0].credits"),
            ({"idempotency_key": "k", "credits": "1.1234567"}, "events[0].credits"),
            ({"idempotency_key": "k", "credits": 0}, "events[0].credits"),
            ({"idempotency_key": "k", "credits": "abc"}, "events[0].credits"),
            ({"idempotency_key": "k", "credits": 1, "source": "email"}, "events[0].source"),
            (
                {"idempotency_key": "k", "credits": 1, "timestamp": "yesterday"},
                "events[0].timestamp",
            ),
            ({"idempotency_key": "k", "credits": 1, "properties": [1]}, "events[0].properties"),
            ({"idempotency_key": "k", "credits": 1, "colour": "red"}, "events[0].colour"),
            ({"idempotency_key": "", "credits": 1}, "events[0].idempotency_key"),
        ],
    )
    def test_bad_events(self, api, event, field):
        assert_error(post_usage(api, event), 422, field=field)

    def test_unknown_user(self, api):
        assert_error(
            post_usage(api, {"idempotency_key": "k", "credits": 1, "user": "ghost"}),
            422,
            "unknown_user",
            "events[0].user",
        )

    def test_future_timestamp_refused_but_small_skew_accepted(self, api):
        soon = (timezone.now() + timedelta(minutes=4)).isoformat()
        later = (timezone.now() + timedelta(minutes=6)).isoformat()
        assert (
            post_usage(
                api, {"idempotency_key": "soon", "credits": 1, "timestamp": soon}
            ).status_code
            == 202
        )
        assert_error(
            post_usage(api, {"idempotency_key": "late", "credits": 1, "timestamp": later}),
            422,
            "timestamp_in_future",
            "events[0].timestamp",
        )

    @pytest.mark.parametrize("count", [0, 1001])
    def test_batch_size_bounds(self, api, count):
        events = [{"idempotency_key": f"k{i}", "credits": 1} for i in range(count)]
        assert_error(api.post("/api/v1/usage", {"events": events}), 422, field="events")

    def test_a_thousand_events(self, api):
        events = [{"idempotency_key": f"k{i}", "credits": "0.5"} for i in range(1000)]
        assert post_usage(api, *events).json() == {"accepted": 1000, "duplicates": 0}
        assert api.get("/api/v1/usage/summary").json()["used"] == "500"

    def test_key_reused_with_another_body_is_409(self, api):
        post_usage(api, {"idempotency_key": "k", "credits": 1})
        assert_error(
            post_usage(api, {"idempotency_key": "k", "credits": 2}),
            409,
            "idempotency_key_reused",
            "events[0].idempotency_key",
        )

    def test_ingest_is_never_refused_for_limits(self, api, organization, member):
        api.patch("/api/v1/organization", {"credit_allowance": 1})
        api.put("/api/v1/user-limits", {"enabled": True, "default_limit": 1})
        response = post_usage(
            api, {"idempotency_key": "k", "credits": 100, "user": member.external_id}
        )
        assert response.json() == {"accepted": 1, "duplicates": 0}


class TestConsume:
    def test_allowed_answer(self, api, member):
        api.put("/api/v1/user-limits", {"enabled": True, "default_limit": "10"})
        with time_machine.travel(datetime(2026, 5, 20, tzinfo=UTC)):
            response = api.post(
                "/api/v1/consume",
                {"user": member.external_id, "credits": 3, "idempotency_key": "c1"},
            )
        assert response.status_code == 200
        assert response.json() == {
            "allowed": True,
            "used": "3",
            "limit": "10",
            "remaining": "7",
            "resets_at": "2026-06-01T00:00:00Z",
        }

    def test_no_limit_answers_nulls(self, api, member):
        response = api.post(
            "/api/v1/consume", {"user": member.external_id, "credits": 3, "idempotency_key": "c1"}
        )
        assert response.json()["limit"] is None and response.json()["remaining"] is None

    def test_refused_for_the_user(self, api, member):
        api.put("/api/v1/user-limits", {"enabled": True, "default_limit": "10"})
        api.post(
            "/api/v1/consume", {"user": member.external_id, "credits": 8, "idempotency_key": "c1"}
        )
        response = api.post(
            "/api/v1/consume", {"user": member.external_id, "credits": 3, "idempotency_key": "c2"}
        )
        assert response.status_code == 402
        body = response.json()
        assert body["allowed"] is False and body["reason"] == "user_limit_reached"
        assert (body["used"], body["limit"]) == ("8", "10")
        assert body["message"] and body["resets_at"].endswith("Z")

    def test_refused_for_the_organization(self, api, member, owner):
        api.patch("/api/v1/organization", {"credit_allowance": 5})
        api.post(
            "/api/v1/consume", {"user": owner.external_id, "credits": 4, "idempotency_key": "c1"}
        )
        body = api.post(
            "/api/v1/consume", {"user": member.external_id, "credits": 2, "idempotency_key": "c2"}
        ).json()
        assert (body["reason"], body["used"], body["limit"]) == (
            "organization_credits_exhausted",
            "4",
            "5",
        )

    def test_repeated_key_gets_the_first_answer(self, api, member):
        body = {"user": member.external_id, "credits": 3, "idempotency_key": "c1"}
        first = api.post("/api/v1/consume", body)
        again = api.post("/api/v1/consume", body)
        assert (again.status_code, again.json()) == (first.status_code, first.json())
        assert api.get("/api/v1/usage/summary").json()["used"] == "3"

    def test_queries_of_one_consume(self, api, member, organization, django_assert_num_queries):
        """The hot path's statements, each one a decision: the key, the member,
        the limit rules, BEGIN, the ledger row, the member's and the
        organization's totals, the day's and the source's (one statement),
        the alert configuration, the answer under its key, COMMIT.
        """
        absolute_alert(organization, 900)
        body = {"user": member.external_id, "credits": 1, "idempotency_key": "warm"}
        assert api.post("/api/v1/consume", body).status_code == 200
        with django_assert_num_queries(11):
            response = api.post("/api/v1/consume", body | {"idempotency_key": "counted"})
        assert response.status_code == 200

    def test_key_reused_with_another_body(self, api, member):
        api.post(
            "/api/v1/consume", {"user": member.external_id, "credits": 3, "idempotency_key": "c1"}
        )
        response = api.post(
            "/api/v1/consume", {"user": member.external_id, "credits": 4, "idempotency_key": "c1"}
        )
        assert_error(response, 409, "idempotency_key_reused")

    def test_ingest_key_cannot_be_consumed(self, api, member):
        post_usage(api, {"idempotency_key": "shared", "credits": 1})
        response = api.post(
            "/api/v1/consume",
            {"user": member.external_id, "credits": 1, "idempotency_key": "shared"},
        )
        assert_error(response, 409, "idempotency_key_reused")

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"credits": 1, "idempotency_key": "k"}, "user"),
            ({"user": "ghost", "credits": 1, "idempotency_key": "k"}, "user"),
            ({"user": "MEMBER", "credits": 1}, "idempotency_key"),
            ({"user": "MEMBER", "credits": "1e-7", "idempotency_key": "k"}, "credits"),
            ({"user": "MEMBER", "credits": 1, "idempotency_key": "k", "source": "x"}, "source"),
        ],
    )
    def test_bad_consume(self, api, member, body, field):
        body = {k: (member.external_id if v == "MEMBER" else v) for k, v in body.items()}
        assert_error(api.post("/api/v1/consume", body), 422, field=field)
        assert not UsageEvent.objects.exists()

    def test_other_organizations_member_is_unknown(self, api, outsider):
        response = api.post(
            "/api/v1/consume", {"user": outsider.external_id, "credits": 1, "idempotency_key": "k"}
        )
        assert_error(response, 422, "unknown_user", "user")


class TestCheck:
    def test_check_records_nothing(self, api, member):
        api.put("/api/v1/user-limits", {"enabled": True, "default_limit": "10"})
        api.post(
            "/api/v1/consume", {"user": member.external_id, "credits": 4, "idempotency_key": "c1"}
        )
        response = api.post("/api/v1/check", {"user": member.external_id, "credits": 6})
        assert response.status_code == 200
        assert (response.json()["used"], response.json()["remaining"]) == ("4", "6")
        refused = api.post("/api/v1/check", {"user": member.external_id, "credits": 7})
        assert refused.status_code == 402 and refused.json()["reason"] == "user_limit_reached"
        assert UsageEvent.objects.count() == 1

    def test_check_refuses_an_idempotency_key(self, api, member):
        body = {"user": member.external_id, "credits": 1, "idempotency_key": "k"}
        assert_error(api.post("/api/v1/check", body), 422, field="idempotency_key")


class TestSummary:
    def test_summary(self, api, member, owner):
        api.patch("/api/v1/organization", {"credit_allowance": "1000"})
        api.put(
            "/api/v1/user-limits",
            {"enabled": True, "default_limit": "100", "excluded_sources": ["workflow"]},
        )
        post_usage(
            api,
            {"idempotency_key": "a", "credits": 10, "user": member.external_id},
            {
                "idempotency_key": "b",
                "credits": 5,
                "user": member.external_id,
                "source": "workflow",
            },
            {"idempotency_key": "c", "credits": 1, "user": owner.external_id},
        )
        with time_machine.travel(timezone.now()):
            body = api.get("/api/v1/usage/summary").json()
        assert body["used"] == "16" and body["allowance"] == "1000"
        assert body["meters"] == [{"meter": "credits", "value": "16", "unit": "credits"}]
        assert body["users"] == [
            {
                "user": member.external_id,
                "used": "15",
                "counted": "10",
                "limit": "100",
                "meters": [{"meter": "credits", "value": "15"}],
            },
            {
                "user": owner.external_id,
                "used": "1",
                "counted": "1",
                "limit": "100",
                "meters": [{"meter": "credits", "value": "1"}],
            },
        ]
        assert datetime.fromisoformat(body["period_start"]) < datetime.fromisoformat(
            body["period_end"]
        )


class TestLimitPolicy:
    def test_defaults(self, api):
        assert api.get("/api/v1/user-limits").json() == {
            "enabled": False,
            "default_limit": None,
            "admins": [],
            "excluded_sources": [],
        }

    def test_put_and_get(self, api, owner):
        body = {
            "enabled": True,
            "default_limit": 250.5,
            "admins": [owner.external_id],
            "excluded_sources": ["workflow", "agent_external"],
        }
        response = api.put("/api/v1/user-limits", body)
        assert response.status_code == 200, response.content
        expected = {
            "enabled": True,
            "default_limit": "250.5",
            "admins": [owner.external_id],
            "excluded_sources": ["agent_external", "workflow"],
        }
        assert response.json() == expected
        assert api.get("/api/v1/user-limits").json() == expected
        assert (
            api.put("/api/v1/user-limits", {"default_limit": None}).json()["default_limit"] is None
        )

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"excluded_sources": ["assistant"]}, "excluded_sources[0]"),
            ({"default_limit": -5}, "default_limit"),
            ({"admins": ["ghost"]}, "admins"),
            ({"enabled": "yes"}, "enabled"),
        ],
    )
    def test_bad_policy(self, api, body, field):
        assert_error(api.put("/api/v1/user-limits", body), 422, field=field)

    def test_admins_must_be_admins(self, api, member):
        assert_error(
            api.put("/api/v1/user-limits", {"admins": [member.external_id]}),
            422,
            "not_an_admin",
            "admins",
        )

    def test_changing_exclusions_recounts_this_period(self, api, member):
        api.put("/api/v1/user-limits", {"enabled": True, "default_limit": 10})
        post_usage(
            api,
            {
                "idempotency_key": "w",
                "credits": 8,
                "user": member.external_id,
                "source": "workflow",
            },
        )
        refused = api.post("/api/v1/check", {"user": member.external_id, "credits": 5})
        assert refused.status_code == 402
        api.put("/api/v1/user-limits", {"excluded_sources": ["workflow"]})
        assert (
            api.post("/api/v1/check", {"user": member.external_id, "credits": 5}).status_code == 200
        )
        api.put("/api/v1/user-limits", {"excluded_sources": []})
        assert (
            api.post("/api/v1/check", {"user": member.external_id, "credits": 5}).status_code == 402
        )


class TestCustomLimits:
    def test_crud(self, api, member):
        path = f"/api/v1/user-limits/custom/{member.external_id}"
        assert_error(api.get(path), 404, "custom_limit_not_found")
        assert api.put(path, {"limit": 50}).json() == {"user": member.external_id, "limit": "50"}
        assert api.put(path, {"limit": None}).json() == {"user": member.external_id, "limit": None}
        assert api.get(path).json()["limit"] is None
        assert api.get("/api/v1/user-limits/custom").json() == {
            "data": [{"user": member.external_id, "limit": None}],
            "next_cursor": None,
        }
        assert api.delete(path).status_code == 204
        assert not CustomLimit.objects.exists()
        assert_error(api.delete(path), 404)

    def test_limit_is_required(self, api, member):
        assert_error(
            api.put(f"/api/v1/user-limits/custom/{member.external_id}", {}), 422, field="limit"
        )

    def test_unknown_member(self, api, outsider):
        assert_error(
            api.put(f"/api/v1/user-limits/custom/{outsider.external_id}", {"limit": 1}),
            404,
            "member_not_found",
        )

    def test_pagination(self, api, organization):
        for membership in MembershipFactory.create_batch(5, organization=organization):
            CustomLimit.objects.create(organization=organization, membership=membership, limit=5)
        first = api.get("/api/v1/user-limits/custom?limit=3").json()
        second = api.get(f"/api/v1/user-limits/custom?limit=3&cursor={first['next_cursor']}").json()
        assert (
            len(first["data"]) == 3 and len(second["data"]) == 2 and second["next_cursor"] is None
        )


class TestExceeding:
    def test_lists_members_at_or_over_their_limit(self, api, organization, member, owner):
        heavy = MembershipFactory(organization=organization)
        unlimited = AdminMembershipFactory(organization=organization)
        api.put("/api/v1/user-limits", {"enabled": True, "default_limit": 10})
        api.put(f"/api/v1/user-limits/custom/{heavy.external_id}", {"limit": 100})
        api.put(f"/api/v1/user-limits/custom/{unlimited.external_id}", {"limit": None})
        post_usage(
            api,
            {"idempotency_key": "1", "credits": 10, "user": member.external_id},
            {"idempotency_key": "2", "credits": 9, "user": owner.external_id},
            {"idempotency_key": "3", "credits": 50, "user": heavy.external_id},
            {"idempotency_key": "4", "credits": 500, "user": unlimited.external_id},
        )
        body = api.get("/api/v1/user-limits/exceeding").json()
        assert [(row["user"], row["used"], row["limit"]) for row in body["data"]] == [
            (member.external_id, "10", "10")
        ]
        assert body["data"][0]["crossed_at"] is not None
        api.put(f"/api/v1/user-limits/custom/{heavy.external_id}", {"limit": 20})
        users = {
            row["user"]: row for row in api.get("/api/v1/user-limits/exceeding").json()["data"]
        }
        assert set(users) == {member.external_id, heavy.external_id}
        assert users[heavy.external_id]["limit"] == "20" and users[heavy.external_id]["crossed_at"]

    def test_empty_when_limits_are_off(self, api, member):
        post_usage(api, {"idempotency_key": "1", "credits": 10, "user": member.external_id})
        assert api.get("/api/v1/user-limits/exceeding").json() == {"data": [], "next_cursor": None}
