"""Fixtures for the WebRTC endpoint tests: aiortc as the browser, on 127.0.0.1 only."""

from __future__ import annotations

import aioice.ice
import pytest


@pytest.fixture
def loopback_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the aiortc test peer gather 127.0.0.1, which aioice skips by default.

    Only the peer uses aioice's address discovery: the endpoint binds the addresses in its
    WebRtcConfig, so this patch cannot make the endpoint's own tests pass by accident.
    """
    monkeypatch.setattr(aioice.ice, "get_host_addresses",
                        lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else [])
