"""A local Stripe, on pytest-httpserver, answering the real SDK the way Stripe does.

It keeps PaymentIntents, Transfers and Refunds in memory, answers form-encoded v1 requests with JSON
objects that carry ids, and refuses bad requests with Stripe's `{"error": {...}}` bodies, including what
Stripe refuses about money: a refund above what is left of the charge (`charge_already_refunded`,
`amount_too_large`) and a transfer above what the source charge still has available
(`balance_insufficient`).

Idempotency as Stripe's "Idempotent requests" page describes it: the status and body of the first
request for a key are saved once the endpoint has begun executing, whether it succeeded or failed, and a
request sent again with the key gets that saved answer, 500s included, with `Idempotent-Replayed: true`
(a key reused with other parameters is refused). Answers given before the endpoint runs (401, 429, 502 /
503 from in front of it) are not saved. The fake can be told to answer the next requests with a 429, a
500 (after doing the work, or without doing it) or a card error, and it answers list and search calls
(transfers by transfer_group, refunds by payment_intent, PaymentIntents searched by metadata), which is
how a client finds out what a 500 left behind. It also signs webhooks with Stripe's scheme, so tests
post exactly what Stripe would.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from apps.payments.providers import stripe_signature

WEBHOOK_SECRET = "whsec_test_fake_stripe_0123456789abcdef"
# Answered before the endpoint runs (authentication, concurrency, rate limits, the load balancer): Stripe
# saves nothing for the key, so the same key sent again is carried out.
UNSAVED_STATUSES = frozenset({401, 409, 429, 502, 503})


# --- Checkout Sessions and Connect Express onboarding ------------------------------------------------------
# Kept apart from the payment-command routes above: checkout sessions (hosted card page), cancelling a
# PaymentIntent, Express accounts and Account Links, and what the buyer or seller does on Stripe's pages.


class HostedStripe:
    """Mixed into FakeStripe: the routes and test actions of Stripe's hosted surfaces."""

    # FakeStripe provides: _new_id, _account, api_base.

    def pays_at_checkout(self, session_id: str) -> dict[str, Any]:
        """The buyer pays on the hosted page: a new PaymentIntent (with the session's
        payment_intent_data) holds a succeeded charge, and the session is complete and paid. Returns the
        session as the checkout.session.completed event carries it."""
        session = self.objects[session_id]
        intent_id, charge_id = self._new_id("pi"), self._new_id("ch")
        self.objects[intent_id] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": session["amount_total"],
            "amount_received": session["amount_total"],
            "currency": session["currency"],
            "status": "succeeded",
            "capture_method": "automatic",
            "client_secret": f"{intent_id}_secret_x",
            "latest_charge": charge_id,
            "metadata": dict(session["_intent_metadata"]),
            "transfer_group": session["_transfer_group"],
        }
        self.objects[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": session["amount_total"],
            "currency": session["currency"],
            "payment_intent": intent_id,
            "refunded": False,
        }
        session.update(status="complete", payment_status="paid", payment_intent=intent_id)
        return self.public(session_id)

    def finishes_onboarding(self, account_id: str) -> dict[str, Any]:
        """The seller completes Express onboarding: the account can now receive transfers. Returns the
        account as account.updated carries it."""
        self.restricted.discard(account_id)
        self.accounts.add(account_id)
        return json.loads(self._account(account_id)[1])

    def public(self, object_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.objects[object_id].items() if not k.startswith("_")}

    def _route_hosted(self, request: Request, params: dict[str, str]) -> tuple[int, str] | None:
        path, method = request.path, request.method
        if method == "POST" and path == "/v1/checkout/sessions":
            return self._create_session(params)
        match = re.fullmatch(r"/v1/checkout/sessions/([A-Za-z0-9_]+)", path)
        if method == "GET" and match:
            if match.group(1) not in self.objects:
                return _error(
                    404,
                    "invalid_request_error",
                    f"No such checkout.session: '{match.group(1)}'",
                    code="resource_missing",
                )
            return 200, json.dumps(self.public(match.group(1)))
        match = re.fullmatch(r"/v1/checkout/sessions/([A-Za-z0-9_]+)/expire", path)
        if method == "POST" and match:
            session = self.objects.get(match.group(1))
            if session is None:
                return _error(
                    404,
                    "invalid_request_error",
                    f"No such checkout.session: '{match.group(1)}'",
                    code="resource_missing",
                )
            if session["status"] != "open":
                return _error(400, "invalid_request_error", "This Checkout Session is not in an expirable state.")
            session["status"] = "expired"
            return 200, json.dumps(self.public(match.group(1)))
        match = re.fullmatch(r"/v1/payment_intents/([A-Za-z0-9_]+)/cancel", path)
        if method == "POST" and match:
            intent = self.objects.get(match.group(1))
            if intent is None:
                return _error(
                    404, "invalid_request_error", f"No such payment_intent: '{match.group(1)}'", code="resource_missing"
                )
            if intent["status"] in ("succeeded", "canceled"):
                return _error(
                    400,
                    "invalid_request_error",
                    f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}.",
                    code="payment_intent_unexpected_state",
                )
            intent["status"] = "canceled"
            return 200, json.dumps(intent)
        if method == "POST" and path == "/v1/accounts":
            if params.get("type") != "express":
                return _error(400, "invalid_request_error", "Only Express accounts here", param="type")
            account_id = self._new_id("acct")
            self.restricted.add(account_id)
            return self._account(account_id)
        if method == "POST" and path == "/v1/account_links":
            account = params.get("account", "")
            if account not in self.accounts | self.restricted:
                return _error(400, "invalid_request_error", f"No such account: '{account}'", param="account")
            for name in ("refresh_url", "return_url"):
                if not params.get(name, "").startswith(("http://", "https://")):
                    return _error(400, "invalid_request_error", f"Invalid URL: {name}", param=name)
            return 200, json.dumps(
                {
                    "object": "account_link",
                    "created": int(time.time()),
                    "expires_at": int(time.time()) + 300,
                    "url": f"{self.api_base}/setup/e/{account}/{self._new_id('link')}",
                }
            )
        return None

    def _create_session(self, params: dict[str, str]) -> tuple[int, str]:
        item = "line_items[0][price_data]"
        amount = int(params.get(f"{item}[unit_amount]", "0"))
        if params.get("mode") != "payment" or params.get("line_items[0][quantity]") != "1":
            return _error(400, "invalid_request_error", "mode=payment with one line item", param="mode")
        if amount < 50:
            return _error(400, "invalid_request_error", "Amount must be at least $0.50 usd", param="line_items")
        expires_at = int(params.get("expires_at", time.time() + 86400))
        if not time.time() + 1800 <= expires_at <= time.time() + 86400:
            return _error(
                400,
                "invalid_request_error",
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
                param="expires_at",
            )
        for name in ("success_url", "cancel_url"):
            if not params.get(name, "").startswith(("http://", "https://")):
                return _error(400, "invalid_request_error", f"Not a valid URL: {name}", param=name)
        session_id = self._new_id("cs_test")
        self.objects[session_id] = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "payment_intent": None,
            "amount_total": amount,
            "currency": params[f"{item}[currency]"],
            "metadata": _nested(params, "metadata"),
            "client_reference_id": params.get("client_reference_id"),
            "expires_at": expires_at,
            "success_url": params["success_url"],
            "cancel_url": params["cancel_url"],
            "url": f"{self.api_base}/c/pay/{session_id}",
            "_intent_metadata": _nested(params, "payment_intent_data[metadata]"),
            "_transfer_group": params.get("payment_intent_data[transfer_group]"),
        }
        return 200, json.dumps(self.public(session_id))


@dataclass
class Seen:
    method: str
    path: str
    params: dict[str, str]
    idempotency_key: str | None
    status: int
    replayed: bool = False
    authorization: str = ""


@dataclass
class FakeStripe(HostedStripe):
    server: HTTPServer
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: set[str] = field(default_factory=set)
    # Connected accounts that exist but have not finished onboarding (payouts disabled, transfers inactive).
    restricted: set[str] = field(default_factory=set)
    requests: list[Seen] = field(default_factory=list)
    _replies: dict[str, tuple[dict[str, str], int, str]] = field(default_factory=dict)
    _failures: deque[tuple[str, int, dict[str, Any], bool, str | None]] = field(default_factory=deque)
    _delays: deque[tuple[str, float, str | None]] = field(default_factory=deque)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server.expect_request(re.compile(r"^/v1/.*")).respond_with_handler(self._handle)

    @property
    def api_base(self) -> str:
        return self.server.url_for("").rstrip("/")

    # --- what tests arrange and inspect --------------------------------------------------------------

    def fail_next(
        self,
        path_prefix: str,
        status: int,
        error: dict[str, Any] | None = None,
        *,
        after_the_work: bool = False,
        method: str | None = None,
    ) -> None:
        """The next request under `path_prefix` gets this status and a Stripe error body. With
        `after_the_work` the request is carried out first (the object exists) and answered with the error
        anyway, as when Stripe fails after committing. A 500 is saved for its key and replayed; a 401, 409,
        429, 502 or 503 is answered before the endpoint runs and is not saved. `method` limits it to
        one HTTP method (a POST that fails while the lookups answer)."""
        self._failures.append(
            (path_prefix, status, error or {"type": "api_error", "message": "Something broke"}, after_the_work, method)
        )

    def refund_outside(self, intent_id: str, amount: int) -> dict[str, Any]:
        """Someone refunds part of the charge from Stripe's dashboard, outside the escrow."""
        intent = self.objects[intent_id]
        return self._refund(intent, amount, {})

    def delay_next(self, path_prefix: str, seconds: float, *, method: str | None = None) -> None:
        """The next request under `path_prefix` (of `method`, if given) is processed, but answered only
        after `seconds` (a client with a shorter timeout gives up, as with a slow Stripe that still did the
        work)."""
        self._delays.append((path_prefix, seconds, method))

    def created(self, kind: str) -> list[Seen]:
        """Successful POSTs that created an object of `kind` (payment_intents, transfers, refunds), replays
        not counted twice."""
        return [r for r in self.requests if r.method == "POST" and r.path == f"/v1/{kind}" and r.status == 200]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects.values() if obj["object"] == kind]

    def buyer_pays(self, intent_id: str, *, amount: int | None = None, currency: str | None = None) -> dict[str, Any]:
        """The buyer's card succeeds: the PaymentIntent now holds a succeeded charge."""
        intent = self.objects[intent_id]
        charge_id = self._new_id("ch")
        intent.update(
            status="succeeded", amount_received=intent["amount"] if amount is None else amount, latest_charge=charge_id
        )
        if currency is not None:
            intent["currency"] = currency
        self.objects[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": intent["amount_received"],
            "currency": intent["currency"],
            "payment_intent": intent_id,
            "refunded": False,
            "amount_refunded": 0,
        }
        return dict(intent)

    # --- the HTTP side ------------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):08d}"

    def _handle(self, request: Request) -> Response:
        with self._lock:
            params = dict(request.form) if request.method == "POST" else dict(request.args)
            key = request.headers.get("Idempotency-Key")
            status, body, replayed = self._answer(request, params, key)
            self.requests.append(
                Seen(
                    request.method,
                    request.path,
                    params,
                    key,
                    status,
                    replayed,
                    authorization=request.headers.get("Authorization", ""),
                )
            )
            for index, (prefix, seconds, method) in enumerate(self._delays):
                if request.path.startswith(prefix) and method in (None, request.method):
                    del self._delays[index]
                    time.sleep(seconds)  # holding the lock: a retry waits, then sees the replay
                    break
            headers = {"Request-Id": f"req_{next(self._ids)}", "Idempotency-Key": key or ""}
            if replayed:
                headers["Idempotent-Replayed"] = "true"
            return Response(body, status=status, content_type="application/json", headers=headers)

    def _answer(self, request: Request, params: dict[str, str], key: str | None) -> tuple[int, str, bool]:
        if not request.headers.get("Authorization", "").startswith("Bearer sk_"):
            return (*_error(401, "invalid_request_error", "Invalid API Key provided"), False)
        if request.method == "POST" and key:
            replay = self._replies.get(key)
            if replay is not None:
                if replay[0] != params:
                    return (
                        *_error(
                            400,
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same parameters "
                            "they were first used with.",
                        ),
                        False,
                    )
                return replay[1], replay[2], True
        for index, (prefix, fail_status, error, after_the_work, method) in enumerate(self._failures):
            if request.path.startswith(prefix) and method in (None, request.method):
                del self._failures[index]
                if after_the_work:
                    self._route(request, params)
                status, body = fail_status, json.dumps({"error": error})
                break
        else:
            status, body = self._route(request, params)
        if request.method == "POST" and key and status not in UNSAVED_STATUSES:
            self._replies[key] = (params, status, body)
        return status, body, False

    def _route(self, request: Request, params: dict[str, str]) -> tuple[int, str]:
        path, method = request.path, request.method
        hosted = self._route_hosted(request, params)
        if hosted is not None:
            return hosted
        if method == "POST" and path == "/v1/payment_intents":
            return self._create_intent(params)
        if method == "POST" and path == "/v1/transfers":
            return self._create_transfer(params)
        if method == "POST" and path == "/v1/refunds":
            return self._create_refund(params)
        if method == "GET" and path == "/v1/refunds":
            refunds = [o for o in self.of_kind("refund") if o["payment_intent"] == params.get("payment_intent")]
            return _list("/v1/refunds", refunds)
        if method == "GET" and path == "/v1/transfers":
            transfers = [
                o
                for o in self.of_kind("transfer")
                if "transfer_group" not in params or o["transfer_group"] == params["transfer_group"]
            ]
            return _list("/v1/transfers", transfers)
        if method == "GET" and path == "/v1/payment_intents/search":
            return self._search_intents(params.get("query", ""))
        match = re.fullmatch(r"/v1/accounts/([A-Za-z0-9_]+)", path)
        if method == "GET" and match:
            return self._account(match.group(1))
        match = re.fullmatch(r"/v1/(payment_intents|refunds|transfers)/([A-Za-z0-9_]+)", path)
        if method == "GET" and match:
            obj = self.objects.get(match.group(2))
            if obj is None:
                return _error(
                    404, "invalid_request_error", f"No such object: '{match.group(2)}'", code="resource_missing"
                )
            return 200, json.dumps(obj)
        return _error(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def _account(self, account_id: str) -> tuple[int, str]:
        if account_id not in self.accounts | self.restricted:
            # What Stripe answers for an account that is not connected to the platform.
            return _error(
                404,
                "invalid_request_error",
                f"No such account: '{account_id}'",
                param="account",
                code="resource_missing",
            )
        ready = account_id in self.accounts and account_id not in self.restricted
        return 200, json.dumps(
            {
                "id": account_id,
                "object": "account",
                "type": "express",
                "charges_enabled": ready,
                "payouts_enabled": ready,
                "details_submitted": ready,
                "capabilities": {"transfers": "active" if ready else "inactive"},
                "requirements": {
                    "currently_due": [] if ready else ["external_account"],
                    "disabled_reason": None if ready else "requirements.past_due",
                },
            }
        )

    def _search_intents(self, query: str) -> tuple[int, str]:
        """Stripe's search query language, the part we use: metadata['key']:'value' clauses joined by AND."""
        clauses = [c.strip() for c in re.split(r"\s+AND\s+", query.strip()) if c.strip()]
        wanted: dict[str, str] = {}
        for clause in clauses:
            match = re.fullmatch(r"metadata\['([^']+)'\]:'([^']*)'", clause)
            if match is None:
                return _error(400, "invalid_request_error", f"Invalid search query: {query!r}", param="query")
            wanted[match.group(1)] = match.group(2)
        found = [o for o in self.of_kind("payment_intent") if all(o["metadata"].get(k) == v for k, v in wanted.items())]
        return 200, json.dumps(
            {
                "object": "search_result",
                "url": "/v1/payment_intents/search",
                "has_more": False,
                "next_page": None,
                "data": found,
            }
        )

    def _create_intent(self, params: dict[str, str]) -> tuple[int, str]:
        amount = int(params.get("amount", "0"))
        if amount < 50:
            return _error(
                400,
                "invalid_request_error",
                "Amount must be at least $0.50 usd",
                param="amount",
                code="amount_too_small",
            )
        intent_id = self._new_id("pi")
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "currency": params["currency"],
            "status": "requires_payment_method",
            "capture_method": params.get("capture_method", "automatic"),
            "client_secret": f"{intent_id}_secret_{intent_id[-6:]}",
            "latest_charge": None,
            "metadata": _nested(params, "metadata"),
            "transfer_group": params.get("transfer_group"),
        }
        self.objects[intent_id] = intent
        return 200, json.dumps(intent)

    def _create_transfer(self, params: dict[str, str]) -> tuple[int, str]:
        destination = params.get("destination", "")
        if destination not in self.accounts:
            return _error(
                400,
                "invalid_request_error",
                f"No such destination: '{destination}'",
                param="destination",
                code="resource_missing",
            )
        charge = self.objects.get(params.get("source_transaction", ""))
        if charge is None or charge["object"] != "charge":
            return _error(400, "invalid_request_error", "No such charge", param="source_transaction")
        transferred = sum(
            t["amount"]
            for t in self.of_kind("transfer")
            if t["source_transaction"] == charge["id"] and not t["reversed"]
        )
        available = charge["amount"] - charge.get("amount_refunded", 0) - transferred
        if int(params["amount"]) > available:
            return _error(
                400,
                "invalid_request_error",
                "Insufficient funds in Stripe account: the source transaction has "
                f"{available} {charge['currency']} available to transfer.",
                code="balance_insufficient",
            )
        transfer_id = self._new_id("tr")
        transfer = {
            "id": transfer_id,
            "object": "transfer",
            "amount": int(params["amount"]),
            "currency": params["currency"],
            "destination": destination,
            "source_transaction": charge["id"],
            "reversed": False,
            "transfer_group": params.get("transfer_group"),
            "metadata": _nested(params, "metadata"),
        }
        self.objects[transfer_id] = transfer
        return 200, json.dumps(transfer)

    def _create_refund(self, params: dict[str, str]) -> tuple[int, str]:
        intent = self.objects.get(params.get("payment_intent", ""))
        if intent is None or intent["status"] != "succeeded":
            return _error(
                400,
                "invalid_request_error",
                "This PaymentIntent does not have a successful charge to refund.",
                param="payment_intent",
                code="charge_not_refundable" if intent else None,
            )
        charge = self.objects[intent["latest_charge"]]
        left = charge["amount"] - charge.get("amount_refunded", 0)
        amount = int(params.get("amount", left))
        if left <= 0:
            return _error(
                400,
                "invalid_request_error",
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        if amount > left:
            return _error(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                param="amount",
                code="amount_too_large",
            )
        return 200, json.dumps(self._refund(intent, amount, _nested(params, "metadata")))

    def _refund(self, intent: dict[str, Any], amount: int, metadata: dict[str, str]) -> dict[str, Any]:
        refund_id = self._new_id("re")
        refund = {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "charge": intent["latest_charge"],
            "status": "succeeded",
            "metadata": metadata,
        }
        self.objects[refund_id] = refund
        charge = self.objects[intent["latest_charge"]]
        charge["amount_refunded"] = charge.get("amount_refunded", 0) + amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        return refund


def _nested(params: dict[str, str], name: str) -> dict[str, str]:
    prefix = f"{name}["
    return {k[len(prefix) : -1]: v for k, v in params.items() if k.startswith(prefix) and k.endswith("]")}


def _list(url: str, data: list[dict[str, Any]]) -> tuple[int, str]:
    return 200, json.dumps({"object": "list", "url": url, "has_more": False, "data": data})


def _error(
    status: int, kind: str, message: str, *, param: str | None = None, code: str | None = None
) -> tuple[int, str]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if param:
        error["param"] = param
    if code:
        error["code"] = code
    return status, json.dumps({"error": error})


_event_ids = itertools.count(1)


def signed_event(
    event_type: str,
    obj: dict[str, Any],
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
    event_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A Stripe event around `obj`, signed with Stripe's scheme (t=..., v1=HMAC-SHA256)."""
    event = {
        "id": event_id or f"evt_fake{next(_event_ids):08d}",
        "object": "event",
        "api_version": "2025-01-27.acacia",
        "created": int(time.time()),
        "type": event_type,
        "data": {"object": obj},
    }
    body = json.dumps(event, separators=(",", ":"))
    header = stripe_signature.sign(body=body, secret=secret, timestamp=timestamp)
    return body.encode(), {"Stripe-Signature": header}
