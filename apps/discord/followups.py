"""Follow-ups owed to deferred interactions, sent by the bus worker's tick (no transaction open).

A deferred interaction waits for the read model to show its command. Once it does, or once `DISCORD_FOLLOWUP_WAIT_SECONDS` have passed, the original response is
edited through the interaction webhook. Discord's interaction tokens live 15 minutes; a follow-up that
could not be sent by then is marked failed (the person can always ask `/escrow status`)."""

from __future__ import annotations

import datetime
import logging

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.discord import interactions, rest
from apps.discord.models import FollowUp
from apps.projections import public as projections

log = logging.getLogger(__name__)
TOKEN_LIFETIME = datetime.timedelta(minutes=15)
# Discord's 4xx on a webhook edit will not change by retrying (unknown webhook: the token expired).
_MAX_ATTEMPTS = 5


def send_due_followups(*, limit: int = 50) -> int:
    """One pass; returns how many follow-ups it sent. A bus worker tick."""
    if connection.in_atomic_block:
        raise RuntimeError("send_due_followups calls Discord: run it outside a transaction")
    now = timezone.now()
    sent = 0
    for follow_up in FollowUp.objects.filter(status=FollowUp.Status.PENDING).order_by("created_at")[:limit]:
        age = now - follow_up.created_at
        if age >= TOKEN_LIFETIME - datetime.timedelta(seconds=30):
            _finish(follow_up, FollowUp.Status.FAILED, "the interaction token expired before the answer was ready")
            continue
        view = projections.escrow_view_get(escrow_id=str(follow_up.escrow_id))
        ready = view is not None and view.version >= follow_up.min_version
        if not ready and age.total_seconds() < settings.DISCORD_FOLLOWUP_WAIT_SECONDS:
            continue
        if view is None:
            data = {
                "content": f"{follow_up.note} The deal is still being set up: `/escrow status id:"
                f"{follow_up.escrow_id}` shows it in a moment.".strip(),
                "components": [],
            }
        else:
            data = interactions.deal_message(view, follow_up.user_id, note=follow_up.note)
        try:
            response = rest.edit_original_response(
                application_id=follow_up.application_id, token=follow_up.token, data=data
            )
        except rest.DiscordUnavailable as exc:
            _retry_later(follow_up, str(exc))
            continue
        if response.status_code < 300:
            _finish(follow_up, FollowUp.Status.SENT, "")
            sent += 1
        elif response.status_code == 429 or response.status_code >= 500:
            _retry_later(follow_up, f"Discord answered {response.status_code}")
        else:
            _finish(
                follow_up, FollowUp.Status.FAILED, f"Discord answered {response.status_code}: {response.text[:300]}"
            )
    return sent


def _finish(follow_up: FollowUp, status: str, error: str) -> None:
    # Conditional on still pending: two workers sending the same edit both succeed harmlessly (an edit is
    # idempotent), and only one records it.
    FollowUp.objects.filter(pk=follow_up.pk, status=FollowUp.Status.PENDING).update(
        status=status,
        last_error=error[:500],
        attempts=follow_up.attempts + 1,
        sent_at=timezone.now() if status == FollowUp.Status.SENT else None,
    )


def _retry_later(follow_up: FollowUp, error: str) -> None:
    log.warning("discord follow-up not sent", extra={"interaction_id": follow_up.interaction_id, "error": error})
    if follow_up.attempts + 1 >= _MAX_ATTEMPTS:
        _finish(follow_up, FollowUp.Status.FAILED, error)
        return
    FollowUp.objects.filter(pk=follow_up.pk, status=FollowUp.Status.PENDING).update(
        attempts=follow_up.attempts + 1, last_error=error[:500]
    )
