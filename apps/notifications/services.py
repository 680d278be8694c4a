"""Writes of the notifications service: the Discord identity, preferences, resending.

Each function owns its transaction; sending happens after commit (apps.notifications.delivery)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.notifications.delivery import deliver_after_commit
from apps.notifications.kinds import KINDS, LOCKED_ON
from apps.notifications.models import DiscordLink, Notification, NotificationPreference


class NotificationError(Exception):
    code = "notification_error"

    def __init__(self, detail: str, *, field: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class DiscordAccountTaken(NotificationError):
    code = "discord_account_linked_elsewhere"


_LINK_EVENT_NAMESPACE = uuid.UUID("6f1d3f55-3c1e-4f0c-9a43-1b0d8f7d2a10")


class PreferenceLocked(NotificationError):
    code = "preference_locked"


class UnknownKind(NotificationError):
    code = "unknown_notification_kind"


class NotResendable(NotificationError):
    code = "notification_not_resendable"


def discord_link_set(*, user_id: int, discord_user_id: int) -> DiscordLink:
    """Links a signed-in account to the Discord account Discord just vouched for (an OAuth connect), and
    tells them by DM (a security message: it cannot be switched off). Linking the same pair again is a
    no-op; a Discord id linked to another account is never re-pointed."""
    with transaction.atomic():
        current = DiscordLink.objects.filter(user_id=user_id, discord_user_id=discord_user_id).first()
        if current is not None:
            return current
        if DiscordLink.objects.filter(discord_user_id=discord_user_id).exclude(user_id=user_id).exists():
            raise DiscordAccountTaken("this Discord account is linked to another user; unlink it there first")
        try:
            with transaction.atomic():
                link, _ = DiscordLink.objects.update_or_create(
                    user_id=user_id, defaults={"discord_user_id": discord_user_id}
                )
        except IntegrityError:
            raise DiscordAccountTaken("this Discord account is linked to another user; unlink it there first") from None
        notification = Notification.objects.create(
            user_id=user_id,
            escrow_id=None,
            event_id=uuid.uuid5(_LINK_EVENT_NAMESPACE, f"{user_id}:{discord_user_id}:{link.pk}"),
            kind="account_linked",
            text="This Discord account is now linked to your escrow account. If that was not you, "
            f"unlink it and contact support. {settings.PUBLIC_BASE_URL}/api/v1/me/discord-link",
        )
        deliver_after_commit([notification.pk])
    return link


def discord_unlink(*, user_id: int) -> bool:
    deleted, _ = DiscordLink.objects.filter(user_id=user_id).delete()
    return bool(deleted)


def preferences_get(*, user_id: int) -> dict[str, bool]:
    chosen = dict(NotificationPreference.objects.filter(user_id=user_id).values_list("kind", "enabled"))
    return {kind: True if kind in LOCKED_ON else chosen.get(kind, True) for kind in KINDS}


def preferences_set(*, user_id: int, changes: dict[str, bool]) -> dict[str, bool]:
    """All or nothing: one unknown or locked kind refuses the whole change."""
    for kind, enabled in changes.items():
        if kind not in KINDS:
            raise UnknownKind(f"unknown notification kind {kind!r}", field=kind)
        if kind in LOCKED_ON and not enabled:
            raise PreferenceLocked(
                f"{kind} messages move money or protect your account and cannot be switched off", field=kind
            )
    with transaction.atomic():
        for kind, enabled in changes.items():
            NotificationPreference.objects.update_or_create(user_id=user_id, kind=kind, defaults={"enabled": enabled})
    return preferences_get(user_id=user_id)


def notification_resend(*, notification_id: int) -> Notification:
    """Queues a DEAD or FAILED notification again with a fresh attempt budget (its past attempts stay
    recorded). A sent one is not resent: that would be a second DM for one event."""
    with transaction.atomic():
        notification = Notification.objects.select_for_update().get(pk=notification_id)
        if notification.status not in (
            Notification.Status.DEAD,
            Notification.Status.FAILED,
            Notification.Status.SKIPPED,
        ):
            raise NotResendable(
                f"notification {notification_id} is {notification.status}; only dead, failed or skipped ones are resent"
            )
        notification.status = Notification.Status.PENDING
        notification.attempts = 0
        notification.next_attempt_at = timezone.now()
        notification.save(update_fields=["status", "attempts", "next_attempt_at"])
    return notification


def user_for_discord_id(*, discord_user_id: int, username_hint: str = "") -> AbstractBaseUser:
    """The account that owns this Discord id, created and linked on first use.

    The Discord id is the identity wherever Discord vouches for it (a signed interaction, an OAuth
    sign-in, a deal that names `discord:<snowflake>`). A Discord id already linked to an account is
    never re-pointed; a new account gets an unusable password (it signs in through Discord)."""
    if discord_user_id <= 0:
        raise NotificationError("a Discord user id is a positive snowflake", field="discord_user_id")
    link = DiscordLink.objects.select_related("user").filter(discord_user_id=discord_user_id).first()
    if link is not None:
        return link.user
    user_model = get_user_model()
    for base in (_username_from_hint(username_hint), f"discord_{discord_user_id}"):
        if not base:
            continue
        try:
            with transaction.atomic():
                username, suffix = base, 1
                while user_model.objects.filter(username=username).exists():
                    suffix += 1
                    username = f"{base}_{suffix}"
                user = user_model.objects.create_user(username=username, password=None)
                DiscordLink.objects.create(user=user, discord_user_id=discord_user_id)
            return user
        except IntegrityError:
            # Either a concurrent first use of the same Discord id won (its account is the one), or a
            # concurrent sign-up took the username: try the next candidate.
            link = DiscordLink.objects.select_related("user").filter(discord_user_id=discord_user_id).first()
            if link is not None:
                return link.user
    raise NotificationError("could not create an account for this Discord user; try again")


def discord_id_for_user(*, user_id: int) -> int | None:
    return DiscordLink.objects.filter(user_id=user_id).values_list("discord_user_id", flat=True).first()


def _username_from_hint(hint: str) -> str:
    cleaned = "".join(ch for ch in hint.strip().lower() if ch.isalnum() or ch in "._-")[:30]
    return cleaned if len(cleaned) >= 2 else ""
