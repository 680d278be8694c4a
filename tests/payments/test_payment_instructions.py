"""The buyer's payment instructions (read on every buyer's GET of an escrow awaiting funds) are the escrow's
earliest payment artifact, read in one statement; transfers and refunds are not instructions."""

from __future__ import annotations

import datetime
import uuid

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.payments.models import PaymentArtifact
from apps.payments.public import PaymentInstructions, payment_instructions


def _artifact(escrow_id: uuid.UUID, kind: str, *, secret: str, minutes_ago: int) -> None:
    made = PaymentArtifact.objects.create(
        escrow_id=escrow_id,
        kind=kind,
        provider="sandbox",
        provider_id=f"obj-{uuid.uuid4().hex}",
        idempotency_key=uuid.uuid4().hex,
        amount_minor=14999,
        currency="USD",
        client_secret=secret,
        deposit_address="" if kind == "payment" else "0xnot",
    )
    PaymentArtifact.objects.filter(pk=made.pk).update(
        created_at=timezone.now() - datetime.timedelta(minutes=minutes_ago)
    )


def test_the_earliest_payment_artifact_in_one_statement(db):
    escrow_id, other = uuid.uuid4(), uuid.uuid4()
    assert payment_instructions(str(escrow_id)) is None
    _artifact(escrow_id, "refund", secret="refund", minutes_ago=30)
    _artifact(escrow_id, "payment", secret="later", minutes_ago=5)
    _artifact(escrow_id, "payment", secret="first", minutes_ago=10)
    _artifact(other, "payment", secret="another escrow's", minutes_ago=60)
    with CaptureQueriesContext(connection) as captured:
        found = payment_instructions(str(escrow_id))
    assert found == PaymentInstructions(provider="sandbox", status="pending", client_secret="first", deposit_address="")
    assert len(captured.captured_queries) == 1
    expected = (
        PaymentArtifact.objects.filter(escrow_id=escrow_id, kind=PaymentArtifact.Kind.PAYMENT)
        .order_by("created_at")
        .first()
    )
    assert expected is not None and expected.client_secret == found.client_secret
