"""The seam between browser signalling (``gateway.web``) and the WebRTC media endpoint.

Signalling knows nothing of ICE, DTLS or RTP: it hands the browser's offer and trickled
candidates to a ``MediaSession`` and relays back what the session produces.  The bridge
(a later issue) gets RTP/RTCP packets from the same session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

SessionState = Literal["new", "connecting", "connected", "disconnected", "failed", "closed"]
MediaMode = Literal["echo", "test-pattern", "bridge"]


@dataclass
class IceCandidate:
    """A trickled candidate as browsers exchange it (RTCIceCandidateInit)."""

    candidate: str  # "candidate:..." line without "a=", "" for end-of-candidates
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


@dataclass
class SessionStats:
    """What the gateway saw of a session's media, per kind ("audio"/"video")."""

    packets_received: dict[str, int] = field(default_factory=dict)
    packets_sent: dict[str, int] = field(default_factory=dict)
    bytes_received: dict[str, int] = field(default_factory=dict)
    codecs: dict[str, str] = field(default_factory=dict)  # kind -> "VP8/90000", ...
    extra: dict[str, Any] = field(default_factory=dict)


class MediaSession(Protocol):
    on_local_candidate: Callable[[IceCandidate | None], None] | None
    on_state: Callable[[SessionState], None] | None

    async def accept_offer(self, sdp: str) -> str:
        """Answer the browser's offer (a first offer or an ICE-restart re-offer)."""
        ...

    async def add_remote_candidate(self, candidate: IceCandidate | None) -> None:
        """A trickled candidate from the browser; None means end-of-candidates."""
        ...

    def stats(self) -> SessionStats: ...

    async def close(self) -> None: ...


class MediaEndpoint(Protocol):
    def create_session(self, call_id: str, mode: MediaMode) -> MediaSession: ...
