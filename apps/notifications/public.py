"""What other apps may use of the notifications service (the gateway, the web app, the Discord edge, the admin)."""

from apps.notifications.components import custom_id, deal_buttons, parse_custom_id
from apps.notifications.delivery import deliver_due_notifications
from apps.notifications.handlers import SUBSCRIBER
from apps.notifications.kinds import KINDS, LOCKED_ON
from apps.notifications.models import DiscordLink
from apps.notifications.reminders import send_due_reminders
from apps.notifications.services import (
    NotificationError,
    discord_id_for_user,
    discord_link_set,
    discord_unlink,
    notification_resend,
    preferences_get,
    preferences_set,
    user_for_discord_id,
)

__all__ = [
    "KINDS",
    "LOCKED_ON",
    "SUBSCRIBER",
    "DiscordLink",
    "NotificationError",
    "custom_id",
    "deal_buttons",
    "parse_custom_id",
    "deliver_due_notifications",
    "discord_id_for_user",
    "discord_link_set",
    "discord_unlink",
    "notification_resend",
    "preferences_get",
    "preferences_set",
    "send_due_reminders",
    "user_for_discord_id",
]
