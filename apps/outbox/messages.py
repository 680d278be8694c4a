"""The message catalog: protobuf type names, their topics, encoding and deterministic ids."""

from __future__ import annotations

import uuid
from typing import TypeVar

import betterproto2

import proto.common.v1  # noqa: F401  (registers the messages in the pool)
import proto.escrow.v1
import proto.payments.v1
import proto.webhook.v1  # noqa: F401
from proto.message_pool import default_message_pool

ESCROW_COMMANDS = "escrow.commands.v1"
ESCROW_EVENTS = "escrow.events.v1"
PAYMENTS_COMMANDS = "payments.commands.v1"
PAYMENTS_EVENTS = "payments.events.v1"
WEBHOOK_EVENTS = "webhook.events.v1"
TOPICS = (ESCROW_COMMANDS, ESCROW_EVENTS, PAYMENTS_COMMANDS, PAYMENTS_EVENTS, WEBHOOK_EVENTS)

_URL_PREFIX = "type.googleapis.com/"
_TYPES: dict[str, type[betterproto2.Message]] = {
    url.removeprefix(_URL_PREFIX): cls for url, cls in default_message_pool.url_to_type.items()
}
_NAMES = {cls: name for name, cls in _TYPES.items()}

_ESCROW_COMMAND_NAMES = {
    "CreateEscrow",
    "AcceptEscrow",
    "DeclineEscrow",
    "MarkDelivered",
    "ReleaseFunds",
    "CancelEscrow",
    "OpenDispute",
    "ResolveDispute",
    "HoldEscrow",
    "UnholdEscrow",
    "RetryPayout",
    "ReturnStrandedFunds",
    "ResolveComplianceHold",
}
_PAYMENT_COMMAND_NAMES = {"CreatePaymentIntent", "TransferToSeller", "InitiateRefund"}

# Event ids are uuid5 over business state, so a retried write cannot mint a second id.
EVENT_NAMESPACE = uuid.UUID("5f0c2b1e-8f43-4c55-9d61-2f3a1e7b9c10")

M = TypeVar("M", bound=betterproto2.Message)


def type_name(message: betterproto2.Message | type[betterproto2.Message]) -> str:
    cls = message if isinstance(message, type) else type(message)
    return _NAMES[cls]


def message_class(name: str) -> type[betterproto2.Message]:
    try:
        return _TYPES[name]
    except KeyError:
        raise UnknownMessageType(name) from None


def topic_for(message: betterproto2.Message) -> str:
    package, _, short = type_name(message).rpartition(".")
    if package == "escrow.v1":
        return ESCROW_COMMANDS if short in _ESCROW_COMMAND_NAMES else ESCROW_EVENTS
    if package == "payments.v1":
        return PAYMENTS_COMMANDS if short in _PAYMENT_COMMAND_NAMES else PAYMENTS_EVENTS
    if package == "webhook.v1":
        return WEBHOOK_EVENTS
    raise UnknownMessageType(type_name(message))


def decode(name: str, payload: bytes) -> betterproto2.Message:
    return message_class(name).parse(bytes(payload))


def deterministic_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(EVENT_NAMESPACE, ":".join(str(part) for part in parts))


class UnknownMessageType(LookupError):
    pass
