"""Sandbox webhooks through `webhooks.webhook_receive` (the sandbox has no public webhook URL): signed with
Stripe's scheme and the sandbox secret, stored raw, verified, deduped, processed once."""

from __future__ import annotations

import json
import time
import uuid
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from apps.escrow.models import Escrow
from apps.outbox.models import OutboxMessage
from apps.payments import webhooks
from apps.payments.models import PaymentArtifact, WebhookEvent
from apps.payments.providers import sandbox, stripe_signature
from apps.payments.public import sandbox_pay
from proto.escrow import v1 as escrow_v1
from tests.escrow import given
from tests.helpers import as_staff

SANDBOX = "sandbox"


def payment_of(escrow_id: uuid.UUID) -> PaymentArtifact:
    return PaymentArtifact.objects.get(escrow_id=escrow_id, kind=PaymentArtifact.Kind.PAYMENT)


def succeeded_object(escrow_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
    artifact = payment_of(escrow_id)
    return {**artifact.raw, "status": "succeeded", "amount_received": artifact.amount_minor, **changes}


def event_body(event_type: str, obj: dict[str, Any], *, event_id: str = "evt_test_1") -> str:
    return json.dumps(
        {"id": event_id, "object": "event", "type": event_type, "created": int(time.time()), "data": {"object": obj}}
    )


def signed(body: str, *, secret: str | None = None, timestamp: int | None = None) -> dict[str, str]:
    return {
        "Stripe-Signature": stripe_signature.sign(
            body=body, secret=secret or sandbox.webhook_secret(), timestamp=timestamp
        )
    }


def receive(body: str | bytes, headers: dict[str, str]) -> webhooks.WebhookOutcome:
    raw = body.encode() if isinstance(body, str) else body
    return webhooks.webhook_receive(provider=SANDBOX, body=raw, headers=headers)


def payments_events() -> list[str]:
    return list(OutboxMessage.objects.filter(topic="payments.events.v1").values_list("type", flat=True))


@pytest.fixture
def awaiting(buyer: Any, seller: Any) -> uuid.UUID:
    """An escrow whose sandbox PaymentIntent exists (created through the bus) and is not paid yet."""
    escrow_id = given.create(buyer=buyer, seller=seller)
    assert payment_of(escrow_id).status == PaymentArtifact.Status.PENDING
    return escrow_id


def test_a_correctly_signed_payment_event_holds_the_funds(awaiting: uuid.UUID) -> None:
    body = event_body("payment_intent.succeeded", succeeded_object(awaiting))

    outcome = receive(body, signed(body))

    assert (outcome.status, outcome.http_status) == ("processed", 200)
    record = WebhookEvent.objects.get(pk=outcome.webhook_id)
    assert (record.status, record.provider_event_id, record.event_type) == (
        "processed",
        "evt_test_1",
        "payment_intent.succeeded",
    )
    assert record.body == body  # stored raw
    assert payment_of(awaiting).status == PaymentArtifact.Status.SUCCEEDED
    assert given.snapshot(awaiting)["state"] == "FUNDS_HELD"
    assert "payments.v1.PaymentSucceeded" in payments_events()


@pytest.mark.parametrize(
    "attack",
    [
        "forged-body",
        "forged-signature",
        "missing-header",
        "stale-timestamp",
        "other-secret",
        "not-json",
        "signed-not-json",
        "signed-not-an-event",
    ],
)
def test_rejected_webhooks_are_stored_as_rejected_and_change_nothing(attack: str, awaiting: uuid.UUID) -> None:
    body = event_body("payment_intent.succeeded", succeeded_object(awaiting))
    headers = signed(body)
    if attack == "forged-body":
        body = body.replace(f'"amount_received": {given.AMOUNT}', '"amount_received": 1')
        assert '"amount_received": 1}' in body
    elif attack == "forged-signature":
        timestamp = headers["Stripe-Signature"].split(",")[0]
        headers = {"Stripe-Signature": f"{timestamp},v1={'0' * 64}"}
    elif attack == "missing-header":
        headers = {}
    elif attack == "stale-timestamp":
        headers = signed(body, timestamp=int(time.time()) - 301)
    elif attack == "other-secret":
        headers = signed(body, secret="whsec_someone_else")
    elif attack == "not-json":
        body = "<xml>payment_intent.succeeded</xml>"
    elif attack == "signed-not-json":
        body = "payment_intent.succeeded " + succeeded_object(awaiting)["id"]
        headers = signed(body)
    elif attack == "signed-not-an-event":
        body = json.dumps({"id": "evt_x", "type": "payment_intent.succeeded", "data": "everything"})
        headers = signed(body)
    before, outbox = given.snapshot(awaiting), OutboxMessage.objects.count()

    outcome = receive(body, headers)

    assert (outcome.status, outcome.http_status) == ("rejected", 400)
    record = WebhookEvent.objects.get(pk=outcome.webhook_id)
    assert record.status == "rejected" and record.error and record.provider_event_id == ""
    assert given.snapshot(awaiting) == before
    assert OutboxMessage.objects.count() == outbox
    assert payment_of(awaiting).status == PaymentArtifact.Status.PENDING


def test_oversized_body_is_rejected_stored_truncated_and_changes_nothing(awaiting: uuid.UUID) -> None:
    obj = succeeded_object(awaiting, description="x" * webhooks.MAX_BODY_BYTES)
    body = event_body("payment_intent.succeeded", obj)
    before, outbox = given.snapshot(awaiting), OutboxMessage.objects.count()

    # correctly signed, still refused: the size limit comes before any parsing
    outcome = receive(body, signed(body))

    assert (outcome.status, outcome.http_status) == ("rejected", 413)
    record = WebhookEvent.objects.get(pk=outcome.webhook_id)
    assert record.status == "rejected" and "byte limit" in record.error
    assert len(record.body) == webhooks.REJECTED_BODY_KEPT_BYTES and body.startswith(record.body)
    assert given.snapshot(awaiting) == before
    assert OutboxMessage.objects.count() == outbox
    assert payment_of(awaiting).status == PaymentArtifact.Status.PENDING


def test_a_webhook_for_a_provider_that_is_not_enabled_is_not_stored(transactional_db: None) -> None:
    outcome = webhooks.webhook_receive(provider="nonesuch", body=b"{}", headers={})
    assert (outcome.status, outcome.http_status, outcome.webhook_id) == ("rejected", 404, None)
    assert not WebhookEvent.objects.exists()


def test_the_same_event_twice_is_a_no_op(awaiting: uuid.UUID) -> None:
    body = event_body("payment_intent.succeeded", succeeded_object(awaiting))
    assert receive(body, signed(body)).status == "processed"
    after_first, outbox = given.snapshot(awaiting), OutboxMessage.objects.count()

    again = receive(body, signed(body))

    assert (again.status, again.http_status) == ("duplicate", 200)
    assert given.snapshot(awaiting) == after_first
    assert OutboxMessage.objects.count() == outbox
    assert Escrow.objects.get(pk=awaiting).received_minor == given.AMOUNT


def test_the_same_payment_under_a_new_event_id_is_not_counted_twice(awaiting: uuid.UUID) -> None:
    obj = succeeded_object(awaiting)
    first = event_body("payment_intent.succeeded", obj, event_id="evt_a")
    assert receive(first, signed(first)).status == "processed"
    outbox = OutboxMessage.objects.count()

    second = event_body("payment_intent.succeeded", obj, event_id="evt_b")
    outcome = receive(second, signed(second))

    assert (outcome.status, outcome.http_status) == ("ignored", 200)
    assert OutboxMessage.objects.count() == outbox
    assert Escrow.objects.get(pk=awaiting).received_minor == given.AMOUNT


def test_a_late_payment_failure_after_success_changes_nothing(awaiting: uuid.UUID) -> None:
    ok = event_body("payment_intent.succeeded", succeeded_object(awaiting), event_id="evt_ok")
    assert receive(ok, signed(ok)).status == "processed"
    before, outbox = given.snapshot(awaiting), OutboxMessage.objects.count()

    failed_obj = succeeded_object(
        awaiting, status="requires_payment_method", last_payment_error={"message": "card declined"}
    )
    late = event_body("payment_intent.payment_failed", failed_obj, event_id="evt_late")
    outcome = receive(late, signed(late))

    assert outcome.status == "ignored"
    assert given.snapshot(awaiting) == before and OutboxMessage.objects.count() == outbox
    assert payment_of(awaiting).status == PaymentArtifact.Status.SUCCEEDED


def test_refund_events_out_of_order_change_nothing_wrong(buyer: Any, seller: Any) -> None:
    # given an escrow refunded through the sandbox (its refund.updated succeeded already arrived)
    escrow_id = given.create(buyer=buyer, seller=seller)
    assert sandbox_pay(str(escrow_id)).status == "processed"
    given.send(escrow_v1.CancelEscrow(escrow_id=str(escrow_id), actor=given.user(seller), reason="out of stock"))
    assert given.snapshot(escrow_id)["state"] == "REFUNDED"
    refund = PaymentArtifact.objects.get(escrow_id=escrow_id, kind=PaymentArtifact.Kind.REFUND)
    before, outbox = given.snapshot(escrow_id), OutboxMessage.objects.count()

    # when the refund's earlier "created" (pending) and a contradicting "failed" arrive late
    for event_id, status in (("evt_created", "pending"), ("evt_failed", "failed")):
        body = event_body(
            "refund.updated" if status == "failed" else "refund.created",
            {**refund.raw, "status": status},
            event_id=event_id,
        )
        outcome = receive(body, signed(body))
        assert (outcome.status, outcome.http_status) == ("ignored", 200), status

    # then the refund stays succeeded, the escrow stays refunded, no RefundFailed is emitted
    assert given.snapshot(escrow_id) == before
    assert OutboxMessage.objects.count() == outbox
    refund.refresh_from_db()
    assert refund.status == PaymentArtifact.Status.SUCCEEDED
    assert "payments.v1.RefundFailed" not in payments_events()


def test_a_refund_update_before_the_refund_is_recorded_is_ignored(buyer: Any, seller: Any) -> None:
    escrow_id = given.create(buyer=buyer, seller=seller)
    body = event_body(
        "refund.updated",
        {
            "id": "re_sbx_not_ours_yet",
            "object": "refund",
            "status": "succeeded",
            "amount": given.AMOUNT,
            "currency": "usd",
        },
    )
    before, outbox = given.snapshot(escrow_id), OutboxMessage.objects.count()
    outcome = receive(body, signed(body))
    assert (outcome.status, outcome.http_status) == ("ignored", 200)
    assert given.snapshot(escrow_id) == before and OutboxMessage.objects.count() == outbox


def test_unknown_payment_intent_is_acknowledged_and_ignored(awaiting: uuid.UUID) -> None:
    body = event_body(
        "payment_intent.succeeded",
        {
            "id": "pi_sbx_unknown",
            "object": "payment_intent",
            "amount": 100,
            "amount_received": 100,
            "currency": "usd",
            "status": "succeeded",
        },
    )
    before, outbox = given.snapshot(awaiting), OutboxMessage.objects.count()

    outcome = receive(body, signed(body))

    assert (outcome.status, outcome.http_status) == ("ignored", 200)
    assert WebhookEvent.objects.get(pk=outcome.webhook_id).status == "ignored"
    assert given.snapshot(awaiting) == before and OutboxMessage.objects.count() == outbox


def test_unhandled_event_type_is_acknowledged_and_ignored(awaiting: uuid.UUID) -> None:
    body = event_body("customer.created", {"id": "cus_1", "object": "customer"})
    outcome = receive(body, signed(body))
    assert (outcome.status, outcome.http_status) == ("ignored", 200)


def test_a_malformed_but_signed_payment_fails_and_stays_failed_on_reprocess(awaiting: uuid.UUID) -> None:
    obj = succeeded_object(awaiting)
    del obj["amount_received"], obj["amount"]
    body = event_body("payment_intent.succeeded", obj)
    before = given.snapshot(awaiting)

    outcome = receive(body, signed(body))

    assert (outcome.status, outcome.http_status) == ("failed", 500)
    record = WebhookEvent.objects.get(pk=outcome.webhook_id)
    assert "ValueError" in record.error
    assert payment_of(awaiting).status == PaymentArtifact.Status.PENDING  # the transaction rolled back
    out = StringIO()
    call_command("reprocess_webhooks", *as_staff(), stdout=out)
    assert "failed" in out.getvalue()
    assert given.snapshot(awaiting) == before


@pytest.mark.parametrize("stored_as", ["failed", "received"])
def test_reprocess_webhooks_finishes_a_stored_one(stored_as: str, awaiting: uuid.UUID) -> None:
    # given a verified webhook whose processing never completed (an outage), stored long enough ago that its
    # signature is no longer fresh
    body = event_body("payment_intent.succeeded", succeeded_object(awaiting), event_id="evt_outage")
    headers = signed(body, timestamp=int(time.time()) - 3600)
    record = WebhookEvent.objects.create(
        provider=SANDBOX,
        body=body,
        headers=headers,
        status=stored_as,
        provider_event_id="evt_outage",
        event_type="payment_intent.succeeded",
    )
    WebhookEvent.objects.filter(pk=record.pk).update(received_at=record.received_at.replace(year=2000))
    assert given.snapshot(awaiting)["state"] == "AWAIT_FUNDS"

    out = StringIO()
    call_command("reprocess_webhooks", *as_staff(), stdout=out)

    assert "1 webhooks reprocessed" in out.getvalue()
    record.refresh_from_db()
    assert record.status == "processed"
    assert given.snapshot(awaiting)["state"] == "FUNDS_HELD"
    # and once processed, running it again is a no-op
    call_command("reprocess_webhooks", *as_staff(), stdout=StringIO())
    assert Escrow.objects.get(pk=awaiting).received_minor == given.AMOUNT


def test_reprocess_refuses_a_stale_record_that_was_never_verified(awaiting: uuid.UUID) -> None:
    body = event_body("payment_intent.succeeded", succeeded_object(awaiting), event_id="evt_never_verified")
    headers = signed(body, timestamp=int(time.time()) - 3600)
    record = WebhookEvent.objects.create(provider=SANDBOX, body=body, headers=headers, status="failed")

    out = StringIO()
    call_command("reprocess_webhooks", str(record.pk), *as_staff(), stdout=out)

    assert "error" in out.getvalue()
    assert given.snapshot(awaiting)["state"] == "AWAIT_FUNDS"
