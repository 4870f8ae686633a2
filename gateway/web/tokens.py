"""Join tokens: short-lived, signed permission for one browser to join one call.

Format (compact, URL-safe, no padding)::

    base64url(JSON claims) "." base64url(HMAC-SHA256(key, first part))

with claims ``{"v": 1, "call": CALL_ID, "role": "family", "iat": UNIX, "exp": UNIX,
"jti": RANDOM}``.  The key is derived from the gateway secret with a fixed label, so a
token can never be mistaken for a SIP digest nonce made from the same secret.  The
signature is checked before the JSON is parsed, so nothing an attacker writes is
interpreted until it is known to come from us.

Sans-IO: ``now`` is passed in; nothing here reads the clock or does I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from gateway.config import WEB_MAX_TOKEN_TTL

TOKEN_VERSION = 1
ROLES = ("family",)  # "staff" comes with the staff console
Role = Literal["family"]
MAX_TTL = WEB_MAX_TOKEN_TTL
MAX_TOKEN_CHARS = 1024
# Call ids end up in logs, URLs and store keys: keep them plain.
CALL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}$"
_CALL_ID_RE = re.compile(CALL_ID_PATTERN.replace("$", r"\Z"))
_KEY_LABEL = b"gateway/web/join-token/v1"
_B64_RE = re.compile(r"^[A-Za-z0-9_\-]+\Z")

TokenFailure = Literal["malformed", "bad_signature", "expired", "wrong_call"]


class TokenError(Exception):
    """A token that must not let anyone in; ``reason`` says why, for close codes and logs."""

    def __init__(self, reason: TokenFailure, message: str) -> None:
        super().__init__(message)
        self.reason: TokenFailure = reason


@dataclass(frozen=True, slots=True)
class JoinClaims:
    """What a valid token grants."""

    call_id: str
    role: str
    issued_at: int
    expires_at: int
    token_id: str


def valid_call_id(call_id: str) -> bool:
    return bool(_CALL_ID_RE.match(call_id))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not _B64_RE.match(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class JoinTokens:
    """Issues and verifies join tokens with a key derived from the gateway secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._key = hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()

    def _sign(self, body: str) -> str:
        return _b64encode(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def issue(self, call_id: str, *, now: float, ttl: int, role: str = "family") -> str:
        """A token for ``call_id`` valid for ``ttl`` seconds from ``now``."""
        if not valid_call_id(call_id):
            raise ValueError(f"invalid call id {call_id!r}: 1 to 128 letters, digits and "
                             "'_.:@-', starting with a letter or digit")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
        if not 1 <= ttl <= MAX_TTL:
            raise ValueError(f"ttl must be from 1 to {MAX_TTL} seconds, got {ttl}")
        iat = int(now)
        claims = {"v": TOKEN_VERSION, "call": call_id, "role": role, "iat": iat,
                  "exp": iat + ttl, "jti": secrets.token_urlsafe(9)}
        body = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def verify(self, token: str, *, now: float, call_id: str | None = None) -> JoinClaims:
        """The claims of a genuine, unexpired token (for ``call_id`` when given).

        Raises TokenError("malformed" | "bad_signature" | "expired" | "wrong_call").
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("malformed", "the token is missing or too long")
        body, dot, signature = token.partition(".")
        if not dot or not body or not signature or "." in signature:
            raise TokenError("malformed", "the token is not BODY.SIGNATURE")
        if not _B64_RE.match(body) or not _B64_RE.match(signature):
            raise TokenError("malformed", "the token is not base64url")
        if not hmac.compare_digest(self._sign(body), signature):
            raise TokenError("bad_signature", "the token's signature is not valid")
        try:
            claims = json.loads(_b64decode(body))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise TokenError("malformed", "the token's claims are not JSON") from None
        if not isinstance(claims, dict) or claims.get("v") != TOKEN_VERSION:
            raise TokenError("malformed", "unknown token version")
        call, role = claims.get("call"), claims.get("role")
        iat, exp, jti = claims.get("iat"), claims.get("exp"), claims.get("jti")
        if (not isinstance(call, str) or not valid_call_id(call) or role not in ROLES
                or not isinstance(iat, int) or not isinstance(exp, int)
                or not isinstance(jti, str)):
            raise TokenError("malformed", "the token's claims are incomplete")
        if now >= exp:
            raise TokenError("expired", "the token has expired")
        if call_id is not None and call_id != call:
            raise TokenError("wrong_call", "the token is for another call")
        return JoinClaims(call_id=call, role=str(role), issued_at=iat, expires_at=exp,
                          token_id=jti)
