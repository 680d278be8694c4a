"""The web app's forms: plain Django forms, each field labelled, strict like the REST input."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings

ROLE_CHOICES = [("buyer", "I am buying"), ("seller", "I am selling")]
_AMOUNT = re.compile(r"^(0|[1-9][0-9]{0,12})(\.[0-9]{1,2})?$")


class NewDealForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES, widget=forms.RadioSelect, initial="buyer", label="Your side")
    counterparty = forms.CharField(
        max_length=150,
        label="The other party",
        help_text="Their username on this site, or discord:<their Discord user id> if they have no account yet.",
    )
    amount = forms.CharField(
        max_length=20,
        label="Amount",
        strip=False,
        help_text="For example 149.99",
        widget=forms.TextInput(attrs={"inputmode": "decimal"}),
    )
    currency = forms.ChoiceField(label="Currency")
    description = forms.CharField(
        max_length=500, label="What is being traded", widget=forms.Textarea(attrs={"rows": 3})
    )
    inspection_period_hours = forms.IntegerField(
        min_value=1,
        max_value=720,
        required=False,
        label="Inspection period (hours)",
        help_text=f"How long the buyer has to check the item after delivery. Default {settings.INSPECTION_PERIOD_HOURS}.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        currency = self.fields["currency"]
        assert isinstance(currency, forms.ChoiceField)
        currency.choices = [(c, c) for c in settings.ESCROW_CURRENCIES]

    def clean_amount(self) -> str:
        value = self.cleaned_data["amount"]
        if not _AMOUNT.match(value):
            raise forms.ValidationError("Write the amount as a number with at most two decimals, like 149.99.")
        return value


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=1000, required=False, label="Reason (optional)", widget=forms.Textarea(attrs={"rows": 2})
    )


class DisputeForm(forms.Form):
    reason = forms.CharField(max_length=1000, label="What went wrong", widget=forms.Textarea(attrs={"rows": 4}))
    evidence = forms.FileField(required=False, label="Evidence (optional: PNG, JPEG, PDF or text)")


class EvidenceForm(forms.Form):
    evidence = forms.FileField(label="Evidence file (PNG, JPEG, PDF or text)")
    description = forms.CharField(max_length=1000, required=False, label="What it shows")


class WalletForm(forms.Form):
    wallet_address = forms.CharField(
        max_length=42,
        min_length=42,
        strip=True,
        label="USDC wallet address (Base)",
        help_text="0x followed by 40 hexadecimal characters, checksummed (EIP-55).",
    )


class SandboxCreateForm(forms.Form):
    username = forms.CharField(max_length=30, label="New demo person's name")
