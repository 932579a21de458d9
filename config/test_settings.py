"""Settings for the test suite: the production settings, read from an
environment whose defaults point at the local PostgreSQL and Redis.
`make test` and CI may override any of them.
"""

from __future__ import annotations

import os

# A developer's .env (written by `make run`) is not read: the tests run on
# these defaults and what the environment sets, nothing else.
os.environ.setdefault("ENV_FILE", "")
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/headroom")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("EMAIL_BACKEND", "anymail.backends.test.EmailBackend")
os.environ.setdefault("SITE_URL", "http://testserver")
os.environ.setdefault("WEBHOOKS_ALLOW_PRIVATE_URLS", "true")

from config.settings import *  # noqa: F403
from config.settings import DATABASES, STORAGES

if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise RuntimeError("Tests run on PostgreSQL: set DATABASE_URL to a postgres:// URL.")

# The manifest storage of production needs collectstatic; tests serve from the finders.
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STATIC_ROOT = None  # type: ignore[assignment]  # served from the finders; nothing is collected in tests
# Rate-limit counters per test: tests/fixtures.py clears this cache around each
# test (Redis db 15 is also the test worker's broker, so it is never flushed).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
