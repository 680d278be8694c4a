"""Bus wiring, in one place: which app subscribes to what (each app's `handlers` module lists its
reactions), and what the bus worker runs besides draining (`run_bus` and `serve` read
these ticks). Loaded by apps.outbox when the app registry is ready (settings.BUS_WIRING)."""

from apps.discord import public as discord
from apps.escrow import public as escrow
from apps.gateway import public as gateway
from apps.notifications import public as notifications
from apps.outbox import public as outbox
from apps.payments import public as payments
from apps.projections import public as projections

for subscriber in (escrow.SUBSCRIBER, payments.SUBSCRIBER, projections.SUBSCRIBER, notifications.SUBSCRIBER):
    outbox.register(subscriber)

# `run_bus --no-timers` leaves out "timers" (for a deployment that fires them from cron).
# Timers, reminders and the idempotency records' expiry fall due with time: they run once per poll interval
# (clocked). The others send what the pass's messages owe, so they run after every pass.
outbox.register_tick("timers", escrow.fire_due_timers, clocked=True)
# Reminders first: the notifications tick of the same pass sends what they owe.
outbox.register_tick("reminders", notifications.send_due_reminders, clocked=True)
outbox.register_tick("notifications", notifications.deliver_due_notifications)
outbox.register_tick("payments-webhooks", payments.deliver_owed_webhooks)
outbox.register_tick("discord-follow-ups", discord.send_due_followups)
outbox.register_tick("idempotency-expiry", gateway.idempotency_records_purge, clocked=True)
outbox.register_tick("cache-expiry", gateway.expired_cache_entries_purge, clocked=True)
