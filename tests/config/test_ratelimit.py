"""Rate limits: per API key (429 with Retry-After), log-in throttling, and a
limiter that lets requests through when its cache is down.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory
from redis import Redis

from config.env import redis_cache_config
from config.ratelimit import client_address, validate_rate
from tests.factories import DEFAULT_PASSWORD
from tests.fixtures import ApiClient
from tests.helpers import clock_held_at

pytestmark = pytest.mark.django_db

# The counters are fixed windows: with the clock held, a test's requests all
# fall in one window, however slowly a loaded machine serves them (a window
# that ended between two of them once let a guessed key through).
frozen_time = clock_held_at(datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC))


def test_an_api_key_past_its_rate_gets_429_with_retry_after(settings, api, outsider_api):
    settings.API_RATE_LIMIT = "3/m"

    answers = [api.get("/api/v1/organization") for _ in range(4)]
    other_key = outsider_api.get("/api/v1/organization")

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "at most 3 every 60 s" in refused.json()["error"]["message"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert other_key.status_code == 200


def test_guessing_keys_is_throttled_too(settings, db):
    settings.API_RATE_LIMIT = "2/m"
    guesser = ApiClient("hr_not-a-real-key")

    statuses = [guesser.get("/api/v1/organization").status_code for _ in range(3)]

    assert statuses == [401, 401, 429]


def test_the_api_rate_can_be_turned_off(settings, api):
    settings.API_RATE_LIMIT = ""

    assert all(api.get("/api/v1/organization").status_code == 200 for _ in range(20))


def test_counters_live_in_redis_when_it_is_the_cache(settings, api):
    prefix = f"test-{uuid.uuid4()}"
    settings.CACHES = {"default": redis_cache_config(settings.REDIS_URL, KEY_PREFIX=prefix)}
    settings.API_RATE_LIMIT = "2/m"

    statuses = [api.get("/api/v1/organization").status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    redis = Redis.from_url(settings.REDIS_URL)
    counters = redis.keys(f"{prefix}:*")
    assert len(counters) == 1
    redis.delete(*counters)  # Redis db 15 is shared with the test worker: never flushed


def test_with_its_cache_down_the_limiter_lets_requests_through(settings, api):
    # Nothing listens on port 1.
    settings.CACHES = {"default": redis_cache_config("redis://127.0.0.1:1/0")}
    settings.API_RATE_LIMIT = "1/m"

    assert [api.get("/api/v1/organization").status_code for _ in range(3)] == [200, 200, 200]


@pytest.mark.parametrize("rate", ["abc", "0/m", "5/fortnight", "-1/s"])
def test_a_bad_rate_setting_is_refused_with_its_name(rate):
    with pytest.raises(ImproperlyConfigured, match="API_RATE_LIMIT"):
        validate_rate("API_RATE_LIMIT", rate)


@pytest.mark.parametrize("rate", ["off", "", "OFF", "0"])
def test_a_rate_can_be_off(rate):
    assert validate_rate("API_RATE_LIMIT", rate) == ""


# Log-in throttling


def attempt(client: Client, email: str, password: str) -> object:
    return client.post("/accounts/login/", {"email": email, "password": password})


def test_too_many_failures_lock_the_account_for_a_while(settings, owner, member):
    settings.LOGIN_FAILURES_PER_ACCOUNT = "3/15m"
    client = Client()

    failures = [attempt(client, "owner@acme.test", "wrong").status_code for _ in range(3)]
    locked = attempt(client, "OWNER@acme.test", DEFAULT_PASSWORD)
    other_account = attempt(Client(), "member@acme.test", DEFAULT_PASSWORD)

    assert failures == [200, 200, 200]
    assert locked.status_code == 429
    assert "Too many failed log-in attempts. Try again in" in locked.content.decode()
    assert int(locked["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session
    assert other_account.status_code == 302


def test_too_many_failures_from_one_address_are_throttled(settings, owner):
    settings.LOGIN_FAILURES_PER_ACCOUNT = ""  # off: what validate_rate makes of "off"
    settings.LOGIN_FAILURES_PER_ADDRESS = "2/15m"
    client = Client()

    attempt(client, "a@acme.test", "x")
    attempt(client, "b@acme.test", "x")
    third = attempt(client, "owner@acme.test", DEFAULT_PASSWORD)

    assert third.status_code == 429


def test_successful_log_ins_are_not_counted(settings, owner):
    settings.LOGIN_FAILURES_PER_ACCOUNT = "2/15m"

    for _ in range(4):
        client = Client()
        assert attempt(client, "owner@acme.test", DEFAULT_PASSWORD).status_code == 302


# Behind a proxy: the address of log-in throttling (TRUSTED_PROXY_COUNT)

PROXY = "10.0.0.2"  # the socket's address of every request that came through the proxy


def test_without_trusted_proxies_a_forged_forwarded_for_is_ignored(settings, owner):
    settings.TRUSTED_PROXY_COUNT = 0
    settings.LOGIN_FAILURES_PER_ACCOUNT = ""  # off: what validate_rate makes of "off"
    settings.LOGIN_FAILURES_PER_ADDRESS = "2/15m"
    client = Client(REMOTE_ADDR="198.51.100.9")

    # A new made-up address each time would be a new bucket each time.
    for forged in ("203.0.113.1", "203.0.113.2"):
        attempt_from(client, "owner@acme.test", "wrong", forwarded_for=forged)
    third = attempt_from(client, "owner@acme.test", DEFAULT_PASSWORD, forwarded_for="203.0.113.3")

    assert third.status_code == 429


def test_behind_one_proxy_each_client_has_its_own_bucket(settings, owner, member):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.LOGIN_FAILURES_PER_ACCOUNT = ""  # off: what validate_rate makes of "off"
    settings.LOGIN_FAILURES_PER_ADDRESS = "2/15m"
    guesser = Client(REMOTE_ADDR=PROXY)
    colleague = Client(REMOTE_ADDR=PROXY)

    # What the client wrote itself stands left of what the proxy appended.
    for forged in ("192.0.2.1", "192.0.2.2"):
        attempt_from(guesser, "a@acme.test", "x", forwarded_for=f"{forged}, 203.0.113.7")
    guesser_again = attempt_from(
        guesser, "owner@acme.test", DEFAULT_PASSWORD, forwarded_for="192.0.2.3, 203.0.113.7"
    )
    colleague_logs_in = attempt_from(
        colleague, "member@acme.test", DEFAULT_PASSWORD, forwarded_for="198.51.100.20"
    )

    assert guesser_again.status_code == 429
    assert colleague_logs_in.status_code == 302


def test_behind_a_proxy_a_request_without_a_usable_header_counts_for_the_socket(settings, owner):
    settings.TRUSTED_PROXY_COUNT = 2
    settings.LOGIN_FAILURES_PER_ACCOUNT = ""  # off: what validate_rate makes of "off"
    settings.LOGIN_FAILURES_PER_ADDRESS = "2/15m"
    client = Client(REMOTE_ADDR=PROXY)

    attempt_from(client, "a@acme.test", "x", forwarded_for="203.0.113.7")  # one entry of two
    attempt_from(client, "a@acme.test", "x", forwarded_for="not-an-address, 10.0.0.1")
    third = attempt_from(client, "owner@acme.test", DEFAULT_PASSWORD, forwarded_for=None)

    assert third.status_code == 429


def attempt_from(client: Client, email: str, password: str, *, forwarded_for: str | None) -> Any:
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    return client.post("/accounts/login/", {"email": email, "password": password}, headers=headers)


@pytest.mark.parametrize(
    ("count", "forwarded_for", "expected"),
    [
        (0, "203.0.113.7", PROXY),
        (1, "203.0.113.7", "203.0.113.7"),
        (1, "192.0.2.1, 203.0.113.7", "203.0.113.7"),
        (1, " 2001:DB8::1 ", "2001:db8::1"),
        (2, "192.0.2.1, 203.0.113.7, 10.0.0.1", "203.0.113.7"),
        (2, "203.0.113.7", PROXY),  # shorter than the proxies: not through all of them
        (1, None, PROXY),
        (1, "", PROXY),
        (1, "unknown", PROXY),
        (1, "203.0.113.7, ", PROXY),
        (1, "203.0.113.7:4711", PROXY),
        (1, "203.0.113.7,<script>", PROXY),
    ],
)
def test_client_address(settings, count, forwarded_for, expected):
    settings.TRUSTED_PROXY_COUNT = count
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    request = RequestFactory().get("/", REMOTE_ADDR=PROXY, headers=headers)

    assert client_address(request) == expected


def test_with_redis_a_request_is_counted_in_one_round_trip(settings, api, monkeypatch):
    prefix = f"test-{uuid.uuid4()}"
    settings.CACHES = {"default": redis_cache_config(settings.REDIS_URL, KEY_PREFIX=prefix)}
    settings.API_RATE_LIMIT = "100/m"
    api.get("/api/v1/organization")  # the script is registered once per connection
    sent: list[str] = []
    execute = Redis.execute_command

    def counted(self: Redis, *args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return execute(self, *args, **options)

    monkeypatch.setattr(Redis, "execute_command", counted)
    assert api.get("/api/v1/organization").status_code == 200
    assert sent == ["EVALSHA"]
    redis = Redis.from_url(settings.REDIS_URL)
    [counter] = redis.keys(f"{prefix}:*")
    assert int(redis.get(counter)) == 2 and 0 < redis.ttl(counter) <= 61
    redis.delete(counter)
