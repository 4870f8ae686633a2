"""Join tokens: what they grant, and every way one must fail."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.web.tokens import MAX_TTL, JoinTokens, TokenError

NOW = 1_800_000_000.0
TOKENS = JoinTokens(b"a-secret-of-at-least-16-bytes")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def reason(token: str, **kw: object) -> str:
    with pytest.raises(TokenError) as info:
        TOKENS.verify(token, **kw)  # type: ignore[arg-type]
    return info.value.reason


def test_issue_then_verify_gives_the_call_role_and_expiry() -> None:
    token = TOKENS.issue("visit-42", now=NOW, ttl=600)
    claims = TOKENS.verify(token, now=NOW + 599, call_id="visit-42")
    assert (claims.call_id, claims.role) == ("visit-42", "family")
    assert (claims.issued_at, claims.expires_at) == (NOW, NOW + 600)
    assert TOKENS.verify(token, now=NOW).call_id == "visit-42"  # call_id is optional
    assert len(token) < 200 and "=" not in token  # compact, URL-safe


def test_each_token_is_unique() -> None:
    assert TOKENS.issue("c", now=NOW, ttl=60) != TOKENS.issue("c", now=NOW, ttl=60)


def test_expired_at_exactly_the_expiry_second() -> None:
    token = TOKENS.issue("c", now=NOW, ttl=10)
    TOKENS.verify(token, now=NOW + 9.999)
    assert reason(token, now=NOW + 10) == "expired"
    assert reason(token, now=NOW + 10_000) == "expired"


def test_a_token_for_one_call_cannot_join_another() -> None:
    token = TOKENS.issue("call-a", now=NOW, ttl=60)
    assert reason(token, now=NOW, call_id="call-b") == "wrong_call"
    assert reason(token, now=NOW, call_id="call-a ") == "wrong_call"


def test_tampered_claims_or_signature_are_refused() -> None:
    token = TOKENS.issue("call-a", now=NOW, ttl=60)
    body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    for change in ({"call": "call-b"}, {"exp": claims["exp"] + 3600}, {"role": "staff"}):
        forged = b64(json.dumps({**claims, **change}).encode())
        assert reason(f"{forged}.{sig}", now=NOW) == "bad_signature"
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    assert reason(f"{body}.{flipped}", now=NOW) == "bad_signature"
    other = JoinTokens(b"another-secret-0123456789").issue("call-a", now=NOW, ttl=60)
    assert reason(other, now=NOW) == "bad_signature"


def test_a_genuine_signature_over_junk_is_still_refused() -> None:
    """Claims are checked after the signature: a signed but wrong body is malformed."""
    for body in (b"[]", b'{"v": 2}', b"not json", b'{"v":1,"call":"c","role":"x","iat":1,'
                                                     b'"exp":9999999999,"jti":"j"}'):
        part = b64(body)
        assert reason(f"{part}.{TOKENS._sign(part)}", now=NOW) == "malformed"


@pytest.mark.parametrize("token", [
    "", ".", "abc", "abc.", ".abc", "a.b.c", "a b.c", "ab+/.cd", "x" * 2000,
])
def test_malformed_tokens(token: str) -> None:
    assert reason(token, now=NOW) == "malformed"


def test_non_string_token_is_malformed() -> None:
    assert reason(None, now=NOW) == "malformed"  # type: ignore[arg-type]


@given(st.text(max_size=300))
def test_arbitrary_text_never_verifies_and_only_raises_token_error(text: str) -> None:
    with pytest.raises(TokenError):
        TOKENS.verify(text, now=NOW)


@pytest.mark.parametrize(("call_id", "role", "ttl", "message"), [
    ("", "family", 60, "invalid call id"),
    ("has space", "family", 60, "invalid call id"),
    ("-leading-dash", "family", 60, "invalid call id"),
    ("x" * 129, "family", 60, "invalid call id"),
    ("ok", "staff", 60, "unknown role"),
    ("ok", "family", 0, "ttl must be"),
    ("ok", "family", MAX_TTL + 1, "ttl must be"),
])
def test_issue_refuses_bad_input(call_id: str, role: str, ttl: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TOKENS.issue(call_id, now=NOW, ttl=ttl, role=role)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        JoinTokens(b"short")
