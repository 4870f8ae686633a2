"""Canary: the private aioice/aiortc names the endpoint (and its tests) rely on.

``gateway/webrtc/ice.py`` subclasses aioice's ``Connection`` and uses some of its private
attributes; the aiortc-based test peer pokes at a few aiortc internals.  aiortc is pinned
(aiortc==1.16.0, which brings aioice 0.13.0).  When an upgrade renames or reshapes any of
them, this file fails first and says which, instead of the endpoint misbehaving at run time.
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version

import aioice
import pytest
from aioice import ice as aioice_ice
from aioice import turn as aioice_turn
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from OpenSSL import SSL

from gateway.webrtc.ice import IceAgent


def params(fn: object) -> list[str]:
    assert callable(fn)
    return list(inspect.signature(fn).parameters)


def test_pinned_versions() -> None:
    assert version("aiortc") == "1.16.0", "re-check every private name below, then re-pin"
    assert version("aioice") == "0.13.0", "re-check every private name below, then re-pin"


def test_aioice_connection_internals_used_by_ice_agent() -> None:
    async def body() -> None:
        conn = aioice.Connection(ice_controlling=False, components=1)
        for name, kind in [
            ("_protocols", list), ("_local_candidates", list), ("_remote_candidates", list),
            ("_nominated", dict), ("_local_candidates_start", bool),
            ("_local_candidates_end", bool), ("_closing", bool), ("_queue", asyncio.Queue),
        ]:
            assert isinstance(getattr(conn, name, None), kind), f"Connection.{name}"
        await conn.close()

    asyncio.run(body())
    C = aioice_ice.Connection
    assert params(C._pair_remote_candidate) == ["self", "remote_candidate"]
    assert params(C.sort_check_list) == ["self"]
    assert params(C.data_received) == ["self", "data", "component"]
    assert inspect.iscoroutinefunction(C.close) and inspect.iscoroutinefunction(C.connect)
    assert params(C.add_remote_candidate) == ["self", "remote_candidate"]
    # IceAgent.remote_checked: every STUN request must reach request_received.
    assert params(C.request_received) == ["self", "message", "addr", "protocol"]
    source = inspect.getsource(aioice_ice.StunProtocol.datagram_received)
    assert "self.receiver.request_received(message, addr, self)" in source
    # Consent expiry must go through close(), which IceAgent overrides to report it.
    assert "await self.close()" in inspect.getsource(C.query_consent)
    # Every non-STUN datagram must reach Connection.data_received synchronously.
    source = inspect.getsource(aioice_ice.StunProtocol.datagram_received)
    assert "self.receiver.data_received(data, self.local_candidate.component)" in source
    assert params(aioice_ice.StunProtocol.__init__) == ["self", "receiver"]
    for prop in ("protocol", "remote_addr", "local_addr"):
        assert prop in params(aioice_ice.CandidatePair.__init__) or isinstance(
            getattr(aioice_ice.CandidatePair, prop, None), property), f"CandidatePair.{prop}"
    assert params(aioice_ice.server_reflexive_candidate) == ["protocol", "stun_server"]
    assert set(params(aioice_ice.relayed_candidate)) == {
        "component", "hide_related_address", "protocol_factory", "turn_server",
        "turn_username", "turn_password", "turn_ssl", "turn_transport"}
    assert isinstance(aioice_turn.UDP_SOCKET_BUFFER_SIZE, int)


def test_ice_agents_connect_and_exchange_datagrams_on_loopback() -> None:
    """The same internals, exercised: two IceAgents, no aioice address discovery."""

    async def body() -> None:
        got: dict[str, list[bytes]] = {"a": [], "b": []}
        a = IceAgent(controlling=True, host_addresses=["127.0.0.1"], port_range=None,
                     on_data=got["a"].append)
        b = IceAgent(controlling=False, host_addresses=["127.0.0.1"], port_range=(42000, 42999),
                     on_data=got["b"].append)
        try:
            for agent in (a, b):
                await agent.gather_host_candidates()
            assert 42000 <= b.local_candidates[0].port <= 42999
            for x, y in ((a, b), (b, a)):
                x.remote_username, x.remote_password = y.local_username, y.local_password
                for c in y.local_candidates:
                    await x.add_remote_candidate(c)
                await x.add_remote_candidate(None)
            await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 10)
            assert a.connected and b.connected and a.selected_pair and b.selected_pair
            assert a.send_now(b"\x80hello") and b.send_now(b"\x17world")
            for _ in range(100):
                if got["a"] and got["b"]:
                    break
                await asyncio.sleep(0.01)
            assert got == {"a": [b"\x17world"], "b": [b"\x80hello"]}
        finally:
            await a.close()
            await b.close()

    asyncio.run(body())


def test_pyopenssl_dtls_api() -> None:
    for name in ("set_ciphertext_mtu", "DTLSv1_get_timeout", "DTLSv1_handle_timeout",
                 "export_keying_material", "get_selected_srtp_profile", "bio_read",
                 "bio_write"):
        assert hasattr(SSL.Connection, name), f"OpenSSL.SSL.Connection.{name}"
    assert hasattr(SSL.Context, "set_tlsext_use_srtp")
    assert hasattr(SSL, "OP_NO_QUERY_MTU")


def test_aiortc_internals_used_by_the_test_peer() -> None:
    """Test-only: the browser stand-in's ICE restart and feedback injection."""

    async def body() -> None:
        transport = RTCIceTransport(RTCIceGatherer())
        for name in ("_connection", "_send", "_recv"):
            assert hasattr(transport, name), f"RTCIceTransport.{name}"
        assert isinstance(transport._connection, aioice.Connection)
        await transport.stop()

    asyncio.run(body())
    assert params(RTCRtpReceiver._send_rtcp_pli) == ["self", "media_ssrc"]
    assert params(RTCRtpReceiver._send_rtcp_nack) == ["self", "media_ssrc", "lost"]
    assert params(RTCRtpSender._send_keyframe) == ["self"]
    assert "self._send_keyframe()" in inspect.getsource(RTCRtpSender._handle_rtcp_packet)


@pytest.mark.parametrize("name", ["get_host_addresses"])
def test_the_peer_patch_target_exists(name: str) -> None:
    """conftest.loopback_peer replaces this for the aiortc peer only."""
    assert params(getattr(aioice_ice, name)) == ["use_ipv4", "use_ipv6"]
