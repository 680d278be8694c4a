"""Dispute evidence: files a party submits while the escrow is DISPUTED (itself through the API, or staff
on its behalf from the dispute desk). Only png, jpeg, pdf and plain text are kept, decided by the bytes
themselves; the client's file name and content type are never trusted."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from apps.escrow.errors import EscrowError, EscrowNotFound, InvalidCommand, InvalidTransition
from apps.escrow.lock_objects import escrow_lock
from apps.escrow.models import Escrow, EscrowState, Evidence

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"%PDF-", "application/pdf"),
)
# Text that a browser could take for a document if it were ever rendered: refused even as plain text.
_MARKUP_STARTS = (b"<!doctype", b"<html", b"<svg", b"<?xml", b"<script", b"<body", b"<head", b"<iframe")
_TEXT_CONTROL_OK = {9, 10, 12, 13}


class EvidenceRejected(EscrowError):
    """The file itself is refused: too large (413) or not an allowed type (415)."""

    def __init__(self, detail: str, *, status: int, code: str) -> None:
        super().__init__(detail, field="file")
        self.status = status
        self.code = code


def evidence_sniff(data: bytes) -> str | None:
    """The content type of `data` if it is one we keep, else None."""
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(ch) < 32 and ord(ch) not in _TEXT_CONTROL_OK for ch in text) or "\x7f" in text:
        return None
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(_MARKUP_STARTS):
        return None
    return "text/plain"


def _clean_name(name: str) -> str:
    # Kept only to show staff; path parts and control characters dropped.
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip()
    return cleaned[:200] or "evidence"


def evidence_add(
    *,
    escrow_id: uuid.UUID | str,
    uploaded_by: Any,
    upload: UploadedFile,
    description: str = "",
    party: str | None = None,
) -> Evidence:
    """Stores one evidence file. `party` None: the uploader is that party (buyer or seller); staff pass
    the party they upload for. Refused unless the escrow is DISPUTED."""
    if party is not None and party not in Evidence.Party.values:
        raise InvalidCommand("party must be buyer or seller", field="party")
    if len(description) > 1000:
        raise InvalidCommand("description is at most 1000 characters", field="description")
    limit = settings.EVIDENCE_MAX_BYTES
    if upload.size is None or upload.size > limit:
        raise EvidenceRejected(f"evidence files are at most {limit} bytes", status=413, code="evidence_too_large")
    if upload.size == 0:
        raise EvidenceRejected("the file is empty", status=415, code="unsupported_evidence_type")
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise EvidenceRejected(f"evidence files are at most {limit} bytes", status=413, code="evidence_too_large")
    content_type = evidence_sniff(data)
    if content_type is None:
        raise EvidenceRejected(
            "only png, jpeg, pdf and plain text (UTF-8) files are accepted",
            status=415,
            code="unsupported_evidence_type",
        )
    stored = ""
    try:
        with transaction.atomic():
            escrow = escrow_lock(escrow_id)
            if escrow is None:
                raise EscrowNotFound("no such escrow")
            party = party or _party_of(escrow, uploaded_by)
            if escrow.state != EscrowState.DISPUTED:
                raise InvalidTransition("evidence is taken only while the escrow is disputed", state=escrow.state)
            evidence = Evidence(
                escrow=escrow,
                party=party,
                uploaded_by=uploaded_by,
                original_name=_clean_name(upload.name or ""),
                content_type=content_type,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                description=description.strip(),
            )
            evidence.file.save("evidence", ContentFile(data), save=False)
            stored = evidence.file.name
            evidence.save()
    except Exception:
        # No row, no bytes. (If a caller's outer transaction rolls back later, the file is left
        # unreferenced: harmless, nothing can reach it.)
        if stored:
            default_storage.delete(stored)
        raise
    return evidence


def _party_of(escrow: Escrow, user: Any) -> str:
    if user.pk == escrow.buyer_id:
        return Evidence.Party.BUYER
    if user.pk == escrow.seller_id:
        return Evidence.Party.SELLER
    raise EscrowNotFound("no such escrow")
