"""Driving escrows through the public HTTP API in tests."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient


def create_escrow(client: APIClient, *, seller: Any, amount: str = "149.99", currency: str = "USD",
                  description: str = "Dominus Empyreus", **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/escrows",
        {"seller": seller.username, "amount": amount, "currency": currency, "description": description, **extra},
        format="json",
    )
    assert response.status_code == 202, response.content
    return response.json()


def act(client: APIClient, escrow_id: str, action: str, body: dict[str, Any] | None = None, **headers: Any) -> Any:
    return client.post(f"/api/v1/escrows/{escrow_id}/{action}", body or {}, format="json", **headers)


def pay(client: APIClient, escrow_id: str) -> Any:
    return client.post(f"/api/v1/sandbox/escrows/{escrow_id}/pay")


def state_of(client: APIClient, escrow_id: str) -> str:
    response = client.get(f"/api/v1/escrows/{escrow_id}")
    assert response.status_code == 200, response.content
    return response.json()["state"]
