"""The buyer's checkout pages, reached by the capability link in `payment.checkout_url` (no sign-in: the
signed link is the authority to pay this one escrow until its funding deadline).

- card, sandbox: our page behaving like a hosted checkout (a `card_number` field; Stripe's test cards);
- card, live: a button that opens a Stripe Checkout Session and sends the buyer to Stripe's page;
- USDC: the deposit page (amount, network, address as text and QR code, deadline, live status).

Thin: parse, call apps.payments.public, render. The webhook, never this page or a redirect back to it,
moves money state. A tampered link is a 404 page, an expired one a 410 page; neither changes anything.
"""

from __future__ import annotations

from typing import Any

import segno
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET, require_http_methods

from apps.core.public import amount_display
from apps.escrow.public import EscrowState as S
from apps.payments import public as payments
from apps.projections import public as projections

FORM_FIELDS = {"card_number", "csrfmiddlewaretoken"}
DEPOSIT_WORDS = {
    "waiting": "Waiting for your deposit",
    "seen": "Deposit seen on Base; waiting for it to be final",
    "screened": "Deposit arrived and the sending wallet passed screening",
    "on_hold": "Deposit on hold: the sending wallet is under compliance review",
    "held": "Held in escrow",
}
PAID_STATES = {S.FUNDS_HELD, S.DELIVERED, S.RELEASING, S.RELEASED, S.DISPUTED, S.REFUNDING, S.REFUNDED}


def deal_page_url(escrow_id: str) -> str:
    """Where a buyer goes after paying: the web app's deal page."""
    for name in ("web:deal", "web:deal-detail", "web:deal_detail"):
        try:
            return reverse(name, kwargs={"escrow_id": escrow_id})
        except NoReverseMatch:
            continue
    return f"/deals/{escrow_id}"


def _refused(request: HttpRequest, template: str, status: int, **context: Any) -> HttpResponse:
    return render(request, f"web/checkout/{template}", context, status=status)


def _open(request: HttpRequest, token: str) -> tuple[payments.CheckoutGrant, Any] | HttpResponse:
    try:
        grant = payments.checkout_token_read(token)
    except payments.CheckoutLinkInvalid:
        return _refused(request, "link_invalid.html", 404)
    except payments.CheckoutLinkExpired:
        return _refused(request, "link_expired.html", 410)
    view = projections.escrow_view_get(escrow_id=grant.escrow_id)
    if view is None:
        return _refused(request, "link_invalid.html", 404)
    return grant, view


def _status(view: Any, checkout: payments.Checkout | None) -> str:
    if view.state in PAID_STATES:
        return "held"
    if checkout is None:
        return "waiting"
    return checkout.deposit_status or ("screened" if checkout.paid else "waiting")


def _qr_svg(address: str) -> SafeString:
    # The plain address: every wallet reads it; the page names the network and the amount beside it.
    svg = segno.make(address, error="m").svg_inline(
        scale=5, dark="#1b1f24", light="#ffffff", title=f"Deposit address {address}"
    )
    return mark_safe(svg)  # noqa: S308 - segno's own SVG, the address is validated hex


@require_http_methods(["GET", "HEAD", "POST"])
def checkout_page(request: HttpRequest, token: str) -> HttpResponse:
    opened = _open(request, token)
    if isinstance(opened, HttpResponse):
        return opened
    grant, view = opened
    checkout = payments.checkout_get(grant.escrow_id)
    context: dict[str, Any] = {
        "token": token,
        "view": view,
        "checkout": checkout,
        "amount": amount_display(view.amount_minor, view.currency, grouped=True),
        "deadline": grant.expires_at,
        "deal_url": deal_page_url(grant.escrow_id),
        "status_url": reverse("web:checkout:status", kwargs={"token": token}),
    }
    if view.state != S.AWAIT_FUNDS:
        status = 200 if request.method != "POST" else 409
        return render(
            request, "web/checkout/closed.html", {**context, "paid": view.state in PAID_STATES}, status=status
        )
    if checkout is None:
        # Payments is still issuing the payment (right after the deal was accepted).
        return render(request, "web/checkout/preparing.html", context, status=200 if request.method != "POST" else 409)
    if checkout.rail == "usdc":
        if request.method == "POST":
            return HttpResponseNotAllowed(["GET", "HEAD"])  # a deposit is made from a wallet, not this page
        deposit = _status(view, checkout)
        return render(
            request,
            "web/checkout/deposit.html",
            {
                **context,
                "qr": _qr_svg(checkout.deposit_address),
                "network": "Base",
                "status": deposit,
                "status_words": DEPOSIT_WORDS[deposit],
                "usdc": f"{checkout.amount_minor // 100}.{checkout.amount_minor % 100:02d}",
            },
        )
    if checkout.provider == "stripe":
        return _stripe_checkout(request, context, grant)
    return _sandbox_card(request, context, grant)


def _sandbox_card(request: HttpRequest, context: dict[str, Any], grant: payments.CheckoutGrant) -> HttpResponse:
    if request.method != "POST":
        return render(request, "web/checkout/card.html", context)
    unknown = sorted(set(request.POST) - FORM_FIELDS)
    number = request.POST.get("card_number", "")
    if unknown or len(request.POST.getlist("card_number")) != 1:
        return render(
            request,
            "web/checkout/card.html",
            {**context, "error": "This form takes one card number and nothing else."},
            status=400,
        )
    try:
        outcome = payments.sandbox_card_pay(escrow_id=grant.escrow_id, card_number=number)
    except payments.CardNumberInvalid as exc:
        return render(request, "web/checkout/card.html", {**context, "error": str(exc)}, status=400)
    except payments.CheckoutUnavailable as exc:
        return render(request, "web/checkout/card.html", {**context, "error": str(exc)}, status=409)
    if not outcome.paid:
        return render(request, "web/checkout/card.html", {**context, "error": outcome.message}, status=402)
    return redirect(context["deal_url"])


def _stripe_checkout(request: HttpRequest, context: dict[str, Any], grant: payments.CheckoutGrant) -> HttpResponse:
    if request.method != "POST":
        return render(request, "web/checkout/stripe.html", context)
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    back = f"{base}{context['deal_url']}"
    try:
        url = payments.stripe_checkout_start(
            escrow_id=grant.escrow_id, success_url=back, cancel_url=back, deadline=grant.expires_at
        )
    except payments.CheckoutUnavailable as exc:
        return render(request, "web/checkout/stripe.html", {**context, "error": str(exc)}, status=503)
    return redirect(url)


@require_GET
def checkout_status(request: HttpRequest, token: str) -> HttpResponse:
    """What the deposit page polls: the escrow's state and the deposit's status, in words too."""
    opened = _open(request, token)
    if isinstance(opened, HttpResponse):
        return JsonResponse({"status": "gone" if opened.status_code == 410 else "not_found"}, status=opened.status_code)
    grant, view = opened
    checkout = payments.checkout_get(grant.escrow_id)
    status = _status(view, checkout)
    return JsonResponse(
        {
            "state": view.state,
            "status": status,
            "status_words": DEPOSIT_WORDS[status],
            "paid": view.state in PAID_STATES,
        }
    )


# --- payout onboarding: Stripe's return and refresh pages, and the sandbox's own ------------------------


def _onboarding(request: HttpRequest, token: str) -> payments.Onboarding | HttpResponse:
    try:
        return payments.onboarding_link_read(token)
    except payments.OnboardingLinkInvalid:
        return _refused(request, "onboarding_invalid.html", 404)


@require_GET
def onboarding_return(request: HttpRequest, token: str) -> HttpResponse:
    """Where Stripe sends the seller back. Coming back proves nothing: readiness is what the
    account.updated webhook last said."""
    found = _onboarding(request, token)
    if isinstance(found, HttpResponse):
        return found
    return render(request, "web/checkout/onboarding_return.html", {"onboarding": found})


@require_GET
def onboarding_refresh(request: HttpRequest, token: str) -> HttpResponse:
    """Stripe's refresh_url: the seller's Account Link expired or was used; a fresh one."""
    found = _onboarding(request, token)
    if isinstance(found, HttpResponse):
        return found
    try:
        return redirect(payments.onboarding_refresh(token))
    except payments.OnboardingUnavailable as exc:
        return render(
            request, "web/checkout/onboarding_return.html", {"onboarding": found, "error": str(exc)}, status=503
        )


@require_http_methods(["GET", "HEAD", "POST"])
def onboarding_sandbox(request: HttpRequest, token: str) -> HttpResponse:
    found = _onboarding(request, token)
    if isinstance(found, HttpResponse):
        return found
    if found.provider != "sandbox":
        return _refused(request, "onboarding_invalid.html", 404)
    if request.method == "POST":
        try:
            found = payments.sandbox_onboarding_complete(token)
        except payments.OnboardingLinkInvalid:
            return _refused(request, "onboarding_invalid.html", 404)
    return render(request, "web/checkout/onboarding_sandbox.html", {"onboarding": found})
