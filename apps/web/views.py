"""Pages of the web app. Thin: parse the request, call a public function (escrow dispatch, payments,
notifications, projections' selectors), render. Every mutation is a POST with Django's CSRF check."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login, logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from apps.core.public import amount_display
from apps.escrow import public as escrow
from apps.escrow.public import (
    CommandResult,
    EscrowError,
    EscrowNotFound,
    EvidenceRejected,
    InvalidCommand,
    InvalidTransition,
    NotAllowed,
    dispatch,
    evidence_add,
)
from apps.notifications import public as notifications
from apps.payments import public as payments
from apps.projections import public as selectors
from apps.web import deals, forms, signin
from proto.common.v1 import Actor, ActorKind, Money
from proto.escrow import v1 as escrow_v1

# Command ids of the web app: derived from the person, the deal, the action and a nonce the form carries,
# so a double-submitted form has one effect and a tampered nonce can only mint another command of one's own.
_COMMAND_NAMESPACE = uuid.UUID("5b0f3c9e-8a0e-4d55-9d7e-2f6c1a7b9e41")


def _command_id(request: HttpRequest, *parts: str) -> uuid.UUID | None:
    nonce = request.POST.get("nonce", "")
    try:
        uuid.UUID(nonce)
    except ValueError:
        return None
    return uuid.uuid5(_COMMAND_NAMESPACE, ":".join([str(_me(request)), *parts, nonce]))


def _me(request: HttpRequest) -> int:
    """The signed-in person's id (every caller is behind login_required)."""
    return int(request.user.pk)  # type: ignore[arg-type]


def _actor(request: HttpRequest) -> Actor:
    return Actor(kind=ActorKind.USER, user_id=_me(request))


def _names(*user_ids: int) -> dict[int, str]:
    return dict(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username"))


def _minor(amount: str) -> int:
    """A decimal string the form already checked (digits, at most two decimals) -> minor units."""
    whole, _, frac = amount.partition(".")
    return int(whole) * 100 + int((frac or "0").ljust(2, "0"))


def _not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "web/404.html", status=404)


def _refusal_words(exc: EscrowError) -> str:
    if isinstance(exc, EscrowNotFound):
        return "There is no such deal."
    if isinstance(exc, InvalidTransition):
        return (
            f"That cannot be done now: the deal is at \u201c{deals.STATE_WORDS.get(exc.state, exc.state)}\u201d. "
            f"({exc.detail})"
        )
    if isinstance(exc, NotAllowed):
        return f"You may not do that on this deal. ({exc.detail})"
    if isinstance(exc, InvalidCommand):
        return f"That was refused: {exc.detail}."
    return f"That was refused: {exc.detail}"


# How many times the "updating" page reloads itself before it gives up and shows the deal as it is.
UPDATING_RELOADS = 15


_PENDING = "deal_pending_version"


def _to_deal(request: HttpRequest, result: CommandResult) -> HttpResponse:
    """Back to the deal page, remembering (in the session) the version the command produced: the page
    shows the deal once the read model has it and, until then, a short page that reloads itself. No
    request waits for the bus."""
    request.session[_PENDING] = {"escrow_id": str(result.escrow_id), "version": result.version, "reloads": 0}
    return redirect("web:deal", escrow_id=result.escrow_id)


def _still_updating(request: HttpRequest, escrow_id: uuid.UUID, view: Any) -> bool:
    """Whether this person's last command on this deal is not in the read model yet (for a few reloads at
    most; then the deal, or the 404, as it is)."""
    pending = request.session.get(_PENDING)
    if not isinstance(pending, dict) or pending.get("escrow_id") != str(escrow_id):
        return False
    if (view is None or view.version < int(pending.get("version", 0))) and int(
        pending.get("reloads", 0)
    ) < UPDATING_RELOADS:
        request.session[_PENDING] = {**pending, "reloads": int(pending.get("reloads", 0)) + 1}
        return True
    del request.session[_PENDING]
    return False


# --- home and sign-in -------------------------------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("web:deals")
    return render(request, "web/home.html", {"sandbox": signin.sandbox_signin_enabled()})


@require_GET
def signin_page(request: HttpRequest) -> HttpResponse:
    error = request.GET.get("error")
    if error:
        words = {
            "permission_denied": "That Discord account cannot sign in here (it may be linked to another account).",
            "cancelled": "Sign-in with Discord was cancelled.",
        }
        messages.error(request, words.get(error, "Sign-in with Discord failed; try again."))
        return redirect("web:signin")
    sandbox = signin.sandbox_signin_enabled()
    return render(
        request,
        "web/signin.html",
        {
            "discord": signin.discord_signin_enabled(),
            "sandbox": sandbox,
            "sandbox_users": signin.sandbox_users() if sandbox else [],
            "create_form": forms.SandboxCreateForm(),
            "next": _safe_next(request.GET.get("next")),
        },
    )


def _safe_next(value: str | None) -> str:
    # Only a path of this site: never //host or a scheme.
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return reverse("web:deals")


@require_POST
def signin_sandbox(request: HttpRequest) -> HttpResponse:
    if not signin.sandbox_signin_enabled():
        return render(
            request, "web/refused.html", {"words": "The sandbox sign-in is off in this deployment."}, status=403
        )
    try:
        if request.POST.get("username"):
            user = signin.sandbox_user_create(username=request.POST["username"].strip())
        else:
            user = signin.sandbox_user_pick(user_id=request.POST.get("user_id", ""))
    except signin.SandboxSigninRefused as exc:
        messages.error(request, str(exc))
        return redirect("web:signin")
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    signin.sessions_record(request)
    return HttpResponseRedirect(_safe_next(request.POST.get("next")))


@require_POST
def signout(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        signin.sessions_end_all(user_id=_me(request))
    logout(request)
    messages.info(request, "You are signed out, and every token issued to you has been revoked.")
    return redirect("web:signin")


# --- deals -------------------------------------------------------------------------------------------


@login_required
@require_GET
def deal_list(request: HttpRequest) -> HttpResponse:
    views = list(selectors.escrow_views_for_user(user_id=_me(request))[:200])
    names = _names(*{v.buyer_id for v in views} | {v.seller_id for v in views})
    rows = [
        {
            "view": v,
            "side": deals.party_of(v, _me(request)),
            "other": names.get(v.seller_id if v.buyer_id == _me(request) else v.buyer_id, "?"),
            "amount": amount_display(v.amount_minor, v.currency, grouped=True),
            "state_words": deals.STATE_WORDS.get(v.state, v.state),
            "closed": v.state in deals.CLOSED_STATES,
        }
        for v in views
    ]
    return render(
        request,
        "web/deals.html",
        {
            "buying_open": [r for r in rows if r["side"] == "buyer" and not r["closed"]],
            "selling_open": [r for r in rows if r["side"] == "seller" and not r["closed"]],
            "closed": [r for r in rows if r["closed"]],
        },
    )


def _counterparty(value: str) -> Any:
    """A username, a user id, or `discord:<snowflake>` (an account is made for a Discord id on first use)."""
    value = value.strip()
    User = get_user_model()
    if value.lower().startswith("discord:"):
        snowflake = value[len("discord:") :]
        if not (snowflake.isascii() and snowflake.isdigit()) or not 0 < len(snowflake) <= 20:
            raise ValueError("write a Discord user id as discord: followed by its digits")
        return notifications.user_for_discord_id(discord_user_id=int(snowflake))
    user = User.objects.filter(username=value, is_active=True).first()
    if user is None and value.isascii() and value.isdigit():
        user = User.objects.filter(pk=int(value), is_active=True).first()
    if user is None:
        raise ValueError(f"there is no one called {value!r} here")
    return user


@login_required
def deal_new(request: HttpRequest) -> HttpResponse:
    form = forms.NewDealForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        command_id = _command_id(request, "create")
        data = form.cleaned_data
        if command_id is None:
            messages.error(request, "The form was incomplete; please submit it again.")
        else:
            amount_minor = _minor(data["amount"])
            try:
                other = _counterparty(data["counterparty"])
            except ValueError as exc:
                form.add_error("counterparty", str(exc))
            except notifications.NotificationError as exc:
                form.add_error("counterparty", exc.detail)
            else:
                low, high = settings.ESCROW_MIN_AMOUNT_MINOR, settings.ESCROW_MAX_AMOUNT_MINOR
                if other.pk == _me(request):
                    form.add_error("counterparty", "you cannot trade with yourself")
                elif not low <= amount_minor <= high:
                    form.add_error(
                        "amount",
                        f"must be between {amount_display(low, data['currency'], grouped=True)} and {amount_display(high, data['currency'], grouped=True)}",
                    )
                else:
                    return _create(request, command_id, data, other, amount_minor)
    return render(
        request, "web/deal_new.html", {"form": form, "nonce": uuid.uuid4()}, status=400 if form.errors else 200
    )


def _create(
    request: HttpRequest, command_id: uuid.UUID, data: dict[str, Any], other: Any, amount_minor: int
) -> HttpResponse:
    buyer_id, seller_id = (_me(request), int(other.pk)) if data["role"] == "buyer" else (int(other.pk), _me(request))
    command = escrow_v1.CreateEscrow(
        escrow_id=str(uuid.uuid5(command_id, "escrow")),
        buyer_id=buyer_id,
        seller_id=seller_id,
        amount=Money(amount_minor=amount_minor, currency=data["currency"]),
        description=data["description"],
        inspection_period_hours=data.get("inspection_period_hours") or 0,
        actor=_actor(request),
    )
    try:
        result = dispatch(command, command_id=command_id)
    except EscrowError as exc:
        messages.error(request, _refusal_words(exc))
        form = forms.NewDealForm(request.POST)
        form.is_valid()
        return render(request, "web/deal_new.html", {"form": form, "nonce": uuid.uuid4()}, status=409)
    messages.success(request, "The deal is open.")
    return _to_deal(request, result)


def _participant_view(request: HttpRequest, escrow_id: uuid.UUID) -> Any:
    view = selectors.escrow_view_get(escrow_id=str(escrow_id))
    if view is None or deals.party_of(view, _me(request)) is None:
        return None
    return view


def available_actions(view: Any, user_id: int) -> list[str]:
    """What this person may do now, in the order the page offers it: the escrow service's own answer
    (`allowed_actions`, read from the rules `dispatch` enforces), plus adding evidence to an open dispute."""
    found = escrow.allowed_actions(view, user_id)
    if view.state == escrow.EscrowState.DISPUTED and deals.party_of(view, user_id) is not None:
        found.append("evidence")
    return found


@login_required
@require_GET
def deal_page(request: HttpRequest, escrow_id: uuid.UUID) -> HttpResponse:
    view = _participant_view(request, escrow_id)
    if _still_updating(request, escrow_id, view):
        # Right after a command of this person's: the read model has not shown it yet.
        response = render(request, "web/updating.html", {"reload_url": request.path})
        response["Cache-Control"] = "no-store"
        return response
    if view is None:
        return _not_found(request)
    side = deals.party_of(view, _me(request))
    names = _names(view.buyer_id, view.seller_id)
    actions = available_actions(view, _me(request))
    checkout_url = None
    if "pay" in actions:
        # The buyer's capability link to the checkout page (the same one the API and Discord give).
        checkout_url = payments.checkout_path(escrow_id=str(view.escrow_id), funding_deadline=view.funding_deadline)
        if checkout_url is None:
            actions.remove("pay")
    timeline = deals.timeline_words(
        selectors.escrow_timeline(escrow_id=str(view.escrow_id)), names=names, viewer_id=_me(request)
    )
    return render(
        request,
        "web/deal.html",
        {
            "view": view,
            "side": side,
            "names": names,
            "buyer": names.get(view.buyer_id, "?"),
            "seller": names.get(view.seller_id, "?"),
            "amount": amount_display(view.amount_minor, view.currency, grouped=True),
            "paid_to_seller": amount_display(view.paid_to_seller_minor, view.currency, grouped=True),
            "refunded": amount_display(view.refunded_minor, view.currency, grouped=True),
            "state_words": (
                "Waiting for you to accept the terms"
                if "accept" in actions
                else deals.STATE_WORDS.get(view.state, view.state)
            ),
            "actions": actions,
            "checkout_url": checkout_url,
            "timeline": timeline,
            "nonce": uuid.uuid4(),
            "reason_form": forms.ReasonForm(),
            "dispute_form": forms.DisputeForm(),
            "evidence_form": forms.EvidenceForm(),
            "payout": payments.payout_status(str(view.escrow_id)) if side == "seller" else None,
        },
    )


def deal_action(handler: Callable[[HttpRequest, Any, uuid.UUID], CommandResult | HttpResponse | None]) -> Any:
    """A POST on a deal: participants only (a stranger gets the 404 page), one command through dispatch,
    a refusal in words, then back to the deal page."""

    @functools.wraps(handler)
    @login_required
    @require_POST
    def view_func(request: HttpRequest, escrow_id: uuid.UUID) -> HttpResponse:
        view = _participant_view(request, escrow_id)
        if view is None:
            return _not_found(request)
        command_id = _command_id(request, str(escrow_id), handler.__name__)
        if command_id is None:
            messages.error(request, "The form was incomplete; please submit it again.")
            return redirect("web:deal", escrow_id=escrow_id)
        try:
            outcome = handler(request, view, command_id)
        except EscrowError as exc:
            messages.error(request, _refusal_words(exc))
            return redirect("web:deal", escrow_id=escrow_id)
        if isinstance(outcome, HttpResponse):
            return outcome
        if outcome is not None:
            return _to_deal(request, outcome)
        return redirect("web:deal", escrow_id=escrow_id)

    return view_func


@deal_action
def accept(request: HttpRequest, view: Any, command_id: uuid.UUID) -> CommandResult:
    result = dispatch(escrow.AcceptEscrow(escrow_id=str(view.escrow_id), actor=_actor(request)), command_id=command_id)
    words = "The buyer can pay now." if view.seller_id == _me(request) else "You can pay now."
    messages.success(request, f"You accepted the terms. {words}")
    return result


@deal_action
def decline(request: HttpRequest, view: Any, command_id: uuid.UUID) -> CommandResult | None:
    form = forms.ReasonForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The reason is too long (at most 1000 characters).")
        return None
    result = dispatch(
        escrow.DeclineEscrow(escrow_id=str(view.escrow_id), actor=_actor(request), reason=form.cleaned_data["reason"]),
        command_id=command_id,
    )
    messages.success(request, "You declined the deal.")
    return result


@deal_action
def deliver(request: HttpRequest, view: Any, command_id: uuid.UUID) -> CommandResult:
    result = dispatch(
        escrow_v1.MarkDelivered(escrow_id=str(view.escrow_id), actor=_actor(request)), command_id=command_id
    )
    messages.success(request, "Marked delivered. The buyer's inspection period has started.")
    return result


@deal_action
def release(request: HttpRequest, view: Any, command_id: uuid.UUID) -> CommandResult:
    result = dispatch(
        escrow_v1.ReleaseFunds(escrow_id=str(view.escrow_id), actor=_actor(request)), command_id=command_id
    )
    messages.success(request, "Released. The seller is being paid.")
    return result


@deal_action
def cancel(request: HttpRequest, view: Any, command_id: uuid.UUID) -> CommandResult | None:
    form = forms.ReasonForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The reason is too long (at most 1000 characters).")
        return None
    result = dispatch(
        escrow_v1.CancelEscrow(
            escrow_id=str(view.escrow_id), actor=_actor(request), reason=form.cleaned_data["reason"]
        ),
        command_id=command_id,
    )
    messages.success(
        request,
        "Cancelled." if result.state == escrow.EscrowState.CANCELLED else "Cancelled: the buyer is being refunded.",
    )
    return result


@deal_action
def dispute(request: HttpRequest, view: Any, command_id: uuid.UUID) -> CommandResult | None:
    form = forms.DisputeForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, "Say what went wrong (at most 1000 characters).")
        return None
    result = dispatch(
        escrow_v1.OpenDispute(escrow_id=str(view.escrow_id), actor=_actor(request), reason=form.cleaned_data["reason"]),
        command_id=command_id,
    )
    messages.success(request, "The dispute is open. Our team will review it; timers are stopped.")
    if form.cleaned_data.get("evidence"):
        _add_evidence(request, view, form.cleaned_data["evidence"], "")
    return result


@deal_action
def evidence(request: HttpRequest, view: Any, command_id: uuid.UUID) -> None:
    form = forms.EvidenceForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, "Choose one file to upload.")
        return None
    _add_evidence(request, view, form.cleaned_data["evidence"], form.cleaned_data["description"])
    return None


def _add_evidence(request: HttpRequest, view: Any, upload: Any, description: str) -> None:
    try:
        evidence_add(escrow_id=view.escrow_id, uploaded_by=request.user, upload=upload, description=description)
    except EvidenceRejected as exc:
        messages.error(request, f"The file was not kept: {exc.detail}.")
    else:
        messages.success(request, "Your evidence was added to the dispute.")


# --- settings ----------------------------------------------------------------------------------------


@login_required
def payout_settings(request: HttpRequest) -> HttpResponse:
    form = forms.WalletForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                payments.destination_set(
                    seller_id=_me(request), stripe_account_id=None, wallet_address=form.cleaned_data["wallet_address"]
                )
            except payments.InvalidPayoutDestination as exc:
                form.add_error("wallet_address", exc.detail)
                status = exc.status if exc.status in (400, 409, 503) else 400
            else:
                messages.success(request, "Your wallet is saved. Payouts waiting for it are on their way.")
                return redirect("web:payout-settings")
        else:
            status = 400
    return render(
        request,
        "web/payout_settings.html",
        {
            "form": form,
            "destination": payments.destination_get(seller_id=_me(request)),
            "waiting": payments.waiting_payouts_count(seller_id=_me(request)),
            "onboarding": payments.onboarding_get(seller_id=_me(request)),
        },
        status=status,
    )


@login_required
@require_POST
def payout_onboarding(request: HttpRequest) -> HttpResponse:
    """Card payouts: off to Stripe's onboarding (sandbox: a local page that completes at once)."""
    try:
        url = payments.onboarding_start(seller_id=_me(request))
    except payments.OnboardingUnavailable as exc:
        messages.error(request, f"Stripe could not be reached; try again in a moment. ({exc})")
        return redirect("web:payout-settings")
    return HttpResponseRedirect(url)


@login_required
def notification_settings(request: HttpRequest) -> HttpResponse:
    current = notifications.preferences_get(user_id=_me(request))
    if request.method == "POST":
        changes = {kind: request.POST.get(kind) == "on" for kind in current if kind not in notifications.LOCKED_ON}
        unknown = set(request.POST) - set(current) - {"csrfmiddlewaretoken"}
        if unknown:
            messages.error(request, "The form had fields we do not know; nothing was changed.")
            return redirect("web:notification-settings")
        try:
            notifications.preferences_set(user_id=_me(request), changes=changes)
        except notifications.NotificationError as exc:
            messages.error(request, exc.detail)
        else:
            messages.success(request, "Saved.")
        return redirect("web:notification-settings")
    link = notifications.DiscordLink.objects.filter(user_id=_me(request)).first()
    return render(
        request,
        "web/notification_settings.html",
        {
            "preferences": [
                {
                    "kind": kind,
                    "description": notifications.KINDS[kind],
                    "enabled": enabled,
                    "locked": kind in notifications.LOCKED_ON,
                }
                for kind, enabled in current.items()
            ],
            "link": link,
            "discord": signin.discord_signin_enabled(),
        },
    )
