"""Provider webhooks, in dj-stripe's order: store the raw request, verify its signature, dedupe on the
provider's event id, then process atomically. A failure is recorded with its error and answered 5xx so
the provider retries; `manage.py reprocess_webhooks` retries failed ones.

Webhooks arrive twice and out of order: each handler checks the artifact's current status, so a late
or repeated event changes nothing.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.payments import checkout, compliance, movements, onboarding, providers, services
from apps.payments.models import CheckoutSession, ConnectedAccount, PaymentArtifact, PaymentOrder, WebhookEvent
from apps.payments.providers.base import (
    KnownObject,
    KnownObjects,
    PaymentProvider,
    ProviderEvent,
    WebhookVerificationError,
)
from proto.payments import v1 as payments_v1

log = logging.getLogger(__name__)

KEPT_HEADERS = ("Stripe-Signature", "Content-Type", "User-Agent", "X-Circle-Signature", "X-Circle-Key-Id")
MAX_BODY_BYTES = 256 * 1024
REJECTED_BODY_KEPT_BYTES = 4 * 1024


@dataclass(frozen=True)
class WebhookOutcome:
    status: str  # one of WebhookEvent.Status
    http_status: int
    detail: str
    webhook_id: int | None = None


def _storable(raw: bytes) -> str:
    """Text PostgreSQL can store: it refuses NUL in text columns, so an unsigned body holding one would
    turn into a 500. A verifiable body never holds a raw NUL (JSON escapes it), so nothing is lost."""
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: _storable(str(headers[name]).encode()) for name in KEPT_HEADERS if name in headers}


def webhook_receive(*, provider: str, body: bytes, headers: Mapping[str, str]) -> WebhookOutcome:
    try:
        impl = providers.get(provider)
    except LookupError:
        return WebhookOutcome(WebhookEvent.Status.REJECTED, 404, f"provider {provider} is not enabled")
    if len(body) > MAX_BODY_BYTES:
        # Recorded like any other rejected request, but only its head: a flood of huge unsigned bodies
        # must not fill the database.
        record = WebhookEvent.objects.create(
            provider=provider,
            body=_storable(body[:REJECTED_BODY_KEPT_BYTES]),
            headers=_kept_headers(headers),
            status=WebhookEvent.Status.REJECTED,
            error=f"body of {len(body)} bytes is over the {MAX_BODY_BYTES} byte limit",
            processed_at=timezone.now(),
        )
        return WebhookOutcome(WebhookEvent.Status.REJECTED, 413, "webhook body too large", record.pk)
    record = WebhookEvent.objects.create(
        provider=provider,
        body=_storable(body),
        headers=_kept_headers(headers),
    )
    try:
        event = impl.verify_webhook(body=body, headers=headers)
    except WebhookVerificationError as exc:
        _finish(record, WebhookEvent.Status.REJECTED, error=str(exc))
        log.warning("webhook rejected", extra={"provider": provider, "webhook_id": record.pk, "error": str(exc)})
        return WebhookOutcome(WebhookEvent.Status.REJECTED, 400, f"signature verification failed: {exc}", record.pk)
    record.provider_event_id = event.id[:255]
    record.event_type = event.type[:100]
    record.save(update_fields=["provider_event_id", "event_type"])
    return process(record, event)


def process(record: WebhookEvent, event: ProviderEvent) -> WebhookOutcome:
    if (
        WebhookEvent.objects.filter(
            provider=record.provider, provider_event_id=event.id, status=WebhookEvent.Status.PROCESSED
        )
        .exclude(pk=record.pk)
        .exists()
    ):
        _finish(record, WebhookEvent.Status.DUPLICATE)
        return WebhookOutcome(WebhookEvent.Status.DUPLICATE, 200, "duplicate event, already processed", record.pk)
    try:
        # Outside the transaction: a provider may re-read the object from its API (the custodian names the
        # event in our terms), and a deposit's sender is screened, before anything is trusted.
        impl = providers.get(record.provider)
        known = known_objects(record.provider)
        event = _deposit_screened(impl, impl.refresh_event(event, known=known), known)
    except Exception as exc:  # noqa: BLE001 - provider unreachable: recorded, answered 5xx, retried
        _finish(record, WebhookEvent.Status.FAILED, error="".join(traceback.format_exception(exc))[-8000:])
        log.warning("webhook re-read failed", extra={"provider": record.provider, "webhook_id": record.pk})
        return WebhookOutcome(WebhookEvent.Status.FAILED, 503, "provider re-read failed; retry later", record.pk)
    handler = HANDLERS.get(event.type)
    if handler is None:
        _finish(record, WebhookEvent.Status.IGNORED, error=f"event type {event.type} is not handled")
        return WebhookOutcome(WebhookEvent.Status.IGNORED, 200, "event type not handled", record.pk)
    try:
        with transaction.atomic():
            applied = handler(record, event)
            record.status = WebhookEvent.Status.PROCESSED if applied else WebhookEvent.Status.IGNORED
            record.processed_at = timezone.now()
            record.save(update_fields=["status", "processed_at"])
    except IntegrityError:
        # A concurrent delivery of the same event won the race (the processed-once constraint).
        _finish(record, WebhookEvent.Status.DUPLICATE)
        return WebhookOutcome(WebhookEvent.Status.DUPLICATE, 200, "duplicate event, already processed", record.pk)
    except Exception as exc:  # noqa: BLE001 - recorded and answered 5xx so the provider retries
        _finish(record, WebhookEvent.Status.FAILED, error="".join(traceback.format_exception(exc))[-8000:])
        log.exception("webhook processing failed", extra={"provider": record.provider, "webhook_id": record.pk})
        return WebhookOutcome(WebhookEvent.Status.FAILED, 500, "processing failed; retry later", record.pk)
    if not applied:
        return WebhookOutcome(
            WebhookEvent.Status.IGNORED, 200, "not about a known object, or nothing changed", record.pk
        )
    return WebhookOutcome(WebhookEvent.Status.PROCESSED, 200, "processed", record.pk)


def reprocess(record: WebhookEvent) -> WebhookOutcome:
    """Runs a stored webhook again (failed, or received but never finished). Verifies it again first."""
    impl = providers.get(record.provider)
    try:
        event = impl.verify_webhook(body=record.body.encode(), headers=record.headers)
    except WebhookVerificationError:
        # The signature may be stale by now; the body is the one we stored after verifying it.
        if not record.provider_event_id:
            raise
        import json

        raw = json.loads(record.body)
        event = ProviderEvent(id=raw["id"], type=raw["type"], object=raw["data"]["object"], raw=raw)
    return process(record, event)


def known_objects(provider: str) -> KnownObjects:
    """Which provider objects are ours (what a provider needs before it re-reads a webhook's object)."""

    def find(object_id: str) -> KnownObject | None:
        artifact = (
            PaymentArtifact.objects.filter(provider=provider, provider_id=object_id)
            .values_list("kind", "escrow_id")
            .first()
        )
        if artifact is not None:
            return KnownObject(kind=artifact[0], escrow_id=str(artifact[1]))
        session = CheckoutSession.objects.filter(session_id=object_id).values_list("escrow_id", flat=True).first()
        if session is not None:
            return KnownObject(kind="checkout_session", escrow_id=str(session))
        if ConnectedAccount.objects.filter(account_id=object_id).exists():
            return KnownObject(kind="connected_account")
        return None

    return find


def _deposit_screened(impl: PaymentProvider, event: ProviderEvent, known: KnownObjects) -> ProviderEvent:
    """On a rail that screens wallets, a deposit is counted only once its sender passed screening; a
    blocked one becomes `wallet.blocked` (held for compliance, not counted)."""
    sender = event.object.get("source_address")
    if not impl.screens_wallets or event.type != "payment_intent.succeeded" or not isinstance(sender, str):
        return event
    payment = known(str(event.object.get("id")))
    if payment is None:
        return event
    verdict = compliance.wallet_screen(
        address=sender, purpose="deposit", escrow_id=payment.escrow_id, chain=impl.screening_chain
    )
    if verdict.allowed:
        return event
    return ProviderEvent(
        id=event.id, type="wallet.blocked", object={**event.object, "reason": verdict.reason}, raw=event.raw
    )


def _finish(record: WebhookEvent, status: str, *, error: str = "") -> None:
    record.status = status
    record.error = error
    record.processed_at = timezone.now()
    record.save(update_fields=["status", "error", "processed_at"])


# --- one handler per provider event type; each returns whether it changed anything ----------------------


def _locked_artifact(provider: str, kind: str, provider_id: Any) -> tuple[PaymentOrder, PaymentArtifact] | None:
    if not isinstance(provider_id, str):
        return None
    found = PaymentArtifact.objects.filter(provider=provider, kind=kind, provider_id=provider_id).first()
    if found is None:
        return None
    order = services.lock_order(str(found.escrow_id))
    if order is None:
        return None
    return order, PaymentArtifact.objects.select_for_update().get(pk=found.pk)


def on_payment_succeeded(record: WebhookEvent, event: ProviderEvent) -> bool:
    found = _locked_artifact(record.provider, PaymentArtifact.Kind.PAYMENT, event.object.get("id"))
    if found is None:
        return False
    order, artifact = found
    # A custodian deposit wallet can receive more than one on-chain deposit; each is its own payment.
    deposit = event.object.get("transaction")
    if artifact.status == PaymentArtifact.Status.SUCCEEDED:
        if isinstance(deposit, str) and deposit not in artifact.raw.get("deposits", []):
            return movements.deposit_accept(
                order=order, artifact=artifact, deposit=deposit, obj=event.object, verified=(record, event)
            )
        return False
    if event.object.get("status", "succeeded") != "succeeded":
        return False  # the re-read object is not (or no longer) succeeded: trust it over the event
    amount = movements.amount_of(event.object, "amount_received", "amount")
    currency = event.object.get("currency")
    if amount is None or not isinstance(currency, str):
        raise ValueError("payment_intent without a valid amount or currency")
    artifact.status = PaymentArtifact.Status.SUCCEEDED
    if isinstance(deposit, str):
        artifact.raw = {**artifact.raw, "deposits": [deposit]}
    artifact.save(update_fields=["status", "raw", "updated_at"])
    movements.webhook_verified(record, event, order, artifact.provider_id)
    # The amount that actually arrived: the escrow decides whether it matches (and goes to ops if not).
    services.emit(
        order,
        payments_v1.PaymentSucceeded(
            escrow_id=str(order.escrow_id),
            amount=services.money(amount, currency.upper()),
            provider=record.provider,
            provider_payment_id=artifact.provider_id,
        ),
        fact=f"{record.provider}:{artifact.provider_id}:succeeded",
    )
    return True


def on_payment_failed(record: WebhookEvent, event: ProviderEvent) -> bool:
    found = _locked_artifact(record.provider, PaymentArtifact.Kind.PAYMENT, event.object.get("id"))
    if found is None:
        return False
    order, artifact = found
    if artifact.status != PaymentArtifact.Status.PENDING or event.object.get("status") == "succeeded":
        return False  # a late failure after success (or a re-read showing success) changes nothing
    error = event.object.get("last_payment_error") or {}
    reason = str(error.get("message") or error.get("code") or "payment failed")[:1000]
    # The buyer may try again with the same PaymentIntent: the artifact stays pending.
    artifact.failure_reason = reason
    artifact.save(update_fields=["failure_reason", "updated_at"])
    movements.webhook_verified(record, event, order, artifact.provider_id)
    services.emit(
        order,
        payments_v1.PaymentFailed(
            escrow_id=str(order.escrow_id),
            provider=record.provider,
            provider_payment_id=artifact.provider_id,
            reason=reason,
        ),
        fact=f"{record.provider}:{event.id}",
    )
    return True


def on_transfer_created(record: WebhookEvent, event: ProviderEvent) -> bool:
    found = _locked_artifact(record.provider, PaymentArtifact.Kind.TRANSFER, event.object.get("id"))
    if found is None:
        return False
    order, artifact = found
    if artifact.status != PaymentArtifact.Status.PENDING:
        return False
    artifact.status = PaymentArtifact.Status.SUCCEEDED
    artifact.save(update_fields=["status", "updated_at"])
    movements.webhook_verified(record, event, order, artifact.provider_id)
    services.emit(
        order,
        payments_v1.TransferSucceeded(
            escrow_id=str(order.escrow_id),
            amount=services.money(artifact.amount_minor, artifact.currency),
            fee=services.money(artifact.fee_minor, artifact.currency),
            provider=record.provider,
            provider_transfer_id=artifact.provider_id,
        ),
        fact=f"{record.provider}:{artifact.provider_id}:succeeded",
    )
    return True


def on_transfer_reversed(record: WebhookEvent, event: ProviderEvent) -> bool:
    found = _locked_artifact(record.provider, PaymentArtifact.Kind.TRANSFER, event.object.get("id"))
    if found is None:
        return False
    order, artifact = found
    if artifact.status == PaymentArtifact.Status.FAILED:
        return False
    artifact.status = PaymentArtifact.Status.FAILED
    artifact.failure_reason = "transfer reversed"
    artifact.save(update_fields=["status", "failure_reason", "updated_at"])
    movements.webhook_verified(record, event, order, artifact.provider_id)
    movements.transfer_failed(
        order,
        amount_minor=artifact.amount_minor,
        currency=artifact.currency,
        provider=record.provider,
        provider_transfer_id=artifact.provider_id,
        reason="transfer reversed",
        fact=f"{record.provider}:{artifact.provider_id}:reversed",
    )
    return True


def on_refund_updated(record: WebhookEvent, event: ProviderEvent) -> bool:
    status = event.object.get("status")
    if status not in ("succeeded", "failed", "canceled"):
        return False
    found = _locked_artifact(record.provider, PaymentArtifact.Kind.REFUND, event.object.get("id"))
    if found is None:
        return False
    order, artifact = found
    if artifact.status != PaymentArtifact.Status.PENDING:
        return False
    movements.webhook_verified(record, event, order, str(event.object.get("payment_intent") or artifact.provider_id))
    if status == "succeeded":
        artifact.status = PaymentArtifact.Status.SUCCEEDED
        message: Any = payments_v1.RefundSucceeded(
            escrow_id=str(order.escrow_id),
            amount=services.money(artifact.amount_minor, artifact.currency),
            provider=record.provider,
            provider_refund_id=artifact.provider_id,
        )
    else:
        artifact.status = PaymentArtifact.Status.FAILED
        artifact.failure_reason = str(event.object.get("failure_reason") or status)[:1000]
        message = payments_v1.RefundFailed(
            escrow_id=str(order.escrow_id),
            amount=services.money(artifact.amount_minor, artifact.currency),
            provider=record.provider,
            provider_refund_id=artifact.provider_id,
            reason=artifact.failure_reason,
        )
    artifact.save(update_fields=["status", "failure_reason", "updated_at"])
    services.emit(order, message, fact=f"{record.provider}:{artifact.provider_id}:{artifact.status}")
    return True


def on_charge_refunded(record: WebhookEvent, event: ProviderEvent) -> bool:
    """A charge's refunds (the provider lists them, re-read): each of ours settles like refund.updated."""
    refunds = (event.object.get("refunds") or {}).get("data") or []
    applied = False
    for refund in refunds:
        if isinstance(refund, dict) and refund.get("object", "refund") == "refund":
            # One verified-webhook message per refund settled: its id names the refund too.
            nested = ProviderEvent(id=f"{event.id}:{refund.get('id')}", type=event.type, object=refund, raw=event.raw)
            applied = on_refund_updated(record, nested) or applied
    return applied


def on_wallet_blocked(record: WebhookEvent, event: ProviderEvent) -> bool:
    """A deposit from a wallet that screening blocked: the funds are not accepted for the escrow (no
    PaymentSucceeded) and the block is announced for compliance; the payment stays pending."""
    found = _locked_artifact(record.provider, PaymentArtifact.Kind.PAYMENT, event.object.get("id"))
    if found is None:
        return False
    order, artifact = found
    reason = str(event.object.get("reason") or "screening blocked")[:1000]
    artifact.failure_reason = f"deposit {event.object.get('transaction')} blocked: {reason}"[:1000]
    # Kept so that compliance can clear it later (ResolveComplianceHold LIFT) and it is then counted.
    blocked = {
        **artifact.raw.get("blocked", {}),
        str(event.object.get("transaction")): {
            key: event.object.get(key) for key in ("amount_received", "currency", "source_address")
        },
    }
    artifact.raw = {**artifact.raw, "blocked": blocked}
    artifact.save(update_fields=["failure_reason", "raw", "updated_at"])
    movements.webhook_verified(record, event, order, artifact.provider_id)
    services.emit(
        order,
        payments_v1.WalletScreened(
            escrow_id=str(order.escrow_id),
            allowed=False,
            reason=reason,
        ),
        fact=f"{record.provider}:{event.object.get('transaction')}:blocked",
    )
    return True


def on_dispute_created(record: WebhookEvent, event: ProviderEvent) -> bool:
    found = _locked_artifact(record.provider, PaymentArtifact.Kind.PAYMENT, event.object.get("payment_intent"))
    if found is None:
        return False
    order, artifact = found
    amount = movements.amount_of(event.object, "amount") or 0
    movements.webhook_verified(record, event, order, artifact.provider_id)
    services.emit(
        order,
        payments_v1.ChargebackOpened(
            escrow_id=str(order.escrow_id),
            amount=services.money(amount, artifact.currency),
            provider=record.provider,
            provider_dispute_id=str(event.object.get("id")),
            reason=str(event.object.get("reason") or "")[:200],
        ),
        fact=f"{record.provider}:{event.object.get('id')}:dispute",
    )
    return True


HANDLERS: dict[str, Callable[[WebhookEvent, ProviderEvent], bool]] = {
    "payment_intent.succeeded": on_payment_succeeded,
    "payment_intent.payment_failed": on_payment_failed,
    "transfer.created": on_transfer_created,
    "transfer.reversed": on_transfer_reversed,
    "refund.created": on_refund_updated,
    "refund.updated": on_refund_updated,
    "charge.refunded": on_charge_refunded,
    "wallet.blocked": on_wallet_blocked,
    "charge.dispute.created": on_dispute_created,
    # Hosted checkout sessions and Connect onboarding (apps/payments/checkout.py, onboarding.py).
    **checkout.WEBHOOK_HANDLERS,
    **onboarding.WEBHOOK_HANDLERS,
}
