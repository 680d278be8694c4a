"""The caller's Discord link and notification preferences. Thin: parse strictly, call the
notifications service, map its errors to problem+json."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.gateway.auth import caller_id
from apps.gateway.problems import Problem
from apps.notifications import public as notifications

_NOT_FOUND_OR_CONFLICT = {"discord_account_linked_elsewhere": 409}


LinkOutput = inline_serializer(
    "DiscordLinkOutput",
    {
        "linked": serializers.BooleanField(),
        "discord_user_id": serializers.CharField(allow_null=True),
        "linked_at": serializers.DateTimeField(allow_null=True),
    },
)
PreferencesOutput = inline_serializer(
    "NotificationPreferencesOutput",
    {
        "preferences": inline_serializer(
            "NotificationPreference",
            {
                "kind": serializers.CharField(),
                "description": serializers.CharField(),
                "enabled": serializers.BooleanField(),
                "locked": serializers.BooleanField(),
            },
            many=True,
        ),
    },
)


def _problem(exc: notifications.NotificationError) -> Problem:
    status = _NOT_FOUND_OR_CONFLICT.get(exc.code, 400)
    errors = [{"field": exc.field, "detail": exc.detail}] if exc.field else []
    return Problem(status, exc.code, exc.detail, **({"errors": errors} if errors else {}))


def _link_body(link: Any) -> dict[str, Any]:
    if link is None:
        return {"linked": False, "discord_user_id": None, "linked_at": None}
    # A string: Discord ids exceed JavaScript's safe integers.
    return {"linked": True, "discord_user_id": str(link.discord_user_id), "linked_at": link.linked_at.isoformat()}


def _body(request: Request) -> Any:
    return request.data if request.body else {}


class DiscordLinkView(APIView):
    @extend_schema(operation_id="me_discord_link_get", responses={200: LinkOutput})
    def get(self, request: Request) -> Response:
        return Response(_link_body(notifications.DiscordLink.objects.filter(user_id=caller_id(request)).first()))

    @extend_schema(operation_id="me_discord_link_delete", responses={204: None})
    def delete(self, request: Request) -> Response:
        notifications.discord_unlink(user_id=caller_id(request))
        return Response(status=204)


def _preferences_body(current: dict[str, bool]) -> dict[str, Any]:
    return {
        "preferences": [
            {
                "kind": kind,
                "description": notifications.KINDS[kind],
                "enabled": enabled,
                "locked": kind in notifications.LOCKED_ON,
            }
            for kind, enabled in current.items()
        ]
    }


class PreferencesView(APIView):
    @extend_schema(operation_id="me_notification_preferences_get", responses={200: PreferencesOutput})
    def get(self, request: Request) -> Response:
        return Response(_preferences_body(notifications.preferences_get(user_id=caller_id(request))))

    @extend_schema(
        operation_id="me_notification_preferences_patch",
        request=inline_serializer("NotificationPreferencesPatch", {"<kind>": serializers.BooleanField()}),
        responses={200: PreferencesOutput},
    )
    def patch(self, request: Request) -> Response:
        data = _body(request)
        if not isinstance(data, dict) or not data:
            raise Problem(
                400,
                "validation_error",
                "send an object of kind -> true/false",
                errors=[{"field": "body", "detail": "must be a non-empty JSON object"}],
            )
        wrong = [k for k, v in data.items() if not isinstance(v, bool)]
        if wrong:
            raise Problem(
                400,
                "validation_error",
                "the request is invalid",
                errors=[{"field": k, "detail": "must be true or false"} for k in wrong],
            )
        try:
            current = notifications.preferences_set(user_id=caller_id(request), changes=data)
        except notifications.NotificationError as exc:
            raise _problem(exc) from None
        return Response(_preferences_body(current))
