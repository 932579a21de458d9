from __future__ import annotations

from celery import shared_task

from billing.retention import consume_answers_prune


@shared_task(ignore_result=True)
def prune_consume_answers() -> int:
    return consume_answers_prune()
