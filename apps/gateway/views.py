"""The REST contract (DESIGN.md). Views are thin: parse, authorize, build a protobuf command, call the
escrow service's dispatch, answer. Reads come from the projections."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import uuid
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import RequestDataTooBig
from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers as drf_serializers
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.public import audit_record
from apps.escrow.public import CommandResult, EscrowState, allowed_actions, dispatch
from apps.gateway import problems, waiting
from apps.gateway import serializers as io
from apps.gateway.auth import BearerJWTAuthentication, caller_id, is_staff_member
from apps.gateway.idempotency import run_idempotent
from apps.gateway.problems import CONTENT_TYPE, Problem, database_unavailable, problem_body, problem_response
from apps.notifications import public as notifications
from apps.outbox import public as bus
from apps.payments import public as payments
from apps.projections import public as selectors
from apps.projections.public import EscrowViewFields as EscrowView
from proto.common.v1 import Actor, ActorKind, Money
from proto.escrow import v1 as escrow_v1

ESCROW_STATES = frozenset(state.value for state in EscrowState)
OUTCOMES = {
    "release": escrow_v1.DisputeOutcome.RELEASE,
    "refund": escrow_v1.DisputeOutcome.REFUND,
    "split": escrow_v1.DisputeOutcome.SPLIT,
}


def _links(request: Request, escrow_id: uuid.UUID | str) -> dict[str, str]:
    base = reverse("escrow-detail", kwargs={"escrow_id": escrow_id})
    return {"self": base, "events": f"{base}/events"}


PREFER_PARAMETER = OpenApiParameter(
    "Prefer",
    str,
    OpenApiParameter.HEADER,
    description="`wait=N` (RFC 7240): answer once the read model shows this command (or, on a read, once "
    "`min_version` is reached, the escrow appears or, with If-None-Match, it changes), waiting at most N seconds "
    "(capped by the server). Without it the answer never waits.",
)
PREFERENCE_APPLIED = OpenApiParameter(
    "Preference-Applied",
    str,
    OpenApiParameter.HEADER,
    response=True,
    description="`wait=<seconds>`: the wait the server applied (after the cap), when the client asked for one.",
)
ETAG = OpenApiParameter(
    "ETag",
    str,
    OpenApiParameter.HEADER,
    response=[200, 304],
    description="The representation's entity tag; send it back in If-None-Match.",
)


# Every command answers at once; a client may ask it to wait for the read model.
COMMAND_PARAMETERS = [PREFER_PARAMETER, PREFERENCE_APPLIED]


def _accepted(request: Request, result: CommandResult) -> Response:
    """The 202: the escrow's state and version as the command's own transaction left them, so the caller
    knows where the escrow is without a read (and can ask for that version: `?min_version=`)."""
    response = Response(
        {
            "command_id": str(result.command_id),
            "escrow_id": str(result.escrow_id),
            "state": result.state,
            "version": result.version,
            "duplicate": result.duplicate,
            "links": _links(request, result.escrow_id),
        },
        status=202,
    )
    response["Location"] = reverse("escrow-detail", kwargs={"escrow_id": result.escrow_id})
    return response


def _command_answer(request: Request, response: Response) -> Response:
    """After the command's transaction committed: only a client that asked (`Prefer: wait=N`) is answered
    once the read model shows the command's version (or after N seconds; the 202 stands either way)."""
    wait = waiting.requested_wait(request)
    if wait is None or response.status_code != 202 or not isinstance(response.data, dict):
        return response
    escrow_id, version = response.data.get("escrow_id"), response.data.get("version")
    if escrow_id and isinstance(version, int) and wait > 0:
        selectors.escrow_view_wait(escrow_id=str(escrow_id), version=version, timeout_seconds=wait)
    return waiting.applied(response, wait)


def _validated(serializer_class: type[drf_serializers.Serializer], request: Request) -> dict[str, Any]:
    data = request.data if request.body else {}
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _query_params(request: Request, allowed: set[str]) -> Any:
    """The query parameters, refused with 400 when one is unknown or given twice (which of two values
    wins is not something a client should have to guess)."""
    params = request.GET  # the same QueryDict as DRF's query_params; a plain HttpRequest has it too
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise Problem(
            400,
            "validation_error",
            "unknown query parameter",
            errors=[{"field": name, "detail": "unknown query parameter"} for name in unknown],
        )
    repeated = sorted(name for name in params if len(params.getlist(name)) > 1)
    if repeated:
        raise Problem(
            400,
            "validation_error",
            "repeated query parameter",
            errors=[{"field": name, "detail": "give this parameter once"} for name in repeated],
        )
    return params


def _user_actor(request: Request) -> Actor:
    return Actor(kind=ActorKind.USER, user_id=caller_id(request))


def _staff_or_user_actor(request: Request, escrow_id: uuid.UUID) -> Actor:
    """Staff act as staff on escrows they are not party to; on their own trades they are a party."""
    if is_staff_member(request.user):
        view = selectors.escrow_view_get(escrow_id=str(escrow_id))
        if view is None or caller_id(request) not in (view.buyer_id, view.seller_id):
            return Actor(kind=ActorKind.STAFF, user_id=caller_id(request))
    return _user_actor(request)


def _is_staff(request: Request) -> bool:
    """Once per request: a page of escrows asks for every row."""
    cached: bool | None = getattr(request, "_escrow_staff", None)
    if cached is None:
        cached = is_staff_member(request.user)
        setattr(request, "_escrow_staff", cached)  # noqa: B010 - DRF's Request has no such attribute
    return cached


def _can_read(request: Request, view: EscrowView) -> bool:
    return caller_id(request) in (view.buyer_id, view.seller_id) or is_staff_member(request.user)


def _render_escrow(
    request: Request, view: EscrowView, instructions_by_escrow: dict[str, payments.PaymentInstructions] | None = None
) -> dict[str, Any]:
    # Views folded before two-sided deals name no creator: the buyer created those.
    created_by = view.created_by_id or view.buyer_id
    body: dict[str, Any] = {
        "id": str(view.escrow_id),
        "state": view.state,
        "amount": io.minor_to_decimal_string(view.amount_minor, view.currency),
        "currency": view.currency,
        "description": view.description,
        "buyer": view.buyer_id,
        "seller": view.seller_id,
        "created_by": created_by,
        "creator_role": "seller" if created_by == view.seller_id else "buyer",
        "inspection_period_hours": view.inspection_period_hours,
        "acceptance_deadline": view.acceptance_deadline.isoformat() if view.acceptance_deadline else None,
        "funding_deadline": view.funding_deadline.isoformat() if view.funding_deadline else None,
        "inspection_deadline": view.inspection_deadline.isoformat() if view.inspection_deadline else None,
        "paid_to_seller": io.minor_to_decimal_string(view.paid_to_seller_minor, view.currency),
        "refunded": io.minor_to_decimal_string(view.refunded_minor, view.currency),
        "fee": io.minor_to_decimal_string(view.fee_minor, view.currency),
        "version": view.version,
        "created_at": view.created_at.isoformat(),
        "updated_at": view.updated_at.isoformat(),
        "links": _links(request, view.escrow_id),
        # What the caller may do now (accept, decline, pay, deliver, release, dispute, cancel).
        "actions": allowed_actions(view, caller_id(request), staff=_is_staff(request)),
    }
    if caller_id(request) == view.buyer_id and view.state == EscrowState.AWAIT_FUNDS:
        instructions = (
            payments.payment_instructions(str(view.escrow_id))
            if instructions_by_escrow is None
            else instructions_by_escrow.get(str(view.escrow_id))
        )
        if instructions is not None:
            body["payment"] = {
                "provider": instructions.provider,
                "status": instructions.status,
                "client_secret": instructions.client_secret or None,
                "deposit_address": instructions.deposit_address or None,
                # A capability link to the checkout page, valid until the funding deadline.
                "checkout_url": payments.checkout_url(
                    escrow_id=str(view.escrow_id), funding_deadline=view.funding_deadline
                ),
            }
    return body


class EscrowCollection(APIView):
    @extend_schema(
        operation_id="escrows_list",
        parameters=[
            OpenApiParameter("role", str, enum=["buyer", "seller"]),
            OpenApiParameter("state", str, enum=sorted(ESCROW_STATES)),
            OpenApiParameter("limit", int),
            OpenApiParameter("offset", int),
        ],
        responses={
            200: inline_serializer(
                "EscrowPage",
                {
                    "count": drf_serializers.IntegerField(),
                    "results": io.EscrowOutput(many=True),
                    "next": drf_serializers.CharField(allow_null=True),
                },
            )
        },
    )
    def get(self, request: Request) -> Response:
        params = _query_params(request, {"role", "state", "limit", "offset"})
        role = params.get("role")
        state = params.get("state")
        if role is not None and role not in ("buyer", "seller"):
            raise Problem(
                400, "validation_error", "invalid role", errors=[{"field": "role", "detail": "must be buyer or seller"}]
            )
        if state is not None and state not in ESCROW_STATES:
            raise Problem(
                400, "validation_error", "invalid state", errors=[{"field": "state", "detail": "unknown state"}]
            )
        limit = _int_param(params, "limit", default=20, low=1, high=100)
        offset = _int_param(params, "offset", default=0, low=0, high=1_000_000)
        views = selectors.escrow_views_for_user(user_id=caller_id(request), role=role, state=state)
        count = views.count()
        page = list(views[offset : offset + limit])
        next_link = None
        if offset + limit < count:
            query = request.query_params.copy()
            query["offset"] = str(offset + limit)
            query["limit"] = str(limit)
            next_link = f"{request.path}?{query.urlencode()}"
        # One query for the page's payment instructions instead of one per escrow awaiting funds.
        instructions = payments.payment_instructions_many(
            [str(v.escrow_id) for v in page if v.buyer_id == caller_id(request) and v.state == EscrowState.AWAIT_FUNDS]
        )
        return Response(
            {"count": count, "results": [_render_escrow(request, v, instructions) for v in page], "next": next_link}
        )

    @extend_schema(
        operation_id="escrows_create",
        request=io.CreateEscrowInput,
        responses={202: io.CommandAccepted},
        parameters=COMMAND_PARAMETERS,
    )
    def post(self, request: Request) -> Response:
        raw = request.body

        def mutate(command_id: uuid.UUID) -> Response:
            data = _validated(io.CreateEscrowInput, request)
            counterparty_id = _counterparty_id(data["counterparty"])
            if counterparty_id == caller_id(request):
                field = data["counterparty_field"]
                raise Problem(
                    400,
                    "validation_error",
                    "you cannot make a deal with yourself",
                    errors=[{"field": field, "detail": "must be another user"}],
                )
            buyer_id, seller_id = (
                (caller_id(request), counterparty_id)
                if data["role"] == "buyer"
                else (counterparty_id, caller_id(request))
            )
            command = escrow_v1.CreateEscrow(
                escrow_id=str(uuid.uuid5(command_id, "escrow")),
                buyer_id=buyer_id,
                seller_id=seller_id,
                amount=Money(amount_minor=data["amount_minor"], currency=data["currency"]),
                description=data["description"],
                inspection_period_hours=data.get("inspection_period_hours", 0),
                actor=_user_actor(request),
            )
            return _accepted(request, dispatch(command, command_id=command_id))

        return _command_answer(request, run_idempotent(request, raw, mutate))


def _counterparty_id(counterparty: Any) -> int:
    if isinstance(counterparty, io.DiscordUser):
        # The account linked to this Discord id, made now if they have none: the deal waits for them and is
        # theirs when they first sign in with Discord.
        try:
            return notifications.user_for_discord_id(discord_user_id=int(counterparty)).pk
        except notifications.NotificationError as exc:
            raise Problem(
                400, "validation_error", exc.detail, errors=[{"field": "counterparty", "detail": exc.detail}]
            ) from None
    return counterparty.pk


_ASCII_DIGITS = re.compile(r"^[0-9]{1,9}$")


def _int_param(params: Any, name: str, *, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    # ASCII digits only: str.isdigit() also admits "²" (which int() then refuses) and "１".
    if not _ASCII_DIGITS.match(value) or not low <= int(value) <= high:
        raise Problem(
            400,
            "validation_error",
            f"invalid {name}",
            errors=[{"field": name, "detail": f"must be an integer from {low} to {high}"}],
        )
    return int(value)


def _etag(body: dict[str, Any]) -> str:
    """A strong entity tag over the representation this caller gets (it differs by caller: actions, payment
    instructions), so a 304 is right whatever changed, the escrow's version or the payment's status."""
    digest = hashlib.blake2b(json.dumps(body, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()
    return f'"{body.get("version", 0)}-{digest}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    # Weak comparison (RFC 9110 13.1.2): W/"x" matches "x".
    return etag in {tag.removeprefix("W/") for tag in (t.strip() for t in if_none_match.split(",")) if tag}


# The Accept headers the lean read path answers itself: the ones DRF's negotiation maps to the JSON renderer
# as its plain media type. Anything else (a browser's list, `; indent=4`, `?format=`) goes through DRF.
_LEAN_ACCEPT = frozenset({"", "*/*", "application/json"})


class EscrowDetail(APIView):
    """GET /escrows/{id}, the hottest route. A plain GET is served outside DRF's per-request machinery (the
    Request wrapper, content negotiation, the permission and throttle passes: none of them can change its
    answer, reads are not throttled), with the same authenticator, the same view code, the same problem
    answers and the same renderer as DRF would use; `tests/gateway/test_lean_read.py` compares the two paths
    answer by answer. Any other request (HEAD, OPTIONS, an unusual Accept, a forced test user) takes DRF's
    path. The OpenAPI description comes from this class as before."""

    lean = True
    _authenticator = BearerJWTAuthentication()
    _renderer = JSONRenderer()

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if (
            self.lean
            and request.method == "GET"
            and request.META.get("HTTP_ACCEPT", "") in _LEAN_ACCEPT
            and "format" not in request.GET
            and not hasattr(request, "_force_auth_user")
        ):
            return self._lean_get(request, kwargs["escrow_id"])
        return super().dispatch(request, *args, **kwargs)

    def _lean_get(self, request: HttpRequest, escrow_id: uuid.UUID) -> Response:
        self.args, self.kwargs = (), {"escrow_id": escrow_id}
        try:
            try:
                authenticated = self._authenticator.authenticate(request)
            except Exception:
                request.user = AnonymousUser()  # as DRF leaves it when authentication fails
                raise
            if authenticated is None:
                request.user = AnonymousUser()
                raise NotAuthenticated()
            request.user = authenticated[0]
            # Only the attributes DRF's Request and Django's HttpRequest share are used (GET, headers, user).
            response = self.get(cast(Request, request), escrow_id)
        except Exception as exc:
            handled = problems.exception_handler(exc, {})
            if handled is None:
                raise
            response = handled
        # What DRF's finalize_response does for this view: its renderer and the Allow header.
        response.accepted_renderer = self._renderer
        response.accepted_media_type = self._renderer.media_type
        response.renderer_context = {"view": self, "args": (), "kwargs": self.kwargs, "request": request}  # type: ignore[attr-defined]
        response["Allow"] = "GET, HEAD, OPTIONS"
        return response

    @extend_schema(
        operation_id="escrows_retrieve",
        parameters=[
            OpenApiParameter(
                "min_version",
                int,
                description="Answer only with the escrow at this version or later (a command's 202 gives the "
                "version it produced): 412 `version_not_reached` (with Retry-After) while the read model is "
                "behind, unless `Prefer: wait=N` lets the server wait for it.",
            ),
            OpenApiParameter(
                "If-None-Match",
                str,
                OpenApiParameter.HEADER,
                description="An ETag from an earlier answer: 304 while the representation is unchanged (with "
                "`Prefer: wait=N`, the server waits up to N seconds for the escrow to change).",
            ),
            PREFER_PARAMETER,
            PREFERENCE_APPLIED,
            ETAG,
        ],
        responses={
            200: io.EscrowOutput,
            304: OpenApiResponse(description="Not Modified: the representation still has the ETag sent."),
        },
    )
    def get(self, request: Request, escrow_id: uuid.UUID) -> Response:
        params = _query_params(request, {"min_version"})
        min_version = (
            _int_param(params, "min_version", default=0, low=1, high=1_000_000_000) if "min_version" in params else 0
        )
        if_none_match = request.headers.get("If-None-Match")
        wait = waiting.requested_wait(request)
        view = selectors.escrow_view_get(escrow_id=str(escrow_id))
        body = _render_escrow(request, view) if view is not None and _can_read(request, view) else None
        if wait:
            # Waiting was asked for: for the escrow to appear, to reach min_version, or to change.
            target = None
            if view is None:
                target = max(min_version, 1)
            elif min_version > view.version:
                target = min_version
            elif body is not None and _matches(if_none_match, _etag(body)):
                target = view.version + 1
            if target is not None and selectors.escrow_view_wait(
                escrow_id=str(escrow_id), version=target, timeout_seconds=wait
            ):
                view = selectors.escrow_view_get(escrow_id=str(escrow_id))
                body = _render_escrow(request, view) if view is not None and _can_read(request, view) else None
        if view is None or body is None:
            raise Problem(404, "escrow_not_found", "no such escrow")
        if min_version > view.version:
            response = problem_response(
                412,
                "version_not_reached",
                f"the escrow is at version {view.version} here, not yet {min_version}; retry, or send Prefer: wait=N",
                state=view.state,
                version=view.version,
            )
            response["Retry-After"] = "1"
        else:
            etag = _etag(body)
            response = Response(None, status=304) if _matches(if_none_match, etag) else Response(body)
            response["ETag"] = etag
        response["Vary"] = "Authorization, Prefer"
        return waiting.applied(response, wait) if wait is not None else response


class EscrowEvents(APIView):
    @extend_schema(operation_id="escrows_events", responses={200: io.TimelineOutput(many=True)})
    def get(self, request: Request, escrow_id: uuid.UUID) -> Response:
        view = selectors.escrow_view_get(escrow_id=str(escrow_id))
        if view is None or not _can_read(request, view):
            raise Problem(404, "escrow_not_found", "no such escrow")
        entries = selectors.escrow_timeline(escrow_id=str(escrow_id))
        return Response(
            [
                {
                    "version": entry.version,
                    "type": entry.type,
                    "occurred_at": entry.occurred_at.isoformat(),
                    "actor": {"kind": entry.actor_kind, "user_id": entry.actor_id},
                    "data": entry.data,
                }
                for entry in entries
            ]
        )


class EscrowAction(APIView):
    """POST /escrows/{id}/<action>: one command each."""

    input_class: type[drf_serializers.Serializer] = io.EmptyInput

    def build(self, request: Request, escrow_id: uuid.UUID, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    # The staff AuditLog's name for this action when staff take it (default: the route's last segment).
    audit_action = ""

    def audit_reason(self, data: dict[str, Any]) -> str:
        return str(data.get("note") or data.get("reason") or "") or f"{self._action_name()} through the REST API"

    def _action_name(self) -> str:
        return self.audit_action or self.__class__.__name__.removesuffix("Escrow").lower()

    def post(self, request: Request, escrow_id: uuid.UUID) -> Response:
        raw = request.body

        def mutate(command_id: uuid.UUID) -> Response:
            data = _validated(self.input_class, request)
            command = self.build(request, escrow_id, data)
            if command.actor.kind != ActorKind.STAFF:
                # A party's command is the escrow's own one transaction, with nothing around it.
                return _accepted(request, dispatch(command, command_id=command_id))
            # A staff action and its AuditLog row commit together: a refused command leaves neither.
            with transaction.atomic():
                result = dispatch(command, command_id=command_id)
                if not result.duplicate:
                    audit_record(
                        actor=request.user,
                        action=self._action_name(),
                        escrow_id=escrow_id,
                        reason=self.audit_reason(data),
                        command_id=command_id,
                        detail={
                            "edge": "api",
                            **{k: v for k, v in data.items() if k in ("outcome", "seller_amount")},
                            "state_after": result.state,
                        },
                    )
            return _accepted(request, result)

        return _command_answer(request, run_idempotent(request, raw, mutate))


class AcceptEscrow(EscrowAction):
    @extend_schema(
        operation_id="escrows_accept", request=None, responses={202: io.CommandAccepted}, parameters=COMMAND_PARAMETERS
    )
    def post(self, request: Request, escrow_id: uuid.UUID) -> Response:
        return super().post(request, escrow_id)

    def build(self, request: Request, escrow_id: uuid.UUID, data: dict[str, Any]) -> Any:
        # Always as a user: only the counterparty accepts; staff get the 403 from the rules.
        return escrow_v1.AcceptEscrow(escrow_id=str(escrow_id), actor=_staff_or_user_actor(request, escrow_id))


class DeclineEscrow(EscrowAction):
    input_class = io.CancelInput

    @extend_schema(
        operation_id="escrows_decline",
        request=io.CancelInput,
        responses={202: io.CommandAccepted},
        parameters=COMMAND_PARAMETERS,
    )
    def post(self, request: Request, escrow_id: uuid.UUID) -> Response:
        return super().post(request, escrow_id)

    def build(self, request: Request, escrow_id: uuid.UUID, data: dict[str, Any]) -> Any:
        return escrow_v1.DeclineEscrow(
            escrow_id=str(escrow_id), actor=_staff_or_user_actor(request, escrow_id), reason=data.get("reason", "")
        )


class DeliverEscrow(EscrowAction):
    @extend_schema(
        operation_id="escrows_deliver", request=None, responses={202: io.CommandAccepted}, parameters=COMMAND_PARAMETERS
    )
    def post(self, request: Request, escrow_id: uuid.UUID) -> Response:
        return super().post(request, escrow_id)

    def build(self, request: Request, escrow_id: uuid.UUID, data: dict[str, Any]) -> Any:
        return escrow_v1.MarkDelivered(escrow_id=str(escrow_id), actor=_staff_or_user_actor(request, escrow_id))


class ReleaseEscrow(EscrowAction):
    @extend_schema(
        operation_id="escrows_release", request=None, responses={202: io.CommandAccepted}, parameters=COMMAND_PARAMETERS
    )
    def post(self, request: Request, escrow_id: uuid.UUID) -> Response:
        return super().post(request, escrow_id)

    def build(self, request: Request, escrow_id: uuid.UUID, data: dict[str, Any]) -> Any:
        return escrow_v1.ReleaseFunds(escrow_id=str(escrow_id), actor=_staff_or_user_actor(request, escrow_id))


class CancelEscrow(EscrowAction):
    input_class = io.CancelInput

    @extend_schema(
        operation_id="escrows_cancel",
        request=io.CancelInput,
        responses={202: io.CommandAccepted},
        parameters=COMMAND_PARAMETERS,
    )
    def post(self, request: Request, escrow_id: uuid.UUID) -> Response:
        return super().post(request, escrow_id)

    def build(self, request: Request, escrow_id: uuid.UUID, data: dict[str, Any]) -> Any:
        return escrow_v1.CancelEscrow(
            escrow_id=str(escrow_id), actor=_staff_or_user_actor(request, escrow_id), reason=data.get("reason", "")
        )


class DisputeEscrow(EscrowAction):
    input_class = io.DisputeInput

    @extend_schema(
        operation_id="escrows_dispute",
        request=io.DisputeInput,
        responses={202: io.CommandAccepted},
        parameters=COMMAND_PARAMETERS,
    )
    def post(self, request: Request, escrow_id: uuid.UUID) -> Response:
        return super().post(request, escrow_id)

    def build(self, request: Request, escrow_id: uuid.UUID, data: dict[str, Any]) -> Any:
        # Staff can read every escrow, so a refusal must be 403, not the stranger's 404.
        return escrow_v1.OpenDispute(
            escrow_id=str(escrow_id), actor=_staff_or_user_actor(request, escrow_id), reason=data["reason"]
        )


class ResolveEscrow(EscrowAction):
    input_class = io.ResolveInput
    audit_action = "resolve_dispute"

    @extend_schema(
        operation_id="escrows_resolve",
        request=io.ResolveInput,
        responses={202: io.CommandAccepted},
        parameters=COMMAND_PARAMETERS,
    )
    def post(self, request: Request, escrow_id: uuid.UUID) -> Response:
        return super().post(request, escrow_id)

    def build(self, request: Request, escrow_id: uuid.UUID, data: dict[str, Any]) -> Any:
        actor = (
            Actor(kind=ActorKind.STAFF, user_id=caller_id(request))
            if is_staff_member(request.user)
            else _user_actor(request)
        )
        seller_amount = None
        if data["outcome"] == "split":
            view = selectors.escrow_view_get(escrow_id=str(escrow_id))
            currency = view.currency if view is not None else "USD"
            try:
                minor = io.parse_amount(data["seller_amount"], currency=currency)
            except drf_serializers.ValidationError as exc:
                raise drf_serializers.ValidationError({"seller_amount": exc.detail}) from None
            seller_amount = Money(amount_minor=minor, currency=currency)
        return escrow_v1.ResolveDispute(
            escrow_id=str(escrow_id),
            actor=actor,
            outcome=OUTCOMES[data["outcome"]],
            seller_amount=seller_amount,
            note=data.get("note", ""),
        )


class SandboxPay(APIView):
    # Not a command of ours (the sandbox provider's webhook is what moves the money): its own answer.
    @extend_schema(
        operation_id="sandbox_pay",
        request=None,
        parameters=[PREFER_PARAMETER, PREFERENCE_APPLIED],
        responses={
            202: inline_serializer(
                "SandboxPayment",
                {
                    "escrow_id": drf_serializers.UUIDField(),
                    "state": drf_serializers.CharField(),
                    "webhook": drf_serializers.CharField(),
                    "links": drf_serializers.DictField(child=drf_serializers.CharField()),
                },
            )
        },
    )
    def post(self, request: Request, escrow_id: uuid.UUID) -> Response:
        if request.body and request.body.strip() not in (b"", b"{}"):
            raise Problem(
                400,
                "validation_error",
                "this endpoint takes no body",
                errors=[{"field": "body", "detail": "must be empty"}],
            )
        view = selectors.escrow_view_get(escrow_id=str(escrow_id))
        if view is None or caller_id(request) not in (view.buyer_id, view.seller_id):
            raise Problem(404, "escrow_not_found", "no such escrow")
        if caller_id(request) != view.buyer_id:
            raise Problem(403, "not_allowed", "only the buyer can pay", state=view.state)
        if view.state != EscrowState.AWAIT_FUNDS:
            raise Problem(
                409, "invalid_transition", f"the escrow is {view.state}, not awaiting funds", state=view.state
            )
        wait = waiting.requested_wait(request)
        if wait:
            # Right after the acceptance, payments may still be issuing the payment to pay: only a client that
            # asked waits for it; the others get 409 sandbox_unavailable and retry.
            payments.payment_instructions_wait(str(escrow_id), timeout_seconds=wait)
        try:
            outcome = payments.sandbox_pay(str(escrow_id))
        except payments.SandboxUnavailable as exc:
            raise Problem(409, "sandbox_unavailable", str(exc), state=view.state) from None
        if outcome.http_status >= 400:
            raise Problem(outcome.http_status, "payment_failed", outcome.detail)
        view.refresh_from_db()
        response = Response(
            {
                "escrow_id": str(escrow_id),
                "state": view.state,
                "webhook": outcome.status,
                "links": _links(request, escrow_id),
            },
            status=202,
        )
        response["Location"] = reverse("escrow-detail", kwargs={"escrow_id": escrow_id})
        return waiting.applied(response, wait) if wait is not None else response


# --- provider webhooks: plain Django views, so the raw body reaches the verifier untouched -----------


# The headers each provider signs with (required in the OpenAPI document).
SIGNATURE_HEADERS = {"stripe": ("Stripe-Signature",), "custodian": ("X-Circle-Signature", "X-Circle-Key-Id")}


def _webhook(request: HttpRequest, provider: str) -> JsonResponse:
    outcome = payments.webhook_receive(provider=provider, body=request.body, headers=request.headers)
    missing = [name for name in SIGNATURE_HEADERS[provider] if not request.headers.get(name)]
    if outcome.http_status == 404 and missing:
        # Unsigned is a bad request whichever providers this deployment runs (an enabled provider stores
        # and rejects it with 400 itself).
        return JsonResponse(
            problem_body(400, "invalid_signature", f"missing {', '.join(missing)} header"),
            status=400,
            content_type=CONTENT_TYPE,
        )
    if outcome.http_status >= 400:
        code = {400: "invalid_signature", 404: "provider_disabled", 413: "body_too_large"}.get(
            outcome.http_status, "webhook_failed"
        )
        return JsonResponse(
            problem_body(outcome.http_status, code, outcome.detail),
            status=outcome.http_status,
            content_type=CONTENT_TYPE,
        )
    return JsonResponse({"status": outcome.status, "detail": outcome.detail}, status=outcome.http_status)


def _post_only(request: HttpRequest) -> JsonResponse | None:
    """Django's require_POST answers 405 with an empty HTML body; every error here is problem+json."""
    if request.method == "POST":
        return None
    response = JsonResponse(
        problem_body(405, "method_not_allowed", f'Method "{request.method}" not allowed.'),
        status=405,
        content_type=CONTENT_TYPE,
    )
    response["Allow"] = "POST"
    return response


@csrf_exempt
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    return _post_only(request) or _webhook(request, "stripe")


@csrf_exempt
def custodian_webhook(request: HttpRequest) -> JsonResponse:
    return _post_only(request) or _webhook(request, "custodian")


# --- operations ------------------------------------------------------------------------------------------


class Health(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="health", responses={200: inline_serializer("Health", {"status": drf_serializers.CharField()})}
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class Ready(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="ready",
        responses={
            200: inline_serializer(
                "Ready",
                {
                    "status": drf_serializers.CharField(),
                    "database": drf_serializers.CharField(),
                    "bus_lag": drf_serializers.DictField(child=drf_serializers.IntegerField()),
                },
            )
        },
    )
    def get(self, request: Request) -> Response:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            lags = {sub.name: bus.lag(sub) for sub in bus.outbox_subscribers()}
        except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
            return Response(
                problem_body(503, "not_ready", f"database unavailable: {type(exc).__name__}"),
                status=503,
                content_type=CONTENT_TYPE,
            )
        return Response({"status": "ready", "database": "ok", "bus_lag": lags})


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(problem_body(404, "not_found", "no such resource"), status=404, content_type=CONTENT_TYPE)


def server_error(request: HttpRequest) -> JsonResponse:
    # Called inside Django's `except` for the failure, wherever it was raised (a middleware, a view).
    if database_unavailable(sys.exc_info()[1]):
        response = JsonResponse(
            problem_body(503, "database_unavailable", "the database is unavailable; retry after the delay given"),
            status=503,
            content_type=CONTENT_TYPE,
        )
        response["Retry-After"] = str(settings.DATABASE_RETRY_AFTER_SECONDS)
        return response
    return JsonResponse(
        problem_body(500, "internal_error", "something went wrong on our side; retry later"),
        status=500,
        content_type=CONTENT_TYPE,
    )


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    if isinstance(exception, RequestDataTooBig):
        # Raised outside DRF (the webhook views read the raw body): still a 413, not a vague 400.
        return JsonResponse(
            problem_body(413, "body_too_large", "the request body is too large"), status=413, content_type=CONTENT_TYPE
        )
    return JsonResponse(
        problem_body(400, "bad_request", "the request could not be understood"), status=400, content_type=CONTENT_TYPE
    )
