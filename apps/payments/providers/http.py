"""What the custodian and screening clients share about a provider that says "not now".

A 429 (or a 503) with `Retry-After` asks us not to come back before that many seconds (or that HTTP
date). The client waits it out itself and asks once more, if the wait is at most
PROVIDER_RETRY_AFTER_MAX_SECONDS (a bus worker, or a webhook request, should not sleep for minutes);
otherwise, and if the second answer is still "not now", the caller raises a transient error and the bus
retries with its own backoff, then dead-letters. Each attempt is built afresh by `send`, so a request
that must differ per attempt (a new entity-secret ciphertext) stays correct; the idempotency key does
not change.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import time
from collections.abc import Callable

import requests
from django.conf import settings

log = logging.getLogger(__name__)

RETRYABLE_WITH_RETRY_AFTER = frozenset({429, 503})


def retry_after_seconds(response: requests.Response) -> float | None:
    """The wait the provider asked for, in seconds (delta-seconds or an HTTP date), or None."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def send_honouring_retry_after(vendor: str, send: Callable[[], requests.Response]) -> requests.Response:
    """Calls `send`; on a 429/503 whose Retry-After is short enough, waits it out and calls it once more.
    Returns the last answer (the caller maps its status); connection errors and timeouts propagate."""
    response = send()
    if response.status_code not in RETRYABLE_WITH_RETRY_AFTER:
        return response
    wait = retry_after_seconds(response)
    limit = float(getattr(settings, "PROVIDER_RETRY_AFTER_MAX_SECONDS", 5.0))
    if wait is None or wait > limit:
        return response
    log.info(
        "provider asked to retry later", extra={"vendor": vendor, "status": response.status_code, "retry_after_s": wait}
    )
    time.sleep(wait)
    return send()
