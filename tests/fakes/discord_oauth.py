"""A fake Discord OAuth2 server on a local pytest-httpserver, answering like Discord does:

- GET  /oauth2/authorize: the consent screen; the scripted person approves at once, and the browser is
  sent back to `redirect_uri` with `code` and the client's `state` (or `error=access_denied`).
- POST /oauth2/token: the authorization-code grant. The client authenticates (HTTP Basic or form
  fields), the code is single-use and bound to its client and `redirect_uri`, and with PKCE the
  `code_verifier` must hash (S256) to the `code_challenge` sent to /authorize. Errors are RFC 6749
  `{"error": ...}` bodies with status 400 or 401.
- GET  /users/@me: the Discord user of a Bearer access token (`id` is a snowflake string).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

CLIENT_ID = "1234567890123456789"
CLIENT_SECRET = "discord-test-client-secret"


@dataclass
class DiscordPerson:
    id: str
    username: str
    global_name: str | None = None


@dataclass
class _Grant:
    person: DiscordPerson
    client_id: str
    redirect_uri: str
    code_challenge: str | None
    code_challenge_method: str | None
    scope: str


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


@dataclass
class FakeDiscordOAuth:
    server: HTTPServer
    person: DiscordPerson | None = None  # who is signed in to Discord in the browser and approves
    deny: bool = False
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    token_refusals: list[str] = field(default_factory=list)
    _codes: dict[str, _Grant] = field(default_factory=dict)
    _tokens: dict[str, DiscordPerson] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server.expect_request("/api/oauth2/authorize", method="GET").respond_with_handler(self._authorize)
        self.server.expect_request("/api/oauth2/token", method="POST").respond_with_handler(self._token)
        self.server.expect_request("/api/users/@me", method="GET").respond_with_handler(self._me)

    @property
    def base_url(self) -> str:
        return self.server.url_for("/api").rstrip("/")

    # --- endpoints ---------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> Response:
        args = {key: request.args[key] for key in request.args}
        self.authorize_requests.append(args)
        if args.get("client_id") != CLIENT_ID or args.get("response_type") != "code" or "redirect_uri" not in args:
            return _json({"error": "invalid_request"}, 400)
        redirect_uri = args["redirect_uri"]
        back = {"state": args["state"]} if "state" in args else {}
        if self.deny or self.person is None:
            return Response(
                status=302, headers={"Location": f"{redirect_uri}?{urlencode({'error': 'access_denied', **back})}"}
            )
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = _Grant(
                self.person,
                CLIENT_ID,
                redirect_uri,
                args.get("code_challenge"),
                args.get("code_challenge_method"),
                args.get("scope", ""),
            )
        return Response(status=302, headers={"Location": f"{redirect_uri}?{urlencode({'code': code, **back})}"})

    def _client(self, request: Request) -> tuple[str, str]:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            return client_id, secret
        return request.form.get("client_id", ""), request.form.get("client_secret", "")

    def _refuse(self, error: str, status: int = 400) -> Response:
        self.token_refusals.append(error)
        return _json({"error": error}, status)

    def _token(self, request: Request) -> Response:
        form = {key: request.form[key] for key in request.form}
        self.token_requests.append(form)
        client_id, secret = self._client(request)
        if (client_id, secret) != (CLIENT_ID, CLIENT_SECRET):
            return self._refuse("invalid_client", 401)
        if form.get("grant_type") != "authorization_code":
            return self._refuse("unsupported_grant_type")
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)  # single use
        if grant is None or grant.client_id != client_id or grant.redirect_uri != form.get("redirect_uri"):
            return self._refuse("invalid_grant")
        if grant.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if grant.code_challenge_method != "S256" or digest != grant.code_challenge:
                return self._refuse("invalid_grant")
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = grant.person
        return _json(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 604800,
                "refresh_token": secrets.token_urlsafe(24),
                "scope": grant.scope,
            }
        )

    def _me(self, request: Request) -> Response:
        auth = request.headers.get("Authorization", "")
        person = self._tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if person is None:
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        return _json(
            {
                "id": person.id,
                "username": person.username,
                "global_name": person.global_name,
                "discriminator": "0",
                "avatar": None,
                "mfa_enabled": False,
                "locale": "en-US",
                "flags": 0,
                "premium_type": 0,
                "public_flags": 0,
            }
        )
