"""The migrations describe the models: a model changed without its migration
fails here, not on a deploy (the part-one schema was squashed into one
migration per app, generated from the models and checked against them).
"""

from __future__ import annotations

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_model_change_is_missing_a_migration():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
