"""The Discord bot's command handlers: `/escrow create|status|list|deliver|release|dispute|link`.

Each handler acts as the Discord user's linked account through the public REST API (never the ORM
for escrows), so the bot gets exactly the permissions, validation and idempotency the API gives
everyone else. It replies with the escrow's state and the caller's next step, and shows API errors as
the API words them. Handlers are synchronous and free of discord.py, so tests drive them against a
running API; `manage.py run_discord_bot` wires them to slash commands."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.contrib.auth import get_user_model

from apps.gateway.tokens import mint_access_token
from apps.notifications.models import DiscordLink
from apps.notifications.services import link_code_issue

_TOKEN_SECONDS = 300
NOT_LINKED = ("Your Discord account is not linked to an escrow account yet. Run `/escrow link` and follow "
              "the steps.")

_NEXT: dict[str, dict[str, str]] = {
    "AWAIT_FUNDS": {"buyer": "Pay it before the funding deadline.", "seller": "Wait for the buyer's payment."},
    "FUNDS_HELD": {"buyer": "Wait for the seller to deliver.",
                   "seller": "Deliver the item, then run `/escrow deliver`."},
    "DELIVERED": {"buyer": "Check the item, then `/escrow release` it, or `/escrow dispute`.",
                  "seller": "Wait for the buyer to release, or for the inspection period to end."},
    "RELEASING": {"buyer": "The payout to the seller is under way.", "seller": "Your payout is under way."},
    "RELEASED": {"buyer": "Done: the seller was paid.", "seller": "Done: you were paid."},
    "REFUNDING": {"buyer": "Your refund is under way.", "seller": "The buyer is being refunded."},
    "REFUNDED": {"buyer": "Done: you were refunded.", "seller": "Done: the buyer was refunded."},
    "CANCELLED": {"buyer": "Nothing more to do.", "seller": "Nothing more to do."},
    "DISPUTED": {"buyer": "Our staff are reviewing the dispute; the funds stay held.",
                 "seller": "Our staff are reviewing the dispute; the funds stay held."},
}


@dataclass
class EscrowBot:
    api_base: str
    timeout_seconds: float = 15.0
    _tokens: dict[int, tuple[str, float]] = field(default_factory=dict)

    # --- the commands ----------------------------------------------------------------------------

    def link(self, *, discord_user_id: int) -> str:
        code = link_code_issue(discord_user_id=discord_user_id)
        return (f"Your link code is **{code}** (valid for a few minutes, once). Sign in to the escrow site and "
                f"send it with `PUT /api/v1/me/discord-link`. Never share it.")

    def create(self, *, discord_user_id: int, request_id: str, seller: str, amount: str, currency: str,
               description: str) -> str:
        body = {"seller": seller, "amount": amount, "currency": currency.upper(), "description": description}
        return self._mutate(discord_user_id, request_id, "/escrows", body, verb="Created")

    def status(self, *, discord_user_id: int, escrow_id: str) -> str:
        user_id = self._linked_user(discord_user_id)
        if user_id is None:
            return NOT_LINKED
        response = self._call(user_id, "GET", f"/escrows/{escrow_id}")
        if response.status_code != 200:
            return _error(response)
        return _describe(response.json(), user_id)

    def list_escrows(self, *, discord_user_id: int, state: str | None = None) -> str:
        user_id = self._linked_user(discord_user_id)
        if user_id is None:
            return NOT_LINKED
        response = self._call(user_id, "GET", "/escrows", params={"state": state} if state else None)
        if response.status_code != 200:
            return _error(response)
        page = response.json()
        if not page["results"]:
            return "You have no escrows" + (f" in state {state}." if state else ".")
        lines = [f"`{e['id']}` {e['amount']} {e['currency']} {e['state']} ({_role(e, user_id)}): {e['description']}"
                 for e in page["results"]]
        more = f"\n…and {page['count'] - len(lines)} more." if page["count"] > len(lines) else ""
        return "\n".join(lines) + more

    def accept(self, *, discord_user_id: int, request_id: str, escrow_id: str) -> str:
        return self._mutate(discord_user_id, request_id, f"/escrows/{escrow_id}/accept", {}, verb="Accepted")

    def decline(self, *, discord_user_id: int, request_id: str, escrow_id: str) -> str:
        return self._mutate(discord_user_id, request_id, f"/escrows/{escrow_id}/decline", {}, verb="Declined")

    def deliver(self, *, discord_user_id: int, request_id: str, escrow_id: str) -> str:
        return self._mutate(discord_user_id, request_id, f"/escrows/{escrow_id}/deliver", {}, verb="Marked delivered")

    def release(self, *, discord_user_id: int, request_id: str, escrow_id: str) -> str:
        return self._mutate(discord_user_id, request_id, f"/escrows/{escrow_id}/release", {}, verb="Release requested")

    def dispute(self, *, discord_user_id: int, request_id: str, escrow_id: str, reason: str) -> str:
        return self._mutate(discord_user_id, request_id, f"/escrows/{escrow_id}/dispute", {"reason": reason},
                            verb="Dispute opened")

    # --- plumbing --------------------------------------------------------------------------------

    def _linked_user(self, discord_user_id: int) -> int | None:
        link = DiscordLink.objects.filter(discord_user_id=discord_user_id, user__is_active=True).first()
        return link.user_id if link else None

    def _token(self, user_id: int) -> str:
        cached = self._tokens.get(user_id)
        if cached and cached[1] > time.monotonic() + 30:
            return cached[0]
        token = mint_access_token(get_user_model().objects.get(pk=user_id), expires_in=_TOKEN_SECONDS)
        self._tokens[user_id] = (token, time.monotonic() + _TOKEN_SECONDS)
        return token

    def _call(self, user_id: int, method: str, path: str, *, json: Any = None, params: Any = None,
              idempotency_key: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token(user_id)}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        with httpx.Client(base_url=self.api_base, timeout=self.timeout_seconds) as client:
            return client.request(method, path, json=json, params=params, headers=headers)

    def _mutate(self, discord_user_id: int, request_id: str, path: str, body: dict[str, Any], *, verb: str) -> str:
        user_id = self._linked_user(discord_user_id)
        if user_id is None:
            return NOT_LINKED
        try:
            # The interaction id is the idempotency key: Discord redelivering a command does not repeat it.
            response = self._call(user_id, "POST", path, json=body, idempotency_key=f"discord:{request_id}")
        except httpx.HTTPError as exc:
            return f"The escrow service did not answer ({type(exc).__name__}); nothing was confirmed. Try again."
        if response.status_code != 202:
            return _error(response)
        escrow_id = response.json()["escrow_id"]
        detail = self._call(user_id, "GET", f"/escrows/{escrow_id}")
        if detail.status_code != 200:
            return f"{verb}: escrow `{escrow_id}` is {response.json()['state']}."
        return f"{verb}. " + _describe(detail.json(), user_id)


def _role(escrow: dict[str, Any], user_id: int) -> str:
    return "buyer" if escrow["buyer"] == user_id else "seller"


def _describe(escrow: dict[str, Any], user_id: int) -> str:
    role = _role(escrow, user_id)
    next_step = _NEXT.get(escrow["state"], {}).get(role, "")
    if escrow["state"] == "AWAIT_ACCEPTANCE":
        next_step = ("Accept it or decline it." if "accept" in escrow.get("actions", [])
                     else "Wait for the other party to accept it.")
    return (f"Escrow `{escrow['id']}`: {escrow['amount']} {escrow['currency']} for {escrow['description']!r}, "
            f"state **{escrow['state']}**, you are the {role}. Next: {next_step}").strip()


def _error(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return f"The escrow service answered {response.status_code}."
    detail = problem.get("detail", "")
    fields = "; ".join(f"{e['field']}: {e['detail']}" for e in problem.get("errors", []) if e.get("field"))
    state = f" (the escrow is {problem['state']})" if problem.get("state") else ""
    return f"Refused: {detail}{state}" + (f" [{fields}]" if fields else "") + f" ({problem.get('code', response.status_code)})"
