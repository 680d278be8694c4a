"""The shared kernel's money: minor units in, minor units out, the currency's exponent deciding the point."""

from __future__ import annotations

import pytest

from apps.core.public import (
    InvalidAmount,
    amount_display,
    decimal_string_to_minor,
    minor_to_decimal_string,
    money,
)


def test_money_is_the_proto_money_of_minor_units_and_currency() -> None:
    value = money(14999, "USD")
    assert (value.amount_minor, value.currency) == (14999, "USD")


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [(14999, "USD", "149.99"), (5, "EUR", "0.05"), (100, "GBP", "1.00"), (0, "USD", "0.00"), (-250, "USD", "-2.50")],
)
def test_two_digit_currencies_read_as_before(minor: int, currency: str, text: str) -> None:
    assert minor_to_decimal_string(minor, currency) == text
    assert amount_display(minor, currency) == f"{text} {currency}"


def test_the_exponent_of_the_currency_decides_the_point() -> None:
    # A zero-decimal and a three-decimal currency each format and parse with their own minor digits
    assert amount_display(1500, "JPY") == "1500 JPY"
    assert amount_display(1500, "KWD") == "1.500 KWD"
    assert decimal_string_to_minor("1500", currency="JPY") == 1500
    assert decimal_string_to_minor("1.5", currency="KWD") == 1500
    with pytest.raises(InvalidAmount, match="no decimal places"):
        decimal_string_to_minor("15.00", currency="JPY")
    with pytest.raises(InvalidAmount, match="at most three decimal places"):
        decimal_string_to_minor("1.5001", currency="KWD")


def test_an_amount_without_a_currency_still_reads() -> None:
    # notifications format whatever an event carries; an empty Money still makes a line
    assert amount_display(0, "") == "0.00"


@pytest.mark.parametrize("value", ["149.999", "-1.00", "1e3", "01.00", " 1.00", "1.", "", "1,00"])
def test_ambiguous_or_negative_strings_are_refused(value: str) -> None:
    with pytest.raises(InvalidAmount, match="at most two decimal places"):
        decimal_string_to_minor(value, currency="USD")


@pytest.mark.parametrize("value", [149.99, 14999, None])
def test_only_strings_are_amounts(value: object) -> None:
    with pytest.raises(InvalidAmount, match="decimal string"):
        decimal_string_to_minor(value, currency="USD")


@pytest.mark.parametrize(("value", "minor"), [("149.99", 14999), ("149.9", 14990), ("0", 0), ("7", 700)])
def test_decimal_strings_become_minor_units(value: str, minor: int) -> None:
    assert decimal_string_to_minor(value, currency="USD") == minor


def test_pages_group_thousands_in_any_exponent() -> None:
    # the web app's pages show "1,234.56 USD"; Discord and DMs show the plain form
    assert amount_display(123456, "USD", grouped=True) == "1,234.56 USD"
    assert amount_display(5, "USD", grouped=True) == "0.05 USD"
    assert amount_display(1234567, "JPY", grouped=True) == "1,234,567 JPY"
    assert amount_display(1234567, "KWD", grouped=True) == "1,234.567 KWD"
    assert amount_display(123456, "USD") == "1234.56 USD"
