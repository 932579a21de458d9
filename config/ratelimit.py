"""Rate limits: per API key on the API, per account and per address on log-in.

Counters are django-ratelimit's fixed windows in the cache (Redis in
production, shared by every web process). A limiter that cannot reach its
cache lets the request through: losing the throttle for a while is better
than refusing usage that must be recorded. Every API request is counted, so
with Redis that costs one round trip (`_count_in_redis`: a script that
counts and starts the window's expiry), where django-ratelimit makes two.

The address is the client's as the trusted proxies saw it (`client_address`):
behind a proxy the socket's address is the proxy's, shared by every user.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django_ratelimit.core import _get_window, _split_rate, get_usage

logger = logging.getLogger(__name__)

OFF = ("", "off", "none", "0")
RATE = re.compile(r"\d+/\d*[smhd]", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    limited: bool
    retry_after: int  # seconds until the window ends
    limit: int
    period: int


def validate_rate(name: str, rate: str) -> str:
    """`N/period` as django-ratelimit reads it (`100/s`, `6000/m`, `10/15m`), or off."""
    rate = rate.strip()
    if rate.lower() in OFF:
        return ""
    if not RATE.fullmatch(rate) or _split_rate(rate)[0] <= 0:
        raise ImproperlyConfigured(
            f"{name}={rate!r} is not a rate: write N/s, N/m, N/h or N/d (e.g. 6000/m), or off."
        )
    return rate


def _check(
    request: HttpRequest, *, group: str, value: str, rate: str, increment: bool
) -> Verdict | None:
    if not rate:
        return None
    try:
        usage = get_usage(
            request, group=group, key=lambda _group, _request: value, rate=rate, increment=increment
        )
    except Exception:
        logger.warning("Rate limit %s not checked: the cache is unavailable", group, exc_info=True)
        return None
    if usage is None:
        return None
    limit, period = _split_rate(rate)
    limited = usage["should_limit"] if increment else usage["count"] >= limit
    return Verdict(
        limited=limited, retry_after=max(1, usage["time_left"]), limit=limit, period=period
    )


def api_key_throttle(request: HttpRequest, *, token: str) -> Verdict | None:
    """Count one API request for this key (known or not: guessing is throttled too)."""
    digest = hashlib.sha256(token.encode()).hexdigest()[:32]
    rate = settings.API_RATE_LIMIT
    if rate and _redis_cache() is not None:
        return _count_in_redis(group="api", value=digest, rate=rate)
    return _check(request, group="api", value=digest, rate=rate, increment=True)


# Counts one more in a window's counter, giving a new one its expiry: atomic,
# and one round trip.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
_scripts: dict[int, Any] = {}  # by Redis client: each registers the script once


def _redis_cache() -> Any:
    cache = caches["default"]
    return cache if type(cache).__module__.startswith("django_redis") else None


def _count_in_redis(*, group: str, value: str, rate: str) -> Verdict | None:
    """django-ratelimit's fixed window (the same jittered ends), counted by a
    script in one round trip.
    """
    from django_redis import get_redis_connection

    limit, period = _split_rate(rate)
    window_end = _get_window(value, period)
    key = _redis_cache().make_key(f"rl:{group}:{value}:{window_end}")
    try:
        client = get_redis_connection("default")
        script = _scripts.get(id(client))
        if script is None:
            script = _scripts[id(client)] = client.register_script(_COUNT)
        count = int(script(keys=[key], args=[period + 1]))
    except Exception:
        logger.warning("Rate limit %s not checked: the cache is unavailable", group, exc_info=True)
        return None
    return Verdict(
        limited=count > limit,
        retry_after=max(1, window_end - int(time.time())),
        limit=limit,
        period=period,
    )


def client_address(request: HttpRequest) -> str:
    """The client's address: the socket's, or with TRUSTED_PROXY_COUNT = N
    proxies in front, the Nth entry from the right of X-Forwarded-For.

    Each proxy appends the address it received the request from, so the
    last N entries were written by our proxies and the Nth from the right is
    the client as the outermost proxy saw it; whatever stands left of it the
    client sent and may have made up. A header that is missing, shorter than
    N entries (the request did not come through every proxy) or not an
    address there gives the socket's address: a client can never pick its
    bucket, at worst it shares the proxy's.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return remote
    entries = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    if len(entries) < count:
        return remote
    try:
        return str(ipaddress.ip_address(entries[-count].strip()))
    except ValueError:
        return remote


def _login_keys(request: HttpRequest, email: str) -> list[tuple[str, str, str]]:
    address = client_address(request)
    return [
        ("login-account", email, settings.LOGIN_FAILURES_PER_ACCOUNT),
        ("login-address", address, settings.LOGIN_FAILURES_PER_ADDRESS),
    ]


def login_throttled(request: HttpRequest, *, email: str) -> Verdict | None:
    """The verdict if this account or address has failed too often; None if it may try."""
    for group, value, rate in _login_keys(request, email):
        verdict = _check(request, group=group, value=value, rate=rate, increment=False)
        if verdict is not None and verdict.limited:
            return verdict
    return None


def login_failed(request: HttpRequest, *, email: str) -> None:
    for group, value, rate in _login_keys(request, email):
        _check(request, group=group, value=value, rate=rate, increment=True)
