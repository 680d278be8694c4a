"""Stripe, for card escrows up to STRIPE_MAX_AMOUNT_MINOR: separate charges and transfers.

One PaymentIntent per escrow (automatic capture, metadata.escrow_id, transfer_group = escrow id), one
Transfer to the seller's connected account with `source_transaction` (so it waits for the charge's
funds), one Refund. Every call carries the Idempotency-Key our handler derives from the command's event
id; the SDK's own retries are off so that a retry is always ours, with the same key.

Stripe saves the first answer for an idempotency key once the endpoint has begun, 500s included, and
replays it (`Idempotent-Replayed: true`) to every later request with that key. So a 5xx or a timeout is
an unknown outcome, and re-sending the same key cannot settle it: every create goes through
`_create_once`, which, after a 5xx or a timeout, looks the object up (PaymentIntents searched by
metadata, transfers listed by transfer_group, refunds by payment_intent; each object carries
metadata.idempotency_key, the command's key) and uses what it finds. Only a 5xx that Stripe *replayed*
(so the first request has finished, and the lookup saw everything it did) lets the next key in a fixed
sequence (`<key>`, `<key>-retry1`, ...) be tried; a fresh 5xx or a timeout is left to the bus's backoff,
whose next attempt walks the same sequence again (finished keys replay, one in flight answers 409). The
object is created at most once.

Errors: 429, 5xx, timeouts, connection errors, 409 (a concurrent request holds the key) and auth /
permission errors (configuration, fixable without losing the command) are transient: the bus retries
with backoff and then dead-letters (replayable). A card error or an invalid request (400/402/404) is
permanent: the handler turns it into PaymentFailed / TransferFailed / RefundFailed, with Stripe's code
in the reason (REFUSALS names the money refusals: a refund above what is left of the charge, a transfer
above the available balance).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import stripe
from django.conf import settings

from apps.payments.providers import stripe_signature
from apps.payments.providers.base import (
    DestinationRefused,
    KnownObjects,
    MoneyMovement,
    PaymentProvider,
    PaymentSetup,
    ProviderError,
    ProviderEvent,
)

T = TypeVar("T")

# How many keys after the command's own may be tried when Stripe keeps answering 5xx having created
# nothing; past that the command is left to the bus (and dead-lettered), never sent under more keys.
MAX_SUCCESSOR_KEYS = 3
# Stripe's refusals about money, in words for the ops desk (the code is kept in the reason too).
REFUSALS = {
    "charge_already_refunded": "the charge is already refunded in full",
    "amount_too_large": "the refund is larger than what is left of the charge",
    "balance_insufficient": "the platform's available balance (or the source charge) does not cover the transfer",
}

DEFAULT_TIMEOUT_SECONDS = 20.0
# Only the fields we keep about a Stripe object: ids, amounts and states, never card data.
KEPT_FIELDS = (
    "id",
    "object",
    "amount",
    "amount_received",
    "currency",
    "status",
    "destination",
    "source_transaction",
    "transfer_group",
    "payment_intent",
    "charge",
    "latest_charge",
    "metadata",
    "reversed",
)

# The events whose handlers move money on the object's state: these are re-read before being trusted.
REREAD_TYPES = frozenset(
    {"payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded", "refund.created", "refund.updated"}
)
# Hosted checkout sessions and Connect accounts (stripe_checkout.py): their fields and the events whose
# object is re-read too.
SESSION_FIELDS = (
    "id",
    "object",
    "status",
    "payment_status",
    "payment_intent",
    "amount_total",
    "currency",
    "metadata",
    "client_reference_id",
    "expires_at",
    "url",
)
ACCOUNT_FIELDS = (
    "id",
    "object",
    "type",
    "charges_enabled",
    "payouts_enabled",
    "details_submitted",
    "capabilities",
    "metadata",
)
SESSION_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
    }
)
ACCOUNT_EVENTS = frozenset({"account.updated"})


def _kept(obj: Any, fields: tuple[str, ...] = KEPT_FIELDS) -> dict[str, Any]:
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return {key: data[key] for key in fields if key in data}


_clients: dict[tuple[str, str, float], stripe.StripeClient] = {}
_clients_lock = threading.Lock()


def _client() -> stripe.StripeClient:
    """One client per configuration, kept for the process: its HTTP client keeps a connection per thread
    (requests' session), so a call does not open a new connection and TLS session to Stripe. Looked up
    from settings on every call, so a key rotation or a test's fake server applies at once."""
    config = (
        settings.STRIPE_SECRET_KEY or "sk_unset",
        settings.STRIPE_API_BASE or stripe.DEFAULT_API_BASE,
        float(getattr(settings, "STRIPE_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS)),
    )
    client = _clients.get(config)
    if client is None:
        with _clients_lock:
            client = _clients.get(config)
            if client is None:
                key, base, timeout = config
                client = stripe.StripeClient(
                    key,
                    base_addresses={"api": base},
                    max_network_retries=0,
                    http_client=stripe.RequestsClient(timeout=timeout),
                )
                if len(_clients) >= 8:  # configurations come and go in tests; production has one
                    _clients.clear()
                _clients[config] = client
    return client


def _provider_error(action: str, exc: stripe.StripeError) -> ProviderError:
    status = exc.http_status or 0
    code = getattr(exc, "code", None) or ""
    said = f"{REFUSALS[code]}: " if code in REFUSALS else ""
    message = f"stripe {action}: {status or 'no answer'} {code} {said}{exc.user_message or exc}".strip()
    transient = (
        isinstance(
            exc, stripe.APIConnectionError | stripe.RateLimitError | stripe.AuthenticationError | stripe.PermissionError
        )
        or status in (0, 401, 403, 409, 429)
        or status >= 500
    )
    return ProviderError(message[:1000], transient=transient, code=code)


def _call(action: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except stripe.StripeError as exc:
        raise _provider_error(action, exc) from exc


def _outcome_unknown(exc: stripe.StripeError) -> bool:
    """A 5xx or no answer at all: Stripe may have done the work."""
    return isinstance(exc, stripe.APIConnectionError) or (exc.http_status or 0) >= 500


def _replayed(exc: stripe.StripeError) -> bool:
    headers = exc.headers or {}
    return any(
        name.lower() == "idempotent-replayed" and str(value).lower() == "true" for name, value in headers.items()
    )


def _create_once(action: str, key: str, create: Callable[[str], T], find: Callable[[], T | None]) -> T:
    """Creates a Stripe object for the command keyed `key`, at most once (see the module docstring)."""
    for n in range(MAX_SUCCESSOR_KEYS + 1):
        try:
            return create(key if n == 0 else f"{key}-retry{n}")
        except stripe.StripeError as exc:
            if not _outcome_unknown(exc):
                raise _provider_error(action, exc) from exc
            found = _call(f"look up after {action}", find)
            if found is not None:
                return found
            if not _replayed(exc):
                # This key's request is fresh (or unanswered, maybe still running): try it again later.
                raise _provider_error(action, exc) from exc
    raise ProviderError(
        f"stripe {action}: {MAX_SUCCESSOR_KEYS + 1} keys answered 5xx and nothing was created; left to the bus",
        transient=True,
    )


def _ours(objects: Any, key: str) -> Any:
    for obj in objects:
        if (obj.to_dict().get("metadata") or {}).get("idempotency_key") == key:
            return obj
    return None


class StripeProvider(PaymentProvider):
    name = "stripe"
    destination_kind = "stripe_account"

    def create_payment(self, *, escrow_id: str, amount_minor: int, currency: str, idempotency_key: str) -> PaymentSetup:
        client = _client()
        # Search is Stripe's only server-side filter on metadata (it can lag behind a create by seconds;
        # an extra PaymentIntent nobody pays moves no money, unlike a second transfer or refund).
        intent = _create_once(
            "create payment intent",
            idempotency_key,
            lambda key: client.v1.payment_intents.create(
                params={
                    "amount": amount_minor,
                    "currency": currency.lower(),
                    "capture_method": "automatic",
                    "automatic_payment_methods": {"enabled": True},
                    "metadata": {"escrow_id": escrow_id, "idempotency_key": idempotency_key},
                    "transfer_group": escrow_id,
                },
                options={"idempotency_key": key},
            ),
            lambda: _ours(
                client.v1.payment_intents.search(
                    params={"query": f"metadata['escrow_id']:'{escrow_id}'", "limit": 100}
                ).auto_paging_iter(),
                idempotency_key,
            ),
        )
        return PaymentSetup(provider_payment_id=intent.id, client_secret=intent.client_secret or "", raw=_kept(intent))

    def create_transfer(
        self,
        *,
        escrow_id: str,
        destination: str,
        amount_minor: int,
        currency: str,
        source_payment_id: str,
        idempotency_key: str,
    ) -> MoneyMovement:
        client = _client()
        # source_transaction names the charge, and the PaymentIntent is the authority on which one.
        intent = _call("read payment intent", lambda: client.v1.payment_intents.retrieve(source_payment_id))
        charge = intent.latest_charge
        charge_id = charge if isinstance(charge, str) else getattr(charge, "id", None)
        if intent.status != "succeeded" or not charge_id:
            raise ProviderError(f"payment intent {source_payment_id} has no succeeded charge", transient=True)
        transfer = _create_once(
            "create transfer",
            idempotency_key,
            lambda key: client.v1.transfers.create(
                params={
                    "amount": amount_minor,
                    "currency": currency.lower(),
                    "destination": destination,
                    "source_transaction": charge_id,
                    "transfer_group": escrow_id,
                    "metadata": {"escrow_id": escrow_id, "idempotency_key": idempotency_key},
                },
                options={"idempotency_key": key},
            ),
            lambda: _ours(
                client.v1.transfers.list(params={"transfer_group": escrow_id, "limit": 100}).auto_paging_iter(),
                idempotency_key,
            ),
        )
        return MoneyMovement(provider_id=transfer.id, raw=_kept(transfer))

    def create_refund(
        self,
        *,
        escrow_id: str,
        payment_id: str,
        destination: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
    ) -> MoneyMovement:
        client = _client()
        refund = _create_once(
            "create refund",
            idempotency_key,
            lambda key: client.v1.refunds.create(
                params={
                    "payment_intent": payment_id,
                    "amount": amount_minor,
                    "metadata": {"escrow_id": escrow_id, "idempotency_key": idempotency_key},
                },
                options={"idempotency_key": key},
            ),
            lambda: _ours(
                client.v1.refunds.list(params={"payment_intent": payment_id, "limit": 100}).auto_paging_iter(),
                idempotency_key,
            ),
        )
        return MoneyMovement(provider_id=refund.id, raw=_kept(refund))

    def verify_connected_account(self, *, account_id: str) -> None:
        """A seller's connected account must exist on our platform and be able to receive transfers
        (payouts_enabled, transfers capability active). Raises DestinationRefused otherwise."""
        try:
            account = _client().v1.accounts.retrieve(account_id).to_dict()
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404 or getattr(exc, "code", None) == "resource_missing":
                raise DestinationRefused(f"no connected account {account_id} on this platform") from None
            raise DestinationRefused(f"Stripe refused the account: {exc.user_message}") from None
        except stripe.StripeError as exc:
            raise DestinationRefused(
                f"Stripe could not be asked about the account ({exc.http_status or 'no answer'}); try again",
                status=503,
            ) from None
        capabilities = account.get("capabilities") or {}
        if not account.get("payouts_enabled") or capabilities.get("transfers") != "active":
            raise DestinationRefused(
                f"connected account {account_id} cannot receive transfers yet (payouts_enabled "
                f"{bool(account.get('payouts_enabled'))}, transfers {capabilities.get('transfers') or 'none'}): "
                "finish Stripe onboarding, then register it again",
                status=409,
            )

    def verify_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        return stripe_signature.verify(body=body, headers=headers, secret=settings.STRIPE_WEBHOOK_SECRET)

    def refresh_event(self, event: ProviderEvent, *, known: KnownObjects) -> ProviderEvent:
        """Webhooks arrive late and out of order, so for objects of ours whose state decides money (and
        for our hosted checkout sessions and Connect accounts) the event's snapshot is replaced by what
        Stripe says now. Objects we do not know are left alone (and then ignored): no call is made on a
        stranger's behalf."""
        obj_id = event.object.get("id")

        def ours(kinds: tuple[str, ...] = ()) -> bool:
            found = known(obj_id) if isinstance(obj_id, str) else None
            return found is not None and (not kinds or found.kind in kinds)

        client = _client()
        if event.type in SESSION_EVENTS:
            if not ours(("checkout_session",)):
                return event
            session = _call("read checkout session", lambda: client.v1.checkout.sessions.retrieve(str(obj_id)))
            return ProviderEvent(id=event.id, type=event.type, object=_kept(session, SESSION_FIELDS), raw=event.raw)
        if event.type in ACCOUNT_EVENTS:
            if not ours(("connected_account",)):
                return event
            account = _call("read connected account", lambda: client.v1.accounts.retrieve(str(obj_id)))
            return ProviderEvent(id=event.id, type=event.type, object=_kept(account, ACCOUNT_FIELDS), raw=event.raw)
        if event.type not in REREAD_TYPES:
            return event
        kind = event.object.get("object")
        if kind == "payment_intent" and ours():
            intent = _call("read payment intent", lambda: client.v1.payment_intents.retrieve(str(obj_id)))
            return ProviderEvent(id=event.id, type=event.type, object=_kept(intent), raw=event.raw)
        if kind == "refund" and ours():
            refund = _call("read refund", lambda: client.v1.refunds.retrieve(str(obj_id)))
            return ProviderEvent(id=event.id, type=event.type, object=_kept(refund), raw=event.raw)
        if kind == "charge":
            intent_id = event.object.get("payment_intent")
            if isinstance(intent_id, str) and known(intent_id) is not None:
                page = _call("list refunds", lambda: client.v1.refunds.list(params={"payment_intent": intent_id}))
                refunds = [_kept(refund) for refund in page.data]
                return ProviderEvent(
                    id=event.id, type=event.type, object={**event.object, "refunds": {"data": refunds}}, raw=event.raw
                )
        return event
