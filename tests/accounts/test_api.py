from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accounts.models import ApiKey, Membership, User
from accounts.services import api_key_create, api_key_revoke
from tests.factories import MembershipFactory
from tests.fixtures import ApiClient
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db


class TestAuthentication:
    def test_no_key(self, organization):
        assert_error(ApiClient(None).get("/api/v1/organization"), 401, "unauthenticated")

    @pytest.mark.parametrize(
        "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "hr_abc", "Token hr_abc"]
    )
    def test_malformed_header(self, organization, header):
        response = ApiClient(None).get("/api/v1/organization", headers={"Authorization": header})
        assert_error(response, 401, "unauthenticated")

    def test_unknown_key(self, organization):
        assert_error(
            ApiClient("hr_not-a-real-key").get("/api/v1/organization"), 401, "invalid_api_key"
        )

    def test_revoked_key(self, organization):
        api_key, raw_key = api_key_create(organization=organization)
        api_key_revoke(api_key=api_key)
        assert_error(ApiClient(raw_key).get("/api/v1/organization"), 401, "invalid_api_key")

    def test_key_acts_for_its_own_organization_only(
        self, api, outsider_api, organization, other_organization
    ):
        assert api.get("/api/v1/organization").json()["slug"] == organization.slug
        assert outsider_api.get("/api/v1/organization").json()["slug"] == other_organization.slug

    def test_key_is_stored_hashed_and_records_last_use(self, organization):
        api_key, raw_key = api_key_create(organization=organization)
        assert raw_key not in api_key.key_hash and raw_key.startswith(api_key.prefix)
        assert api_key.last_used_at is None
        ApiClient(raw_key).get("/api/v1/organization")
        api_key.refresh_from_db()
        assert api_key.last_used_at is not None

    def test_last_use_is_written_at_most_once_a_minute(
        self, organization, django_assert_num_queries
    ):
        api_key, raw_key = api_key_create(organization=organization)
        client = ApiClient(raw_key)
        client.get("/api/v1/organization")
        # The key lookup (with the organization and its plan) and the limits
        # policy's default limit (SPEC §12's `default_limit`); no write.
        with django_assert_num_queries(2):
            client.get("/api/v1/organization")
        ApiKey.objects.filter(pk=api_key.pk).update(
            last_used_at=timezone.now() - timedelta(minutes=2)
        )
        with django_assert_num_queries(3):
            client.get("/api/v1/organization")


class TestErrorShape:
    def test_unknown_path_is_json_404(self, api):
        assert_error(api.get("/api/v1/nothing-here"), 404, "not_found")
        assert_error(api.get("/api/v1/"), 404, "not_found")

    def test_unknown_path_without_key_is_json_404(self, organization):
        assert_error(ApiClient(None).get("/api/v1/nothing/here"), 404, "not_found")

    def test_wrong_method_is_json_405(self, api):
        response = api.delete("/api/v1/organization")
        assert_error(response, 405, "method_not_allowed")
        assert "GET" in response["Allow"]

    def test_malformed_json_is_400(self, api):
        assert_error(api.patch("/api/v1/organization", "{not json"), 400, "invalid_json")

    def test_body_not_an_object_is_422(self, api):
        assert_error(api.patch("/api/v1/organization", [1, 2]), 422)

    def test_nan_is_refused(self, api):
        assert_error(api.patch("/api/v1/organization", '{"credit_allowance": NaN}'), 400)

    def test_unknown_field_is_named(self, api):
        assert_error(api.patch("/api/v1/organization", {"colour": "red"}), 422, field="colour")


class TestOrganization:
    def test_detail(self, api, organization):
        with time_machine.travel("2026-12-10T12:00:00Z", tick=False):
            body = api.get("/api/v1/organization").json()
        assert body == {
            "slug": "acme",
            "name": "Acme Inc",
            "plan": None,
            "credit_allowance": None,
            "credit_allowance_source": None,
            "default_limit": None,
            "default_limit_source": None,
            "block_when_exhausted": True,
            "anchor_day": 1,
            "period_start": "2026-12-01T00:00:00Z",
            "period_end": "2027-01-01T00:00:00Z",
            "period_allowance": None,
            "credit_price": None,
            "credit_price_source": None,
            "currency": "USD",
        }

    def test_patch_changes_only_what_is_given(self, api, organization):
        response = api.patch(
            "/api/v1/organization", {"credit_allowance": "1000.5", "anchor_day": 15}
        )
        assert response.status_code == 200, response.content
        assert response.json()["credit_allowance"] == "1000.5"
        assert response.json()["name"] == "Acme Inc"
        organization.refresh_from_db()
        assert str(organization.credit_allowance) == "1000.500000"
        assert organization.anchor_day == 15

    def test_allowance_accepts_json_numbers_exactly(self, api, organization):
        response = api.patch("/api/v1/organization", '{"credit_allowance": 0.1}')
        assert response.json()["credit_allowance"] == "0.1"

    def test_allowance_null_clears_it(self, api, organization):
        api.patch("/api/v1/organization", {"credit_allowance": 50})
        response = api.patch("/api/v1/organization", {"credit_allowance": None})
        assert response.json()["credit_allowance"] is None

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"credit_allowance": -1}, "credit_allowance"),
            ({"credit_allowance": 0}, "credit_allowance"),
            ({"credit_allowance": "1.0000001"}, "credit_allowance"),
            ({"credit_allowance": "lots"}, "credit_allowance"),
            ({"credit_allowance": True}, "credit_allowance"),
            ({"anchor_day": 29}, "anchor_day"),
            ({"anchor_day": 0}, "anchor_day"),
            ({"anchor_day": "3"}, "anchor_day"),
            ({"block_when_exhausted": "yes"}, "block_when_exhausted"),
            ({"name": "   "}, "name"),
            ({"slug": "no spaces"}, "slug"),
        ],
    )
    def test_bad_values_are_refused_and_change_nothing(self, api, organization, body, field):
        assert_error(api.patch("/api/v1/organization", body), 422, field=field)
        organization.refresh_from_db()
        assert organization.credit_allowance is None
        assert organization.anchor_day == 1

    def test_slug_taken_is_409(self, api, other_organization):
        assert_error(api.patch("/api/v1/organization", {"slug": "globex"}), 409, "slug_taken")


class TestMembers:
    def test_create_defaults_external_id_to_email(self, api, organization):
        response = api.post("/api/v1/members", {"email": "New.Person@Example.com", "name": "New"})
        assert response.status_code == 201, response.content
        assert response.json() == {
            "user": "new.person@example.com",
            "email": "new.person@example.com",
            "name": "New",
            "role": "member",
        }
        assert (
            Membership.objects.get(organization=organization).external_id
            == "new.person@example.com"
        )

    def test_create_with_external_id_and_role(self, api):
        response = api.post(
            "/api/v1/members", {"email": "a@example.com", "user": "u_42", "role": "admin"}
        )
        assert response.status_code == 201
        assert api.get("/api/v1/members/u_42").json()["role"] == "admin"

    def test_existing_user_joins_without_a_second_account(self, api, outsider):
        response = api.post("/api/v1/members", {"email": outsider.user.email})
        assert response.status_code == 201
        assert User.objects.filter(email=outsider.user.email).count() == 1

    def test_duplicate_email_is_409(self, api, member):
        assert_error(
            api.post("/api/v1/members", {"email": member.user.email, "user": "other"}),
            409,
            "member_exists",
        )

    def test_duplicate_external_id_is_409(self, api, member):
        body = {"email": "someone@example.com", "user": member.external_id}
        assert_error(api.post("/api/v1/members", body), 409, "user_taken")

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"email": "not-an-email"}, "email"),
            ({"email": "a@example.com", "role": "owner"}, "role"),
            ({"email": "a@example.com", "user": ""}, "user"),
            ({"name": "no email"}, "email"),
        ],
    )
    def test_bad_member_is_422(self, api, organization, body, field):
        assert_error(api.post("/api/v1/members", body), 422, field=field)
        assert not Membership.objects.filter(organization=organization).exists()

    def test_detail_update_delete(self, api, member):
        path = f"/api/v1/members/{member.external_id}"
        assert api.get(path).json()["email"] == "member@acme.test"
        response = api.patch(path, {"role": "admin", "name": "Renamed"})
        assert response.json()["role"] == "admin" and response.json()["name"] == "Renamed"
        response = api.patch(path, {"user": "m-1"})
        assert response.json()["user"] == "m-1"
        assert api.get("/api/v1/members/m-1").status_code == 200
        assert api.delete("/api/v1/members/m-1").status_code == 204
        assert_error(api.get("/api/v1/members/m-1"), 404, "member_not_found")

    def test_external_ids_may_contain_slashes(self, api):
        api.post("/api/v1/members", {"email": "s@example.com", "user": "team/s"})
        assert api.get("/api/v1/members/team/s").json()["email"] == "s@example.com"

    def test_rename_to_taken_external_id_is_409(self, api, member, owner):
        assert_error(
            api.patch(f"/api/v1/members/{member.external_id}", {"user": owner.external_id}),
            409,
            "user_taken",
        )

    def test_other_organizations_members_are_invisible(self, api, outsider):
        assert_error(api.get(f"/api/v1/members/{outsider.external_id}"), 404)
        assert_error(api.delete(f"/api/v1/members/{outsider.external_id}"), 404)
        assert outsider.external_id not in [
            m["user"] for m in api.get("/api/v1/members").json()["data"]
        ]


class TestPagination:
    def test_pages_through_everything_once(self, api, organization, django_assert_max_num_queries):
        MembershipFactory.create_batch(7, organization=organization)
        api.get("/api/v1/members")  # the key's first use records it; later pages only read
        seen, cursor = [], None
        while True:
            query = f"?limit=3&cursor={cursor}" if cursor else "?limit=3"
            with django_assert_max_num_queries(2):
                body = api.get(f"/api/v1/members{query}").json()
            seen += [m["user"] for m in body["data"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 7

    def test_default_page_is_50(self, api, organization):
        MembershipFactory.create_batch(51, organization=organization)
        body = api.get("/api/v1/members").json()
        assert len(body["data"]) == 50 and body["next_cursor"]

    def test_empty_list(self, api):
        assert api.get("/api/v1/members").json() == {"data": [], "next_cursor": None}

    @pytest.mark.parametrize("query", ["cursor=@@@", "cursor=bm90LWEtbnVtYmVy", "cursor=LTE"])
    def test_bad_cursor_is_400(self, api, query):
        assert_error(api.get(f"/api/v1/members?{query}"), 400, "invalid_cursor", "cursor")

    @pytest.mark.parametrize("limit", ["0", "201", "-5", "many"])
    def test_bad_limit_is_400(self, api, limit):
        assert_error(api.get(f"/api/v1/members?limit={limit}"), 400, field="limit")


class TestOpenApi:
    def test_served_without_a_key(self, db):
        response = ApiClient(None).get("/api/v1/openapi.json")
        assert response.status_code == 200
        document = response.json()
        assert document["openapi"].startswith("3.")
        assert "/api/v1/members" in document["paths"]
        assert "/api/v1/organization" in document["paths"]
        assert document["components"]["securitySchemes"]
