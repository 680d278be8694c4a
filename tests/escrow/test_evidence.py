"""Dispute evidence: parties upload through the API while DISPUTED, staff upload on a party's behalf from
the desk (audited) and download as attachments. Size limit, type allow-list by the bytes, random storage
names; refused uploads leave no row and no file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.escrow.evidence import evidence_sniff
from apps.escrow.models import Evidence
from apps.gateway.models import AuditLog
from tests.admin.conftest import agent, logged_in  # noqa: F401  (agent: the fixture)
from tests.helpers import act, create_escrow, pay

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"
TEXT = b"Trade log: seller said the item was sent at 14:02.\n"


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path
    settings.EVIDENCE_MAX_BYTES = 1024
    return tmp_path


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def upload(client: Any, escrow_id: str, content: bytes, name: str = "proof.png", **fields: Any) -> Any:
    return client.post(
        f"/api/v1/escrows/{escrow_id}/evidence",
        {"file": SimpleUploadedFile(name, content, content_type="image/png"), **fields},
        format="multipart",
    )


@pytest.fixture
def disputed_escrow(api_client: Any, buyer: Any, seller: Any) -> str:
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller, amount="100.00")["escrow_id"]
    pay(as_buyer, escrow_id)
    assert act(as_buyer, escrow_id, "dispute", {"reason": "never arrived"}).status_code == 202
    return escrow_id


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (PDF, "application/pdf"),
        (TEXT, "text/plain"),
        (b"<!DOCTYPE html><script>alert(1)</script>", None),
        (b"  <svg onload=alert(1)>", None),
        (b"GIF89a\x01\x00", None),
        (b"MZ\x90\x00\x03", None),
        (b"\xff\xfe\x00bad", None),
    ],
)
def test_the_type_is_decided_by_the_bytes(content: bytes, expected: str | None) -> None:
    assert evidence_sniff(content) == expected


def test_each_party_uploads_while_disputed(
    api_client: Any, buyer: Any, seller: Any, disputed_escrow: str, media_root: Path
) -> None:
    response = upload(api_client(buyer), disputed_escrow, PNG, name="../../etc/passwd.png", description="photo")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["party"], body["content_type"], body["size"]) == ("buyer", "image/png", len(PNG))
    assert upload(api_client(seller), disputed_escrow, TEXT, name="log.txt").json()["party"] == "seller"

    first = Evidence.objects.get(pk=body["id"])
    assert first.original_name == "passwd.png"
    # Random, extension-less names under MEDIA_ROOT; nothing of the client's name on disk.
    names = sorted(p.name for p in stored_files(media_root))
    assert len(names) == 2 and all(len(n) == 32 and "." not in n for n in names)
    assert (media_root / first.file.name).read_bytes() == PNG


def test_refused_uploads_leave_no_row_and_no_file(
    api_client: Any, buyer: Any, seller: Any, staff: Any, disputed_escrow: str, media_root: Path
) -> None:
    as_buyer = api_client(buyer)
    cases = [
        (upload(as_buyer, disputed_escrow, PNG + b"\x00" * 2048), 413, "evidence_too_large"),
        (
            upload(as_buyer, disputed_escrow, b"<html><body>hi</body></html>", name="a.txt"),
            415,
            "unsupported_evidence_type",
        ),
        (
            upload(as_buyer, disputed_escrow, b"GIF89a\x01\x00\x01\x00\x80\x00\x00", name="a.png"),
            415,
            "unsupported_evidence_type",
        ),
        (upload(as_buyer, disputed_escrow, PNG, party="seller"), 400, "validation_error"),
        (
            as_buyer.post(
                f"/api/v1/escrows/{disputed_escrow}/evidence", {"description": "no file"}, format="multipart"
            ),
            400,
            "validation_error",
        ),
        (
            as_buyer.post(f"/api/v1/escrows/{disputed_escrow}/evidence", {"file": "x"}, format="json"),
            415,
            "unsupported_media_type",
        ),
        (upload(api_client(staff), disputed_escrow, PNG), 404, "escrow_not_found"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (status, response.content)
        assert response["Content-Type"].startswith("application/problem+json")
        assert response.json()["code"] == code, response.json()
    assert not Evidence.objects.exists()
    assert stored_files(media_root) == []


def test_no_uploads_outside_a_dispute(api_client: Any, buyer: Any, seller: Any, media_root: Path) -> None:
    as_buyer = api_client(buyer)
    escrow_id = create_escrow(as_buyer, seller=seller)["escrow_id"]
    response = upload(as_buyer, escrow_id, PNG)
    assert (response.status_code, response.json()["code"]) == (409, "invalid_transition")
    assert not Evidence.objects.exists() and stored_files(media_root) == []


def test_staff_upload_for_a_party_is_audited_and_downloads_as_an_attachment(
    agent: Any,
    disputed_escrow: str,
    media_root: Path,  # noqa: F811
) -> None:
    client = logged_in(agent)
    desk = f"/admin/escrow/escrow/{disputed_escrow}/dispute/"
    response = client.post(
        desk,
        {
            "action": "evidence",
            "evidence-party": "seller",
            "evidence-reason": "sent to support by email",
            "evidence-file": SimpleUploadedFile("shot.txt", TEXT),
        },
    )
    assert response.status_code == 302
    [evidence] = Evidence.objects.all()
    assert (evidence.party, evidence.uploaded_by_id, evidence.content_type) == ("seller", agent.pk, "text/plain")
    [entry] = AuditLog.objects.filter(action="upload_evidence")
    assert (entry.actor_id, entry.target, entry.reason) == (
        agent.pk,
        f"evidence:{evidence.pk}",
        "sent to support by email",
    )

    download = client.get(f"/admin/escrow/escrow/{disputed_escrow}/evidence/{evidence.pk}/")
    assert download.status_code == 200
    assert download["Content-Disposition"].startswith("attachment;")
    assert download["X-Content-Type-Options"] == "nosniff"
    assert download["Content-Type"] == "text/plain"
    assert b"".join(download.streaming_content) == TEXT
    assert "download" in client.get(desk).content.decode()

    # A refused upload (markup) is neither stored nor audited.
    response = client.post(
        desk,
        {
            "action": "evidence",
            "evidence-party": "buyer",
            "evidence-reason": "x",
            "evidence-file": SimpleUploadedFile("a.txt", b"<!doctype html><p>"),
        },
    )
    assert response.status_code == 400
    assert Evidence.objects.count() == 1 and AuditLog.objects.filter(action="upload_evidence").count() == 1
    assert len(stored_files(media_root)) == 1


def test_evidence_is_for_staff_only(api_client: Any, buyer: Any, agent: Any, disputed_escrow: str) -> None:  # noqa: F811
    evidence_id = upload(api_client(buyer), disputed_escrow, PDF, name="r.pdf").json()["id"]
    url = f"/admin/escrow/escrow/{disputed_escrow}/evidence/{evidence_id}/"
    buyer_client = logged_in(buyer)
    assert buyer_client.get(url).status_code == 302  # to the admin login, not the file
    assert logged_in(agent).get(url)["Content-Type"] == "application/pdf"
