"""A fake Discord REST API on a local pytest-httpserver, answering like Discord does: JSON bodies,
rate-limit headers on every answer, 429 with `retry_after` (and Cloudflare's `Via`, which discord.py
checks to tell a rate limit from a ban), 403 code 50007 for a user who does not accept DMs, 5xx, and
`enforce_nonce` (a repeated nonce in a channel returns the first message instead of a second one).
It also takes the interaction webhook (`POST /webhooks/{application_id}/{token}`, `PATCH
.../messages/@original`: no bot token, the interaction token is the credential) and command registration
(`PUT /applications/{application_id}/commands`), and records all of it for the tests to read: DMs with
their components, follow-ups, registrations.

Faults are scripted per recipient (their Discord user id)."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

API_PREFIX = "/api/v10"
_CHANNEL_OFFSET = 800_000_000_000_000_000


@dataclass
class SentDM:
    recipient_id: int
    content: str
    nonce: str | None
    message_id: str
    components: list[dict[str, Any]] = field(default_factory=list)

    @property
    def custom_ids(self) -> list[str]:
        return [b["custom_id"] for row in self.components for b in row.get("components", []) if "custom_id" in b]

    @property
    def links(self) -> list[str]:
        return [b["url"] for row in self.components for b in row.get("components", []) if b.get("style") == 5]


@dataclass
class FollowUp:
    method: str
    application_id: str
    token: str
    target: str  # "followup" (a new message) or "@original" (the deferred response, edited)
    body: dict[str, Any]


@dataclass
class Exchange:
    at: float
    method: str
    path: str
    status: int
    recipient_id: int | None = None


@dataclass
class Fault:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class FakeDiscord:
    def __init__(self, server: HTTPServer, *, token: str) -> None:
        self.server = server
        self.token = token
        self.bot_id = "1100000000000000001"
        self.sent: list[SentDM] = []
        self.followups: list[FollowUp] = []
        self.registrations: list[tuple[str, list[dict[str, Any]]]] = []
        self.expired_tokens: set[str] = set()
        self.exchanges: list[Exchange] = []
        self._faults: dict[int, list[Fault]] = {}
        self._blocked: set[int] = set()
        self._nonces: dict[tuple[int, str], SentDM] = {}
        self._ids = itertools.count(1_200_000_000_000_000_000)
        self._lock = threading.Lock()
        server.expect_request(re.compile(rf"^{API_PREFIX}/.*")).respond_with_handler(self._handle)

    @property
    def base_url(self) -> str:
        return self.server.url_for(API_PREFIX)

    # --- scripting -----------------------------------------------------------------------------

    def block_dms(self, recipient_id: int) -> None:
        """The user turned off DMs from server members (or blocked the bot)."""
        self._blocked.add(recipient_id)

    def rate_limit_next(self, recipient_id: int, *, retry_after: float, times: int = 1) -> None:
        headers = {
            "Retry-After": str(max(1, round(retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": str(retry_after),
            "X-RateLimit-Bucket": "dm-bucket",
            "X-RateLimit-Scope": "user",
        }
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
        self._add(recipient_id, Fault(429, body, headers), times)

    def server_error_next(self, recipient_id: int, *, status: int = 503, times: int = 1) -> None:
        self._add(recipient_id, Fault(status, {"message": "Service Unavailable", "code": 0}), times)

    def hang_next(self, recipient_id: int, *, seconds: float, times: int = 1) -> None:
        self._add(recipient_id, Fault(0, {}, delay=seconds), times)

    def heal(self, recipient_id: int) -> None:
        self._faults.pop(recipient_id, None)
        self._blocked.discard(recipient_id)

    def _add(self, recipient_id: int, fault: Fault, times: int) -> None:
        self._faults.setdefault(recipient_id, []).extend([fault] * times)

    # --- reading -------------------------------------------------------------------------------

    def dms_to(self, recipient_id: int) -> list[str]:
        return [dm.content for dm in self.sent if dm.recipient_id == recipient_id]

    def messages_to(self, recipient_id: int) -> list[SentDM]:
        return [dm for dm in self.sent if dm.recipient_id == recipient_id]

    def expire_token(self, token: str) -> None:
        """Discord forgets an interaction token after 15 minutes: its webhook is unknown (404, 10015)."""
        self.expired_tokens.add(token)

    def message_posts_to(self, recipient_id: int) -> list[Exchange]:
        return [e for e in self.exchanges if e.recipient_id == recipient_id and e.path.endswith("/messages")]

    # --- answering -----------------------------------------------------------------------------

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        base = {
            "Via": "1.1 google",
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "4",
            "X-RateLimit-Reset-After": "1.0",
            "X-RateLimit-Bucket": "dm-bucket",
        }
        base.update(headers or {})
        return Response(json.dumps(body), status=status, headers=base, content_type="application/json")

    def _handle(self, request: Request) -> Response:
        response, recipient = self._answer(request)
        with self._lock:
            self.exchanges.append(
                Exchange(time.monotonic(), request.method, request.path, response.status_code, recipient)
            )
        return response

    def _answer(self, request: Request) -> tuple[Response, int | None]:
        path = request.path[len(API_PREFIX) :]
        webhook = re.fullmatch(r"/webhooks/(\d+)/([^/]+)(/messages/@original)?", path)
        if webhook:
            return self._webhook(request, webhook.group(1), webhook.group(2), bool(webhook.group(3))), None
        if request.headers.get("Authorization") != f"Bot {self.token}":
            return self._json(401, {"message": "401: Unauthorized", "code": 0}), None
        registration = re.fullmatch(r"/applications/(\d+)/commands", path)
        if request.method == "PUT" and registration:
            commands = request.get_json()
            with self._lock:
                self.registrations.append((registration.group(1), commands))
            return self._json(
                200,
                [
                    {
                        **c,
                        "id": str(next(self._ids)),
                        "application_id": registration.group(1),
                        "version": str(next(self._ids)),
                    }
                    for c in commands
                ],
            ), None
        if request.method == "GET" and path == "/users/@me":
            return self._json(
                200, {"id": self.bot_id, "username": "escrow-bot", "discriminator": "0", "bot": True, "avatar": None}
            ), None
        if request.method == "POST" and path == "/users/@me/channels":
            recipient = int(request.get_json()["recipient_id"])
            return self._json(
                200,
                {
                    "id": str(_CHANNEL_OFFSET + recipient),
                    "type": 1,
                    "last_message_id": None,
                    "recipients": [
                        {"id": str(recipient), "username": f"user{recipient}", "discriminator": "0", "avatar": None}
                    ],
                },
            ), recipient
        match = re.fullmatch(r"/channels/(\d+)/messages", path)
        if request.method == "POST" and match:
            recipient = int(match.group(1)) - _CHANNEL_OFFSET
            return self._post_message(recipient, match.group(1), request.get_json()), recipient
        return self._json(404, {"message": "404: Not Found", "code": 0}), None

    def _post_message(self, recipient: int, channel_id: str, payload: dict[str, Any]) -> Response:
        with self._lock:
            queue = self._faults.get(recipient) or []
            fault = queue.pop(0) if queue else None
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
            fault = None
        if fault is not None:
            return self._json(fault.status, fault.body, fault.headers)
        if recipient in self._blocked:
            return self._json(403, {"message": "Cannot send messages to this user", "code": 50007})
        nonce = payload.get("nonce")
        with self._lock:
            if nonce and payload.get("enforce_nonce") and (recipient, nonce) in self._nonces:
                return self._json(200, self._message_body(self._nonces[(recipient, nonce)], channel_id))
            dm = SentDM(
                recipient, payload.get("content", ""), nonce, str(next(self._ids)), payload.get("components") or []
            )
            self.sent.append(dm)
            if nonce:
                self._nonces[(recipient, nonce)] = dm
        return self._json(200, self._message_body(dm, channel_id))

    def _webhook(self, request: Request, application_id: str, token: str, original: bool) -> Response:
        if token in self.expired_tokens:
            return self._json(404, {"message": "Unknown Webhook", "code": 10015})
        if (original and request.method != "PATCH") or (not original and request.method != "POST"):
            return self._json(405, {"message": "405: Method Not Allowed", "code": 0})
        body = request.get_json()
        with self._lock:
            self.followups.append(
                FollowUp(request.method, application_id, token, "@original" if original else "followup", body)
            )
            message_id = str(next(self._ids))
        return self._json(
            200,
            {
                "id": message_id,
                "type": 20,
                "content": body.get("content", ""),
                "components": body.get("components", []),
                "application_id": application_id,
                "webhook_id": application_id,
                "channel_id": "1",
                "author": {"id": self.bot_id, "username": "escrow-bot", "bot": True},
            },
        )

    def _message_body(self, dm: SentDM, channel_id: str) -> dict[str, Any]:
        return {
            "id": dm.message_id,
            "channel_id": channel_id,
            "content": dm.content,
            "nonce": dm.nonce,
            "type": 0,
            "author": {"id": self.bot_id, "username": "escrow-bot", "discriminator": "0", "bot": True, "avatar": None},
            "timestamp": "2026-01-01T00:00:00+00:00",
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
        }
