"""Driving escrows through the public HTTP API in tests."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient


def client_for(user: Any) -> APIClient:
    """An API client that sends `user`'s Bearer token."""
    from apps.gateway.tokens import mint_access_token

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {mint_access_token(user)}")
    return client


def create_escrow(
    client: APIClient,
    *,
    seller: Any,
    amount: str = "149.99",
    currency: str = "USD",
    description: str = "Dominus Empyreus",
    accept: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """The caller (the buyer) proposes a deal to `seller`, who then accepts it with their own token, as
    they would: the escrow is in AWAIT_FUNDS when this returns (`accept=False` leaves it in
    AWAIT_ACCEPTANCE). Returns the create's 202 body, with the accept's under "accepted"."""
    response = client.post(
        "/api/v1/escrows",
        {"seller": seller.username, "amount": amount, "currency": currency, "description": description, **extra},
        format="json",
    )
    assert response.status_code == 202, response.content
    created = response.json()
    assert created["state"] == "AWAIT_ACCEPTANCE", created
    if accept:
        created["accepted"] = accept_escrow(seller, created["escrow_id"])
    return created


def accept_escrow(user: Any, escrow_id: str) -> dict[str, Any]:
    """`user` (the counterparty) accepts the deal through the API."""
    response = client_for(user).post(f"/api/v1/escrows/{escrow_id}/accept", {}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["state"] == "AWAIT_FUNDS", body
    return body


def act(client: APIClient, escrow_id: str, action: str, body: dict[str, Any] | None = None, **headers: Any) -> Any:
    return client.post(f"/api/v1/escrows/{escrow_id}/{action}", body or {}, format="json", **headers)


def pay(client: APIClient, escrow_id: str) -> Any:
    return client.post(f"/api/v1/sandbox/escrows/{escrow_id}/pay")


def state_of(client: APIClient, escrow_id: str) -> str:
    response = client.get(f"/api/v1/escrows/{escrow_id}")
    assert response.status_code == 200, response.content
    return response.json()["state"]


def as_staff(reason: str = "ops run from the runbook") -> list[str]:
    """The arguments a staff management command needs (who runs it and why), for an active staff user
    `ops` made on first use: `call_command("send_waiting_payouts", *as_staff())`."""
    from tests.factories import StaffFactory

    StaffFactory(username="ops")
    return ["--staff", "ops", "--reason", reason]
