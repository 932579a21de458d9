"""Email backends for tests: a provider that fails a given number of times."""

from __future__ import annotations

from typing import Any

from anymail.exceptions import AnymailAPIError
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend


class FlakyProviderBackend(LocmemBackend):
    """Fails the first `failures_left` sends like a provider answering 503."""

    failures_left = 0

    def send_messages(self, messages: Any) -> int:
        if FlakyProviderBackend.failures_left > 0:
            FlakyProviderBackend.failures_left -= 1
            raise AnymailAPIError("Provider unavailable (503)")
        sent = super().send_messages(messages)
        for message in messages:
            message.anymail_status = type("Status", (), {"message_id": f"msg-{len(mail.outbox)}"})()
        return sent
