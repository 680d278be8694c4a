"""Escrows for staff: state and money are read-only; every change goes through commands."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.safestring import mark_safe

from apps.core.public import (
    AuditLog,
    InvalidAmount,
    ReadOnlyAdmin,
    audit_record,
    decimal_string_to_minor,
    minor_to_decimal_string,
)
from apps.escrow import money
from apps.escrow.dispatch import dispatch
from apps.escrow.errors import EscrowError
from apps.escrow.evidence import evidence_add
from apps.escrow.models import Escrow, EscrowEvent, EscrowState, Evidence
from apps.escrow.rules import stranded_minor
from apps.outbox.public import deterministic_id
from apps.projections import public as selectors
from proto.common.v1 import Actor, ActorKind, Money
from proto.escrow import v1 as escrow_v1


class EscrowEventInline(admin.TabularInline):
    model = EscrowEvent
    fields = ("version", "type", "actor_kind", "actor_id", "occurred_at", "data")
    readonly_fields = fields
    ordering = ("version",)
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Escrow)
class EscrowAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "state",
        "amount_minor",
        "currency",
        "buyer",
        "seller",
        "creator_role",
        "attention",
        "created_at",
    )
    list_filter = ("state", "creator_role", "attention", "currency")
    search_fields = ("id", "buyer__username", "seller__username")
    inlines = [EscrowEventInline]
    readonly_fields = [f.name for f in Escrow._meta.fields]

    def get_urls(self) -> list[Any]:
        # The dispute desk comes first so "disputes/" is not taken for an object id.
        return _dispute_urls(self) + super().get_urls()


@admin.register(EscrowEvent)
class EscrowEventAdmin(ReadOnlyAdmin):
    list_display = ("escrow", "version", "type", "actor_kind", "occurred_at")
    list_filter = ("type",)
    search_fields = ("escrow__id", "event_id")
    readonly_fields = [f.name for f in EscrowEvent._meta.fields]


# --- the dispute desk -----------------------------------------------------------------------------------
# Staff act through the same command dispatch as the API (a STAFF actor), and each action writes its
# AuditLog row in the same transaction as the command: if the command is refused, neither exists.

OUTCOMES = {
    "release": escrow_v1.DisputeOutcome.RELEASE,
    "refund": escrow_v1.DisputeOutcome.REFUND,
    "split": escrow_v1.DisputeOutcome.SPLIT,
}


class ResolveForm(forms.Form):
    outcome = forms.ChoiceField(choices=[(k, k) for k in OUTCOMES], widget=forms.RadioSelect)
    seller_amount = forms.CharField(
        required=False, max_length=20, help_text="split only: the seller's gross share, e.g. 40.00"
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)

    def __init__(self, *args: Any, currency: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("outcome") == "split":
            try:
                data["seller_minor"] = decimal_string_to_minor(data.get("seller_amount") or "", currency=self.currency)
            except InvalidAmount as exc:
                self.add_error("seller_amount", str(exc))
        elif data.get("seller_amount"):
            self.add_error("seller_amount", "only a split takes an amount")
        if data.get("reason") is not None and not data["reason"].strip():
            self.add_error("reason", "say why")
        return data


class NoteForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)


class OpsForm(forms.Form):
    # Prefixed so its fields never share a name with the resolve and note forms on the same page.
    prefix = "ops"
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=1000)

    def clean_reason(self) -> str:
        reason: str = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("say why")
        return reason


class EvidenceForm(forms.Form):
    prefix = "evidence"
    party = forms.ChoiceField(choices=Evidence.Party.choices, help_text="the party this evidence is from")
    file = forms.FileField(help_text="png, jpeg, pdf or plain text; at most 5 MB")
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=1000,
        help_text="how it reached us (e.g. sent by the buyer over Discord)",
    )


@dataclass(frozen=True)
class OpsAction:
    label: str
    command: type[Any]
    permission: str
    audit: str


# Ops actions on one escrow: each is a staff command through dispatch with its AuditLog row; whether it
# applies (state, hold, a known failure, stranded money) is for the service to decide, not the page.
OPS_ACTIONS: dict[str, OpsAction] = {
    "hold": OpsAction("Hold", escrow_v1.HoldEscrow, "gateway.hold_escrow", AuditLog.Action.HOLD),
    "unhold": OpsAction("Lift hold", escrow_v1.UnholdEscrow, "gateway.hold_escrow", AuditLog.Action.UNHOLD),
    "retry_payout": OpsAction(
        "Retry failed transfer / refund", escrow_v1.RetryPayout, "gateway.retry_payout", AuditLog.Action.RETRY_PAYOUT
    ),
    "return_stranded": OpsAction(
        "Return stranded funds to the buyer",
        escrow_v1.ReturnStrandedFunds,
        "gateway.return_stranded_funds",
        AuditLog.Action.RETURN_STRANDED_FUNDS,
    ),
}


def _upload_evidence(request: HttpRequest, escrow: Escrow, data: dict[str, Any]) -> bool:
    try:
        with transaction.atomic():
            evidence = evidence_add(
                escrow_id=escrow.pk,
                uploaded_by=request.user,
                upload=data["file"],
                party=data["party"],
                description=data["reason"],
            )
            audit_record(
                actor=request.user,
                action=AuditLog.Action.UPLOAD_EVIDENCE,
                escrow_id=escrow.pk,
                reason=data["reason"],
                target=f"evidence:{evidence.pk}",
                detail={
                    "party": evidence.party,
                    "content_type": evidence.content_type,
                    "size": evidence.size,
                    "sha256": evidence.sha256,
                },
            )
    except EscrowError as exc:
        messages.error(request, f"Refused: {exc}")
        return False
    messages.success(request, f"Evidence added for the {evidence.party}.")
    return True


def _evidence_download(request: HttpRequest, escrow_id: uuid.UUID, evidence_id: uuid.UUID) -> FileResponse:
    """Staff only, always as a download: never rendered by the browser, whatever the bytes are."""
    if not request.user.has_perm("escrow.view_escrow"):
        raise PermissionDenied
    evidence = get_object_or_404(Evidence, pk=evidence_id, escrow_id=escrow_id)
    extension = {"image/png": "png", "image/jpeg": "jpg", "application/pdf": "pdf", "text/plain": "txt"}
    name = f"{evidence.escrow_id}-{evidence.party}-{evidence.pk}.{extension.get(evidence.content_type, 'bin')}"
    response = FileResponse(
        evidence.file.open("rb"), as_attachment=True, filename=name, content_type=evidence.content_type
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response


def _staff_actor(request: HttpRequest) -> Actor:
    # The admin's views are for signed-in staff only (admin_view): a request without a user never gets here.
    if request.user.pk is None:
        raise PermissionDenied
    return Actor(kind=ActorKind.STAFF, user_id=request.user.pk)


def _ops_command(request: HttpRequest, escrow: Escrow, name: str, reason: str) -> bool:
    action = OPS_ACTIONS[name]
    # Deterministic from the escrow's version: a double-click or a resubmitted form is one command.
    command_id = deterministic_id(escrow.pk, escrow.version, f"admin-{name}")
    command = action.command(escrow_id=str(escrow.pk), actor=_staff_actor(request), reason=reason)
    try:
        with transaction.atomic():
            result = dispatch(command, command_id=command_id)
            if not result.duplicate:
                audit_record(
                    actor=request.user,
                    action=action.audit,
                    escrow_id=escrow.pk,
                    reason=reason,
                    command_id=command_id,
                    detail={"state_after": result.state},
                )
    except EscrowError as exc:
        messages.error(request, f"Refused: {exc}")
        return False
    messages.success(request, f"{action.label}: done; the escrow is {result.state}.")
    return True


def _dispute_desk(admin_site: admin.AdminSite, request: HttpRequest, escrow_id: uuid.UUID) -> HttpResponse:
    if not request.user.has_perm("escrow.view_escrow"):
        raise PermissionDenied
    escrow = get_object_or_404(Escrow, pk=escrow_id)
    can_resolve = request.user.has_perm("gateway.resolve_dispute")
    can_note = request.user.has_perm("gateway.add_dispute_note")
    resolve_form = ResolveForm(currency=escrow.currency)
    note_form = NoteForm()
    ops_form = OpsForm()
    can_upload = request.user.has_perm("gateway.upload_evidence")
    evidence_form = EvidenceForm()
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "evidence":
            if not can_upload:
                raise PermissionDenied
            evidence_form = EvidenceForm(request.POST, request.FILES)
            if evidence_form.is_valid() and _upload_evidence(request, escrow, evidence_form.cleaned_data):
                return redirect(request.path)
        elif action in OPS_ACTIONS:
            if not request.user.has_perm(OPS_ACTIONS[action].permission):
                raise PermissionDenied
            ops_form = OpsForm(request.POST)
            if ops_form.is_valid() and _ops_command(request, escrow, action, ops_form.cleaned_data["reason"]):
                return redirect(request.path)
        elif action == "resolve":
            if not can_resolve:
                raise PermissionDenied
            resolve_form = ResolveForm(request.POST, currency=escrow.currency)
            if resolve_form.is_valid() and _resolve(request, escrow, resolve_form.cleaned_data):
                return redirect(request.path)
        elif action == "note":
            if not can_note:
                raise PermissionDenied
            note_form = NoteForm(request.POST)
            if note_form.is_valid():
                with transaction.atomic():
                    audit_record(
                        actor=request.user,
                        action=AuditLog.Action.ADD_NOTE,
                        escrow_id=escrow.pk,
                        reason=note_form.cleaned_data["note"],
                    )
                messages.success(request, "Note added.")
                return redirect(request.path)
        else:
            return HttpResponseBadRequest("unknown action")
    context = {
        **admin_site.each_context(request),
        "title": f"Dispute {escrow.pk}",
        "escrow": escrow,
        "amount": minor_to_decimal_string(escrow.amount_minor, escrow.currency),
        "events": EscrowEvent.objects.filter(escrow=escrow).order_by("version"),
        "statements": EscrowEvent.objects.filter(escrow=escrow, type="escrow.v1.EscrowDisputed").order_by("version"),
        "audit": AuditLog.objects.filter(escrow_id=escrow.pk).select_related("actor").order_by("created_at", "id"),
        "resolve_form": resolve_form if can_resolve and escrow.state == EscrowState.DISPUTED else None,
        "note_form": note_form if can_note else None,
        "ops_form": ops_form,
        "evidence": Evidence.objects.filter(escrow=escrow).select_related("uploaded_by"),
        "evidence_form": evidence_form if can_upload and escrow.state == EscrowState.DISPUTED else None,
        "ops_actions": [(key, a.label) for key, a in OPS_ACTIONS.items() if request.user.has_perm(a.permission)],
        "stranded_minor": stranded_minor(escrow),
    }
    return TemplateResponse(
        request, "admin/escrow/dispute_desk.html", context, status=400 if request.method == "POST" else 200
    )


def _resolve(request: HttpRequest, escrow: Escrow, data: dict[str, Any]) -> bool:
    command_id = uuid.uuid4()
    seller_amount = (
        Money(amount_minor=data["seller_minor"], currency=escrow.currency) if data["outcome"] == "split" else None
    )
    command = escrow_v1.ResolveDispute(
        escrow_id=str(escrow.pk),
        actor=_staff_actor(request),
        outcome=OUTCOMES[data["outcome"]],
        seller_amount=seller_amount,
        note=data["reason"].strip()[:1000],
    )
    try:
        with transaction.atomic():
            result = dispatch(command, command_id=command_id)
            audit_record(
                actor=request.user,
                action=AuditLog.Action.RESOLVE_DISPUTE,
                escrow_id=escrow.pk,
                reason=data["reason"],
                command_id=command_id,
                detail={
                    "outcome": data["outcome"],
                    "seller_amount_minor": data.get("seller_minor"),
                    "state_after": result.state,
                },
            )
    except EscrowError as exc:
        messages.error(request, f"Refused: {exc}")
        return False
    messages.success(request, f"Resolved ({data['outcome']}); the escrow is {result.state}.")
    return True


def _dispute_queue(admin_site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("escrow.view_escrow"):
        raise PermissionDenied
    context = {
        **admin_site.each_context(request),
        "title": "Open disputes, oldest first",
        "disputes": list(selectors.ops_open_disputes()[:200]),
    }
    return TemplateResponse(request, "admin/escrow/dispute_queue.html", context)


OPS_QUEUE_LIMIT = 200


def _ops_queues(admin_site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    """The ops queues and daily figures, read from the projections (read-only; each row links to the
    escrow's desk, where the actions are)."""
    if not request.user.has_perm("escrow.view_escrow"):
        raise PermissionDenied
    queues = [
        ("needs-attention", "Needs attention", selectors.ops_needs_attention()),
        ("failed-payouts", "Failed transfers and refunds", selectors.ops_failed_payouts()),
        ("compliance-holds", "Compliance holds", selectors.ops_compliance_holds()),
        ("stuck-payments", "Stuck payments", selectors.ops_stuck_payments()),
        ("open-disputes", "Open disputes", selectors.ops_open_disputes()),
    ]
    context = {
        **admin_site.each_context(request),
        "title": "Ops queues",
        "queues": [(key, title, list(rows[:OPS_QUEUE_LIMIT])) for key, title, rows in queues],
        "daily": list(selectors.ops_daily_figures()[:90]),
        "limit": OPS_QUEUE_LIMIT,
    }
    return TemplateResponse(request, "admin/escrow/ops_queues.html", context)


def _ops_money(admin_site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    """The state of the money: the invariant's totals by rail and currency, today's movements, money
    held by state, and the last 30 days as charts (SVG drawn here)."""
    if not request.user.has_perm("escrow.view_escrow"):
        raise PermissionDenied
    series = money.daily_series(days=30)
    context = {
        **admin_site.each_context(request),
        "title": "The state of the money",
        "totals": money.money_totals(),
        "held_by_state": money.money_held_by_state(),
        "today": [(s.currency, s.held[-1], s.released[-1], s.refunded[-1]) for s in series],
        "today_date": series[0].days[-1] if series else None,
        "charts": [(s.currency, mark_safe(money.daily_chart_svg(s))) for s in series],  # noqa: S308 - escaped
    }
    return TemplateResponse(request, "admin/escrow/ops_money.html", context)


def _dispute_urls(model_admin: admin.ModelAdmin) -> list[Any]:
    site = model_admin.admin_site
    return [
        path("ops/money/", site.admin_view(lambda request: _ops_money(site, request)), name="escrow_ops_money"),
        path("ops/", site.admin_view(lambda request: _ops_queues(site, request)), name="escrow_ops_queues"),
        path("disputes/", site.admin_view(lambda request: _dispute_queue(site, request)), name="escrow_dispute_queue"),
        path(
            "<uuid:escrow_id>/evidence/<uuid:evidence_id>/",
            site.admin_view(_evidence_download),
            name="escrow_evidence_download",
        ),
        path(
            "<uuid:escrow_id>/dispute/",
            site.admin_view(lambda request, escrow_id: _dispute_desk(site, request, escrow_id)),
            name="escrow_dispute_desk",
        ),
    ]
