"""WebRTC for family browsers: the gateway's own endpoint with packet-level RTP/RTCP access.

``api`` is the seam to signalling; ``endpoint`` implements it (see its docstring for why it
is assembled from aioice, pyOpenSSL and pylibsrtp instead of aiortc's RTCPeerConnection).
The endpoint is imported lazily, so signalling code that only needs ``api`` does not load
the media libraries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .api import IceCandidate, MediaEndpoint, MediaMode, MediaSession, SessionState, SessionStats
from .config import WebRtcConfig

if TYPE_CHECKING:
    from .endpoint import Feedback, OfferError, WebRtcEndpoint, WebRtcSession

_LAZY = {"Feedback", "OfferError", "WebRtcEndpoint", "WebRtcSession"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import endpoint

        return getattr(endpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Feedback",
    "IceCandidate",
    "MediaEndpoint",
    "MediaMode",
    "MediaSession",
    "OfferError",
    "SessionState",
    "SessionStats",
    "WebRtcConfig",
    "WebRtcEndpoint",
    "WebRtcSession",
]
