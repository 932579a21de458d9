from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    anymail_settings,
    database_config,
    env_bool,
    env_list,
    parse_bool,
    redis_url,
    webhook_secret,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_booleans_accept_the_documented_words(raw, expected):
    assert parse_bool("DEBUG", raw) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "tru", "enabled"])
def test_unknown_boolean_fails_loudly(raw):
    with pytest.raises(ImproperlyConfigured, match="DEBUG"):
        parse_bool("DEBUG", raw)


def test_missing_or_empty_boolean_takes_the_default():
    assert env_bool({}, "DEBUG", default=True) is True
    assert env_bool({"DEBUG": ""}, "DEBUG", default=False) is False


def test_the_platform_webhook_secret_is_a_standard_webhooks_secret_or_unset():
    name = "PLATFORM_WEBHOOK_SECRET"
    assert webhook_secret({}, name) == ""
    assert webhook_secret({name: " "}, name) == ""
    assert webhook_secret({name: "whsec_QUJDRA=="}, name) == "whsec_QUJDRA=="
    for bad in ("QUJDRA==", "whsec_", "whsec_not base64!"):
        with pytest.raises(ImproperlyConfigured, match=name):
            webhook_secret({name: bad}, name)


def test_lists_are_comma_separated():
    assert env_list({"ALLOWED_HOSTS": "a.com, b.com,"}, "ALLOWED_HOSTS", default=[]) == [
        "a.com",
        "b.com",
    ]
    assert env_list({}, "ALLOWED_HOSTS", default=["x"]) == ["x"]


def test_every_anymail_variable_becomes_a_key():
    environ = {
        "ANYMAIL_POSTMARK_SERVER_TOKEN": "token-123",
        "ANYMAIL_POSTMARK_API_URL": "http://127.0.0.1:9999/",
        "ANYMAIL_IGNORE_UNSUPPORTED_FEATURES": "yes",
        "ANYMAIL_": "ignored",
        "NOT_ANYMAIL_X": "ignored",
    }
    assert anymail_settings(environ) == {
        "POSTMARK_SERVER_TOKEN": "token-123",
        "POSTMARK_API_URL": "http://127.0.0.1:9999/",
        "IGNORE_UNSUPPORTED_FEATURES": True,
    }


def test_anymail_boolean_with_a_bad_value_fails():
    with pytest.raises(ImproperlyConfigured, match="ANYMAIL_DEBUG_API_REQUESTS"):
        anymail_settings({"ANYMAIL_DEBUG_API_REQUESTS": "sometimes"})


def test_database_urls():
    config = database_config("postgres://postgres@127.0.0.1:5432/headroom")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert config["NAME"] == "headroom"
    for bad in ["nonsense", "mysqlx://x/y", "postgres://127.0.0.1:5432/"]:
        with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
            database_config(bad)


def test_redis_url_must_be_a_redis_url():
    assert redis_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        redis_url("127.0.0.1:6379")


def _load_settings(**environ: str) -> subprocess.CompletedProcess[str]:
    """Import the production settings in a fresh interpreter with only `environ` set."""
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ENV_FILE": "",  # not a developer's .env
        **environ,
    }
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DEBUG, s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER, "
        "s.ANYMAIL.get('POSTMARK_SERVER_TOKEN'), s.EMAIL_BACKEND, s.WEBHOOKS_ALLOW_PRIVATE_URLS)"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("environ", "loaded"),
    [
        pytest.param(
            {"DEBUG": "1"},
            [
                "True",
                "django.db.backends.sqlite3",
                "True",
                "None",
                "config.console_email.EmailBackend",
                "False",
            ],
            id="defaults_for_a_newcomer",
        ),
        pytest.param(
            {
                "SECRET_KEY": "s3cret",
                "ALLOWED_HOSTS": "headroom.example.com",
                "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/headroom",
                "REDIS_URL": "redis://127.0.0.1:6379/0",
                "ANYMAIL_POSTMARK_SERVER_TOKEN": "pm-token",
                "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend",
                "WEBHOOKS_ALLOW_PRIVATE_URLS": "on",
            },
            [
                "False",
                "django.db.backends.postgresql",
                "False",
                "pm-token",
                "anymail.backends.postmark.EmailBackend",
                "True",
            ],
            id="from_the_environment",
        ),
    ],
)
def test_settings(environ, loaded):
    """DEBUG, the database engine, eager tasks, the Postmark token, the email
    backend and private webhook URLs, as the settings load them."""
    result = _load_settings(**environ)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == loaded


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DEBUG": "perhaps"}, "DEBUG='perhaps' is not a boolean"),
        ({"DEBUG": "0"}, "SECRET_KEY must be set"),
        ({"DEBUG": "1", "DATABASE_URL": "nonsense"}, "DATABASE_URL='nonsense'"),
        ({"DEBUG": "1", "REDIS_URL": "localhost"}, "REDIS_URL='localhost'"),
        ({"DEBUG": "1", "WEBHOOKS_ALLOW_PRIVATE_URLS": "sure"}, "WEBHOOKS_ALLOW_PRIVATE_URLS"),
        ({"DEBUG": "1", "SITE_URL": "headroom.example.com"}, "SITE_URL"),
    ],
)
def test_bad_settings_stop_the_process(environ, message):
    result = _load_settings(**environ)
    assert result.returncode != 0
    assert message in result.stderr
