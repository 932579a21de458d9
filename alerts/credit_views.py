"""The Manage credits page (SPEC §9), for admins: the credit balance, the
grants and their ledger (read only: grants come from the host's billing
system or from staff), the balance alerts and the auto top-up.

Built like the Limits & Alerts page (docs/pages.md): one URL serves the page
and its sections; a form with errors comes back as itself with 422; a good
change answers with the sections it moved, out of band, a message and
`closeDialog`. Without JavaScript the same URLs work as plain pages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from accounts.models import Membership, Organization
from accounts.web import OrganizationHttpRequest, admin_required, change_done
from alerts.credit_forms import AutoTopUpForm, BalanceAlertForm
from alerts.models import MAX_BALANCE_ALERTS, BalanceAlert, BalanceAlertType
from alerts.services import credit_settings
from billing.balance import credit_balance_get
from billing.models import CreditGrant, CreditLedgerEntry
from billing.periods import organization_period
from config.credits import format_credits
from config.errors import NotFound
from config.forms import form_saved

GRANTS_PAGE_SIZE = 25
RECENT_LEDGER_ENTRIES = 20

# Section id -> its template. Each template's root element carries the id.
BALANCE = "credit-balance"
GRANTS = "credit-grants"
LEDGER = "credit-ledger"
ALERTS = "balance-alerts"
TOP_UP = "auto-top-up"
SECTION_TEMPLATES = {
    BALANCE: "alerts/_credits_balance.html",
    GRANTS: "alerts/_credits_grants.html",
    LEDGER: "alerts/_credits_ledger.html",
    ALERTS: "alerts/_credits_alerts.html",
    TOP_UP: "alerts/_credits_top_up.html",
}


# Reads


def _grants_context(organization: Organization, now: datetime, page: str | None) -> dict[str, Any]:
    grants = Paginator(
        CreditGrant.objects.filter(organization=organization).order_by("-created_at", "-id"),
        GRANTS_PAGE_SIZE,
    ).get_page(page)
    return {
        "grants": grants,
        "grant_rows": [{"grant": grant, "status": grant.status_at(now)} for grant in grants],
    }


def _alerts_context(organization: Organization) -> dict[str, Any]:
    alerts = list(
        BalanceAlert.objects.filter(organization=organization).prefetch_related(
            Prefetch("admins", queryset=Membership.objects.select_related("user"))
        )
    )
    return {
        "balance_alerts": alerts,
        "max_alerts": MAX_BALANCE_ALERTS,
        "can_add_alert": len(alerts) < MAX_BALANCE_ALERTS,
    }


def _top_up_context(
    organization: Organization, now: datetime, form: AutoTopUpForm | None
) -> dict[str, Any]:
    top_up = credit_settings.auto_top_up_get(organization=organization)
    if form is None:
        form = AutoTopUpForm(prefix="top_up", initial=top_up.settings())
    period = organization_period(organization, now)
    made = top_up.top_ups if top_up.period_start == period.start else 0
    return {"top_up": top_up, "top_up_form": form, "top_ups_made": made, "period": period}


def section_context(
    request: OrganizationHttpRequest, section: str, now: datetime, **forms: Any
) -> dict[str, Any]:
    organization = request.membership.organization
    base: dict[str, Any] = {"organization": organization}
    if section == BALANCE:
        return base | {"credit": credit_balance_get(organization=organization, now=now)}
    if section == GRANTS:
        return base | _grants_context(organization, now, request.GET.get("grants_page"))
    if section == LEDGER:
        entries = CreditLedgerEntry.objects.filter(organization=organization).select_related(
            "grant"
        )
        return base | {
            "entries": list(entries.order_by("-at", "-id")[:RECENT_LEDGER_ENTRIES]),
            "recent_entries": RECENT_LEDGER_ENTRIES,
        }
    if section == ALERTS:
        return base | _alerts_context(organization)
    if section == TOP_UP:
        return base | _top_up_context(organization, now, forms.get("top_up_form"))
    raise ValueError(f"unknown section {section!r}")


def _page(request: OrganizationHttpRequest, *, status: int = 200, **forms: Any) -> HttpResponse:
    """The whole page; a bound form given in `forms` shows in place of a fresh one."""
    now = timezone.now()
    context: dict[str, Any] = {"organization": request.membership.organization}
    for section in SECTION_TEMPLATES:
        context |= section_context(request, section, now, **forms)
    return render(request, "alerts/credits.html", context, status=status)


@require_http_methods(["GET"])
@admin_required
def credits_settings(request: OrganizationHttpRequest) -> HttpResponse:
    # The grants' pagination links ask for just that list (htmx names it as the target).
    if request.htmx and request.htmx.target == GRANTS:
        context = section_context(request, GRANTS, timezone.now())
        return render(request, SECTION_TEMPLATES[GRANTS], context)
    return _page(request)


# Writes


def _done(request: OrganizationHttpRequest, message: str, *sections: str) -> HttpResponse:
    """A change was made: the sections it moved, out of band, and a message."""
    now = timezone.now()
    return change_done(
        request,
        message,
        page="credits_settings",
        sections=lambda: "".join(
            render_to_string(
                SECTION_TEMPLATES[section],
                section_context(request, section, now) | {"oob": True},
                request=request,
            )
            for section in sections
        ),
    )


def _dialog(
    request: OrganizationHttpRequest, template: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    """A form shown in the page's dialog; without htmx, on a page of its own."""
    context = {
        "organization": request.membership.organization,
        "cancel_url": reverse("credits_settings"),
    } | context
    if request.htmx:
        return render(request, template, context, status=status)
    return render(
        request,
        "alerts/credits_dialog_page.html",
        context | {"dialog_template": template},
        status=status,
    )


def _balance_alert_for(request: OrganizationHttpRequest, alert_id: int) -> BalanceAlert:
    """A balance alert of the request's organization, or 404: tenancy in one place."""
    try:
        return credit_settings.balance_alert_get(
            organization=request.membership.organization, alert_id=alert_id
        )
    except NotFound:
        raise Http404("No such balance alert in this organization.") from None


@require_http_methods(["GET", "POST"])
@admin_required
def balance_alert_add(request: OrganizationHttpRequest) -> HttpResponse:
    return _balance_alert_form(request, alert=None)


@require_http_methods(["GET", "POST"])
@admin_required
def balance_alert_edit(request: OrganizationHttpRequest, alert_id: int) -> HttpResponse:
    return _balance_alert_form(request, alert=_balance_alert_for(request, alert_id))


def _balance_alert_form(
    request: OrganizationHttpRequest, *, alert: BalanceAlert | None
) -> HttpResponse:
    """The form that adds a balance alert (`alert` None) or edits one."""
    organization = request.membership.organization
    initial: dict[str, Any] = {}
    if alert is not None:
        initial = {
            "type": alert.type,
            "threshold": alert.threshold,
            "notify": alert.notify,
            "admins": list(alert.admins.select_related("user")),
        }
    form = BalanceAlertForm(
        request.POST or None, organization=organization, prefix="balance_alert", initial=initial
    )

    def save(_: dict[str, Any]) -> None:
        if alert is None:
            credit_settings.balance_alert_create(organization=organization, **form.chosen)
        else:
            credit_settings.balance_alert_update(alert=alert, **form.chosen)

    if form_saved(form, save):
        done = "Balance alert added." if alert is None else "Balance alert saved."
        return _done(request, done, ALERTS)
    status = 422 if form.is_bound else 200
    return _dialog(
        request, "alerts/_credits_alert_form.html", {"form": form, "alert": alert}, status=status
    )


def alert_label(alert: BalanceAlert) -> str:
    """The alert in words: "the balance dropped below 500 credits"."""
    if alert.type == BalanceAlertType.DROPPED and alert.threshold is not None:
        return f"the balance dropped below {format_credits(alert.threshold)} credits"
    if alert.type == BalanceAlertType.DEPLETED:
        return "the balance depleted"
    return "the balance recovered"


@require_http_methods(["GET", "POST"])
@admin_required
def balance_alert_delete(request: OrganizationHttpRequest, alert_id: int) -> HttpResponse:
    alert = _balance_alert_for(request, alert_id)
    if request.method == "POST":
        credit_settings.balance_alert_delete(alert=alert)
        return _done(request, "Balance alert deleted.", ALERTS)
    return _dialog(
        request,
        "alerts/_confirm_delete.html",
        {
            "title": "Delete balance alert",
            "question": f"Delete the alert on {alert_label(alert)}? "
            "Its past firings stay in the alert history.",
            "action": request.path,
        },
    )


@require_http_methods(["POST"])
@admin_required
def auto_top_up_save(request: OrganizationHttpRequest) -> HttpResponse:
    organization = request.membership.organization
    form = AutoTopUpForm(request.POST, prefix="top_up")
    if form_saved(
        form,
        lambda _: credit_settings.auto_top_up_set(
            organization=organization, settings=form.settings
        ),
    ):
        return _done(request, "Auto Top-Up saved.", TOP_UP)
    if request.htmx:
        context = section_context(request, TOP_UP, timezone.now(), top_up_form=form)
        return render(request, SECTION_TEMPLATES[TOP_UP], context, status=422)
    return _page(request, status=422, top_up_form=form)
