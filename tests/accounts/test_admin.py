from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
import time_machine
from django.contrib import admin
from django.contrib.messages import get_messages
from django.core import mail
from django.urls import reverse

from accounts.models import ApiKey, Membership, Organization, Role, User
from accounts.services import api_key_authenticate, api_key_create
from alerts.models import Firing, FiringKind, OrganizationAlert
from alerts.services.changes import custom_limit_set
from alerts.services.credits import credit_grant_create
from alerts.services.ingest import UsageInput, usage_ingest
from alerts.webhooks import webhook_endpoint_create
from billing.models import CustomLimit, UserLimitPolicy
from billing.services.grants import GrantInput
from config.admin_kit import INLINE_ROWS_MAX as CUSTOM_LIMITS_INLINE_MAX
from config.credits import format_credits
from tests.factories import AdminMembershipFactory, MembershipFactory, OrganizationFactory
from tests.fixtures import over_budget
from tests.helpers import absolute_alert, ingest, limits_on, spend

REGISTERED = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


@pytest.mark.parametrize(
    ("model", "model_admin"), REGISTERED, ids=[model._meta.label for model, _ in REGISTERED]
)
def test_every_changelist_and_add_page_loads(staff_client, owner, member, model, model_admin):
    info = (model._meta.app_label, model._meta.model_name)

    changelist = staff_client.get(reverse("admin:{}_{}_changelist".format(*info)))
    assert changelist.status_code == 200

    if model_admin.has_add_permission(changelist.wsgi_request):
        add = staff_client.get(reverse("admin:{}_{}_add".format(*info)))
        assert add.status_code == 200


def test_changelists_with_rows(staff_client, owner, member, outsider):
    api_key_create(organization=owner.organization, name="Host app")

    for model in (User, Organization, Membership, ApiKey):
        info = (model._meta.app_label, model._meta.model_name)
        response = staff_client.get(reverse("admin:{}_{}_changelist".format(*info)))
        assert response.status_code == 200
        assert response.context["cl"].result_count == model.objects.count() > 0


def test_change_pages_load(staff_client, owner):
    api_key, _ = api_key_create(organization=owner.organization)
    for obj in (owner.user, owner.organization, owner, api_key):
        info = (obj._meta.app_label, obj._meta.model_name)
        response = staff_client.get(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
        assert response.status_code == 200


def test_user_search(staff_client, owner, member):
    response = staff_client.get(reverse("admin:accounts_user_changelist"), {"q": "member@"})

    assert [user.email for user in response.context["cl"].result_list] == ["member@acme.test"]


def test_adding_a_user_with_email_and_password(staff_client):
    response = staff_client.post(
        reverse("admin:accounts_user_add"),
        {
            "email": "New.Person@Example.test",
            "password1": "a-long-passphrase",
            "password2": "a-long-passphrase",
        },
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    user = User.objects.get(email="new.person@example.test")
    assert user.check_password("a-long-passphrase")


def test_adding_a_membership_defaults_external_id_to_email(staff_client, organization, outsider):
    response = staff_client.post(
        reverse("admin:accounts_membership_add"),
        {
            "organization": organization.pk,
            "user": outsider.user.pk,
            "role": "member",
            "external_id": "",
        },
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    membership = Membership.objects.get(organization=organization, user=outsider.user)
    assert membership.external_id == "admin@globex.test"


def test_the_add_api_key_form_asks_only_organization_and_name(staff_client):
    response = staff_client.get(reverse("admin:accounts_apikey_add"))

    form = response.context["adminform"].form
    assert list(form.fields) == ["organization", "name"]
    assert "key_hash" not in response.content.decode()


def test_adding_an_api_key_shows_the_raw_key_once(staff_client, organization):
    response = staff_client.post(
        reverse("admin:accounts_apikey_add"),
        {"organization": organization.pk, "name": "Host app"},
        follow=True,
    )

    assert response.status_code == 200
    [once] = [str(m) for m in response.context["messages"] if "shown only this once" in str(m)]
    raw_key = re.search(r"hr_[A-Za-z0-9_-]{40,}", once).group()
    assert response.content.decode().count(raw_key) == 1

    api_key = api_key_authenticate(raw_key=raw_key)
    assert api_key is not None
    assert api_key.organization == organization
    assert api_key.name == "Host app"
    assert ApiKey.objects.count() == 1

    again = staff_client.get(reverse("admin:accounts_apikey_change", args=[api_key.pk]))
    html = again.content.decode()
    assert raw_key not in html
    assert api_key.key_hash not in html
    assert not list(get_messages(again.wsgi_request))


def test_revoke_action(staff_client, organization):
    first, first_raw = api_key_create(organization=organization)
    second, second_raw = api_key_create(organization=organization)
    _kept, kept_raw = api_key_create(organization=organization)

    response = staff_client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke_selected", "_selected_action": [first.pk, second.pk]},
    )

    assert response.status_code == 302
    assert api_key_authenticate(raw_key=first_raw) is None
    assert api_key_authenticate(raw_key=second_raw) is None
    assert api_key_authenticate(raw_key=kept_raw) is not None


def test_raising_the_allowance_in_the_admin_evaluates_alerts(
    client, organization, owner, django_capture_on_commit_callbacks
):
    from decimal import Decimal

    from django.core import mail

    from accounts.models import User
    from alerts.models import Firing
    from alerts.services.configuration import alert_create

    staff = User.objects.create_superuser("staff-eval@headroom.test", "pw-123456789")
    client.force_login(staff)
    alert_create(organization=organization, threshold_type="percentage", threshold=Decimal(50))
    ingest(organization, 60, key="k")
    assert not Firing.objects.exists()  # no allowance yet: a percentage cannot fire
    form = organization_form(organization, own_credit_allowance="100")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/admin/accounts/organization/{organization.pk}/change/", form)
    assert response.status_code == 302, response.content[:2000]
    assert Firing.objects.get().value == Decimal(60)
    assert [m.to for m in mail.outbox] == [[owner.user.email]]


def test_changing_a_role_in_the_admin_evaluates_alerts(
    staff_client, organization, owner, member, django_capture_on_commit_callbacks
):
    ingest(organization, 20)
    # Past its threshold and not fired yet: created directly, as alert_create
    # would evaluate it at once. Only an evaluation of the organization fires it.
    alert = OrganizationAlert.objects.create(
        organization=organization, threshold_type="absolute", threshold=D(10)
    )
    assert not Firing.objects.exists()
    form = {
        "organization": organization.pk,
        "user": member.user.pk,
        "role": Role.ADMIN,
        "external_id": member.external_id,
    }

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            reverse("admin:accounts_membership_change", args=[member.pk]), form
        )

    assert response.status_code == 302, response.context["adminform"].form.errors
    member.refresh_from_db()
    assert member.role == Role.ADMIN
    firing = Firing.objects.get()
    assert (firing.alert, firing.value) == (alert, D(20))
    # All admins are resolved when it fires: the new admin is told too.
    assert sorted(m.to[0] for m in mail.outbox) == sorted([owner.user.email, member.user.email])


# The organization page: alerts and limits inlined, saved through the services


def inline_forms(prefix: str, rows=(), *, initial: int = 0) -> dict[str, str]:
    """The POST data of an inline formset: `initial` existing rows first, then new ones."""
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        for key, value in row.items():
            data[f"{prefix}-{index}-{key}"] = value
    return data


def organization_form(
    organization=None,
    *,
    alerts=(),
    alerts_initial=0,
    policy=(),
    policy_initial=0,
    custom_limits=(),
    custom_limits_initial=0,
    **fields,
) -> dict[str, str]:
    data = {
        "name": "",
        "slug": "",
        "own_credit_allowance": "",
        "anchor_day": "1",
        "own_credit_price": "",
        "currency": "USD",
    }
    if organization is not None:
        data = {
            "name": organization.name,
            "slug": organization.slug,
            "own_credit_allowance": format_credits(organization.own_credit_allowance)
            if organization.own_credit_allowance is not None
            else "",
            "anchor_day": str(organization.anchor_day),
            "own_credit_price": format_credits(organization.own_credit_price)
            if organization.own_credit_price is not None
            else "",
            "currency": organization.currency,
        }
        if organization.block_when_exhausted:
            data["block_when_exhausted"] = "on"
    data |= fields
    data |= inline_forms("alerts", alerts, initial=alerts_initial)
    data |= inline_forms("user_limit_policy", policy, initial=policy_initial)
    data |= inline_forms("custom_limits", custom_limits, initial=custom_limits_initial)
    return data


def change_url(organization) -> str:
    return reverse("admin:accounts_organization_change", args=[organization.pk])


def alert_row(alert, **changes) -> dict:
    """The alerts inline's row for `alert` as it is, with `changes`."""
    return {
        "id": str(alert.pk),
        "threshold_type": alert.threshold_type,
        "threshold": format_credits(alert.threshold),
        "notify": alert.notify,
        **changes,
    }


def post_organization(client, organization, **form):
    """The organization's change page, posted with organization_form(organization, **form)."""
    return client.post(change_url(organization), organization_form(organization, **form))


def assert_saved(client, organization, inline: str, **form) -> None:
    """The change page, posted with `form`, is saved (a redirect); if not, the
    failure shows the errors of the `inline` formset.
    """
    response = post_organization(client, organization, **form)
    assert response.status_code == 302, inline_errors(response, inline)


def inline_errors(response, prefix: str) -> str:
    [inline] = [
        inline
        for inline in response.context["inline_admin_formsets"]
        if inline.formset.prefix == prefix
    ]
    return str(inline.formset.errors) + str(inline.formset.non_form_errors())


def test_the_organization_page_shows_its_alerts_and_limits(
    staff_client, organization, owner, member
):
    alert = absolute_alert(organization, 75, admins=[owner])
    limits_on(organization, 40, admins=[owner], excluded_sources=["workflow"])
    custom = custom_limit_set(organization=organization, membership=member, limit=D("12.5"))

    response = staff_client.get(change_url(organization))

    assert response.status_code == 200
    inlines = {
        inline.formset.prefix: inline.formset
        for inline in response.context["inline_admin_formsets"]
    }
    assert list(inlines) == ["alerts", "user_limit_policy", "custom_limits"]
    assert [form.instance for form in inlines["alerts"].initial_forms] == [alert]
    assert [form.instance.default_limit for form in inlines["user_limit_policy"].initial_forms] == [
        D(40)
    ]
    assert [form.instance for form in inlines["custom_limits"].initial_forms] == [custom]
    html = response.content.decode()
    assert "owner@acme.test in Acme Inc (admin)" in html  # the alert's and the policy's admin
    assert "member@acme.test in Acme Inc (member)" in html  # the custom limit's member
    # Credits as the product writes them, not with all 6 stored decimal places.
    assert 'name="user_limit_policy-0-default_limit" value="40"' in html
    assert 'name="custom_limits-0-limit" value="12.5"' in html
    assert ".000000" not in html and "12.500000" not in html
    assert "2 members, 1 admin<" in html


def test_adding_an_alert_inline_fires_at_once(staff_client, organization, owner):
    ingest(organization, 9)

    assert_saved(
        staff_client,
        organization,
        "alerts",
        alerts=[{"threshold_type": "absolute", "threshold": "8", "notify": "all_admins"}],
    )
    alert = OrganizationAlert.objects.get()
    assert Firing.objects.get(alert=alert).value == D(9)


def test_editing_an_alert_inline_re_arms_it(staff_client, organization, owner):
    alert = absolute_alert(organization, 5)
    ingest(organization, 6)
    assert Firing.objects.filter(alert=alert).count() == 1

    assert_saved(
        staff_client,
        organization,
        "alerts",
        alerts=[alert_row(alert, threshold="6", notify="specific_admins", admins=[owner.pk])],
        alerts_initial=1,
    )
    alert.refresh_from_db()
    assert (alert.threshold, alert.generation, list(alert.admins.all())) == (D(6), 2, [owner])
    assert Firing.objects.filter(alert=alert).count() == 2


def test_deleting_an_alert_inline(staff_client, organization):
    alert = absolute_alert(organization, 5)

    assert_saved(
        staff_client,
        organization,
        "alerts",
        alerts=[alert_row(alert, DELETE="on")],
        alerts_initial=1,
    )
    assert not OrganizationAlert.objects.exists()


def test_inline_alert_admins_must_be_admins_of_the_organization(
    staff_client, organization, member, outsider
):
    for wrong in (outsider, member):
        response = post_organization(
            staff_client,
            organization,
            alerts=[
                {
                    "threshold_type": "absolute",
                    "threshold": "5",
                    "notify": "specific_admins",
                    "admins": [wrong.pk],
                }
            ],
        )

        assert response.status_code == 200
        assert "is not an admin of this organization" in inline_errors(response, "alerts")
    assert not OrganizationAlert.objects.exists()


def test_at_most_25_alerts_inline(staff_client, organization):
    alerts = [absolute_alert(organization, n) for n in range(1, 25)]
    existing = [alert_row(alert) for alert in alerts]
    new = {"threshold_type": "absolute", "threshold": "99", "notify": "all_admins"}

    refused = post_organization(
        staff_client, organization, alerts=[*existing, new, new], alerts_initial=24
    )
    assert refused.status_code == 200
    assert "at most 25 alerts" in inline_errors(refused, "alerts")
    assert OrganizationAlert.objects.count() == 24

    existing[0]["DELETE"] = "on"
    assert_saved(
        staff_client, organization, "alerts", alerts=[*existing, new, new], alerts_initial=24
    )
    assert OrganizationAlert.objects.count() == 25


def test_lowering_the_default_limit_inline_marks_members_over_budget(
    staff_client, organization, owner, member
):
    policy = limits_on(organization, 100)
    spend(member, 30)
    assert over_budget(organization) == set()

    assert_saved(
        staff_client,
        organization,
        "user_limit_policy",
        policy=[
            {
                "id": str(policy.pk),
                "enabled": "on",
                "default_limit": "25",
                "admins": [owner.pk],
            }
        ],
        policy_initial=1,
    )
    policy.refresh_from_db()
    assert (policy.default_limit, list(policy.admins.all())) == (D(25), [owner])
    assert over_budget(organization) == {member.external_id}
    firing = Firing.objects.get(kind=FiringKind.USER_LIMIT)
    assert (firing.membership, firing.threshold_credits) == (member, D(25))


def test_adding_a_policy_inline(staff_client, organization, member):
    spend(member, 30)

    assert_saved(
        staff_client,
        organization,
        "user_limit_policy",
        policy=[{"enabled": "on", "default_limit": "10", "excluded_sources": ["agent_external"]}],
    )
    policy = UserLimitPolicy.objects.get(organization=organization)
    assert (policy.enabled, policy.excluded_sources) == (True, ["agent_external"])
    assert over_budget(organization) == {member.external_id}
    assert Firing.objects.filter(kind=FiringKind.USER_LIMIT, membership=member).exists()


def test_inline_policy_admins_must_be_admins_of_the_organization(
    staff_client, organization, member, outsider
):
    for wrong in (outsider, member):
        response = post_organization(
            staff_client, organization, policy=[{"enabled": "on", "admins": [wrong.pk]}]
        )

        assert response.status_code == 200
        errors = inline_errors(response, "user_limit_policy")
        assert "is not an admin of this organization" in errors
    assert not UserLimitPolicy.objects.exists()


def test_custom_limits_inline(staff_client, organization, owner, member, outsider):
    limits_on(organization, 10)
    unlimited = custom_limit_set(organization=organization, membership=owner, limit=None)
    spend(member, 30)
    spend(owner, 30)
    assert over_budget(organization) == {member.external_id}

    # A member of another organization is a form error, not a 500.
    refused = post_organization(
        staff_client,
        organization,
        custom_limits=[
            {"id": str(unlimited.pk)},
            {"membership": str(outsider.pk), "limit": "5"},
        ],
        custom_limits_initial=1,
    )
    assert refused.status_code == 200
    assert "is not a member of this organization" in inline_errors(refused, "custom_limits")

    # Raise the member's limit, put the owner under one: both re-evaluated.
    response = post_organization(
        staff_client,
        organization,
        custom_limits=[
            {"id": str(unlimited.pk), "limit": "20"},
            {"membership": str(member.pk), "limit": "500"},
        ],
        custom_limits_initial=1,
    )
    assert response.status_code == 302, inline_errors(response, "custom_limits")
    assert dict(CustomLimit.objects.values_list("membership", "limit")) == {
        owner.pk: D(20),
        member.pk: D(500),
    }
    assert over_budget(organization) == {owner.external_id}
    firing = Firing.objects.get(kind=FiringKind.USER_LIMIT, membership=owner)
    assert firing.threshold_credits == D(20)

    # Remove the member's custom limit: back under the default of 10, over budget.
    custom = CustomLimit.objects.get(membership=member)
    assert_saved(
        staff_client,
        organization,
        "custom_limits",
        custom_limits=[
            {"id": str(unlimited.pk), "limit": "20"},
            {"id": str(custom.pk), "limit": "500", "DELETE": "on"},
        ],
        custom_limits_initial=2,
    )
    assert not CustomLimit.objects.filter(membership=member).exists()
    assert over_budget(organization) == {owner.external_id, member.external_id}


def test_adding_an_organization_with_its_limits_and_alerts(staff_client, outsider):
    form = organization_form(
        name="Initech",
        slug="initech",
        own_credit_allowance="1000",
        anchor_day="15",
        alerts=[{"threshold_type": "percentage", "threshold": "80", "notify": "all_admins"}],
        policy=[{"enabled": "on", "default_limit": "50"}],
    )

    # Nobody can be an admin of an organization not created yet: a form error.
    wrong = {**form, "user_limit_policy-0-admins": [outsider.pk]}
    refused = staff_client.post(reverse("admin:accounts_organization_add"), wrong)
    assert refused.status_code == 200
    assert "is not an admin" in inline_errors(refused, "user_limit_policy")
    assert not Organization.objects.filter(slug="initech").exists()

    response = staff_client.post(reverse("admin:accounts_organization_add"), form)

    assert response.status_code == 302, response.context["adminform"].form.errors
    organization = Organization.objects.get(slug="initech")
    assert organization.anchor_day == 15
    assert UserLimitPolicy.objects.get(organization=organization).default_limit == D(50)
    assert OrganizationAlert.objects.get(organization=organization).threshold == D(80)


def test_organization_page_queries_do_not_grow_with_alerts_and_limits(
    staff_client, organization, owner, django_assert_max_num_queries
):
    second_admin = AdminMembershipFactory(organization=organization)
    limits_on(organization, 5, admins=[owner, second_admin])

    def add(alerts: int, custom_limits: int) -> None:
        for _ in range(alerts):
            absolute_alert(
                organization, 1000 + OrganizationAlert.objects.count(), admins=[owner, second_admin]
            )
        for membership in MembershipFactory.create_batch(custom_limits, organization=organization):
            custom_limit_set(organization=organization, membership=membership, limit=D(7))

    add(alerts=1, custom_limits=1)
    with django_assert_max_num_queries(25) as few:
        assert staff_client.get(change_url(organization)).status_code == 200

    add(alerts=24, custom_limits=CUSTOM_LIMITS_INLINE_MAX + 20)
    with django_assert_max_num_queries(25) as many:
        response = staff_client.get(change_url(organization))

    assert len(many) == len(few)
    inlines = {
        inline.formset.prefix: inline.formset
        for inline in response.context["inline_admin_formsets"]
    }
    assert len(inlines["alerts"].initial_forms) == 25
    assert len(inlines["custom_limits"].initial_forms) == CUSTOM_LIMITS_INLINE_MAX
    html = response.content.decode()
    assert f"Custom limits: {CUSTOM_LIMITS_INLINE_MAX + 21} (the first" in html


# The organization list: usage this period


def test_usage_this_period_follows_each_organizations_anchor_day(staff_client):
    early = OrganizationFactory(slug="early", anchor_day=1, credit_allowance=D(120))
    late = OrganizationFactory(slug="late", anchor_day=15)
    changelist = reverse("admin:accounts_organization_changelist")

    with time_machine.travel(datetime(2026, 3, 10, 12, tzinfo=UTC), tick=False):
        usage_ingest(
            organization=early,
            events=[
                UsageInput("feb", D(7), timestamp=datetime(2026, 2, 20, tzinfo=UTC)),
                UsageInput("mar", D(30), timestamp=datetime(2026, 3, 2, tzinfo=UTC)),
            ],
        )
        usage_ingest(
            organization=late,
            events=[
                UsageInput("feb-10", D(5), timestamp=datetime(2026, 2, 10, tzinfo=UTC)),
                UsageInput("feb-20", D(11), timestamp=datetime(2026, 2, 20, tzinfo=UTC)),
                UsageInput("mar", D("2.5"), timestamp=datetime(2026, 3, 5, tzinfo=UTC)),
            ],
        )
        # early: March 1 to April 1; late: February 15 to March 15.
        response = staff_client.get(changelist, {"o": "-4"})
        page = staff_client.get(change_url(late)).content.decode()

    rows = [(o.slug, o.usage_this_period) for o in response.context["cl"].result_list]
    assert rows == [("early", D(30)), ("late", D("13.5"))]  # sorted by usage, highest first
    html = response.content.decode()
    assert "30 (25%)" in html
    assert "13.5" in html
    assert "2026-02-15 to 2026-03-15 (UTC)" in page

    with time_machine.travel(datetime(2026, 3, 20, tzinfo=UTC), tick=False):
        later = staff_client.get(changelist)
    rows = {o.slug: o.usage_this_period for o in later.context["cl"].result_list}
    assert rows == {"early": D(30), "late": D(0)}  # late's new period started on March 15


def test_the_organization_list_costs_the_same_for_2_or_50(
    staff_client, django_assert_max_num_queries
):
    expected: dict[str, D] = {}

    def create(count: int) -> None:
        for _ in range(count):
            index = len(expected)
            organization = OrganizationFactory(anchor_day=1 + index % 28)
            ingest(organization, index + 1)
            expected[organization.slug] = D(index + 1)

    changelist = reverse("admin:accounts_organization_changelist")
    create(2)
    with django_assert_max_num_queries(9) as few:  # 9: the plan filter lists the plans
        assert staff_client.get(changelist).status_code == 200

    create(48)
    with django_assert_max_num_queries(9) as many:
        response = staff_client.get(changelist)

    assert len(many) == len(few)
    assert {o.slug: o.usage_this_period for o in response.context["cl"].result_list} == expected


def test_organization_search_and_filters(staff_client, organization, other_organization):
    Organization.objects.filter(pk=other_organization.pk).update(own_credit_allowance=D(10))
    changelist = reverse("admin:accounts_organization_changelist")

    def slugs(**params) -> list[str]:
        response = staff_client.get(changelist, params)
        assert response.status_code == 200
        return [o.slug for o in response.context["cl"].result_list]

    assert slugs(q="glob") == ["globex"]
    assert slugs(allowance="set") == ["globex"]
    assert slugs(allowance="none") == ["acme"]
    ingest(organization, 5)
    assert slugs(o="4") == ["globex", "acme"]  # by usage this period
    assert slugs(o="-4") == ["acme", "globex"]


# Members: thousands of them


def test_membership_list_and_search_cost_the_same_for_2_or_60(
    staff_client, organization, django_assert_max_num_queries
):
    changelist = reverse("admin:accounts_membership_changelist")
    MembershipFactory.create_batch(2, organization=organization)
    with django_assert_max_num_queries(10) as few:
        staff_client.get(changelist)

    MembershipFactory.create_batch(58, organization=organization)
    with django_assert_max_num_queries(10) as many:
        response = staff_client.get(changelist, {"organization__id__exact": organization.pk})

    assert len(many) == len(few)
    assert response.context["cl"].result_count == 60


def test_admin_pickers_search_admins_only(staff_client, organization, owner, member):
    MembershipFactory.create_batch(30, organization=organization)
    autocomplete = reverse("admin:autocomplete")

    def found(model: str, field: str) -> list[str]:
        response = staff_client.get(
            autocomplete,
            {
                "app_label": "alerts" if model == "organizationalert" else "billing",
                "model_name": model,
                "field_name": field,
                "term": "acme",
            },
        )
        assert response.status_code == 200
        return [result["text"] for result in response.json()["results"]]

    assert found("organizationalert", "admins") == ["owner@acme.test in Acme Inc (admin)"]
    assert found("userlimitpolicy", "admins") == ["owner@acme.test in Acme Inc (admin)"]
    assert len(found("customlimit", "membership")) == 20  # a page of members


def test_member_picker_queries_do_not_grow(
    staff_client, organization, owner, django_assert_max_num_queries
):
    params = {
        "app_label": "billing",
        "model_name": "customlimit",
        "field_name": "membership",
        "term": "",
    }
    with django_assert_max_num_queries(8) as few:
        staff_client.get(reverse("admin:autocomplete"), params)
    MembershipFactory.create_batch(40, organization=organization)
    with django_assert_max_num_queries(8) as many:
        staff_client.get(reverse("admin:autocomplete"), params)
    assert len(many) == len(few)


def test_the_organization_page_links_to_its_records(
    staff_client, organization, owner, member, outsider
):
    for org, membership in ((organization, member), (outsider.organization, outsider)):
        absolute_alert(org, 1)
        custom_limit_set(organization=org, membership=membership, limit=D(5))
        spend(membership, 2)
        api_key_create(organization=org)
        webhook_endpoint_create(
            organization=org, url="https://hooks.example.com/", events=["alert.triggered"]
        )
        credit_grant_create(organization=org, grant=GrantInput(kind="promotional", credits=D(5)))
    page = staff_client.get(change_url(organization)).content.decode()
    links = re.findall(r'href="(/admin/[a-z]+/[a-z]+/(?:add/)?\?organization[_a-z]*=\d+)"', page)

    assert len(links) == 10
    for link in links:
        response = staff_client.get(link.replace("&amp;", "&"))
        assert response.status_code == 200, link
        if "/add/" in link:
            assert response.context["adminform"].form.initial["organization"] == str(
                organization.pk
            )
        else:
            rows = response.context["cl"].result_list
            assert rows and {row.organization_id for row in rows} == {organization.pk}, link


def test_deleting_an_organization_without_usage(staff_client, organization, owner, member):
    absolute_alert(organization, 5)
    limits_on(organization, 5)
    custom_limit_set(organization=organization, membership=member, limit=D(9))
    delete = reverse("admin:accounts_organization_delete", args=[organization.pk])

    response = staff_client.post(delete, {"post": "yes"})

    assert response.status_code == 302
    assert not Organization.objects.filter(pk=organization.pk).exists()
    assert not CustomLimit.objects.exists()


def test_an_organization_with_usage_keeps_its_ledger(staff_client, organization, member):
    spend(member, 2)
    delete = reverse("admin:accounts_organization_delete", args=[organization.pk])

    confirm = staff_client.get(delete)
    assert confirm.context["perms_lacking"] == {"usage event"}  # not its totals

    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    assert Organization.objects.filter(pk=organization.pk).exists()
