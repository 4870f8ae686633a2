"""The WebSocket signalling protocol's messages and close codes (sans-IO).

``docs/signalling.md`` is the reference for browser authors; this module is the one
place that turns frames into typed messages and back.  Parsing never raises anything
but :class:`ProtocolError`, so a hostile frame can only ever produce an ``error``
message, never an exception in the server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.webrtc.api import IceCandidate

# Close codes.  RFC 6455 reserves 4000-4999 for applications; ours mirror HTTP statuses.
CLOSE_NORMAL = 1000  # hangup, or the call ended
CLOSE_GOING_AWAY = 1001  # the gateway is shutting down
CLOSE_TOO_BIG = 1009  # a message over [web] max_message_bytes
CLOSE_INTERNAL_ERROR = 1011  # a bug on our side; logged
CLOSE_TRY_AGAIN_LATER = 1013  # no media session could be made for the join
CLOSE_UNAUTHORIZED = 4401  # bad or missing token, or no join in time
CLOSE_FORBIDDEN = 4403  # token for another call, or Origin not allowed
CLOSE_EXPIRED = 4408  # the token has expired
CLOSE_TOO_MANY_FAILURES = 4429  # this source failed to join too often; try later

JOIN_TIMEOUT = 10.0  # seconds from connect to a valid join

EVENT_KINDS = (
    "connected", "peer-joined", "peer-left", "warning-minutes-left", "balance-low", "ended",
)
CLIENT_TYPES = ("join", "offer", "candidate", "hangup", "ping")
MAX_SDP_CHARS = 1024 * 1024  # the frame limit applies first; this bounds what we accept


class ProtocolError(Exception):
    """A message we cannot act on; answered with an ``error`` message, connection kept."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class Join:
    token: str
    call_id: str | None = None  # optional: the call the page expects; must match the token


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str


@dataclass(frozen=True, slots=True)
class Candidate:
    candidate: IceCandidate | None  # None: end of candidates


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    id: str | int | None = None


ClientMessage = Join | Offer | Candidate | Hangup | Ping


def _field(msg: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str,
           *, required: bool = True) -> Any:
    if name not in msg or msg[name] is None:
        if required:
            raise ProtocolError("invalid_message", f"{name} is required ({what})", name)
        return None
    value = msg[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError("invalid_message", f"{name} must be {what}", name)
    return value


def parse_client_message(text: str) -> ClientMessage:
    """One client frame as a typed message; unknown extra fields are ignored."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("invalid_json", "the message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("invalid_message", "the message must be a JSON object")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", "type is required (a string)", "type")
    if kind == "join":
        token = _field(msg, "token", str, "a string: the join token")
        call_id = _field(msg, "call_id", str, "a string", required=False)
        return Join(token=token, call_id=call_id)
    if kind == "offer":
        sdp = _field(msg, "sdp", str, "a string: the SDP offer")
        if not sdp.strip():
            raise ProtocolError("invalid_message", "sdp must not be empty", "sdp")
        if len(sdp) > MAX_SDP_CHARS:
            raise ProtocolError("invalid_message", "sdp is too long", "sdp")
        return Offer(sdp=sdp)
    if kind == "candidate":
        return Candidate(candidate=_parse_candidate(msg))
    if kind == "hangup":
        return Hangup()
    if kind == "ping":
        ident = msg.get("id")
        if ident is not None and (not isinstance(ident, str | int) or isinstance(ident, bool)):
            raise ProtocolError("invalid_message", "id must be a string or an integer", "id")
        return Ping(id=ident)
    raise ProtocolError("unknown_type", f"unknown message type {kind[:40]!r} "
                        f"(known: {', '.join(CLIENT_TYPES)})", "type")


def _parse_candidate(msg: dict[str, Any]) -> IceCandidate | None:
    line = _field(msg, "candidate", str, 'a string ("candidate:..."), "" or null',
                  required=False)
    if not line:  # null or "": the browser has gathered all its candidates
        return None
    if not line.startswith("candidate:") or len(line) > 2048:
        raise ProtocolError("invalid_message", 'candidate must be a "candidate:..." line',
                            "candidate")
    mid = _field(msg, "sdpMid", str, "a string or null", required=False)
    index = _field(msg, "sdpMLineIndex", int, "a non-negative integer or null",
                   required=False)
    if index is not None and not 0 <= index < 1024:
        raise ProtocolError("invalid_message", "sdpMLineIndex must be a non-negative integer",
                            "sdpMLineIndex")
    if mid is None and index is None:
        raise ProtocolError("invalid_message", "sdpMid or sdpMLineIndex is required",
                            "sdpMid")
    return IceCandidate(candidate=line, sdp_mid=mid, sdp_mline_index=index)


# ------------------------------------------------------------------ server -> client


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def joined(call_id: str, role: str, peer: str,
           ice_servers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``ice_servers``: RTCIceServer dicts for ``new RTCPeerConnection`` ([] = host only)."""
    return {"type": "joined", "call_id": call_id, "role": role, "peer": peer,
            "ice_servers": list(ice_servers or [])}


def answer(sdp: str) -> dict[str, Any]:
    return {"type": "answer", "sdp": sdp}


def candidate(c: IceCandidate | None) -> dict[str, Any]:
    if c is None or not c.candidate:
        return {"type": "candidate", "candidate": None}
    return {"type": "candidate", "candidate": c.candidate, "sdpMid": c.sdp_mid,
            "sdpMLineIndex": c.sdp_mline_index}


def error(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if field is not None:
        out["field"] = field
    return out


def pong(ident: str | int | None = None) -> dict[str, Any]:
    return {"type": "pong"} if ident is None else {"type": "pong", "id": ident}


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """An ``event`` message, checked so that callers (bridge, billing) cannot send junk."""
    return {"type": "event", **check_event({"kind": kind, **fields})}


def check_event(ev: dict[str, Any]) -> dict[str, Any]:
    """``ev`` if it is a well-formed event, else ValueError (a bug in the caller)."""
    kind = ev.get("kind")
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r} (known: {', '.join(EVENT_KINDS)})")
    if kind == "warning-minutes-left":
        minutes = ev.get("minutes")
        if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 0:
            raise ValueError("warning-minutes-left needs minutes, a non-negative integer")
    if kind == "ended" and not isinstance(ev.get("reason"), str):
        raise ValueError("ended needs reason, a string")
    json.dumps(ev)  # every field must be JSON; raises TypeError/ValueError otherwise
    return dict(ev)
