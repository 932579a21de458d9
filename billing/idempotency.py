"""Idempotency keys: the fingerprint that tells a repeated request from a
different one under the same key, and the 409 for the latter. Consume and
ingest share one namespace of keys per organization (the ledger's).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from config.errors import Conflict


def fingerprint(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_reused(key: str, *, field_name: str = "idempotency_key") -> Conflict:
    return Conflict(
        f"The idempotency key {key!r} was already used with a different request.",
        code="idempotency_key_reused",
        field=field_name,
    )
