"""Run by test_twisted.py in a subprocess: the endpoint on Twisted's asyncio reactor.

A Twisted UDP socket plays the kiosk: the session's ``on_rtp`` writes each browser packet
to it, an echoing Twisted UDP peer sends it back, and ``datagramReceived`` hands it to
``send_rtp`` -- the bridge's path, with Twisted and aioice on the one loop.  Prints one
JSON line and exits 0 when the aiortc browser decoded the frames that made the round trip.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from gateway.reactor import install_reactor

reactor: Any = install_reactor()

import aioice.ice  # noqa: E402
from twisted.internet import defer, protocol, task  # noqa: E402

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # the peer only

from webrtc.peer import LOOPBACK, BrowserPeer, connect, wait_for  # noqa: E402

from gateway.webrtc import WebRtcEndpoint  # noqa: E402


class Echo(protocol.DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(data, addr)


class KioskLeg(protocol.DatagramProtocol):
    def __init__(self) -> None:
        self.session: Any = None
        self.count = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.count += 1
        self.session.send_rtp("video" if data[0] == 1 else "audio", data[1:])


async def body(echo_port: int, leg: KioskLeg, leg_port: Any, ticks: list[int]) -> dict[str, Any]:
    endpoint = WebRtcEndpoint(LOOPBACK)
    session = endpoint.create_session("twisted-call", "bridge")
    leg.session = session
    kind_byte = {"video": b"\x01", "audio": b"\x00"}
    session.on_rtp = lambda kind, packet: leg_port.write(kind_byte[kind] + packet,
                                                         ("127.0.0.1", echo_port))
    peer = BrowserPeer()
    try:
        await connect(session, peer)
        await wait_for(lambda: peer.frames["video"] > 20, what="video through Twisted UDP")
        return {"frames": peer.frames["video"], "via_twisted": leg.count, "ticks": len(ticks),
                "loop": type(asyncio.get_running_loop()).__name__}
    finally:
        await peer.close()
        await session.close()


async def main(reactor: Any) -> None:
    echo = reactor.listenUDP(0, Echo(), interface="127.0.0.1")
    leg = KioskLeg()
    leg_port = reactor.listenUDP(0, leg, interface="127.0.0.1")
    ticks: list[int] = []
    meter = task.LoopingCall(lambda: ticks.append(1))
    meter.start(0.05)
    result = await defer.Deferred.fromFuture(asyncio.ensure_future(
        asyncio.wait_for(body(echo.getHost().port, leg, leg_port, ticks), 20)))
    meter.stop()
    await echo.stopListening()
    await leg_port.stopListening()
    print(json.dumps(result))
    sys.stdout.flush()


task.react(lambda r: defer.ensureDeferred(main(r)))
