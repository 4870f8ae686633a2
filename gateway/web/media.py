"""How signalling reaches media: the per-browser adapter, ICE servers for the page, and
what answers when no media endpoint is wired in.

``make_service`` passes ``PerBrowserSessions(WebRtcEndpoint(config.webrtc))`` to
:class:`~gateway.web.service.WebService`.  Without an endpoint (``media_endpoint=None``)
joins still work (so tokens, Origin checks and the protocol can be exercised end to
end) and every offer is answered with an ``error`` of code ``media_unavailable``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from gateway.webrtc.api import (
    IceCandidate,
    MediaEndpoint,
    MediaMode,
    MediaSession,
    SessionState,
    SessionStats,
)
from gateway.webrtc.config import WebRtcConfig


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


class PerBrowserSessions:
    """One media session per joined browser, even when several join the same call.

    ``WebRtcEndpoint`` keeps one open session per key and refuses a second.  In the
    ``echo`` and ``test-pattern`` modes every browser has media of its own, and a page
    that re-joins after a dropped WebSocket must get a new session before the gateway
    has noticed that the old socket is gone; so each join gets the key
    ``CALL_ID#N``.  (The SIP bridge will decide how browsers of one call share media.)
    """

    def __init__(self, endpoint: MediaEndpoint) -> None:
        self.endpoint = endpoint
        self._serial = itertools.count(1)

    def create_session(self, call_id: str, mode: MediaMode) -> MediaSession:
        return self.endpoint.create_session(f"{call_id}#{next(self._serial)}", mode)


def browser_ice_servers(config: WebRtcConfig) -> list[dict[str, Any]]:
    """The ``[webrtc]`` STUN and TURN servers as RTCIceServer dicts for the call page.

    Empty unless configured: the page then gathers host candidates only, and nothing
    ever asks a public server.
    """
    servers: list[dict[str, Any]] = []
    if config.stun_servers:
        servers.append({"urls": list(config.stun_servers)})
    for entry in config.turn_servers:
        urls = entry.get("urls")
        servers.append({"urls": [urls] if isinstance(urls, str) else list(urls or []),
                        "username": entry.get("username"),
                        "credential": entry.get("credential")})
    return servers
