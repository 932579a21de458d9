"""The email backend of development (`make run` without EMAIL_BACKEND): it
prints who an email goes to, its subject and its text body, not the ~60 lines
of MIME (headers, boundaries, the HTML part) of Django's console backend.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

RULE = "-" * 72


class EmailBackend(BaseEmailBackend):
    def __init__(self, *args: Any, stream: TextIO | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream = stream or sys.stdout
        # Threads of one worker share the backend: one email is printed whole.
        self._lock = threading.Lock()

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        sent = 0
        with self._lock:
            for message in email_messages:
                self.stream.write(format_email(message))
                sent += 1
            self.stream.flush()
        return sent


def format_email(message: EmailMessage) -> str:
    recipients = ", ".join([*message.to, *message.cc, *message.bcc])
    # (content, mimetype) pairs of an EmailMultiAlternatives: the HTML part.
    others = [str(alternative[1]) for alternative in getattr(message, "alternatives", [])]
    lines = [
        RULE,
        f"Email to {recipients}",
        f"From: {message.from_email}",
        f"Subject: {message.subject}",
    ]
    if others:
        lines.append(f"(also sent as {', '.join(others)}; not shown)")
    lines += ["", str(message.body).rstrip(), RULE, ""]
    return "\n".join(lines)
