"""ICE for one WebRTC session: aioice's connectivity checks with our own gathering.

aioice's ``Connection`` does the RFC 8445 checks, nomination and consent freshness well,
but gathers host candidates on every interface except loopback, on any port, and reports
all candidates at once.  The gateway needs host candidates on *configured* addresses
(loopback included, for tests and single-host setups), an optional port range, STUN and
TURN only when configured, and server candidates trickled as they arrive; the media path
also wants datagrams handed over synchronously rather than through an asyncio queue.  So
``IceAgent`` subclasses ``Connection`` and replaces those parts.  It relies on aioice
internals (pinned with aiortc==1.16.0 / aioice 0.13.0; ``tests/webrtc/test_canary.py``
fails loudly when they change):

- ``Connection._protocols``, ``_local_candidates``, ``_local_candidates_start``,
  ``_local_candidates_end``, ``_remote_candidates``, ``_nominated``,
  ``_pair_remote_candidate()``, ``sort_check_list()``;
- ``Connection.data_received(data, component)`` (called by ``StunProtocol`` for every
  non-STUN datagram), ``request_received(message, addr, protocol)`` (for every STUN
  request) and ``close()`` (called by consent freshness on expiry);
- ``StunProtocol(receiver)`` with ``.local_candidate`` and ``.transport``;
  ``CandidatePair.protocol`` / ``.remote_addr``;
- the module functions ``server_reflexive_candidate`` and ``relayed_candidate``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable, Sequence

from aioice import Candidate, stun
from aioice import ice as aioice_ice
from aioice import turn as aioice_turn
from aioice.candidate import candidate_foundation, candidate_priority

from .config import IceServer

__all__ = ["IceAgent", "candidate_to_sdp", "parse_candidate"]

log = logging.getLogger(__name__)


def candidate_to_sdp(candidate: Candidate, ufrag: str | None = None) -> str:
    """``candidate:...`` as in RTCIceCandidate.candidate (no ``a=``)."""
    text = "candidate:" + candidate.to_sdp()
    if ufrag:
        text += f" ufrag {ufrag}"
    return text


def parse_candidate(text: str) -> tuple[Candidate, str | None]:
    """An SDP/trickled candidate line and its ``ufrag`` extension, if any.

    Raises ValueError when it is not a candidate at all.
    """
    value = text.strip()
    if value.startswith("a="):
        value = value[2:]
    if value.startswith("candidate:"):
        value = value[len("candidate:"):]
    bits = value.split()
    try:
        candidate = Candidate.from_sdp(value)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"bad ICE candidate {text[:80]!r}: {exc}") from exc
    ufrag = None
    for i in range(8, len(bits) - 1, 2):
        if bits[i] == "ufrag":
            ufrag = bits[i + 1]
    return candidate, ufrag


class IceAgent(aioice_ice.Connection):
    """One ICE generation (a restart makes a new agent), one component (rtcp-mux).

    ``on_data(bytes)`` gets every non-STUN datagram synchronously, in the order received;
    ``on_closed()`` is called once when the agent closes, including when consent expires.
    ``remote_checked`` is set by the first Binding request that carries this agent's
    ufrag and passes its password's MESSAGE-INTEGRITY: proof that the peer has our
    credentials (for an answerer, that it has applied the answer).
    """

    def __init__(
        self,
        *,
        controlling: bool,
        host_addresses: Sequence[str],
        port_range: tuple[int, int] | None,
        stun_servers: Sequence[IceServer] = (),
        turn_servers: Sequence[IceServer] = (),
        on_data: Callable[[bytes], None],
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(ice_controlling=controlling, components=1)
        self.host_addresses = list(host_addresses)
        self.port_range = port_range
        self.stun_servers = list(stun_servers)
        self.turn_servers = list(turn_servers)
        self.on_data = on_data
        self.on_closed = on_closed
        self._closed_notified = False
        self.remote_checked = asyncio.Event()

    # --- gathering

    async def gather_host_candidates(self) -> list[Candidate]:
        """Bind one UDP socket per configured address; returns the host candidates.

        After this, connect() may run: server candidates only add to what the peer can
        try, and a relay is paired when it arrives.
        """
        loop = asyncio.get_running_loop()
        found: list[Candidate] = []
        for address in self.host_addresses:
            try:
                protocol = await self._bind(loop, address)
            except OSError as exc:
                log.warning("ICE: cannot bind %s: %s", address, exc)
                continue
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=1,
                transport="udp",
                priority=candidate_priority(1, "host"),
                host=host,
                port=port,
                type="host",
            )
            self._protocols.append(protocol)
            self._local_candidates.append(protocol.local_candidate)
            found.append(protocol.local_candidate)
        self._local_candidates_start = True
        self._local_candidates_end = True
        if not found:
            raise OSError("ICE: no host candidate could be bound on " + ", ".join(
                self.host_addresses))
        return found

    async def _bind(
        self, loop: asyncio.AbstractEventLoop, address: str
    ) -> aioice_ice.StunProtocol:
        ports: list[int] = [0]
        if self.port_range is not None:
            low, high = self.port_range
            start = random.randint(low, high)
            ports = [*range(start, high + 1), *range(low, start)]
        last: OSError | None = None
        for port in ports:
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: aioice_ice.StunProtocol(self), local_addr=(address, port)
                )
            except OSError as exc:
                last = exc
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, aioice_turn.UDP_SOCKET_BUFFER_SIZE
                )
            return protocol
        raise OSError(f"no free UDP port on {address} in {self.port_range}") from last

    async def gather_server_candidates(self, timeout: float = 5.0) -> AsyncIterator[Candidate]:
        """Server-reflexive and relayed candidates, each as soon as it is known."""
        tasks: list[asyncio.Task[tuple[Candidate, aioice_ice.StunProtocol | None]]] = []
        hosts = [p for p in self._protocols if p.local_candidate.type == "host"]
        for server in self.stun_servers:
            for protocol in hosts:
                if ipaddress.ip_address(protocol.local_candidate.host).version == 4:
                    tasks.append(asyncio.create_task(aioice_ice.server_reflexive_candidate(
                        protocol, (server.host, server.port))))
        for server in self.turn_servers:
            tasks.append(asyncio.create_task(aioice_ice.relayed_candidate(
                component=1,
                hide_related_address=False,
                protocol_factory=lambda: aioice_ice.StunProtocol(self),
                turn_server=(server.host, server.port),
                turn_username=server.username,
                turn_password=server.credential,
                turn_ssl=server.secure,
                turn_transport=server.transport,
            )))
        if not tasks:
            return
        seen: set[tuple[str, int, str]] = {
            (c.host, c.port, c.type) for c in self._local_candidates
        }
        try:
            for next_done in asyncio.as_completed(tasks, timeout=timeout):
                try:
                    candidate, relay = await next_done
                except TimeoutError:
                    break
                except Exception as exc:  # one unreachable server must not stop the rest
                    log.info("ICE: server candidate failed: %s", exc)
                    continue
                if self._closing:
                    if relay is not None:
                        await relay.close()
                    return
                if relay is not None:
                    self._protocols.append(relay)
                    for remote in self._remote_candidates:
                        self._pair_remote_candidate(remote)
                    self.sort_check_list()
                key = (candidate.host, candidate.port, candidate.type)
                if key in seen:
                    continue
                seen.add(key)
                self._local_candidates.append(candidate)
                yield candidate
        finally:
            for task in tasks:
                task.cancel()

    # --- incoming checks

    def request_received(
        self,
        message: stun.Message,
        addr: tuple[str, int],
        protocol: aioice_ice.StunProtocol,
    ) -> None:
        super().request_received(message, addr, protocol)
        if not self.remote_checked.is_set() and not self._closing and (
            self._knows_our_credentials(message)
        ):
            self.remote_checked.set()

    def _knows_our_credentials(self, message: stun.Message) -> bool:
        if message.message_method != stun.Method.BINDING:
            return False
        username = message.attributes.get("USERNAME")
        if not isinstance(username, str) or "MESSAGE-INTEGRITY" not in message.attributes:
            return False
        if username.partition(":")[0] != self.local_username:
            return False
        return bool(message.check_message_integrity(self.local_password.encode("utf8")))

    # --- data path

    def data_received(self, data: bytes, component: int) -> None:
        self.on_data(data)

    def send_now(self, data: bytes) -> bool:
        """Send on the nominated pair without a coroutine; False before nomination."""
        pair = self._nominated.get(1)
        if pair is None:
            return False
        pair.protocol.transport.sendto(data, pair.remote_addr)
        return True

    @property
    def connected(self) -> bool:
        return 1 in self._nominated

    @property
    def selected_pair(self) -> tuple[tuple[str, int], tuple[str, int]] | None:
        pair = self._nominated.get(1)
        if pair is None:
            return None
        return pair.local_addr, pair.remote_addr

    async def close(self) -> None:
        await super().close()
        if not self._closed_notified:
            self._closed_notified = True
            if self.on_closed is not None:
                self.on_closed()
