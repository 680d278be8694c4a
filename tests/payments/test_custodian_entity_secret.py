"""Circle's entitySecretCiphertext: the entity secret RSA-OAEP(SHA-256)-encrypted with the key fetched from
the custodian, fresh on every write; the fake custodian decrypts each one and refuses wrong or replayed ones."""

from __future__ import annotations

import logging
import secrets

import pytest

from apps.outbox.models import OutboxMessage
from apps.payments.models import PaymentArtifact
from apps.payments.providers.custodian import CustodianProvider
from tests.helpers import act, create_escrow
from tests.payments.test_custodian_rail import AMOUNT, SELLER_WALLET, funded, outbox_types

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def entity_secret(fake_custodian, settings) -> str:
    secret = secrets.token_hex(32)
    fake_custodian.entity_secret = settings.CUSTODIAN_ENTITY_SECRET = secret
    return secret


def test_every_write_carries_a_fresh_ciphertext_the_custodian_accepts(
    fake_custodian, entity_secret, api_client, buyer, seller, caplog
):
    caplog.set_level(logging.DEBUG)
    as_buyer, as_seller = api_client(buyer), api_client(seller)
    as_seller.put("/api/v1/payout-destination", {"wallet_address": SELLER_WALLET}, format="json")
    escrow_id = funded(fake_custodian, as_buyer, seller)
    act(as_seller, escrow_id, "deliver")

    assert act(as_buyer, escrow_id, "release").status_code == 202

    assert len(fake_custodian.posts("/v1/w3s/developer/wallets")) == 1
    assert len(fake_custodian.posts("/v1/w3s/developer/transactions/transfer")) == 1
    assert len(fake_custodian.ciphertexts) == 2 and len(set(fake_custodian.ciphertexts)) == 2
    key_fetches = [r for r in fake_custodian.requests if r.path == "/v1/w3s/config/entity/publicKey"]
    assert len(key_fetches) == 1  # fetched once, then kept
    assert entity_secret not in caplog.text
    assert not OutboxMessage.objects.filter(payload__contains=entity_secret.encode()).exists()


def test_a_retry_with_the_same_key_is_one_wallet_with_a_new_ciphertext(fake_custodian, entity_secret):
    provider = CustodianProvider()

    first = provider.create_payment(escrow_id="e-1", amount_minor=1_500_000, currency="USD", idempotency_key="k-1")
    again = provider.create_payment(escrow_id="e-1", amount_minor=1_500_000, currency="USD", idempotency_key="k-1")

    assert first.provider_payment_id == again.provider_payment_id and len(fake_custodian.wallets) == 1
    assert len(set(fake_custodian.ciphertexts)) == 2


def test_a_wrong_entity_secret_creates_nothing_and_is_not_logged(
    fake_custodian, entity_secret, settings, api_client, buyer, seller, caplog
):
    caplog.set_level(logging.DEBUG)
    wrong = secrets.token_hex(32)
    settings.CUSTODIAN_ENTITY_SECRET = wrong

    escrow_id = create_escrow(api_client(buyer), seller=seller, amount=AMOUNT)["escrow_id"]

    assert fake_custodian.wallets == {} and fake_custodian.posts("/v1/w3s/developer/wallets") == []
    assert "PaymentFailed" in outbox_types(escrow_id)
    assert not PaymentArtifact.objects.filter(escrow_id=escrow_id).exists()
    assert wrong not in caplog.text and entity_secret not in caplog.text
