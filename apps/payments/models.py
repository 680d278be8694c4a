"""Payments' own records: what we asked providers to do, and every webhook they sent us.

Only provider ids are stored, never card data.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class PaymentOrder(models.Model):
    """The payments service's view of one escrow: what to collect, through which provider, and the
    sequence number of the payments events it emitted for it."""

    escrow_id = models.UUIDField(primary_key=True)
    buyer_id = models.BigIntegerField()
    seller_id = models.BigIntegerField()
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    provider = models.CharField(max_length=20)
    version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.escrow_id} via {self.provider}"


class PaymentArtifact(models.Model):
    """One provider object: a payment (Stripe PaymentIntent / USDC deposit), a transfer or a refund."""

    class Kind(models.TextChoices):
        PAYMENT = "payment"
        TRANSFER = "transfer"
        REFUND = "refund"

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    escrow_id = models.UUIDField(db_index=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    provider = models.CharField(max_length=20)
    provider_id = models.CharField(max_length=255)
    # Derived from the command's event id; the provider sees the same key on every retry.
    idempotency_key = models.CharField(max_length=255, unique=True)
    amount_minor = models.BigIntegerField()
    fee_minor = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    client_secret = models.CharField(max_length=255, blank=True)
    deposit_address = models.CharField(max_length=255, blank=True)
    failure_reason = models.CharField(max_length=1000, blank=True)
    raw = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "provider_id"], name="one_artifact_per_provider_object"),
            models.CheckConstraint(condition=Q(amount_minor__gt=0, fee_minor__gte=0), name="artifact_amounts"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.provider}:{self.provider_id} {self.status}"


class WebhookEvent(models.Model):
    """Every webhook request, stored raw before anything else (then verified, deduped, processed)."""

    class Status(models.TextChoices):
        RECEIVED = "received"
        REJECTED = "rejected"  # signature missing, forged or stale
        PROCESSED = "processed"
        DUPLICATE = "duplicate"
        IGNORED = "ignored"  # verified, but not about anything of ours (unknown object, other type)
        FAILED = "failed"  # processing raised: answered 5xx so the provider retries

    provider = models.CharField(max_length=20)
    provider_event_id = models.CharField(max_length=255, blank=True)
    event_type = models.CharField(max_length=100, blank=True)
    body = models.TextField()
    headers = models.JSONField(default=dict)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "provider_event_id"],
                condition=Q(status="processed"),
                name="webhook_processed_once",
            )
        ]
        indexes = [models.Index(fields=["status", "received_at"], name="webhook_by_status")]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type} {self.provider_event_id} ({self.status})"


class PayoutDestination(models.Model):
    """Where a seller is paid: a Stripe connected account (card escrows) and/or a USDC wallet on Base
    (custodian escrows). One row per seller; registering again replaces the value."""

    seller_id = models.BigIntegerField(primary_key=True)
    stripe_account_id = models.CharField(max_length=255, blank=True)
    # Lower-case 0x address; the custodian pays out to it on BASE.
    wallet_address = models.CharField(max_length=42, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"seller {self.seller_id}: {self.stripe_account_id or '-'} / {self.wallet_address or '-'}"


class WaitingPayout(models.Model):
    """A TransferToSeller that could not go out because the seller had no payout destination yet, or
    because screening blocked the seller's wallet (held as `blocked` for the compliance review).

    The money stays held (the escrow is RELEASING, flagged for ops); registering a destination sends it
    with the command's original idempotency key, so it can never be paid twice.
    """

    class Status(models.TextChoices):
        WAITING = "waiting"
        SENDING = "sending"  # claimed by a sender: the provider call is under way
        SENT = "sent"
        CANCELLED = "cancelled"  # superseded: the escrow gave the money back instead
        # Screening blocked the seller's wallet when it was to be sent: nothing left, the escrow is on
        # compliance hold; ops lift it (waiting again, screened again) or refund the buyer (cancelled).
        BLOCKED = "blocked"

    escrow_id = models.UUIDField(db_index=True)
    seller_id = models.BigIntegerField(db_index=True)
    provider = models.CharField(max_length=20)
    source_payment_id = models.CharField(max_length=255)
    idempotency_key = models.CharField(max_length=255, unique=True)
    amount_minor = models.BigIntegerField()
    fee_minor = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.WAITING)
    last_error = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount_minor__gt=0, fee_minor__gte=0), name="waiting_payout_amounts"),
        ]

    def __str__(self) -> str:
        return f"payout {self.escrow_id} to seller {self.seller_id} ({self.status})"


class WalletScreening(models.Model):
    """One vendor's answer about one wallet, with its raw response (append-only compliance record)."""

    class Purpose(models.TextChoices):
        DEPOSIT = "deposit"  # funds arriving from the buyer's wallet
        PAYOUT = "payout"  # funds leaving to the seller's wallet
        REFUND = "refund"  # funds going back to the buyer's wallet

    escrow_id = models.UUIDField(db_index=True)
    address = models.CharField(max_length=100, db_index=True)
    chain = models.CharField(max_length=20)
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    vendor = models.CharField(max_length=20)
    allowed = models.BooleanField()
    reason = models.CharField(max_length=1000, blank=True)
    raw = models.JSONField()
    screened_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.vendor} {self.address} {'allowed' if self.allowed else 'BLOCKED'}"


class CheckoutSession(models.Model):
    """A hosted checkout we opened for an escrow (Stripe Checkout). Kept so that an open one is reused,
    and so that a `checkout.session.*` webhook is known to be ours before Stripe is asked about it."""

    class Status(models.TextChoices):
        OPEN = "open"
        COMPLETE = "complete"
        EXPIRED = "expired"

    escrow_id = models.UUIDField(db_index=True)
    provider = models.CharField(max_length=20)
    session_id = models.CharField(max_length=255, unique=True)
    url = models.URLField(max_length=2000)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"checkout {self.session_id} for {self.escrow_id} ({self.status})"


class ConnectedAccount(models.Model):
    """A seller's Stripe Connect Express account that we created for onboarding, and its readiness as the
    last `account.updated` webhook (re-read from Stripe) reported it. Once ready it becomes the seller's
    payout destination."""

    seller_id = models.BigIntegerField(primary_key=True)
    provider = models.CharField(max_length=20)
    account_id = models.CharField(max_length=255, unique=True)
    charges_enabled = models.BooleanField(default=False)
    payouts_enabled = models.BooleanField(default=False)
    details_submitted = models.BooleanField(default=False)
    transfers_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"seller {self.seller_id}: {self.account_id} ({'ready' if self.ready else 'onboarding'})"

    @property
    def ready(self) -> bool:
        # What a transfer to it needs (separate charges and transfers: the platform takes the charge).
        return self.details_submitted and self.payouts_enabled and self.transfers_active
