"""What the WebRTC endpoint needs to know about its host: addresses, ports, STUN and TURN.

A dataclass of its own so that ``gateway/config.py`` can wire it in without this package
depending on the TOML loader.  STUN and TURN are only ever used when configured: nothing
here defaults to a public server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["IceServer", "WebRtcConfig", "parse_ice_url"]


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server, parsed from an RFC 7064/7065 URL."""

    kind: str  # "stun" | "turn"
    host: str
    port: int
    transport: str = "udp"  # "udp" | "tcp"
    secure: bool = False  # stuns: / turns:
    username: str | None = None
    credential: str | None = None


def parse_ice_url(url: str) -> IceServer:
    """``stun:host[:port]``, ``turn:host[:port][?transport=udp|tcp]``, ``turns:...``.

    Raises ValueError naming the URL when it is not one of those.
    """
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("stun", "stuns", "turn", "turns") or not rest:
        raise ValueError(f"ICE server URL {url!r}: expected stun:, turn: or turns:HOST[:PORT]")
    hostport, _, query = rest.partition("?")
    transport = "tcp" if scheme in ("stuns", "turns") else "udp"
    if query:
        key, _, value = query.partition("=")
        if key != "transport" or value not in ("udp", "tcp") or scheme.startswith("stun"):
            raise ValueError(f"ICE server URL {url!r}: only turn URLs take ?transport=udp|tcp")
        transport = value
    secure = scheme.endswith("s")
    default_port = 5349 if secure else 3478
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
        if tail and not tail.startswith(":"):
            raise ValueError(f"ICE server URL {url!r}: bad IPv6 literal")
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise ValueError(f"ICE server URL {url!r}: no host")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"ICE server URL {url!r}: bad port {port_text!r}")
        port = int(port_text)
    return IceServer(scheme.rstrip("s"), host, port, transport, secure)


@dataclass(frozen=True)
class WebRtcConfig:
    """Where the endpoint binds and which servers it may ask for other candidates.

    ``host_addresses``: the IP addresses that become host candidates (loopback allowed,
    the wildcard not: a candidate must name a real address).  ``port_range``: inclusive
    UDP port range for the ICE sockets, None for any port.  ``stun_servers``: URLs.
    ``turn_servers``: ``{"urls": str | [str], "username": ..., "credential": ...}`` as in
    the browser's RTCIceServer.  Raises ValueError naming the bad entry.
    """

    host_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port_range: tuple[int, int] | None = None
    stun_servers: list[str] = field(default_factory=list)
    turn_servers: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.host_addresses:
            raise ValueError("webrtc host_addresses: at least one address is needed")
        for address in self.host_addresses:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError as exc:
                raise ValueError(
                    f"webrtc host_addresses: {address!r} is not an IP address"
                ) from exc
            if ip.is_unspecified or ip.is_multicast:
                raise ValueError(
                    f"webrtc host_addresses: {address!r} cannot be a candidate address"
                )
        if self.port_range is not None:
            low, high = self.port_range
            if not (1024 <= low <= high <= 65535):
                raise ValueError(
                    f"webrtc port_range: {self.port_range!r} must be LOW <= HIGH within "
                    "1024-65535"
                )
        for url in self.stun_servers:
            if parse_ice_url(url).kind != "stun":
                raise ValueError(f"webrtc stun_servers: {url!r} is not a stun: URL")
        self.turn()  # validates

    def stun(self) -> list[IceServer]:
        return [parse_ice_url(url) for url in self.stun_servers]

    def turn(self) -> list[IceServer]:
        out: list[IceServer] = []
        for index, entry in enumerate(self.turn_servers):
            where = f"webrtc turn_servers[{index}]"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where}: expected a table with urls, username, credential")
            urls = entry.get("urls")
            if isinstance(urls, str):
                urls = [urls]
            if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
                raise ValueError(f"{where}: urls must be a URL or a list of URLs")
            username = entry.get("username")
            credential = entry.get("credential")
            if not isinstance(username, str) or not isinstance(credential, str):
                raise ValueError(f"{where}: username and credential are required strings")
            for url in urls:
                server = parse_ice_url(url)
                if server.kind != "turn":
                    raise ValueError(f"{where}: {url!r} is not a turn: or turns: URL")
                out.append(IceServer(server.kind, server.host, server.port, server.transport,
                                     server.secure, username, credential))
        return out
