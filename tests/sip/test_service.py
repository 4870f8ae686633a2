"""The running SIP service: limits, keepalives and transport choice, over real sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from conftest import GatewayProcess, free_port

from gateway.sip.digest import authorization_for
from gateway.sip.message import Request, Response, StreamFramer, parse_datagram

GwFactory = Callable[[str], GatewayProcess]


def base_config(port: int, extra: str = "", sip_extra: str = "") -> str:
    return f"""
[gateway]
node_id = "svc"
data_dir = "data"
[sip]
listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]
realm = "svc.test"
{sip_extra}
[[sip.accounts]]
username = "kiosk-1"
password = "secret-1"
{extra}
"""


def options(port: int, n: int = 1, transport: str = "UDP", extra: str = "") -> bytes:
    return (
        f"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK-svc-{n};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=t{n}\r\n"
        f"To: <sip:gw@127.0.0.1>\r\nCall-ID: svc-{n}@127.0.0.1\r\nCSeq: {n} OPTIONS\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(3)
    return s


def recv_msg(s: socket.socket) -> Request | Response:
    return parse_datagram(s.recv(65535))


def register(s: socket.socket, gw_port: int, user: str, password: str, expires: int = 60) -> None:
    """REGISTER with digest auth from a UDP socket; asserts the 200."""
    me = s.getsockname()[1]

    def req(cseq: int, auth: str = "") -> bytes:
        return (
            f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-reg-{cseq};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=r1\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: reg-{me}@127.0.0.1\r\n"
            f"CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{me}>\r\n"
            f"Expires: {expires}\r\n{auth}Content-Length: 0\r\n\r\n"
        ).encode()

    s.sendto(req(1), ("127.0.0.1", gw_port))
    challenge = recv_msg(s)
    assert isinstance(challenge, Response) and challenge.status == 401
    value = challenge.headers.get_all("WWW-Authenticate")[0]
    auth = authorization_for(value, "REGISTER", "sip:127.0.0.1", user, password, "c0ffee", 1)
    s.sendto(req(2, f"Authorization: {auth}\r\n"), ("127.0.0.1", gw_port))
    ok = recv_msg(s)
    assert isinstance(ok, Response) and ok.status == 200, ok


def test_registered_kiosk_gets_options_keepalives(gateway_factory: GwFactory) -> None:
    port = free_port()
    gateway_factory(base_config(port, sip_extra="options_keepalive_seconds = 1"))
    with udp_socket() as kiosk:
        register(kiosk, port, "kiosk-1", "secret-1")
        ping = recv_msg(kiosk)
        assert isinstance(ping, Request) and ping.method == "OPTIONS"
        assert ping.uri.startswith("sip:kiosk-1@127.0.0.1:")


def test_unanswered_keepalives_are_logged(gateway_factory: GwFactory) -> None:
    port = free_port()
    gw = gateway_factory(base_config(port, sip_extra="options_keepalive_seconds = 1\nt1_ms = 50"))
    with udp_socket() as kiosk:
        register(kiosk, port, "kiosk-1", "secret-1")
        gw.wait_for("kiosk-1", timeout=10)
        gw.wait_for("does not answer keepalive", timeout=15)


def test_oversized_udp_datagram_is_dropped_and_tcp_gets_513(gateway_factory: GwFactory) -> None:
    port = free_port()
    gateway_factory(base_config(port, sip_extra="max_message_bytes = 3000"))
    padding = "X-Pad: " + "a" * 3500 + "\r\n"
    with udp_socket() as s:
        s.sendto(options(s.getsockname()[1], 1, extra=padding), ("127.0.0.1", port))
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(65535)
        s.settimeout(3)
        s.sendto(options(s.getsockname()[1], 2), ("127.0.0.1", port))
        assert recv_msg(s).status == 200  # type: ignore[union-attr]
    with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
        c.sendall(options(c.getsockname()[1], 3, "TCP", extra=padding))
        framer = StreamFramer()
        got: list[Request | Response] = []
        while True:
            data = c.recv(65535)
            if not data:
                break
            got.extend(m for m in framer.feed(data) if not isinstance(m, Exception))
        assert [m.status for m in got if isinstance(m, Response)] == [513]


def test_too_many_headers_gets_400(gateway_factory: GwFactory) -> None:
    port = free_port()
    gateway_factory(base_config(port, sip_extra="max_headers = 20"))
    extra = "".join(f"X-H{i}: {i}\r\n" for i in range(30))
    with udp_socket() as s:
        s.sendto(options(s.getsockname()[1], 1, extra=extra), ("127.0.0.1", port))
        resp = recv_msg(s)
        assert isinstance(resp, Response) and resp.status == 400


def test_tcp_connections_per_source_are_limited(gateway_factory: GwFactory) -> None:
    port = free_port()
    gw = gateway_factory(base_config(port, sip_extra="max_tcp_connections_per_source = 3"))
    conns = [socket.create_connection(("127.0.0.1", port), timeout=3) for _ in range(5)]
    try:
        time.sleep(0.2)  # let the gateway accept them all
        closed = []
        for i, c in enumerate(conns):
            try:
                c.sendall(options(c.getsockname()[1], 10 + i, "TCP"))
                data = c.recv(65535)
            except OSError:
                data = b""
            closed.append(data == b"")
        assert closed == [False, False, False, True, True]
        assert "too many tcp connections from 127.0.0.1" in gw.output()
    finally:
        for c in conns:
            c.close()


def trunk_config(port: int, callee_port: int) -> str:
    return base_config(port, extra=f"""
[[sip.trunks]]
name = "pbx"
sources = ["127.0.0.1/32"]
uri = "sip:127.0.0.1:{callee_port}"
[[routes]]
match = ".*"
to = "trunk:pbx"
""")


BIG_SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 7000 RTP/AVP 0\r\n" + "".join(f"a=x-pad{i}:{'b' * 60}\r\n"
                                                 for i in range(25))).encode()


def big_invite(me: int, n: int) -> bytes:
    """An INVITE from the trunk whose SDP makes it larger than 1300 bytes."""
    return (
        f"INVITE sip:2001@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-big{n};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:pbx@127.0.0.1>;tag=b{n}\r\n"
        f"To: <sip:2001@127.0.0.1>\r\nCall-ID: big{n}@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:pbx@127.0.0.1:{me}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(BIG_SDP)}\r\n\r\n"
    ).encode() + BIG_SDP


def test_large_request_goes_over_tcp_to_the_callee(gateway_factory: GwFactory) -> None:
    """18.1.1: an INVITE over 1300 bytes is forwarded over TCP, not UDP."""
    port = free_port()
    callee_port = free_port()
    gateway_factory(trunk_config(port, callee_port))
    with udp_socket() as caller, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee_udp:
        listener.bind(("127.0.0.1", callee_port))
        listener.listen()
        listener.settimeout(5)
        callee_udp.bind(("127.0.0.1", callee_port))
        caller.sendto(big_invite(caller.getsockname()[1], 1), ("127.0.0.1", port))
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            framer = StreamFramer()
            got: list[Request | Response] = []
            while not got:
                got.extend(m for m in framer.feed(conn.recv(65535))
                           if not isinstance(m, Exception))
            fwd = got[0]
            assert isinstance(fwd, Request) and fwd.method == "INVITE"
            assert fwd.body == BIG_SDP
            assert fwd.vias[0].startswith("SIP/2.0/TCP")


def test_large_request_falls_back_to_udp_when_tcp_is_refused(gateway_factory: GwFactory) -> None:
    port = free_port()
    callee_port = free_port()
    gateway_factory(trunk_config(port, callee_port))
    with udp_socket() as caller, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee_udp:
        callee_udp.bind(("127.0.0.1", callee_port))  # nothing listens on TCP there
        callee_udp.settimeout(5)
        caller.sendto(big_invite(caller.getsockname()[1], 2), ("127.0.0.1", port))
        fwd = parse_datagram(callee_udp.recv(65535))
        assert isinstance(fwd, Request) and fwd.method == "INVITE" and fwd.body == BIG_SDP
