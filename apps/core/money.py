"""Money: integer minor units and an ISO 4217 currency, never a float. How many minor digits a currency
has (its exponent) is decided here, for every app that reads, writes or shows an amount."""

from __future__ import annotations

import re

from proto.common.v1 import Money

# Minor digits per currency (ISO 4217); a currency not listed has two. Which currencies an escrow may
# be opened in is a setting (ESCROW_CURRENCIES), not this table.
CURRENCY_EXPONENT = {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0, "KRW": 0, "KWD": 3, "BHD": 3}
_WORDS = {1: "one", 2: "two", 3: "three"}


class InvalidAmount(ValueError):
    """An amount that is not a positive decimal string with at most the currency's minor digits."""


def money(amount_minor: int, currency: str) -> Money:
    return Money(amount_minor=amount_minor, currency=currency)


def currency_exponent(currency: str) -> int:
    return CURRENCY_EXPONENT.get(currency, 2)


def minor_to_decimal_string(amount_minor: int, currency: str) -> str:
    """12345 USD -> "123.45"; the currency's exponent decides where the point goes."""
    exponent = currency_exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10**exponent)
    return f"{sign}{whole}.{frac:0{exponent}d}" if exponent else f"{sign}{whole}"


def amount_display(amount_minor: int, currency: str, *, grouped: bool = False) -> str:
    """An amount as people read it: "149.99 USD" ("1,149.99 USD" with `grouped` thousands)."""
    decimal = minor_to_decimal_string(amount_minor, currency)
    if grouped:
        sign, digits = ("-", decimal[1:]) if decimal.startswith("-") else ("", decimal)
        whole, point, frac = digits.partition(".")
        decimal = f"{sign}{int(whole):,}{point}{frac}"
    return f"{decimal} {currency}".strip()


def decimal_string_to_minor(value: object, *, currency: str) -> int:
    """A decimal string with at most the currency's minor digits -> integer minor units. No floats."""
    if not isinstance(value, str):
        raise InvalidAmount('must be a decimal string such as "149.99"')
    exponent = currency_exponent(currency)
    fraction = rf"(\.[0-9]{{1,{exponent}}})?" if exponent else ""
    if not re.fullmatch(rf"(0|[1-9][0-9]{{0,12}}){fraction}", value):
        places = f"at most {_WORDS.get(exponent, exponent)} decimal places" if exponent else "no decimal places"
        raise InvalidAmount(f'must be a positive decimal string with {places}, such as "149.99"')
    whole, _, frac = value.partition(".")
    return int(whole) * 10**exponent + int((frac or "0").ljust(exponent, "0"))
