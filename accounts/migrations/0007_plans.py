# The organization's allowance and price become its own (`own_*`, same
# columns): the values in force may come from its plan (SPEC §12).

import django.core.validators
import django.db.models.deletion
import django.utils.timezone
from decimal import Decimal
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0006_organization_credit_price"),
    ]

    operations = [
        migrations.CreateModel(
            name="Plan",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.SlugField(max_length=64, unique=True)),
                ("name", models.CharField(max_length=200)),
                ("credit_allowance", models.DecimalField(blank=True, decimal_places=6, help_text="Credits per billing period. Empty: none.", max_digits=20, null=True, validators=[django.core.validators.MinValueValidator(Decimal("0.000001"))])),
                ("default_limit", models.DecimalField(blank=True, decimal_places=6, help_text="Credits per member per billing period. Empty: none.", max_digits=20, null=True, validators=[django.core.validators.MinValueValidator(Decimal("0.000001"))])),
                ("credit_price", models.DecimalField(blank=True, decimal_places=6, help_text="Price of one credit, in each organization's currency. Empty: none.", max_digits=20, null=True, validators=[django.core.validators.MinValueValidator(0)])),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "ordering": ["name"],
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("credit_allowance__isnull", True), ("credit_allowance__gt", 0), _connector="OR"), name="plan_allowance_positive"),
                    models.CheckConstraint(condition=models.Q(("default_limit__isnull", True), ("default_limit__gt", 0), _connector="OR"), name="plan_default_limit_positive"),
                    models.CheckConstraint(condition=models.Q(("credit_price__isnull", True), ("credit_price__gte", 0), _connector="OR"), name="plan_price_not_negative"),
                ],
            },
        ),
        migrations.AddField(
            model_name="organization",
            name="plan",
            field=models.ForeignKey(blank=True, help_text="Its allowance, default per-user limit and price apply where the organization sets none.", null=True, on_delete=django.db.models.deletion.PROTECT, related_name="organizations", to="accounts.plan"),
        ),
        # The columns keep their names: only the model's field names change.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="organization", name="organization_allowance_positive"),
                migrations.RemoveConstraint(model_name="organization", name="organization_price_not_negative"),
                migrations.RenameField(model_name="organization", old_name="credit_allowance", new_name="own_credit_allowance"),
                migrations.RenameField(model_name="organization", old_name="credit_price", new_name="own_credit_price"),
                migrations.AlterField(
                    model_name="organization",
                    name="own_credit_allowance",
                    field=models.DecimalField(blank=True, db_column="credit_allowance", decimal_places=6, help_text="Credits per billing period. Empty: the plan's, or no allowance.", max_digits=20, null=True, validators=[django.core.validators.MinValueValidator(Decimal("0.000001"))], verbose_name="credit allowance"),
                ),
                migrations.AlterField(
                    model_name="organization",
                    name="own_credit_price",
                    field=models.DecimalField(blank=True, db_column="credit_price", decimal_places=6, help_text="Price of one credit, in the currency (SPEC §11). Empty: the plan's, or none.", max_digits=20, null=True, validators=[django.core.validators.MinValueValidator(0)], verbose_name="credit price"),
                ),
                migrations.AddConstraint(
                    model_name="organization",
                    constraint=models.CheckConstraint(condition=models.Q(("own_credit_allowance__isnull", True), ("own_credit_allowance__gt", 0), _connector="OR"), name="organization_allowance_positive"),
                ),
                migrations.AddConstraint(
                    model_name="organization",
                    constraint=models.CheckConstraint(condition=models.Q(("own_credit_price__isnull", True), ("own_credit_price__gte", 0), _connector="OR"), name="organization_price_not_negative"),
                ),
            ],
        ),
    ]
