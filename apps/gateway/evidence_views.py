"""POST /api/v1/escrows/{id}/evidence: a party adds a file to its dispute (multipart: `file`, optional
`description`). Thin: bound the body, parse strictly, call the escrow service, answer 201."""

from __future__ import annotations

import uuid
from typing import cast

from django.conf import settings
from django.http import QueryDict
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers as drf_serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.escrow.public import EscrowError, EvidenceRejected, evidence_add
from apps.gateway.problems import Problem, from_domain

# Room for the multipart framing and a description around the file itself.
_MULTIPART_OVERHEAD = 64 * 1024
_FIELDS = {"file", "description"}

EvidenceOutput = inline_serializer(
    "Evidence",
    {
        "id": drf_serializers.UUIDField(),
        "escrow_id": drf_serializers.UUIDField(),
        "party": drf_serializers.CharField(),
        "content_type": drf_serializers.CharField(),
        "size": drf_serializers.IntegerField(),
        "sha256": drf_serializers.CharField(),
        "created_at": drf_serializers.DateTimeField(),
    },
)

EvidenceInput = inline_serializer(
    "EvidenceUpload",
    {
        "file": drf_serializers.FileField(),
        "description": drf_serializers.CharField(required=False, max_length=1000),
    },
)


class EscrowEvidence(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="escrow_evidence_add",
        request={"multipart/form-data": EvidenceInput},
        responses={201: EvidenceOutput},
    )
    def post(self, request: Request, escrow_id: uuid.UUID) -> Response:
        limit = settings.EVIDENCE_MAX_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit + _MULTIPART_OVERHEAD:
            # Refused before the body is read at all.
            raise Problem(
                413,
                "evidence_too_large",
                f"evidence files are at most {limit} bytes",
                errors=[{"field": "file", "detail": "too large"}],
            )
        unknown = (set(request.data.keys()) | set(request.FILES.keys())) - _FIELDS
        if unknown:
            raise Problem(
                400,
                "validation_error",
                "unknown fields",
                errors=[{"field": name, "detail": "unknown field"} for name in sorted(unknown)],
            )
        files = request.FILES.getlist("file")
        if len(files) != 1:
            raise Problem(
                400,
                "validation_error",
                "exactly one file is required",
                errors=[{"field": "file", "detail": "exactly one file is required"}],
            )
        descriptions = cast(QueryDict, request.data).getlist("description") if "description" in request.data else [""]
        if len(descriptions) != 1 or not isinstance(descriptions[0], str):
            raise Problem(
                400,
                "validation_error",
                "description must be one string",
                errors=[{"field": "description", "detail": "must be one string"}],
            )
        try:
            evidence = evidence_add(
                escrow_id=escrow_id, uploaded_by=request.user, upload=files[0], description=descriptions[0]
            )
        except EvidenceRejected as exc:
            raise Problem(exc.status, exc.code, exc.detail, errors=[{"field": "file", "detail": exc.detail}]) from None
        except EscrowError as exc:
            raise from_domain(exc) from None
        return Response(
            {
                "id": str(evidence.id),
                "escrow_id": str(evidence.escrow_id),
                "party": evidence.party,
                "content_type": evidence.content_type,
                "size": evidence.size,
                "sha256": evidence.sha256,
                "created_at": evidence.created_at,
            },
            status=201,
        )
