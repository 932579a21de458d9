from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import factory

from accounts.models import Membership, Organization, Role, User
from billing.models import Aggregation, Meter, MeterDailyUsage, MeterUsage

DEFAULT_PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Sequence(lambda n: f"User {n}")
    password = factory.PostGenerationMethodCall("set_password", DEFAULT_PASSWORD)

    @factory.post_generation
    def _save(self, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            self.save()


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    slug = factory.Sequence(lambda n: f"org-{n}")
    name = factory.Sequence(lambda n: f"Organization {n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER
    external_id = factory.LazyAttribute(lambda m: m.user.email)


class AdminMembershipFactory(MembershipFactory):
    role = Role.ADMIN


class MeterFactory(factory.django.DjangoModelFactory):
    """A meter row (SPEC §10). Its totals: `meter_usage_row` and `meter_daily_row`."""

    class Meta:
        model = Meter

    key = factory.Sequence(lambda n: f"meter_{n}")
    name = factory.Sequence(lambda n: f"Meter {n}")
    unit = "units"
    aggregation = Aggregation.SUM


def meter_usage_row(
    meter: Meter,
    organization: Organization,
    value: Decimal | int | str,
    *,
    period_start: datetime,
    membership: Membership | None = None,
) -> MeterUsage:
    """A meter's total in a period, for the organization or one member, as
    the write path keeps it (for tests of what reads the totals).
    """
    return MeterUsage.objects.create(
        organization=organization,
        meter=meter,
        membership=membership,
        member_key=0 if membership is None else membership.pk,
        period_start=period_start,
        aggregation=meter.aggregation,
        value=Decimal(value),
    )


def meter_daily_row(
    meter: Meter, organization: Organization, day: date, value: Decimal | int | str
) -> MeterDailyUsage:
    return MeterDailyUsage.objects.create(
        organization=organization,
        meter=meter,
        day=day,
        aggregation=meter.aggregation,
        value=Decimal(value),
    )
