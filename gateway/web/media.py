"""What signalling talks to until the WebRTC media endpoint is wired in.

``gateway.webrtc`` (being built separately) will provide the real
:class:`~gateway.webrtc.api.MediaEndpoint`; ``make_service`` then passes it to
:class:`~gateway.web.service.WebService`.  Until then joins work (so tokens, Origin
checks and the protocol can be exercised end to end) and every offer is answered
with an ``error`` of code ``media_unavailable`` instead of a broken answer.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.webrtc.api import IceCandidate, MediaMode, SessionState, SessionStats


class MediaUnavailable(RuntimeError):
    """The media endpoint cannot serve this session now (not wired, overloaded)."""


class _UnwiredSession:
    def __init__(self, call_id: str, mode: MediaMode) -> None:
        self.call_id = call_id
        self.mode = mode
        self.on_local_candidate: Callable[[IceCandidate | None], None] | None = None
        self.on_state: Callable[[SessionState], None] | None = None

    async def accept_offer(self, sdp: str) -> str:
        raise MediaUnavailable("this gateway has no WebRTC media endpoint yet")

    async def add_remote_candidate(self, candidate: IceCandidate | None) -> None:
        return None

    def stats(self) -> SessionStats:
        return SessionStats()

    async def close(self) -> None:
        return None


class UnwiredMediaEndpoint:
    """A MediaEndpoint whose sessions refuse every offer with MediaUnavailable."""

    def create_session(self, call_id: str, mode: MediaMode) -> _UnwiredSession:
        return _UnwiredSession(call_id, mode)
