"""Threshold invoicing over the API (SPEC §11): the billing threshold and the
invoices. Shapes only: the rules are alerts/services/invoicing.py's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Query, Router, Schema
from pydantic import Field, StrictBool, field_validator

from accounts.apiauth import request_organization
from alerts.services import invoicing
from billing.invoices import invoice_get, invoices_of
from billing.models import Invoice
from config.apikit import Page, StrictSchema, not_null, paginate, round_trip_put
from config.credits import Credits, CreditsOut
from config.errors import NotFound
from config.money import AmountOut

router = Router()
TAGS = ["invoices"]

InvoiceReasonName = Literal["threshold", "period_end"]


class BillingThresholdOut(Schema):
    enabled: bool
    amount: CreditsOut | None = Field(
        description="Invoice when the period's uninvoiced invoice total reaches this amount, "
        "in the organization's currency."
    )


class BillingThresholdIn(StrictSchema):
    enabled: StrictBool | None = None
    amount: Credits | None = Field(
        default=None,
        description="An amount of money > 0 with at most 6 fractional digits; null: none.",
    )

    _no_nulls = field_validator("enabled", mode="before")(not_null)


class InvoiceOut(Schema):
    id: int
    reason: InvoiceReasonName
    period_start: datetime
    covered_from: datetime = Field(description="Usage recorded from here…")
    covered_through: datetime = Field(description="…to here is in this invoice.")
    credits: CreditsOut = Field(description="Credits of the period's overage invoiced.")
    amount: AmountOut = Field(description="credits x the credit price, exact.")
    currency: str
    created_at: datetime


class InvoiceList(Schema):
    data: list[InvoiceOut]
    next_cursor: str | None


@router.get("/billing-threshold", response=BillingThresholdOut, tags=TAGS)
def billing_threshold_detail(request: HttpRequest) -> dict[str, Any]:
    threshold = invoicing.billing_threshold_get(organization=request_organization(request))
    return invoicing.billing_threshold_settings(threshold)


@round_trip_put(router, "/billing-threshold", response=BillingThresholdOut, tags=TAGS)
def billing_threshold_put(request: HttpRequest, payload: BillingThresholdIn) -> dict[str, Any]:
    organization = request_organization(request)
    current = invoicing.billing_threshold_settings(
        invoicing.billing_threshold_get(organization=organization)
    )
    settings = {**current, **{name: getattr(payload, name) for name in payload.model_fields_set}}
    threshold = invoicing.billing_threshold_set(
        organization=organization, settings=invoicing.BillingThresholdInput(**settings)
    )
    return invoicing.billing_threshold_settings(threshold)


def _invoice_out(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.pk,
        "reason": invoice.reason,
        "period_start": invoice.period_start,
        "covered_from": invoice.covered_from,
        "covered_through": invoice.covered_through,
        "credits": invoice.credits,
        "amount": invoice.amount,
        "currency": invoice.currency,
        "created_at": invoice.created_at,
    }


@router.get("/invoices", response=InvoiceList, tags=TAGS)
def invoice_list(request: HttpRequest, page: Query[Page]) -> dict[str, Any]:
    invoices = invoices_of(organization=request_organization(request))
    return paginate(
        invoices, page, lambda rows: [_invoice_out(row) for row in rows], newest_first=True
    )


@router.get("/invoices/{id}", response=InvoiceOut, tags=TAGS)
def invoice_detail(request: HttpRequest, id: int) -> dict[str, Any]:
    invoice = invoice_get(organization=request_organization(request), invoice_id=id)
    if invoice is None:
        raise NotFound(f"No invoice {id} in this organization.", code="invoice_not_found")
    return _invoice_out(invoice)
