"""Thin Twisted adapters between sockets and the sans-IO ``SipCore``.

They move bytes, frame streams, enforce per-source connection limits and keep one
``callLater`` armed for the core's next deadline.  No SIP logic lives here.
"""

from __future__ import annotations

import logging
import socket
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol

from .core import SipCore
from .message import StreamFramer
from .transaction import Peer

log = logging.getLogger("gateway.sip.transport")


class SipDriver:
    """Feeds the core from the reactor and flushes what it wants sent."""

    def __init__(self, core: SipCore, clock: Any,
                 connect: Callable[[Peer], None] | None = None,
                 on_event: Callable[[Any], None] | None = None) -> None:
        self.core = core
        self.clock = clock
        self.udp: dict[str, Any] = {}  # family ("4"/"6") -> UDP port
        self.streams: dict[Peer, SipStreamProtocol] = {}
        self.pending: dict[Peer, list[bytes]] = defaultdict(list)
        self.connect = connect
        self.on_event = on_event
        self._call: Any = None
        self._deadline: float | None = None
        self.per_source: dict[tuple[str, str], int] = defaultdict(int)
        self.max_connections_per_source = 32

    # input
    def datagram(self, data: bytes, peer: Peer) -> None:
        self.core.receive_datagram(data, peer, self.clock.seconds())
        self.flush()

    def stream_message(self, msg: Any, peer: Peer) -> None:
        self.core.receive_message(msg, peer, self.clock.seconds())

    # output
    def flush(self) -> None:
        core = self.core
        for peer, data in core.messages_to_send():
            self._send(peer, data)
        if self.on_event is not None:
            while (ev := core.next_event()) is not None:
                try:
                    self.on_event(ev)
                except Exception:  # noqa: BLE001
                    log.exception("event handler failed")
            # Event handlers may have made the core send more.
            for peer, data in core.messages_to_send():
                self._send(peer, data)
        self._arm()

    def _send(self, peer: Peer, data: bytes) -> None:
        transport = peer[0]
        if transport == "udp":
            port = self.udp.get("6" if ":" in peer[1] else "4")
            if port is None:
                port = next(iter(self.udp.values()), None)
            if port is not None:
                try:
                    port.write(data, (peer[1], peer[2]))
                except OSError as exc:
                    log.warning("UDP send to %s:%s failed: %s", peer[1], peer[2], exc)
            return
        conn = self.streams.get(peer)
        if conn is not None and conn.transport is not None:
            conn.transport.write(data)
            return
        self.pending[peer].append(data)
        if len(self.pending[peer]) == 1 and self.connect is not None:
            self.connect(peer)

    def _arm(self) -> None:
        deadline = self.core.get_timer()
        if deadline == self._deadline and self._call is not None and self._call.active():
            return
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.clock.seconds())
            self._call = self.clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._call = None
        self._deadline = None
        self.core.handle_timer(self.clock.seconds())
        self.flush()

    # connection bookkeeping
    def connection_made(self, conn: SipStreamProtocol) -> bool:
        key = (conn.peer[0], conn.peer[1])
        if conn.inbound and self.per_source[key] >= self.max_connections_per_source:
            log.warning("too many %s connections from %s", conn.peer[0], conn.peer[1])
            return False
        self.per_source[key] += 1
        self.streams[conn.peer] = conn
        self.core.upgraded.pop(conn.peer, None)
        for data in self.pending.pop(conn.peer, []):
            assert conn.transport is not None
            conn.transport.write(data)
        return True

    def connection_lost(self, conn: SipStreamProtocol) -> None:
        key = (conn.peer[0], conn.peer[1])
        if conn.counted:
            self.per_source[key] -= 1
            if self.per_source[key] <= 0:
                del self.per_source[key]
        if self.streams.get(conn.peer) is conn:
            del self.streams[conn.peer]

    def connect_failed(self, peer: Peer) -> None:
        dropped = self.pending.pop(peer, [])
        udp = self.core.upgraded.pop(peer, None)
        if udp is not None and dropped:
            # 18.1.1: the large request went to TCP first; that failed, so try UDP.
            log.info("TCP to %s:%s refused; sending %d message(s) over UDP", peer[1], peer[2],
                     len(dropped))
            for data in dropped:
                self._send(udp, data)
            return
        if dropped:
            log.warning("could not connect to %s:%s:%s; %d message(s) dropped", *peer,
                        len(dropped))


# A pause of the process (a full garbage collection of a large heap takes hundreds of
# milliseconds) must not lose datagrams: at a few hundred calls/s the kernel's default
# 208 KiB receive buffer fills in well under a second.  The kernel caps the size at
# net.core.rmem_max (raise it for more).
UDP_RCVBUF = 4 * 1024 * 1024


def tune_udp_port(port: Any) -> None:
    """A larger receive buffer, and read everything queued before timers run: after a
    pause, the responses waiting in the buffer must be seen before retransmission
    timers (which they would have stopped) fire."""
    sock = getattr(port, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        except OSError as exc:
            log.warning("could not set the UDP receive buffer: %s", exc)
    if hasattr(port, "maxThroughput"):
        port.maxThroughput = max(port.maxThroughput, 2 * UDP_RCVBUF)


class SipUdpProtocol(protocol.DatagramProtocol):
    transport: Any

    def __init__(self, driver: SipDriver, family: str) -> None:
        self.driver = driver
        self.family = family

    def startProtocol(self) -> None:  # noqa: N802
        self.driver.udp[self.family] = self.transport
        tune_udp_port(self.transport)

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        self.driver.datagram(data, ("udp", addr[0], addr[1]))


class SipStreamProtocol(protocol.Protocol):
    """One TCP or TLS connection, either direction."""

    transport: Any  # zope interfaces are opaque to mypy

    def __init__(self, driver: SipDriver, transport_name: str, inbound: bool,
                 max_message: int, idle_timeout: float, peer: Peer | None = None) -> None:
        self.driver = driver
        self.name = transport_name
        self.inbound = inbound
        self.framer = StreamFramer(max_message)
        self.idle_timeout = idle_timeout
        self.peer: Peer = peer or (transport_name, "", 0)
        self.counted = False
        self._idle: Any = None

    def connectionMade(self) -> None:  # noqa: N802
        assert self.transport is not None
        addr = self.transport.getPeer()
        if self.inbound or not self.peer[1]:
            self.peer = (self.name, addr.host, addr.port)
        if not self.driver.connection_made(self):
            self.transport.loseConnection()
            return
        self.counted = True
        self._touch()

    def _touch(self) -> None:
        if self.idle_timeout <= 0:
            return
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.idle_timeout)
        else:
            self._idle = self.driver.clock.callLater(self.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self._touch()
        driver = self.driver
        for msg in self.framer.feed(data):
            driver.stream_message(msg, self.peer)
        driver.flush()
        if self.framer.failed and self.transport is not None:
            # 18.3: framing is lost; the error response (if any) was flushed first.
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self.driver.connection_lost(self)


class SipStreamFactory(protocol.ServerFactory):
    def __init__(self, driver: SipDriver, transport_name: str, max_message: int,
                 idle_timeout: float) -> None:
        self.driver = driver
        self.name = transport_name
        self.max_message = max_message
        self.idle_timeout = idle_timeout

    def buildProtocol(self, addr: Any) -> SipStreamProtocol:  # noqa: N802
        return SipStreamProtocol(self.driver, self.name, True, self.max_message,
                                 self.idle_timeout)


class SipClientFactory(protocol.ClientFactory):
    def __init__(self, driver: SipDriver, peer: Peer, max_message: int,
                 idle_timeout: float) -> None:
        self.driver = driver
        self.peer = peer
        self.max_message = max_message
        self.idle_timeout = idle_timeout

    def buildProtocol(self, addr: Any) -> SipStreamProtocol:  # noqa: N802
        return SipStreamProtocol(self.driver, self.peer[0], False, self.max_message,
                                 self.idle_timeout, peer=self.peer)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:  # noqa: N802
        self.driver.connect_failed(self.peer)
