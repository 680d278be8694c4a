"""Input and output shapes of the REST contract. Input is strict: unknown fields, wrong types and
ambiguous amounts are refused with the field named."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.public import InvalidAmount, decimal_string_to_minor
from apps.core.public import minor_to_decimal_string as minor_to_decimal_string  # the views format through here


def parse_amount(value: Any, *, currency: str = "USD") -> int:
    """A decimal string with at most the currency's minor digits -> integer minor units. No floats."""
    try:
        return decimal_string_to_minor(value, currency=currency)
    except InvalidAmount as exc:
        raise serializers.ValidationError(str(exc)) from None


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, instead of silently ignoring them."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"body": ["must be a JSON object"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A string, and only a string (DRF's CharField would accept 42 or true)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("must be a string")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError("must be an integer")
        return super().to_internal_value(data)


# Django's username characters (UnicodeUsernameValidator).
_USERNAME = re.compile(r"^[\w.@+-]+\Z")


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string", "maxLength": 150}]})
class SellerField(serializers.Field):
    """A user id (integer) or a username (string)."""

    def to_internal_value(self, data: Any) -> Any:
        User = get_user_model()
        if isinstance(data, bool):
            raise serializers.ValidationError("must be a user id or a username")
        if isinstance(data, int):
            user = User.objects.filter(pk=data, is_active=True).first()
        elif isinstance(data, str) and 0 < len(data) <= 150:
            if not _USERNAME.match(data):
                # Not a name any account can have (and a NUL byte would not even reach PostgreSQL).
                raise serializers.ValidationError("no such user")
            user = User.objects.filter(username=data, is_active=True).first()
        else:
            raise serializers.ValidationError("must be a user id or a username")
        if user is None:
            raise serializers.ValidationError("no such user")
        return user

    def to_representation(self, value: Any) -> Any:
        return value.pk


_DISCORD_REF = re.compile(r"^discord:([1-9][0-9]{0,19})$")
_MAX_SNOWFLAKE = 2**63 - 1


class DiscordUser(int):
    """A Discord user id named as `discord:<snowflake>`: the account is found (or made) only once the rest of
    the request is valid, so a refused request creates no account."""


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string", "maxLength": 150}]})
class CounterpartyField(SellerField):
    """A user id (integer), a username, or `discord:<snowflake>` for someone who may have no account yet."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and data.startswith("discord:"):
            match = _DISCORD_REF.match(data)
            if match is None or int(match.group(1)) > _MAX_SNOWFLAKE:
                raise serializers.ValidationError("a Discord user is named as discord:<numeric user id>")
            return DiscordUser(int(match.group(1)))
        return super().to_internal_value(data)


class CreateEscrowInput(StrictSerializer):
    role = serializers.ChoiceField(
        choices=["buyer", "seller"], default="buyer", required=False, help_text="The caller's side of the deal."
    )
    counterparty = CounterpartyField(
        required=False,
        help_text="The other party: a user id, a username, or discord:<snowflake> (an account is made for a "
        "Discord user who has none, and is theirs when they sign in with Discord).",
    )
    seller = SellerField(required=False, help_text="Older form of counterparty, for a deal the buyer creates.")
    # Not trimmed: an amount is exactly a decimal string, " 149.99" is as ambiguous as "149.990".
    amount = StrictCharField(help_text='Decimal string, e.g. "149.99".', max_length=20, trim_whitespace=False)
    currency = StrictCharField(min_length=3, max_length=3)
    description = StrictCharField(max_length=500, trim_whitespace=True)
    inspection_period_hours = StrictIntegerField(required=False, min_value=1, max_value=720)

    def validate_currency(self, value: str) -> str:
        if value not in settings.ESCROW_CURRENCIES:
            raise serializers.ValidationError(f"must be one of {', '.join(settings.ESCROW_CURRENCIES)}")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        role = attrs.setdefault("role", "buyer")
        if "seller" in attrs:
            if "counterparty" in attrs:
                raise serializers.ValidationError({"seller": ["give counterparty or seller, not both"]})
            if role != "buyer":
                raise serializers.ValidationError({"seller": ["only a buyer names a seller; use counterparty"]})
            attrs["counterparty"] = attrs.pop("seller")
            attrs["counterparty_field"] = "seller"
        elif "counterparty" not in attrs:
            raise serializers.ValidationError({"counterparty": ["This field is required."]})
        attrs.setdefault("counterparty_field", "counterparty")
        try:
            minor = parse_amount(attrs["amount"], currency=attrs["currency"])
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"amount": exc.detail}) from None
        low, high = settings.ESCROW_MIN_AMOUNT_MINOR, settings.ESCROW_MAX_AMOUNT_MINOR
        if not low <= minor <= high:
            raise serializers.ValidationError(
                {
                    "amount": [
                        f"must be between {minor_to_decimal_string(low, attrs['currency'])} and "
                        f"{minor_to_decimal_string(high, attrs['currency'])}"
                    ]
                }
            )
        attrs["amount_minor"] = minor
        return attrs


class EmptyInput(StrictSerializer):
    """Deliver and release take no fields."""


class CancelInput(StrictSerializer):
    reason = StrictCharField(max_length=1000, required=False, allow_blank=True, default="")


class DisputeInput(StrictSerializer):
    reason = StrictCharField(max_length=1000)


class ResolveInput(StrictSerializer):
    outcome = serializers.ChoiceField(choices=["release", "refund", "split"])
    seller_amount = StrictCharField(
        required=False, max_length=20, trim_whitespace=False, help_text="Split only: the seller's gross share."
    )
    note = StrictCharField(max_length=1000, required=False, allow_blank=True, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["outcome"] == "split":
            if "seller_amount" not in attrs:
                raise serializers.ValidationError({"seller_amount": ["required for a split"]})
        elif "seller_amount" in attrs:
            raise serializers.ValidationError({"seller_amount": ["only for a split"]})
        return attrs


class CommandAccepted(serializers.Serializer):
    command_id = serializers.UUIDField()
    escrow_id = serializers.UUIDField()
    # The escrow as the command's own transaction left it: no read of the read model needed.
    state = serializers.CharField()
    version = serializers.IntegerField()
    duplicate = serializers.BooleanField()
    links = serializers.DictField(child=serializers.CharField())


class EscrowOutput(serializers.Serializer):
    id = serializers.UUIDField()
    state = serializers.CharField()
    amount = serializers.CharField()
    currency = serializers.CharField()
    description = serializers.CharField()
    buyer = serializers.IntegerField()
    seller = serializers.IntegerField()
    created_by = serializers.IntegerField(help_text="The party who created the deal; the other one accepts it.")
    creator_role = serializers.ChoiceField(choices=["buyer", "seller"])
    inspection_period_hours = serializers.IntegerField()
    acceptance_deadline = serializers.DateTimeField(allow_null=True)
    funding_deadline = serializers.DateTimeField(allow_null=True)
    inspection_deadline = serializers.DateTimeField(allow_null=True)
    paid_to_seller = serializers.CharField()
    refunded = serializers.CharField()
    fee = serializers.CharField()
    version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    payment = serializers.DictField(required=False, help_text="Buyer only: how to pay.")
    actions = serializers.ListField(
        child=serializers.CharField(),
        help_text="What the caller may do now: accept, decline, pay, deliver, release, dispute, cancel.",
    )
    links = serializers.DictField(child=serializers.CharField())


class TimelineOutput(serializers.Serializer):
    version = serializers.IntegerField()
    type = serializers.CharField()
    occurred_at = serializers.DateTimeField()
    actor = serializers.DictField()
    # The API's field is named `data`, which the stubs know only as Serializer.data.
    data = serializers.DictField()  # type: ignore[assignment]
