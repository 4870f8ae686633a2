"""Property tests: random and mutated messages never raise out of the parser or the core.

The core already guards every handler; here ``stats["errors"]`` (exceptions it had to
catch) must stay 0, so a bug cannot hide behind the guard.
"""

from __future__ import annotations

from conftest import TORTURE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from gateway.sip.b2bua import CallLayer, Identity, IncomingCall
from gateway.sip.core import CoreConfig, SipCore
from gateway.sip.message import (
    Request,
    Response,
    SipParseError,
    StreamFramer,
    parse_datagram,
    validate_request,
)
from gateway.sip.transaction import Peer

SEEDS = [p.read_bytes() for p in sorted(TORTURE.glob("*.dat"))]
SEEDS.append(
    b"INVITE sip:2001@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bKseed;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:2001@127.0.0.1>\r\n"
    b"Call-ID: seed@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:6001>\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
)
SEEDS.append(
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
    b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\nCall-ID: c\r\n"
    b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)

PEER: Peer = ("udp", "127.0.0.1", 6001)


def make_core() -> SipCore:
    core = SipCore(CoreConfig(local={"udp": ("127.0.0.1", 5060), "tcp": ("127.0.0.1", 5060)}))
    calls = CallLayer(core, lambda c, r, p, t, n: Identity("pbx", "trunk"))
    core.handlers.append(calls)
    core._test_calls = calls  # type: ignore[attr-defined]
    return core


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.integers(0, 5))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == 0:  # flip a byte
            data[i] = draw(st.integers(0, 255))
        elif op == 1:  # delete a span
            del data[i : i + draw(st.integers(1, 40))]
        elif op == 2:  # insert junk
            data[i:i] = draw(st.binary(max_size=20))
        elif op == 3:  # duplicate a line
            lines = bytes(data).split(b"\r\n")
            j = draw(st.integers(0, len(lines) - 1))
            lines.insert(j, lines[j])
            data = bytearray(b"\r\n".join(lines))
        elif op == 4:  # truncate
            del data[i:]
        else:  # insert a separator character
            data[i:i] = draw(st.sampled_from([b":", b";", b",", b"<", b">", b'"', b" ", b"\r\n",
                                              b"\r\n ", b"%", b"=", b"\x00"]))
    return bytes(data)


messages = st.one_of(mutated(), st.binary(max_size=400))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_parser_raises_only_sip_parse_error(data: bytes) -> None:
    try:
        msg = parse_datagram(data)
    except SipParseError:
        return
    assert isinstance(msg, Request | Response)
    if isinstance(msg, Request):
        try:
            validate_request(msg)
        except SipParseError:
            return
    # What we parsed, we can write back and read again identically.
    again = parse_datagram(msg.to_bytes())
    assert type(again) is type(msg)
    assert again.body == msg.body
    assert [(k, v) for k, v in again.headers.items if k != "Content-Length"] == [
        (k, v) for k, v in msg.headers.items if k != "Content-Length"
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=8), st.lists(st.floats(0, 40), max_size=8))
def test_core_never_raises_on_datagrams(datas: list[bytes], waits: list[float]) -> None:
    core = make_core()
    clock = Clock()
    for i, data in enumerate(datas):
        core.receive_datagram(data, PEER, clock.seconds())
        while (ev := core.next_event()) is not None:
            if isinstance(ev, IncomingCall):
                core._test_calls.connect(ev.call, "sip:b@127.0.0.1:6002")  # type: ignore[attr-defined]
        core.messages_to_send()
        if i < len(waits):
            clock.advance(waits[i])
            deadline = core.get_timer()
            if deadline is not None and deadline <= clock.seconds():
                core.handle_timer(clock.seconds())
    # Let every timer run out: nothing may raise, nothing may stay behind.
    for _ in range(2000):
        deadline = core.get_timer()
        if deadline is None:
            break
        clock.advance(max(0.0, deadline - clock.seconds()))
        core.handle_timer(clock.seconds())
        core.messages_to_send()
    assert core.stats["errors"] == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=5), st.data())
def test_stream_framing_and_core_never_raise(datas: list[bytes], data: st.DataObject) -> None:
    core = make_core()
    framer = StreamFramer(max_message=65535)
    stream = b"".join(datas)
    tcp: Peer = ("tcp", "127.0.0.1", 40000)
    pos = 0
    while pos < len(stream):
        n = data.draw(st.integers(1, max(1, len(stream) - pos)))
        for msg in framer.feed(stream[pos : pos + n]):
            core.receive_message(msg, tcp, 0.0)
        pos += n
        if framer.failed:
            break
    core.messages_to_send()
    assert core.stats["errors"] == 0


def test_torture_seeds_do_not_raise_inside_the_core() -> None:
    core = make_core()
    for seed in SEEDS:
        core.receive_datagram(seed, PEER, 0.0)
        core.messages_to_send()
    assert core.stats["errors"] == 0
