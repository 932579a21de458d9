"""Strict readers for settings that come from the environment.

django-environ parses URLs well but treats any unknown boolean as false and
any unknown database scheme as an empty config. A typo in production must
stop the process with a clear message instead, so these helpers refuse what
they do not understand.
"""

from __future__ import annotations

import base64
import binascii
import warnings
from collections.abc import Mapping
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
ANYMAIL_PREFIX = "ANYMAIL_"
# Anymail settings that are booleans; every other ANYMAIL_* value stays a string.
ANYMAIL_BOOLEAN_NAMES = frozenset(
    {"IGNORE_UNSUPPORTED_FEATURES", "IGNORE_RECIPIENT_STATUS", "DEBUG_API_REQUESTS"}
)


def parse_bool(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no or on/off."
    )


def env_bool(environ_: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = environ_.get(name)
    if raw is None or raw.strip() == "":
        return default
    return parse_bool(name, raw)


def env_int(environ_: Mapping[str, str], name: str, *, default: int, minimum: int = 0) -> int:
    raw = environ_.get(name)
    if raw is None or raw.strip() == "":
        return default
    word = raw.strip()
    if not (word.isascii() and word.isdigit()) or int(word) < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be a whole number, {minimum} or more.")
    return int(word)


def env_list(environ_: Mapping[str, str], name: str, *, default: list[str]) -> list[str]:
    raw = environ_.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


SUPPORTED_DATABASE_ENGINES = frozenset(
    {"django.db.backends.postgresql", "django.db.backends.sqlite3"}
)


def webhook_secret(environ_: Mapping[str, str], name: str) -> str:
    """A Standard Webhooks signing secret (`whsec_` + base64), or "" when unset."""
    raw = environ_.get(name, "").strip()
    if not raw:
        return ""
    try:
        key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not raw.startswith("whsec_") or not key:
        raise ImproperlyConfigured(f"{name} must be whsec_ followed by base64 bytes.")
    return raw


def database_config(url: str) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # we raise a clearer error below
        config = environ.Env.db_url_config(url)
    if config.get("ENGINE") not in SUPPORTED_DATABASE_ENGINES:
        raise ImproperlyConfigured(
            f"DATABASE_URL={url!r} is not a database URL: expected e.g. "
            "postgres://user@host:5432/name or sqlite:///path/to/db.sqlite3."
        )
    if not config.get("NAME"):
        raise ImproperlyConfigured(f"DATABASE_URL={url!r} names no database.")
    return config


def redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            f"REDIS_URL={raw!r} is not a Redis URL: expected e.g. redis://127.0.0.1:6379/0."
        )
    return raw


def redis_cache_config(url: str, **extra: Any) -> dict[str, Any]:
    """The shared cache on Redis (the rate limits' counters).

    django-redis rather than Django's own backend, which builds a client
    object for every command and increments in two round trips, which cost
    the API's rate limit a third more CPU per request (docs/benchmarks.md).
    A hung Redis must not hang requests (the limiter then lets them through),
    hence the short timeouts.
    """
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": url,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        **extra,
    }


def anymail_settings(environ_: Mapping[str, str]) -> dict[str, Any]:
    """Every ANYMAIL_<NAME> variable becomes ANYMAIL["<NAME>"]."""
    settings: dict[str, Any] = {}
    for key, value in environ_.items():
        if not key.startswith(ANYMAIL_PREFIX) or key == ANYMAIL_PREFIX:
            continue
        name = key[len(ANYMAIL_PREFIX) :]
        settings[name] = parse_bool(key, value) if name in ANYMAIL_BOOLEAN_NAMES else value
    return settings
