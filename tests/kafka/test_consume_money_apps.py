"""Every app can be split out: escrow and payments consumed from the broker (`consume escrow`, `consume
payments`), with Stripe faked on loopback. A payments consumer SIGKILLed while its transfer call is in
flight (Stripe did the work, nothing was committed) is replaced by another; the message is delivered again
and the provider call repeats under the same idempotency key: one transfer, one payment intent, one
effect of every message, and the trade ends RELEASED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apps.escrow.models import Escrow
from apps.outbox.kafka.consumer import AppConsumer
from apps.outbox.kafka.relay import OutboxRelay
from apps.outbox.models import OutboxMessage, ProcessedMessage
from tests.fakes.stripe_server import WEBHOOK_SECRET, signed_event
from tests.helpers import act, create_escrow
from tests.kafka.broker import GROUP_TIMINGS
from tests.payments.support import assert_money_invariant, post_webhook
from tests.reliability.servers import ROOT, database_url

pytestmark = [pytest.mark.kafka, pytest.mark.postgres_only, pytest.mark.timeout(300)]

SELLER_ACCOUNT = "acct_1SellerFake000001"


def _until(condition: Callable[[], Any], what: str, limit_seconds: float = 90.0) -> Any:
    """A bound on something that must happen, not a speed expectation."""
    deadline = time.monotonic() + limit_seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


class PaymentsConsumer:
    """`manage.py consume payments` in its own process, against the live-rail fake."""

    def __init__(self, kafka: str, group: str, stripe_base: str, log: Path) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(application_name="escrow-test-consume-payments"),
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "KAFKA_ENABLE_IDEMPOTENCE": "0",
            "LOG_LEVEL": "WARNING",
            "KAFKA_SESSION_TIMEOUT_MS": str(GROUP_TIMINGS["session_timeout_ms"]),
            "KAFKA_HEARTBEAT_INTERVAL_MS": str(GROUP_TIMINGS["heartbeat_interval_ms"]),
            "BUS_OUTBOX_SUBSCRIBERS": "projections,notifications",
            "PAYMENTS_PROVIDER": "live",
            "STRIPE_SECRET_KEY": "sk_test_fake",
            "STRIPE_API_BASE": stripe_base,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_TIMEOUT_SECONDS": "30",
        }
        self.log = log
        self._out = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "consume", "payments", "--group", group],
            cwd=ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._out.close()

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._out.close()
        return self.log.read_text(errors="replace")


def test_escrow_and_payments_consumed_from_the_broker_survive_a_payments_kill_mid_call(
    kafka, fresh_group, settings, api_client, buyer, seller, fake_stripe, tmp_path
):
    settings.BUS_OUTBOX_SUBSCRIBERS = ["projections", "notifications"]  # escrow and payments: from Kafka
    escrow_group, payments_group = fresh_group("escrow"), fresh_group("payments")
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    fake_stripe.accounts.add(SELLER_ACCOUNT)
    assert (
        as_seller.put("/api/v1/payout-destination", {"stripe_account_id": SELLER_ACCOUNT}, format="json").status_code
        == 200
    )
    escrow_stats = {"applied": 0, "dead_lettered": 0}

    def relay_and_consume_escrow() -> None:
        OutboxRelay(servers=kafka).run(once=True)
        stats = AppConsumer(app="escrow", group_id=escrow_group).run(until_caught_up=True)
        escrow_stats["applied"] += stats.applied
        escrow_stats["dead_lettered"] += stats.dead_lettered

    def state() -> str:
        relay_and_consume_escrow()
        return Escrow.objects.get(pk=escrow_id).state

    consumer = PaymentsConsumer(kafka, payments_group, fake_stripe.api_base, tmp_path / "payments-1.log")
    try:
        # Given: an escrow funded through the live rail, its payment intent made by the payments consumer.
        escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
        intent = _until(
            lambda: (
                relay_and_consume_escrow(),
                [pi for pi in fake_stripe.of_kind("payment_intent") if pi["metadata"].get("escrow_id") == escrow_id],
            )[1],
            "the payments consumer created the payment intent",
        )[0]
        paid = fake_stripe.buyer_pays(intent["id"])
        assert post_webhook(as_buyer, "stripe", *signed_event("payment_intent.succeeded", paid)).status_code == 200
        _until(lambda: state() == "FUNDS_HELD", "the escrow consumer held the funds")
        assert act(as_seller, escrow_id, "deliver").status_code == 202
        assert act(as_buyer, escrow_id, "release").status_code == 202
        transfer_command = OutboxMessage.objects.get(aggregate_id=escrow_id, type__endswith="TransferToSeller")

        # When: the payments consumer is killed while Stripe is doing the transfer (answer held back).
        fake_stripe.delay_next("/v1/transfers", 3)
        OutboxRelay(servers=kafka).run(once=True)
        _until(lambda: fake_stripe.of_kind("transfer"), "the transfer call reached Stripe", 60)
        consumer.kill()
        assert not ProcessedMessage.objects.filter(subscriber="payments", event_id=transfer_command.event_id).exists()

        # Then: another payments consumer takes the message again and finishes it, under the same key.
        consumer = PaymentsConsumer(kafka, payments_group, fake_stripe.api_base, tmp_path / "payments-2.log")
        _until(
            lambda: ProcessedMessage.objects.filter(subscriber="payments", event_id=transfer_command.event_id).exists(),
            "the second consumer applied the transfer command",
        )
        [transfer] = fake_stripe.of_kind("transfer")
        assert post_webhook(as_buyer, "stripe", *signed_event("transfer.created", transfer)).status_code == 200
        _until(lambda: state() == "RELEASED", "the escrow consumer released the escrow")
    finally:
        output = consumer.stop()

    calls = [r for r in fake_stripe.requests if r.method == "POST" and r.path == "/v1/transfers"]
    assert len(calls) == 2, calls  # the killed attempt and the redelivery
    assert len({call.idempotency_key for call in calls}) == 1
    assert len(fake_stripe.of_kind("transfer")) == 1 and len(fake_stripe.of_kind("payment_intent")) == 1
    assert (
        len({r.idempotency_key for r in fake_stripe.requests if r.method == "POST" and r.path == "/v1/payment_intents"})
        == 1
    )
    # Every message each split-out app subscribes to was applied once, none twice, none dead-lettered.
    for app in ("escrow", "payments"):
        done = ProcessedMessage.objects.filter(subscriber=app).values_list("event_id", flat=True)
        assert len(done) == len(set(done))
    assert escrow_stats["dead_lettered"] == 0 and escrow_stats["applied"] > 0
    assert "dead_lettered=0" in output, output[-2000:]
    escrow = assert_money_invariant(escrow_id)
    assert escrow.state == "RELEASED" and escrow.paid_out_minor == transfer["amount"]
