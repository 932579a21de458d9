from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from alerts.models import MAX_ORGANIZATION_ALERTS, Firing, OrganizationAlert, UserAlertPolicy
from alerts.services.changes import organization_update
from alerts.services.configuration import alert_create
from tests.factories import AdminMembershipFactory
from tests.fixtures import ApiClient
from tests.helpers import assert_error, ingest, limits_on, spend

pytestmark = pytest.mark.django_db

ALERTS = "/api/v1/alerts"
USER_ALERTS = "/api/v1/user-alerts"
EVENTS = "/api/v1/alert-events"


def same_moment(text, moment):
    """JSON times go out to the millisecond."""
    return abs(datetime.fromisoformat(text) - moment) < timedelta(milliseconds=1)


@pytest.fixture
def allowance(organization):
    organization_update(organization=organization, credit_allowance=Decimal(1000))
    organization.refresh_from_db()
    return organization


class TestAlertCreate:
    def test_create_answers_201_with_the_alert(self, api, owner):
        response = api.post(ALERTS, {"threshold_type": "percentage", "threshold": 80})

        assert response.status_code == 201, response.content
        body = response.json()
        assert body == {
            "id": body["id"],
            "source": "organization",
            "enabled": True,
            "meter": "credits",
            "threshold_type": "percentage",
            "threshold": "80",
            "currency": None,
            "notify": "all_admins",
            "admins": [],
            "status": "ok",
            "triggered_at": None,
        }
        alert = OrganizationAlert.objects.get(pk=body["id"])
        assert alert.threshold == Decimal(80)
        assert api.get(f"{ALERTS}/{alert.pk}").json() == body

    def test_threshold_accepts_decimal_strings_and_numbers_exactly(self, api, owner):
        response = api.post(ALERTS, {"threshold_type": "absolute", "threshold": "1234.5"})
        assert response.json()["threshold"] == "1234.5"
        response = api.post(ALERTS, '{"threshold_type": "absolute", "threshold": 0.1}')
        assert response.json()["threshold"] == "0.1"

    def test_specific_admins_are_named_by_external_id(self, api, organization, owner):
        other = AdminMembershipFactory(organization=organization, external_id="a-2")
        response = api.post(
            ALERTS,
            {
                "threshold_type": "absolute",
                "threshold": 500,
                "notify": "specific_admins",
                "admins": [owner.external_id, other.external_id],
            },
        )

        assert response.status_code == 201, response.content
        assert response.json()["notify"] == "specific_admins"
        assert response.json()["admins"] == sorted([owner.external_id, "a-2"])

    @pytest.mark.parametrize(
        ("body", "field", "code"),
        [
            ({"threshold": 50}, "threshold_type", None),
            ({"threshold_type": "percentage"}, "threshold", None),
            ({"threshold_type": "ratio", "threshold": 50}, "threshold_type", None),
            ({"threshold_type": "percentage", "threshold": 0}, "threshold", None),
            ({"threshold_type": "absolute", "threshold": -5}, "threshold", None),
            ({"threshold_type": "absolute", "threshold": "lots"}, "threshold", None),
            ({"threshold_type": "absolute", "threshold": True}, "threshold", None),
            ({"threshold_type": "absolute", "threshold": "1.0000001"}, "threshold", None),
            ({"threshold_type": "percentage", "threshold": 150}, "threshold", "invalid_threshold"),
            (
                {"threshold_type": "percentage", "threshold": "0.5"},
                "threshold",
                "invalid_threshold",
            ),
            ({"threshold_type": "absolute", "threshold": 5, "notify": "everyone"}, "notify", None),
            (
                {"threshold_type": "absolute", "threshold": 5, "notify": "specific_admins"},
                "admins",
                "admins_required",
            ),
            (
                {"threshold_type": "absolute", "threshold": 5, "admins": "owner@acme.test"},
                "admins",
                None,
            ),
            (
                {
                    "threshold_type": "absolute",
                    "threshold": 5,
                    "notify": "specific_admins",
                    "admins": ["nobody"],
                },
                "admins",
                "unknown_user",
            ),
            (
                {
                    "threshold_type": "absolute",
                    "threshold": 5,
                    "notify": "specific_admins",
                    "admins": ["member@acme.test"],
                },
                "admins",
                "not_an_admin",
            ),
            (
                {"threshold_type": "absolute", "threshold": 5, "fire_if_already_exceeded": "no"},
                "fire_if_already_exceeded",
                None,
            ),
            ({"threshold_type": "absolute", "threshold": 5, "colour": "red"}, "colour", None),
        ],
    )
    def test_bad_alerts_are_422_and_create_nothing(self, api, owner, member, body, field, code):
        assert_error(api.post(ALERTS, body), 422, code, field)
        assert not OrganizationAlert.objects.exists()

    @pytest.mark.parametrize("body", ["{not json", "[1, 2]", ""])
    def test_bad_bodies_are_errors_not_500(self, api, body):
        response = api.post(ALERTS, body) if body else api.post(ALERTS)
        assert response.status_code in (400, 422)
        assert_error(response, response.status_code)

    def test_another_organizations_admin_cannot_be_named(self, api, owner, outsider):
        body = {
            "threshold_type": "absolute",
            "threshold": 5,
            "notify": "specific_admins",
            "admins": [outsider.external_id],
        }
        assert_error(api.post(ALERTS, body), 422, "unknown_user", "admins")

    def test_the_26th_alert_is_refused(self, api, organization, owner):
        for threshold in range(1, MAX_ORGANIZATION_ALERTS + 1):
            alert_create(organization=organization, threshold_type="absolute", threshold=threshold)

        response = api.post(ALERTS, {"threshold_type": "absolute", "threshold": 100})

        error = assert_error(response, 422, "too_many_alerts")
        assert "25" in error["message"]
        assert OrganizationAlert.objects.count() == MAX_ORGANIZATION_ALERTS


class TestAlertStatus:
    def test_in_alarm_once_usage_reaches_the_threshold(self, api, allowance, owner):
        alert_id = api.post(ALERTS, {"threshold_type": "percentage", "threshold": 50}).json()["id"]
        ingest(allowance, "499.999999")
        assert api.get(f"{ALERTS}/{alert_id}").json()["status"] == "ok"

        ingest(allowance, "0.000001")

        body = api.get(f"{ALERTS}/{alert_id}").json()
        assert body["status"] == "in_alarm"
        firing = Firing.objects.get(alert_id=alert_id)
        assert same_moment(body["triggered_at"], firing.triggered_at)

    def test_a_new_alert_already_passed_fires_at_once(self, api, allowance, owner):
        ingest(allowance, 600)

        response = api.post(ALERTS, {"threshold_type": "percentage", "threshold": 50})

        assert response.status_code == 201
        assert response.json()["status"] == "in_alarm"
        assert response.json()["triggered_at"] is not None

    def test_fire_if_already_exceeded_false_waits_for_the_next_period(self, api, allowance, owner):
        with time_machine.travel(datetime(2030, 3, 10, 12, tzinfo=UTC)):
            ingest(allowance, 600)
            response = api.post(
                ALERTS,
                {
                    "threshold_type": "percentage",
                    "threshold": 50,
                    "fire_if_already_exceeded": False,
                },
            )
            assert response.status_code == 201
            alert_id = response.json()["id"]
            assert response.json()["status"] == "ok"
            ingest(allowance, 100)
            assert api.get(f"{ALERTS}/{alert_id}").json()["status"] == "ok"
            assert not Firing.objects.filter(alert_id=alert_id).exists()

        with time_machine.travel(datetime(2030, 4, 2, tzinfo=UTC)):
            assert api.get(f"{ALERTS}/{alert_id}").json()["status"] == "ok"
            ingest(allowance, 500)
            assert api.get(f"{ALERTS}/{alert_id}").json()["status"] == "in_alarm"

    def test_status_is_per_period(self, api, allowance, owner):
        with time_machine.travel(datetime(2030, 3, 10, tzinfo=UTC)):
            alert_id = api.post(ALERTS, {"threshold_type": "absolute", "threshold": 10}).json()[
                "id"
            ]
            ingest(allowance, 10)
            assert api.get(f"{ALERTS}/{alert_id}").json()["status"] == "in_alarm"
        with time_machine.travel(datetime(2030, 4, 1, tzinfo=UTC)):
            body = api.get(f"{ALERTS}/{alert_id}").json()
            assert (body["status"], body["triggered_at"]) == ("ok", None)

    def test_list_reports_each_status_in_a_bounded_number_of_queries(
        self, api, allowance, owner, django_assert_max_num_queries
    ):
        for threshold in (100, 200, 300, 400, 500):
            api.post(
                ALERTS,
                {
                    "threshold_type": "absolute",
                    "threshold": threshold,
                    "notify": "specific_admins",
                    "admins": [owner.external_id],
                },
            )
        ingest(allowance, 250)

        # The key lookup, the alerts, their admins, their firings.
        with django_assert_max_num_queries(4):
            body = api.get(ALERTS).json()

        assert [(a["threshold"], a["status"]) for a in body["data"]] == [
            ("100", "in_alarm"),
            ("200", "in_alarm"),
            ("300", "ok"),
            ("400", "ok"),
            ("500", "ok"),
        ]
        assert all(a["admins"] == [owner.external_id] for a in body["data"])


class TestAlertUpdate:
    @pytest.fixture
    def alert_id(self, api, owner):
        return api.post(ALERTS, {"threshold_type": "percentage", "threshold": 50}).json()["id"]

    def test_patch_changes_only_what_is_given(self, api, alert_id):
        response = api.patch(f"{ALERTS}/{alert_id}", {"threshold": "75.5"})

        assert response.status_code == 200, response.content
        assert response.json()["threshold"] == "75.5"
        assert response.json()["threshold_type"] == "percentage"
        assert response.json()["notify"] == "all_admins"

    def test_empty_patch_changes_nothing(self, api, alert_id):
        before = api.get(f"{ALERTS}/{alert_id}").json()
        assert api.patch(f"{ALERTS}/{alert_id}", {}).json() == before

    def test_switching_recipients(self, api, alert_id, owner):
        path = f"{ALERTS}/{alert_id}"
        body = api.patch(path, {"notify": "specific_admins", "admins": [owner.external_id]}).json()
        assert (body["notify"], body["admins"]) == ("specific_admins", [owner.external_id])

        body = api.patch(path, {"notify": "all_admins"}).json()
        assert (body["notify"], body["admins"]) == ("all_admins", [])

    def test_editing_the_threshold_re_arms_the_alert(self, api, allowance, alert_id):
        path = f"{ALERTS}/{alert_id}"
        ingest(allowance, 600)
        first = api.get(path).json()
        assert first["status"] == "in_alarm"

        raised = api.patch(path, {"threshold": 90}).json()
        assert (raised["status"], raised["triggered_at"]) == ("ok", None)

        lowered = api.patch(path, {"threshold": 55}).json()
        assert lowered["status"] == "in_alarm"
        assert Firing.objects.filter(alert_id=alert_id).count() == 2

    def test_changing_only_the_recipients_does_not_re_arm(self, api, allowance, alert_id, owner):
        ingest(allowance, 600)
        api.patch(
            f"{ALERTS}/{alert_id}", {"notify": "specific_admins", "admins": [owner.external_id]}
        )
        assert api.get(f"{ALERTS}/{alert_id}").json()["status"] == "in_alarm"
        assert Firing.objects.filter(alert_id=alert_id).count() == 1

    @pytest.mark.parametrize(
        ("body", "field", "code"),
        [
            ({"threshold": None}, "threshold", None),
            ({"threshold_type": None}, "threshold_type", None),
            ({"notify": None}, "notify", None),
            ({"admins": None}, "admins", None),
            ({"threshold": 0}, "threshold", None),
            ({"threshold": 101}, "threshold", "invalid_threshold"),
            ({"threshold_type": "percent"}, "threshold_type", None),
            ({"notify": "specific_admins"}, "admins", "admins_required"),
            ({"notify": "specific_admins", "admins": ["nobody"]}, "admins", "unknown_user"),
            ({"fire_if_already_exceeded": False}, "fire_if_already_exceeded", None),
        ],
    )
    def test_bad_patches_are_422_and_change_nothing(self, api, alert_id, body, field, code):
        before = api.get(f"{ALERTS}/{alert_id}").json()
        assert_error(api.patch(f"{ALERTS}/{alert_id}", body), 422, code, field)
        assert api.get(f"{ALERTS}/{alert_id}").json() == before

    def test_switching_to_absolute_keeps_a_valid_threshold(self, api, alert_id):
        body = api.patch(f"{ALERTS}/{alert_id}", {"threshold_type": "absolute"}).json()
        assert (body["threshold_type"], body["threshold"]) == ("absolute", "50")
        assert_error(
            api.patch(f"{ALERTS}/{alert_id}", {"threshold": 500, "threshold_type": "percentage"}),
            422,
            "invalid_threshold",
            "threshold",
        )

    def test_delete(self, api, alert_id):
        response = api.delete(f"{ALERTS}/{alert_id}")

        assert response.status_code == 204
        assert response.content == b""
        assert not OrganizationAlert.objects.filter(pk=alert_id).exists()
        assert_error(api.get(f"{ALERTS}/{alert_id}"), 404, "alert_not_found")
        assert_error(api.delete(f"{ALERTS}/{alert_id}"), 404, "alert_not_found")

    def test_deleting_keeps_the_history(self, api, allowance, alert_id):
        ingest(allowance, 600)
        api.delete(f"{ALERTS}/{alert_id}")

        [event] = api.get(EVENTS).json()["data"]
        assert (event["kind"], event["alert_id"]) == ("organization_alert", None)

    @pytest.mark.parametrize("path", ["0", "-1", "999999", "99999999999999999999999"])
    def test_unknown_ids_are_404(self, api, path):
        assert_error(api.get(f"{ALERTS}/{path}"), 404, "alert_not_found")
        assert_error(api.patch(f"{ALERTS}/{path}", {"threshold": 5}), 404, "alert_not_found")
        assert_error(api.delete(f"{ALERTS}/{path}"), 404, "alert_not_found")

    def test_an_id_that_is_not_a_number_is_400(self, api):
        assert_error(api.get(f"{ALERTS}/abc"), 400, field="id")

    def test_wrong_method_is_405(self, api, alert_id):
        assert_error(api.put(f"{ALERTS}/{alert_id}", {}), 405, "method_not_allowed")
        assert_error(api.delete(ALERTS), 405, "method_not_allowed")


class TestAlertTenancy:
    def test_another_organizations_key_cannot_see_or_touch_our_alert(
        self, api, outsider_api, owner
    ):
        alert_id = api.post(ALERTS, {"threshold_type": "absolute", "threshold": 5}).json()["id"]
        path = f"{ALERTS}/{alert_id}"

        assert_error(outsider_api.get(path), 404, "alert_not_found")
        assert_error(outsider_api.patch(path, {"threshold": 10}), 404, "alert_not_found")
        assert_error(outsider_api.delete(path), 404, "alert_not_found")
        assert outsider_api.get(ALERTS).json() == {"data": [], "next_cursor": None}
        assert api.get(path).json()["threshold"] == "5"

    def test_alerts_need_a_key(self, organization):
        assert_error(ApiClient(None).get(ALERTS), 401)
        assert_error(ApiClient(None).post(ALERTS, {}), 401)


class TestAlertList:
    def test_pages_through_every_alert_once(self, api, organization):
        for threshold in range(1, 8):
            alert_create(organization=organization, threshold_type="absolute", threshold=threshold)
        seen, cursor = [], None
        while True:
            query = f"?limit=3&cursor={cursor}" if cursor else "?limit=3"
            body = api.get(f"{ALERTS}{query}").json()
            seen += [alert["id"] for alert in body["data"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(OrganizationAlert.objects.values_list("pk", flat=True))

    def test_empty(self, api):
        assert api.get(ALERTS).json() == {"data": [], "next_cursor": None}

    @pytest.mark.parametrize("query", ["cursor=@@@", "limit=0", "limit=201", "limit=x"])
    def test_bad_paging_is_400(self, api, query):
        assert_error(api.get(f"{ALERTS}?{query}"), 400)


class TestUserAlertPolicy:
    def test_defaults(self, api):
        assert api.get(USER_ALERTS).json() == {
            "enabled": False,
            "threshold": None,
            "notify_user": False,
            "admins": [],
        }

    def test_put_sets_every_field(self, api, owner):
        body = {
            "enabled": True,
            "threshold": "250.5",
            "notify_user": True,
            "admins": [owner.external_id],
        }

        response = api.put(USER_ALERTS, body)

        assert response.status_code == 200, response.content
        assert response.json() == body
        assert api.get(USER_ALERTS).json() == body

    def test_put_changes_only_what_is_given(self, api, owner):
        api.put(USER_ALERTS, {"enabled": True, "threshold": 100, "admins": [owner.external_id]})

        body = api.put(USER_ALERTS, {"notify_user": True}).json()

        assert body == {
            "enabled": True,
            "threshold": "100",
            "notify_user": True,
            "admins": [owner.external_id],
        }

    def test_null_threshold_clears_it(self, api):
        api.put(USER_ALERTS, {"threshold": 100})
        assert api.put(USER_ALERTS, {"threshold": None}).json()["threshold"] is None

    def test_turning_on_needs_a_threshold(self, api):
        assert_error(
            api.put(USER_ALERTS, {"enabled": True}), 422, "threshold_required", "threshold"
        )
        api.put(USER_ALERTS, {"enabled": True, "threshold": 5, "notify_user": True})
        assert_error(
            api.put(USER_ALERTS, {"threshold": None}), 422, "threshold_required", "threshold"
        )

    def test_empty_admins_clears_them(self, api, owner):
        api.put(USER_ALERTS, {"admins": [owner.external_id]})
        assert api.put(USER_ALERTS, {"admins": []}).json()["admins"] == []

    @pytest.mark.parametrize(
        ("body", "field", "code"),
        [
            ({"threshold": 0}, "threshold", None),
            ({"threshold": "-1"}, "threshold", None),
            ({"threshold": "ten"}, "threshold", None),
            ({"enabled": "yes"}, "enabled", None),
            ({"enabled": None}, "enabled", None),
            ({"notify_user": 1}, "notify_user", None),
            ({"notify_user": None}, "notify_user", None),
            ({"admins": None}, "admins", None),
            ({"admins": ["nobody"]}, "admins", "unknown_user"),
            ({"admins": ["member@acme.test"]}, "admins", "not_an_admin"),
            ({"threshold_type": "absolute"}, "threshold_type", None),
        ],
    )
    def test_bad_input_is_422_and_changes_nothing(self, api, member, body, field, code):
        assert_error(api.put(USER_ALERTS, body), 422, code, field)
        assert not UserAlertPolicy.objects.exists()

    def test_another_organizations_policy_is_separate(self, api, outsider_api, owner):
        api.put(USER_ALERTS, {"enabled": True, "threshold": 5, "notify_user": True})
        assert outsider_api.get(USER_ALERTS).json()["enabled"] is False
        assert_error(
            outsider_api.put(USER_ALERTS, {"admins": [owner.external_id]}),
            422,
            "unknown_user",
            "admins",
        )

    def test_wrong_method_is_405(self, api):
        assert_error(api.post(USER_ALERTS, {}), 405, "method_not_allowed")
        assert_error(api.patch(USER_ALERTS, {}), 405, "method_not_allowed")


class TestAlertEvents:
    def test_empty(self, api):
        assert api.get(EVENTS).json() == {"data": [], "next_cursor": None}

    def test_organization_alert_firing(self, api, allowance, owner):
        alert_id = api.post(ALERTS, {"threshold_type": "percentage", "threshold": 50}).json()["id"]
        ingest(allowance, "612.25")

        [event] = api.get(EVENTS).json()["data"]

        firing = Firing.objects.get()
        assert event == {
            "id": firing.pk,
            "kind": "organization_alert",
            "alert_id": alert_id,
            "user": None,
            "meter": "credits",
            "threshold": "50",
            "threshold_credits": "500",
            "value": "612.25",
            "currency": None,
            "threshold_type": "percentage",
            "projected": None,
            "projected_at": None,
            "triggered_at": event["triggered_at"],
            "period_start": event["period_start"],
        }
        assert same_moment(event["triggered_at"], firing.triggered_at)
        assert same_moment(event["period_start"], firing.period_start)

    def test_user_alert_and_user_limit_firings_name_the_user(self, api, organization, member):
        api.put(USER_ALERTS, {"enabled": True, "threshold": 10, "notify_user": True})
        limits_on(organization, 20)

        spend(member, 25)

        events = api.get(EVENTS).json()["data"]
        by_kind = {event["kind"]: event for event in events}
        assert set(by_kind) == {"user_alert", "user_limit"}
        assert by_kind["user_alert"]["user"] == member.external_id
        assert by_kind["user_alert"]["alert_id"] is None
        assert (by_kind["user_alert"]["threshold"], by_kind["user_alert"]["value"]) == ("10", "25")
        assert (by_kind["user_limit"]["threshold"], by_kind["user_limit"]["value"]) == ("20", "25")
        assert by_kind["user_limit"]["threshold_credits"] == "20"

    def test_newest_first_and_paged(self, api, organization, owner):
        for threshold in (10, 20, 30):
            alert_create(organization=organization, threshold_type="absolute", threshold=threshold)
        for step in range(3):
            ingest(organization, 10, key=f"step-{step}")

        first = api.get(f"{EVENTS}?limit=2").json()
        second = api.get(f"{EVENTS}?limit=2&cursor={first['next_cursor']}").json()

        thresholds = [e["threshold"] for e in first["data"] + second["data"]]
        assert thresholds == ["30", "20", "10"]
        assert second["next_cursor"] is None

    def test_filters(self, api, organization, member):
        alert = alert_create(organization=organization, threshold_type="absolute", threshold=5)
        alert_create(organization=organization, threshold_type="absolute", threshold=6)
        api.put(USER_ALERTS, {"enabled": True, "threshold": 1, "notify_user": True})
        spend(member, 10)

        kinds = [e["kind"] for e in api.get(f"{EVENTS}?kind=user_alert").json()["data"]]
        assert kinds == ["user_alert"]
        of_alert = api.get(f"{EVENTS}?alert_id={alert.pk}").json()["data"]
        assert [e["alert_id"] for e in of_alert] == [alert.pk]
        both = api.get(f"{EVENTS}?kind=organization_alert&alert_id={alert.pk}").json()["data"]
        assert len(both) == 1
        assert api.get(f"{EVENTS}?kind=user_limit").json()["data"] == []
        assert api.get(f"{EVENTS}?alert_id=99999999999999999999").json()["data"] == []

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("kind=alert", "kind"),
            ("alert_id=one", "alert_id"),
            ("alert_id=1.5", "alert_id"),
            ("cursor=@@@", "cursor"),
            ("limit=500", "limit"),
        ],
    )
    def test_bad_filters_are_400(self, api, query, field):
        assert_error(api.get(f"{EVENTS}?{query}"), 400, field=field)

    def test_another_organization_does_not_see_our_events(
        self, api, outsider_api, organization, owner
    ):
        alert = alert_create(organization=organization, threshold_type="absolute", threshold=5)
        ingest(organization, 10)
        assert len(api.get(EVENTS).json()["data"]) == 1

        assert outsider_api.get(EVENTS).json() == {"data": [], "next_cursor": None}
        assert outsider_api.get(f"{EVENTS}?alert_id={alert.pk}").json()["data"] == []

    def test_bounded_queries(self, api, organization, member, owner, django_assert_max_num_queries):
        api.put(USER_ALERTS, {"enabled": True, "threshold": 1, "notify_user": True})
        for index in range(5):
            other = AdminMembershipFactory(organization=organization)
            spend(other, 2, key=f"u-{index}")
        with django_assert_max_num_queries(2):
            events = api.get(EVENTS).json()["data"]
        assert len(events) == 5


class TestOpenApi:
    def test_alert_paths_are_documented(self, db):
        response = ApiClient(None).get("/api/v1/openapi.json")

        assert response.status_code == 200
        paths = response.json()["paths"]
        for path in (
            "/api/v1/alerts",
            "/api/v1/alerts/{id}",
            "/api/v1/user-alerts",
            "/api/v1/alert-events",
            "/api/v1/webhook-endpoints",
            "/api/v1/webhook-endpoints/{id}",
        ):
            assert path in paths
        assert set(paths["/api/v1/alerts/{id}"]) >= {"get", "patch", "delete"}
        assert set(paths["/api/v1/user-alerts"]) >= {"get", "put"}
