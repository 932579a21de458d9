"""Headroom settings, read from the environment (see README, "Configuration")."""

from __future__ import annotations

import os
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    anymail_settings,
    database_config,
    env_bool,
    env_int,
    env_list,
    redis_cache_config,
    redis_url,
    webhook_secret,
)
from config.ratelimit import validate_rate

BASE_DIR = Path(__file__).resolve().parent.parent
ENV = os.environ

# A local `.env` (`make run` writes one when there is none), so that
# `manage.py` in a shell uses the settings and database `make run` used.
# Variables set in the environment win over the file. ENV_FILE names another
# file; empty, none is read (the test settings).
ENV_FILE = ENV.get("ENV_FILE", str(BASE_DIR / ".env"))
if ENV_FILE and Path(ENV_FILE).is_file():
    environ.Env.read_env(ENV_FILE)

DEBUG = env_bool(ENV, "DEBUG", default=False)

SECRET_KEY = ENV.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list(ENV, "ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
SITE_URL = ENV.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
if not SITE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"SITE_URL={SITE_URL!r} must start with http:// or https://.")
CSRF_TRUSTED_ORIGINS = [SITE_URL]

INSTALLED_APPS = [
    "config.apps.HeadroomAdminConfig",  # Django's admin on Headroom's site (config/admin_site.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.forms",
    "django_htmx",
    "template_partials",
    "ninja",  # serves the API docs' Swagger UI from static files, not a CDN
    "csp",
    "anymail",
    "accounts",
    "billing",
    "alerts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.middleware.ApiErrorShapeMiddleware",
    "config.middleware.ApiRateLimitMiddleware",
    "django.middleware.common.CommonMiddleware",
    "accounts.audit.AuditActorMiddleware",
    "config.middleware.PageMiddleware",  # runs PAGE_MIDDLEWARE, for pages only
]
# What only pages need (a JSON API request, authenticated by its key, skips
# it all: config.middleware.PageMiddleware), in the order it runs.
PAGE_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]
# The admin's and the deploy checks look for sessions, the user, messages,
# CSRF and X-Frame-Options in MIDDLEWARE; they are in PAGE_MIDDLEWARE, which
# every page (the admin's too) runs (tests/config/test_middleware.py).
SILENCED_SYSTEM_CHECKS = [
    "admin.E408",
    "admin.E409",
    "admin.E410",
    "security.W002",
    "security.W003",
]

# Security headers. Served over HTTPS (SITE_URL https://...), cookies are secure,
# plain HTTP is redirected and HSTS is sent; `check --deploy` is clean then.
HTTPS = SITE_URL.startswith("https://")
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = env_bool(ENV, "SECURE_SSL_REDIRECT", default=HTTPS)
SECURE_HSTS_SECONDS = 60 * 60 * 24 * 365 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
# Behind a TLS-terminating proxy (a PaaS router, a load balancer) that sets it.
if env_bool(ENV, "SECURE_PROXY_SSL_HEADER", default=HTTPS):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
# The largest body read (Django's default is 2.5 MB): above the largest valid
# usage batch, 1,000 events each at every field's maximum (4,096 bytes of
# properties) as a JSON encoder writes them, 12.6 MiB; bigger bodies are a 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024 * 1024
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# Scripts only from this site's static files: no inline scripts, no eval, no CDN.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, "'unsafe-inline'"],  # style attributes (bar widths)
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

# Widgets render with the project's templates too (the member picker's is in templates/).
FORM_RENDERER = "django.forms.renderers.TemplatesSetting"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.organization",
            ],
        },
    },
]

DATABASE_URL = ENV.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": database_config(DATABASE_URL)}
else:
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}
    }
DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Short OLTP queries: JIT compilation only ever cost time here (tens of ms
    # on the Limits & Alerts page's counts), never saved any.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Requests run in threads of several processes (gunicorn): a transaction
    # takes the write lock when it begins (IMMEDIATE) and waits up to 20 s for
    # it; begun as a reader, its upgrade to writer would fail at once with
    # "database is locked", whatever the timeout. WAL: readers never wait.
    for option, value in {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    }.items():
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault(option, value)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Redis: Celery's broker and the shared cache. Without it, tasks run in-process.
REDIS_URL = redis_url(ENV["REDIS_URL"]) if ENV.get("REDIS_URL") else ""
if REDIS_URL:
    CACHES = {"default": redis_cache_config(REDIS_URL)}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The longest countdown any task schedules for a retry (seconds). Redis must not
# redeliver an unacknowledged task before that countdown has run out.
CELERY_MAX_RETRY_COUNTDOWN = 60 * 60
# In-process mode names a host for the memory transport, else kombu warns that
# none was supplied each time a task is sent.
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_MAX_RETRY_COUNTDOWN * 2}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publishing runs in the request that committed the write (on commit): while
# Redis is down it must give up at once; the outbox row stays pending and the
# sweep queues it later. One immediate retry still gets past a pooled
# connection that went stale when Redis restarted. Celery's default (3 retries
# 0.2 s apart) held an ingest 0.65 s per notification it wrote.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0,
    "interval_max": 0,
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "requeue-stale-notifications": {
        "task": "alerts.tasks.requeue_stale_notifications",
        "schedule": 60.0,
    },
    # Retention (alerts/retention.py, billing/retention.py): hourly, so that
    # each run has an hour's worth to delete, in batches.
    # Credit balances (SPEC §9): grants becoming effective or expiring,
    # expiry notices, a new period's allowance, within a minute of the moment.
    "check-credit-balances": {
        "task": "alerts.tasks.check_credit_balances",
        "schedule": 60.0,
    },
    # The `period_end` invoice (SPEC §11), within a minute of each period's end.
    "close-invoice-periods": {
        "task": "alerts.tasks.close_invoice_periods",
        "schedule": 60.0,
    },
    # Plans (SPEC §12): a new or changed plan alert, or a change of a plan's
    # values, settled for its organizations within a minute should its own
    # task be lost.
    "settle-plans": {
        "task": "alerts.tasks.settle_plans",
        "schedule": 60.0,
    },
    # Limit requests approved for one billing period only (SPEC §14): the
    # member's limit returns within a minute of the period's end.
    "revert-limit-requests": {
        "task": "alerts.tasks.revert_limit_requests",
        "schedule": 60.0,
    },
    # Holds (SPEC §13) past their expiry: every write expires its own
    # organization's first, so this only tidies up after the quiet ones.
    "expire-holds": {
        "task": "alerts.tasks.expire_holds",
        "schedule": 60.0,
    },
    # Platform alerts (SPEC §12): a new or changed one fires, within a minute,
    # for organizations already past it, should its own task be lost.
    "settle-platform-alerts": {
        "task": "alerts.tasks.settle_platform_alerts",
        "schedule": 60.0,
    },
    "prune-notifications": {
        "task": "alerts.tasks.prune_notifications",
        "schedule": 60.0 * 60,
    },
    "prune-consume-answers": {
        "task": "billing.tasks.prune_consume_answers",
        "schedule": 60.0 * 60,
    },
}
# Retention (README, "Retention"): delivered notifications and their attempts
# are pruned after this many days; idempotency keys of consume are honoured at
# least IDEMPOTENCY_RETENTION_DAYS (never fewer than 35) and then pruned.
NOTIFICATION_RETENTION_DAYS = env_int(ENV, "NOTIFICATION_RETENTION_DAYS", default=90, minimum=1)
# Admins are told this many days before a grant with credits left expires.
GRANT_EXPIRY_NOTICE_DAYS = env_int(ENV, "GRANT_EXPIRY_NOTICE_DAYS", default=7, minimum=0)
IDEMPOTENCY_RETENTION_DAYS = env_int(ENV, "IDEMPOTENCY_RETENTION_DAYS", default=35, minimum=35)
# First retry of a failed delivery after about this many seconds, doubling each time.
NOTIFICATION_RETRY_BASE_SECONDS = 10
# How long a worker holds a delivery it claimed before another may take it over.
NOTIFICATION_CLAIM_LEASE_SECONDS = 5 * 60
# A pending delivery this overdue is re-queued by the sweep (its task was lost).
NOTIFICATION_STALE_AFTER_SECONDS = 30
WEBHOOK_TIMEOUT_SECONDS = 10

DEFAULT_FROM_EMAIL = ENV.get("DEFAULT_FROM_EMAIL", "Headroom <alerts@headroom.local>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Without a provider, emails are printed: who, subject and the text body.
EMAIL_BACKEND = ENV.get("EMAIL_BACKEND", "config.console_email.EmailBackend")
ANYMAIL = anymail_settings(ENV)

WEBHOOKS_ALLOW_PRIVATE_URLS = env_bool(ENV, "WEBHOOKS_ALLOW_PRIVATE_URLS", default=False)
# Signs platform alerts' webhooks (SPEC §12, docs/platform-alerts.md): a
# Standard Webhooks secret, `whsec_` + base64. Unset: none are sent.
PLATFORM_WEBHOOK_SECRET = webhook_secret(ENV, "PLATFORM_WEBHOOK_SECRET")

# Rate limits (config/ratelimit.py): N/s, N/m, N/h, N/d, N/15m ...; "off" disables one.
API_RATE_LIMIT = validate_rate("API_RATE_LIMIT", ENV.get("API_RATE_LIMIT", "6000/m"))
LOGIN_FAILURES_PER_ACCOUNT = validate_rate(
    "LOGIN_FAILURES_PER_ACCOUNT", ENV.get("LOGIN_FAILURES_PER_ACCOUNT", "10/15m")
)
LOGIN_FAILURES_PER_ADDRESS = validate_rate(
    "LOGIN_FAILURES_PER_ADDRESS", ENV.get("LOGIN_FAILURES_PER_ADDRESS", "50/15m")
)
# How many proxies in front of the app append to X-Forwarded-For: the client's
# address is the one that many entries from the right (0: the socket's address).
TRUSTED_PROXY_COUNT = env_int(ENV, "TRUSTED_PROXY_COUNT", default=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        # Django's own console handler (DEBUG) would print each request
        # warning a second time, beside the root handler's line.
        "django": {"handlers": [], "level": "INFO"},
        "django.db.backends": {"level": "WARNING"},
    },
}
