from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from config.credits import CREDIT_QUANTUM, credits_field
from config.money import currency_error

ANCHOR_DAY_MIN = 1
ANCHOR_DAY_MAX = 28


def normalize_email(email: str) -> str:
    """Emails are compared case-insensitively; we store them lower-cased."""
    return email.strip().lower()


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        if not email:
            raise ValueError("A user needs an email address.")
        user = self.model(email=normalize_email(email), **extra)
        user.set_password(password)  # None gives an unusable password
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_staff = models.BooleanField(
        default=False, help_text="Platform staff: may use the Django admin."
    )
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(email=Lower("email")), name="user_email_lowercase"
            )
        ]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = normalize_email(self.email)

    @property
    def display_name(self) -> str:
        return self.name or self.email


def validate_currency(code: str) -> None:
    error = currency_error(code)
    if error:
        raise ValidationError(f"The currency {error}.", code="invalid")


class Plan(models.Model):
    """What organizations on it use where they set none of their own (SPEC §12):
    an allowance, a default per-user limit, a price; and the alerts each of
    them inherits (alerts.PlanAlert). Defined by the platform's staff.
    """

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    credit_allowance = credits_field(
        null=True,
        blank=True,
        validators=[MinValueValidator(CREDIT_QUANTUM)],
        help_text="Credits per billing period. Empty: none.",
    )
    default_limit = credits_field(
        null=True,
        blank=True,
        validators=[MinValueValidator(CREDIT_QUANTUM)],
        help_text="Credits per member per billing period. Empty: none.",
    )
    credit_price = credits_field(
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Price of one credit, in each organization's currency. Empty: none.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(credit_allowance__isnull=True)
                | models.Q(credit_allowance__gt=0),
                name="plan_allowance_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(default_limit__isnull=True) | models.Q(default_limit__gt=0),
                name="plan_default_limit_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(credit_price__isnull=True) | models.Q(credit_price__gte=0),
                name="plan_price_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ValueSource(models.TextChoices):
    """Where a value in force comes from (SPEC §12's `*_source`)."""

    ORGANIZATION = "organization", "Organization"
    PLAN = "plan", "Plan"


class Organization(models.Model):
    """An organization. Its allowance and price are its own (`own_*`) or, where
    it sets none, its plan's: `credit_allowance` and `credit_price` are the
    values in force, and setting them sets the organization's own.
    """

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    anchor_day = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(ANCHOR_DAY_MIN), MaxValueValidator(ANCHOR_DAY_MAX)],
        help_text="Day of the month (1-28) on which each billing period starts, 00:00 UTC.",
    )
    plan = models.ForeignKey(
        Plan,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="organizations",
        help_text="Its allowance, default per-user limit and price apply where the "
        "organization sets none.",
    )
    own_credit_allowance = credits_field(
        db_column="credit_allowance",
        null=True,
        blank=True,
        validators=[MinValueValidator(CREDIT_QUANTUM)],
        verbose_name="credit allowance",
        help_text="Credits per billing period. Empty: the plan's, or no allowance.",
    )
    block_when_exhausted = models.BooleanField(
        default=True,
        help_text="Block credit-consuming actions once the whole allowance is used.",
    )
    own_credit_price = credits_field(
        db_column="credit_price",
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        verbose_name="credit price",
        help_text="Price of one credit, in the currency (SPEC §11). Empty: the plan's, or none.",
    )
    currency = models.CharField(
        max_length=3,
        default="USD",
        validators=[validate_currency],
        help_text="ISO 4217 code of the credit price's currency.",
    )
    # Anchor days of the past (billing.periods): periods ending at or before
    # each `until` followed its `anchor_day`. Written by organization_update.
    anchor_history = models.JSONField(default=list, blank=True, editable=False)
    # Periods follow `anchor_day` month by month from here on (null: always).
    regular_periods_from = models.DateTimeField(null=True, blank=True, editable=False)
    # Set when the organization first gets a credit grant, a balance alert or
    # an auto top-up (billing.services.grants): from then on every write
    # computes its credit balance (SPEC §9); before, writes pay nothing for it.
    credit_balance_kept_since = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(anchor_day__gte=ANCHOR_DAY_MIN, anchor_day__lte=ANCHOR_DAY_MAX),
                name="organization_anchor_day_1_to_28",
            ),
            models.CheckConstraint(
                condition=models.Q(own_credit_allowance__isnull=True)
                | models.Q(own_credit_allowance__gt=0),
                name="organization_allowance_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(own_credit_price__isnull=True)
                | models.Q(own_credit_price__gte=0),
                name="organization_price_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(currency__regex=r"^[A-Z]{3}$"),
                name="organization_currency_three_capitals",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def credit_allowance(self) -> Decimal | None:
        """The allowance in force: the organization's own, else its plan's."""
        return self._in_force("credit_allowance")

    @credit_allowance.setter
    def credit_allowance(self, value: Decimal | None) -> None:
        self.own_credit_allowance = value

    @property
    def credit_price(self) -> Decimal | None:
        """The price in force: the organization's own, else its plan's."""
        return self._in_force("credit_price")

    @credit_price.setter
    def credit_price(self, value: Decimal | None) -> None:
        self.own_credit_price = value

    def source_of(self, name: str) -> str | None:
        """Where the value in force of `credit_allowance` or `credit_price`
        comes from; None: nowhere (the default limit's: billing.selectors.
        limit_default_in_force).
        """
        if getattr(self, f"own_{name}") is not None:
            return ValueSource.ORGANIZATION
        if self.plan_id is not None and getattr(self.plan, name) is not None:
            return ValueSource.PLAN
        return None

    def _in_force(self, name: str) -> Decimal | None:
        own: Decimal | None = getattr(self, f"own_{name}")
        if own is not None or self.plan_id is None:
            return own
        return getattr(self.plan, name)


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


class Membership(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    external_id = models.CharField(
        max_length=255,
        help_text="How the host application names this user over the API. Defaults to the email.",
    )
    # A user may belong to several organizations: the name one of them gives
    # a member is kept here, so that it never shows in another (SPEC §16).
    name = models.CharField(
        max_length=150,
        blank=True,
        help_text="The member's name in this organization. Empty: the user's own name.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "user"], name="membership_one_per_user_and_organization"
            ),
            models.UniqueConstraint(
                fields=["organization", "external_id"],
                name="membership_external_id_unique_in_organization",
            ),
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def member_name(self) -> str:
        """The name this organization knows the member by; '' if none."""
        return self.name or self.user.name

    @property
    def display_name(self) -> str:
        """The member's name in this organization, or their email."""
        return self.member_name or self.user.email


class ApiKey(models.Model):
    """A server-to-server credential of the host application for one organization.

    Only a SHA-256 digest of the key is stored: keys are 256-bit random tokens,
    so a fast hash is as safe as a slow one and keeps authentication cheap.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(
        max_length=16, help_text="The key's first characters, to recognise it."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.organization})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditEvent(models.Model):
    """Who changed an alert, a limits policy or a custom limit, when, and from
    what to what. Written in the transaction of the change; never edited.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="audit_events"
    )
    actor_user = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor = models.CharField(
        max_length=320, help_text="Who, as it read then: an email, an API key or 'system'."
    )
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="audit_event_org_newest")
        ]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor}"
