"""PUT/GET /api/v1/payout-destination: where the caller is paid as a seller. Thin: parse strictly, call
the payments service, answer. Registering sends any payout that was waiting for it."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers as drf_serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.gateway import serializers as io
from apps.gateway.auth import caller_id
from apps.gateway.problems import Problem
from apps.payments import public as payments


class PayoutDestinationInput(io.StrictSerializer):
    stripe_account_id = io.StrictCharField(required=False, max_length=255, trim_whitespace=False)
    wallet_address = io.StrictCharField(required=False, max_length=42, trim_whitespace=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise drf_serializers.ValidationError(
                {"body": ["give stripe_account_id (card escrows) and/or wallet_address (USDC on Base)"]}
            )
        return attrs


PayoutDestinationOutput = inline_serializer(
    "PayoutDestination",
    {
        "seller": drf_serializers.IntegerField(),
        "stripe_account_id": drf_serializers.CharField(),
        "wallet_address": drf_serializers.CharField(),
        "waiting_payouts": drf_serializers.IntegerField(),
    },
)


def _render(seller_id: int, destination: payments.Destination | None) -> dict[str, Any]:
    return {
        "seller": seller_id,
        "stripe_account_id": destination.stripe_account_id if destination else "",
        "wallet_address": destination.wallet_address if destination else "",
        "waiting_payouts": payments.waiting_payouts_count(seller_id=seller_id),
    }


class PayoutDestination(APIView):
    @extend_schema(operation_id="payout_destination_get", responses={200: PayoutDestinationOutput})
    def get(self, request: Request) -> Response:
        return Response(_render(caller_id(request), payments.destination_get(seller_id=caller_id(request))))

    @extend_schema(
        operation_id="payout_destination_put", request=PayoutDestinationInput, responses={200: PayoutDestinationOutput}
    )
    def put(self, request: Request) -> Response:
        serializer = PayoutDestinationInput(data=request.data if request.body else {})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            destination = payments.destination_set(
                seller_id=caller_id(request),
                stripe_account_id=data.get("stripe_account_id"),
                wallet_address=data.get("wallet_address"),
            )
        except payments.InvalidPayoutDestination as exc:
            code = {409: "destination_not_ready", 503: "provider_unavailable"}.get(exc.status, "validation_error")
            raise Problem(exc.status, code, exc.detail, errors=[{"field": exc.field, "detail": exc.detail}]) from None
        return Response(_render(caller_id(request), destination))


OnboardingOutput = inline_serializer("PayoutOnboarding", {"url": drf_serializers.URLField()})


class PayoutOnboarding(APIView):
    """POST /payout-destination/onboarding: where to send the caller to be paid by card (a Stripe Connect
    Express onboarding link; sandbox: a local page). Readiness arrives by webhook, not from the redirect."""

    @extend_schema(operation_id="payout_destination_onboarding", request=None, responses={200: OnboardingOutput})
    def post(self, request: Request) -> Response:
        if request.body and request.body.strip() not in (b"", b"{}"):
            raise Problem(
                400,
                "validation_error",
                "this endpoint takes no body",
                errors=[{"field": "body", "detail": "must be empty"}],
            )
        try:
            url = payments.onboarding_start(seller_id=caller_id(request))
        except payments.OnboardingUnavailable as exc:
            raise Problem(503, "provider_unavailable", str(exc)) from None
        return Response({"url": url})
