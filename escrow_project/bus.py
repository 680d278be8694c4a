"""Bus wiring: which app subscribes to what, and what the bus worker does on each tick. Each app's
`handlers` module lists its reactions."""

from apps.discord.public import send_due_followups
from apps.escrow.handlers import SUBSCRIBER as ESCROW
from apps.escrow.timers import fire_due_timers
from apps.gateway.public import idempotency_records_purge
from apps.notifications.handlers import SUBSCRIBER as NOTIFICATIONS
from apps.notifications.public import deliver_due_notifications, send_due_reminders
from apps.outbox import bus
from apps.outbox.worker import register_tick
from apps.payments.handlers import SUBSCRIBER as PAYMENTS
from apps.payments.public import deliver_owed_webhooks
from apps.projections.handlers import SUBSCRIBER as PROJECTIONS

for subscriber in (ESCROW, PAYMENTS, PROJECTIONS, NOTIFICATIONS):
    bus.register(subscriber)

# `run_bus --no-timers` leaves out "timers" (for a deployment that fires them from cron).
register_tick("timers", fire_due_timers)
# Reminders first: the notifications tick of the same pass sends what they owe.
register_tick("reminders", send_due_reminders)
register_tick("notifications", deliver_due_notifications)
register_tick("payments-webhooks", deliver_owed_webhooks)
register_tick("discord-follow-ups", send_due_followups)
register_tick("idempotency-expiry", idempotency_records_purge)
