"""Discord signs every interaction with Ed25519 over `X-Signature-Timestamp` + the raw body, with the
application's key; the public half is DISCORD_PUBLIC_KEY (hex). Nothing of a request is read before
its signature holds."""

from __future__ import annotations

import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings

_SIGNATURE_BYTES = 64


class SignatureRejected(Exception):
    pass


def public_key() -> Ed25519PublicKey | None:
    """The configured key, or None when the endpoint is switched off."""
    raw = (settings.DISCORD_PUBLIC_KEY or "").strip()
    if not raw:
        return None
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(raw))


def verify(
    *, key: Ed25519PublicKey, signature: str | None, timestamp: str | None, body: bytes, now: float | None = None
) -> None:
    """Raises SignatureRejected unless Discord signed this body at this timestamp, recently."""
    if not signature or not timestamp:
        raise SignatureRejected("missing signature headers")
    try:
        signature_bytes = bytes.fromhex(signature)
    except ValueError:
        raise SignatureRejected("the signature is not hex") from None
    if len(signature_bytes) != _SIGNATURE_BYTES:
        raise SignatureRejected("the signature has the wrong length")
    try:
        key.verify(signature_bytes, timestamp.encode() + body)
    except (InvalidSignature, UnicodeEncodeError):
        raise SignatureRejected("bad signature") from None
    # Signed, but a captured request replayed later is still refused: Discord sends the current time.
    try:
        signed_at = int(timestamp)
    except ValueError:
        raise SignatureRejected("the timestamp is not a number") from None
    age = (time.time() if now is None else now) - signed_at
    if abs(age) > settings.DISCORD_SIGNATURE_MAX_AGE_SECONDS:
        raise SignatureRejected("the signature timestamp is too old or in the future")
