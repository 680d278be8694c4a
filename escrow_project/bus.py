"""Bus wiring: which app subscribes to what. Each app's `handlers` module lists its reactions."""

from apps.escrow.handlers import SUBSCRIBER as ESCROW
from apps.notifications.handlers import SUBSCRIBER as NOTIFICATIONS
from apps.outbox import bus
from apps.payments.handlers import SUBSCRIBER as PAYMENTS
from apps.projections.handlers import SUBSCRIBER as PROJECTIONS

for subscriber in (ESCROW, PAYMENTS, PROJECTIONS, NOTIFICATIONS):
    bus.register(subscriber)
