"""Bus wiring, in one place: which app subscribes to what (each app's `handlers` module lists its
reactions), and what the bus worker runs on every pass besides draining (`run_bus` and `serve` read
these ticks). Loaded by apps.outbox when the app registry is ready (settings.BUS_WIRING)."""

from apps.escrow import public as escrow
from apps.notifications import public as notifications
from apps.outbox import public as outbox
from apps.payments import public as payments
from apps.projections import public as projections

for subscriber in (escrow.SUBSCRIBER, payments.SUBSCRIBER, projections.SUBSCRIBER, notifications.SUBSCRIBER):
    outbox.register(subscriber)

# The escrow timers (funding and inspection deadlines); `run_bus --no-timers` leaves them out.
outbox.tick_register(escrow.fire_due_timers, timer=True)
# DMs whose time has come (first tries after a commit, retries with backoff).
outbox.tick_register(notifications.deliver_due_notifications)
# The sandbox provider's webhooks still owed (a no-op with a real provider).
outbox.tick_register(payments.deliver_owed_webhooks)
