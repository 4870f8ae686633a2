"""Unit tests of the sans-IO transaction layer (RFC 3261 section 17, RFC 6026).

Everything is driven by messages (parsed from wire bytes) and a
``twisted.internet.task.Clock``; nothing sleeps.  ``Harness.run_until`` calls
``handle_timer`` at every deadline ``get_timer`` reports, in order, and records the
time, peer and bytes of every message the layer sends and every event it emits, so
that the tests can assert exact retransmission and termination times.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from gateway.sip.message import (
    Request,
    Response,
    make_response,
    parse_datagram,
    parse_via,
)
from gateway.sip.transaction import (
    MAGIC_COOKIE,
    ClientTransaction,
    Event,
    Peer,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    TimerConfig,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    is_reliable,
    new_branch,
    server_key,
)

# The message builders live next to this file; --import-mode=importlib does not put
# test directories on sys.path (appended, so that it shadows nothing).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)
import sipfactory as f  # noqa: E402

UDP: Peer = ("udp", "198.51.100.7", 5060)
TCP: Peer = ("tcp", "198.51.100.7", 5060)
TLS: Peer = ("tls", "198.51.100.7", 5061)


# Harness -----------------------------------------------------------------------------


@dataclass
class Sent:
    time: float
    peer: Peer
    data: bytes


class Harness:
    """A transaction layer, a clock, and a record of what came out of the layer."""

    def __init__(self, timers: TimerConfig | None = None) -> None:
        self.clock = Clock()
        self.layer = TransactionLayer(timers)
        self.sent: list[Sent] = []
        self.events: list[tuple[float, Event]] = []
        self.max_heap = 0

    @property
    def now(self) -> float:
        return self.clock.seconds()

    def _collect(self) -> None:
        now = self.now
        for peer, data in self.layer.messages_to_send():
            self.sent.append(Sent(now, peer, data))
        while (ev := self.layer.next_event()) is not None:
            self.events.append((now, ev))
        self.max_heap = max(self.max_heap, len(self.layer._heap))

    def run_until(self, t: float) -> None:
        """Advance the clock to ``t``, firing every timer on its deadline, in order."""
        assert t >= self.now
        for _ in range(10**7):
            deadline = self.layer.get_timer()
            if deadline is None or deadline > t:
                break
            if deadline > self.now:
                self.clock.advance(deadline - self.now)
            self.layer.handle_timer(self.now)
            self._collect()
        else:  # pragma: no cover
            raise AssertionError("timers keep firing without the clock moving")
        if t > self.now:
            self.clock.advance(t - self.now)
        self.layer.handle_timer(self.now)
        self._collect()

    def advance(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def settle(self) -> None:
        """Fire what is due now (zero timers of reliable transports), as a driver would."""
        self.run_until(self.now)

    # Input ----------------------------------------------------------------------
    def send(self, req: Request, peer: Peer = UDP) -> ClientTransaction:
        txn = self.layer.send_request(req, peer, self.now)
        self._collect()
        self.settle()
        return txn

    def receive(self, msg: Request | Response, peer: Peer = UDP) -> bool | None:
        if isinstance(msg, Response):
            ok = self.layer.receive_response(msg, self.now)
            self._collect()
            self.settle()
            return ok
        self.layer.receive_request(msg, peer, self.now)
        self._collect()
        self.settle()
        return None

    def receive_bytes(self, data: bytes, peer: Peer = UDP) -> bool | None:
        return self.receive(parse_datagram(data), peer)

    def respond(self, txn: ServerTransaction, resp: Response) -> None:
        txn.respond(resp, now=self.now)
        self._collect()
        self.settle()

    # Output ---------------------------------------------------------------------
    def times(self, data: bytes | None = None, since: float = -1.0) -> list[float]:
        return [s.time for s in self.sent if (data is None or s.data == data) and s.time > since]

    def sent_since(self, since: float) -> list[Sent]:
        return [s for s in self.sent if s.time > since]

    def log(self) -> list[tuple[float, str, object]]:
        """(time, event name, transaction) of every event so far."""
        return [(t, type(ev).__name__, getattr(ev, "transaction", None)) for t, ev in self.events]

    def take_events(self) -> list[tuple[float, Event]]:
        out, self.events = self.events, []
        return out

    def requests_received(self) -> list[tuple[float, RequestReceived]]:
        return [(t, e) for t, e in self.events if isinstance(e, RequestReceived)]

    def responses_received(self) -> list[tuple[float, int, ClientTransaction]]:
        return [
            (t, e.response.status, e.transaction)
            for t, e in self.events
            if isinstance(e, ResponseReceived)
        ]


def assert_empty(layer: TransactionLayer) -> None:
    assert layer.client == {}
    assert layer.server == {}
    assert len(layer) == 0
    assert layer.get_timer() is None
    assert layer._heap == []  # stale entries popped: nothing keeps old transactions alive


def state_of(txn: ClientTransaction | ServerTransaction) -> State:
    """The state now (a call, so that mypy does not keep an earlier narrowing)."""
    return txn.state


def bytes_of(msg: Request | Response) -> bytes:
    return msg.to_bytes()


def schedule_a(t1: float) -> list[float]:
    """Timer A (17.1.1.2): T1, 2*T1, 4*T1 ... not capped, until timer B at 64*T1."""
    out, t, interval = [0.0], 0.0, t1
    while t + interval < 64 * t1:
        t += interval
        out.append(t)
        interval *= 2
    return out


def schedule_capped(t1: float, t2: float, end: float, start: float = 0.0) -> list[float]:
    """Timers E (17.1.2.2) and G (17.2.1): doubling from T1, capped at T2."""
    out, t, interval = [start], start, t1
    while t + interval < end:
        t += interval
        out.append(t)
        interval = min(interval * 2, t2)
    return out


# Basics ------------------------------------------------------------------------------


def test_new_branch_has_magic_cookie_and_is_unique() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith(MAGIC_COOKIE) and len(b) > len(MAGIC_COOKIE) for b in branches)


def test_reliability_by_transport() -> None:
    assert not is_reliable(UDP)
    assert is_reliable(TCP)
    assert is_reliable(TLS)


def test_harness_schedules_match_rfc_tables() -> None:
    assert schedule_a(0.5) == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert schedule_capped(0.5, 4.0, 32.0) == [
        0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
    ]


def test_messages_to_send_is_drained_and_stateless_sends_pass_through() -> None:
    layer = TransactionLayer()
    layer.send_stateless(UDP, b"ACK for a 2xx")
    assert layer.messages_to_send() == [(UDP, b"ACK for a 2xx")]
    assert layer.messages_to_send() == []
    assert layer.next_event() is None
    assert layer.get_timer() is None
    assert_empty(layer)


# Client INVITE (17.1.1, RFC 6026 7.2) ------------------------------------------------


def test_client_invite_udp_timer_a_retransmits_until_timer_b() -> None:
    h = Harness()
    inv = f.outgoing("INVITE")
    txn = h.send(inv)
    assert txn.state is State.CALLING
    assert txn.key == (parse_via(inv.vias[0]).parameters["branch"], "INVITE")
    h.run_until(100)
    assert h.times() == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(s.peer == UDP and s.data == bytes_of(inv) for s in h.sent)
    assert h.log() == [
        (32.0, "TransactionTimeout", txn),
        (32.0, "TransactionTerminated", txn),
    ]
    assert state_of(txn) is State.TERMINATED
    assert_empty(h.layer)


def test_client_invite_provisional_stops_retransmissions_and_is_passed_up() -> None:
    h = Harness()
    inv = f.outgoing("INVITE")
    txn = h.send(inv)
    h.run_until(1.0)
    assert h.times() == [0, 0.5]
    trying = f.response(inv, 100, to_tag=None)
    assert h.receive(trying) is True
    assert txn.state is State.PROCEEDING
    h.run_until(2.0)
    ringing = f.response(inv, 180)
    assert h.receive(ringing) is True
    h.run_until(3.0)
    assert h.receive(ringing) is True  # every provisional goes up (17.1.1.2)
    h.run_until(31.9)
    assert h.times() == [0, 0.5]  # timer A stopped by the 100 at 1.0
    assert h.responses_received() == [(1.0, 100, txn), (2.0, 180, txn), (3.0, 180, txn)]
    assert txn.state is State.PROCEEDING


def test_client_invite_over_udp_retransmits_while_only_an_unmatched_1xx_came() -> None:
    h = Harness()
    inv = f.outgoing("INVITE")
    h.send(inv)
    h.run_until(1.0)
    assert h.receive(f.response(inv, 180, top_via=f.via(branch_value=new_branch()))) is False
    h.run_until(4.0)
    assert h.times() == [0, 0.5, 1.5, 3.5]


def test_client_invite_in_proceeding_waits_past_timer_b() -> None:
    """RFC 3261 17.1.1.2: timer B only ends an INVITE still in Calling; a ringing one
    waits for its final answer (the TU owns the ring timeout)."""
    h = Harness()
    inv = f.outgoing("INVITE")
    txn = h.send(inv)
    h.run_until(2.0)
    h.receive(f.response(inv, 180))
    h.run_until(100)
    assert h.log()[1:] == []
    assert txn.state is State.PROCEEDING


def test_client_invite_abandoned_after_cancel_without_final() -> None:
    h = Harness()
    inv = f.outgoing("INVITE")
    txn = h.send(inv)
    h.receive(f.response(inv, 180))
    h.run_until(10.0)
    txn.abandon_after(32.0)
    h.run_until(100)
    assert h.log()[1:] == [
        (42.0, "TransactionTimeout", txn),
        (42.0, "TransactionTerminated", txn),
    ]
    assert_empty(h.layer)


def test_client_invite_2xx_accepted_every_2xx_passed_up_timer_m_terminates() -> None:
    h = Harness()
    inv = f.outgoing("INVITE")
    txn = h.send(inv)
    h.run_until(2.0)
    ok = f.response(inv, 200, to_tag="callee")
    assert h.receive(ok) is True
    assert txn.state is State.ACCEPTED
    h.run_until(5.0)
    assert h.receive(ok) is True  # retransmission: passed up so the TU re-ACKs it
    h.run_until(6.0)
    fork = f.response(inv, 200, to_tag="fork")
    assert h.receive(fork) is True  # another fork: its own dialog, the TU ACKs and BYEs
    h.run_until(7.0)
    assert h.receive(f.response(inv, 180)) is True  # absorbed in Accepted
    assert h.receive(f.response(inv, 486)) is True  # absorbed, and no ACK from us
    assert txn.state is State.ACCEPTED
    h.run_until(100)
    # Only the INVITE and its retransmissions before the 2xx: the ACK of a 2xx is the TU's.
    assert h.times() == [0, 0.5, 1.5]
    assert all(s.data == bytes_of(inv) for s in h.sent)
    assert h.responses_received() == [(2.0, 200, txn), (5.0, 200, txn), (6.0, 200, txn)]
    assert [e for e in h.log() if e[1] != "ResponseReceived"] == [
        (34.0, "TransactionTerminated", txn),  # timer M = 64*T1 after the first 2xx
    ]
    assert_empty(h.layer)
    assert h.receive(ok) is False  # after timer M a 2xx is stray


def test_client_invite_non_2xx_is_acked_by_the_transaction() -> None:
    h = Harness()
    route = "<sip:edge.example.net;lr>"
    inv = f.outgoing("INVITE", route=route, cseq=7)
    txn = h.send(inv)
    h.run_until(0.75)
    busy = f.response(inv, 486, to_tag="busytag")
    assert h.receive(busy) is True
    assert txn.state is State.COMPLETED
    acks = h.sent_since(0.5)
    assert [(s.time, s.peer) for s in acks] == [(0.75, UDP)]
    ack = parse_datagram(acks[0].data)
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == inv.uri
    assert ack.vias == [inv.vias[0]]  # one Via: the INVITE's, same branch (17.1.1.3)
    assert parse_via(ack.vias[0]).parameters["branch"] == txn.branch
    assert ack.headers.get("From") == inv.headers.get("From")
    assert ack.call_id == inv.call_id
    assert ack.headers.get("To") == busy.headers.get("To")
    assert ack.to_tag == "busytag"
    assert ack.headers.get("CSeq") == "7 ACK"
    assert ack.headers.get_all("Route") == [route]
    assert ack.headers.get("Max-Forwards") == "70"
    assert ack.body == b""
    assert ack.headers.get("Content-Length") == "0"
    assert h.responses_received() == [(0.75, 486, txn)]

    # A retransmitted 486 gets the same ACK again and is not passed up.
    h.run_until(5.0)
    assert h.receive(busy) is True
    assert [(s.time, s.data) for s in h.sent_since(0.75)] == [(5.0, acks[0].data)]
    assert h.responses_received() == [(0.75, 486, txn)]

    h.run_until(100)
    assert h.times(bytes_of(inv)) == [0, 0.5]  # no INVITE after the final
    assert [e for e in h.log() if e[1] != "ResponseReceived"] == [
        (32.75, "TransactionTerminated", txn),  # timer D = 32 s after the 486
    ]
    assert_empty(h.layer)


def test_client_invite_non_2xx_ack_keeps_the_invite_to_when_response_has_none() -> None:
    h = Harness()
    inv = f.outgoing("INVITE")
    h.send(inv)
    resp = f.response(inv, 503)
    resp.headers.remove("To")
    h.receive(resp)
    ack = parse_datagram(h.sent[-1].data)
    assert ack.headers.get("To") == inv.headers.get("To")


def test_client_invite_timer_d_is_configurable() -> None:
    h = Harness(TimerConfig(d=40.0))
    inv = f.outgoing("INVITE")
    txn = h.send(inv)
    h.run_until(1.0)
    h.receive(f.response(inv, 404))
    h.run_until(100)
    assert h.log()[-1] == (41.0, "TransactionTerminated", txn)


@pytest.mark.parametrize("peer", [TCP, TLS])
def test_client_invite_reliable_no_retransmission_and_timer_b(peer: Peer) -> None:
    h = Harness()
    inv = f.outgoing("INVITE", transport=peer[0].upper())
    txn = h.send(inv, peer)
    h.run_until(100)
    assert [(s.time, s.peer) for s in h.sent] == [(0.0, peer)]
    assert h.log() == [(32.0, "TransactionTimeout", txn), (32.0, "TransactionTerminated", txn)]
    assert_empty(h.layer)


def test_client_invite_tcp_non_2xx_acked_and_timer_d_is_zero() -> None:
    h = Harness()
    inv = f.outgoing("INVITE", transport="TCP")
    txn = h.send(inv, TCP)
    h.run_until(3.0)
    h.receive(f.response(inv, 180))
    h.run_until(4.0)
    h.receive(f.response(inv, 603))
    assert [(s.time, s.peer) for s in h.sent] == [(0.0, TCP), (4.0, TCP)]
    assert parse_datagram(h.sent[1].data).method == "ACK"  # type: ignore[union-attr]
    assert h.log() == [
        (3.0, "ResponseReceived", txn),
        (4.0, "ResponseReceived", txn),
        (4.0, "TransactionTerminated", txn),
    ]
    assert_empty(h.layer)


def test_client_invite_tcp_2xx_still_waits_timer_m() -> None:
    h = Harness()
    inv = f.outgoing("INVITE", transport="TCP")
    txn = h.send(inv, TCP)
    h.run_until(1.0)
    h.receive(f.response(inv, 200))
    h.run_until(100)
    assert h.log() == [(1.0, "ResponseReceived", txn), (33.0, "TransactionTerminated", txn)]


# Client non-INVITE (17.1.2) ----------------------------------------------------------


def test_client_non_invite_udp_timer_e_capped_at_t2_until_timer_f() -> None:
    h = Harness()
    req = f.outgoing("OPTIONS")
    txn = h.send(req)
    assert txn.state is State.TRYING
    h.run_until(100)
    assert h.times() == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(s.data == bytes_of(req) for s in h.sent)
    assert h.log() == [(32.0, "TransactionTimeout", txn), (32.0, "TransactionTerminated", txn)]
    assert_empty(h.layer)


def test_client_non_invite_after_1xx_timer_e_fires_every_t2() -> None:
    h = Harness()
    req = f.outgoing("BYE")
    txn = h.send(req)
    h.run_until(1.0)
    assert h.receive(f.response(req, 100, to_tag=None)) is True
    assert txn.state is State.PROCEEDING
    h.run_until(100)
    # E was due at 1.5 (armed in Trying); from there on it is reset to T2 each time.
    assert h.times() == [0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert h.log() == [
        (1.0, "ResponseReceived", txn),
        (32.0, "TransactionTimeout", txn),  # timer F still applies in Proceeding
        (32.0, "TransactionTerminated", txn),
    ]
    assert_empty(h.layer)


def test_client_non_invite_final_then_timer_k() -> None:
    h = Harness()
    req = f.outgoing("OPTIONS")
    txn = h.send(req)
    h.run_until(2.0)
    ok = f.response(req, 200)
    assert h.receive(ok) is True
    assert txn.state is State.COMPLETED
    h.run_until(3.0)
    assert h.receive(ok) is True  # retransmission: absorbed
    assert h.receive(f.response(req, 100)) is True  # late provisional: absorbed
    h.run_until(100)
    assert h.times() == [0, 0.5, 1.5]
    assert h.log() == [
        (2.0, "ResponseReceived", txn),
        (7.0, "TransactionTerminated", txn),  # timer K = T4
    ]
    assert_empty(h.layer)
    assert h.receive(ok) is False


@pytest.mark.parametrize("peer", [TCP, TLS])
def test_client_non_invite_reliable(peer: Peer) -> None:
    h = Harness()
    req = f.outgoing("OPTIONS", transport="TCP")
    txn = h.send(req, peer)
    h.run_until(3.0)
    h.receive(f.response(req, 100))
    h.run_until(10.0)
    h.receive(f.response(req, 404))
    assert h.times() == [0]
    assert h.log() == [
        (3.0, "ResponseReceived", txn),
        (10.0, "ResponseReceived", txn),
        (10.0, "TransactionTerminated", txn),  # timer K = 0
    ]
    assert_empty(h.layer)

    h2 = Harness()
    txn2 = h2.send(f.outgoing("OPTIONS", transport="TCP"), peer)
    h2.run_until(100)
    assert h2.times() == [0]
    assert h2.log() == [
        (32.0, "TransactionTimeout", txn2),
        (32.0, "TransactionTerminated", txn2),
    ]


# Server INVITE (17.2.1, RFC 6026 7.1) -------------------------------------------------


def _server_invite(h: Harness, peer: Peer = UDP, **kw: object) -> tuple[Request, ServerTransaction]:
    inv = f.request("INVITE", **kw)  # type: ignore[arg-type]
    h.receive(inv, peer)
    (_, ev), = h.requests_received()[-1:]
    assert ev.request is inv and ev.peer == peer
    assert isinstance(ev.transaction, ServerTransaction)
    return inv, ev.transaction


def test_server_invite_retransmission_gets_the_last_provisional() -> None:
    h = Harness()
    inv, txn = _server_invite(h)
    assert txn.state is State.PROCEEDING
    assert h.layer.find_server(inv) is txn
    h.run_until(0.5)
    h.receive_bytes(bytes_of(inv))  # nothing sent yet: absorbed
    assert h.sent == []
    trying = f.local_response(inv, 100, to_tag=None)
    h.respond(txn, trying)
    h.run_until(1.0)
    h.receive_bytes(bytes_of(inv))
    ringing = f.local_response(inv, 180)
    h.run_until(2.0)
    h.respond(txn, ringing)
    h.run_until(3.0)
    h.receive_bytes(bytes_of(inv))
    h.receive_bytes(bytes_of(inv))
    assert [(s.time, s.data) for s in h.sent] == [
        (0.5, bytes_of(trying)),
        (1.0, bytes_of(trying)),
        (2.0, bytes_of(ringing)),
        (3.0, bytes_of(ringing)),
        (3.0, bytes_of(ringing)),
    ]
    assert all(s.peer == UDP for s in h.sent)
    assert len(h.requests_received()) == 1  # retransmissions are not passed up
    h.run_until(500)
    assert txn.state is State.PROCEEDING  # waits for the TU: no timer in Proceeding
    assert h.times() == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_server_invite_non_2xx_timer_g_until_timer_h() -> None:
    h = Harness()
    inv, txn = _server_invite(h)
    h.run_until(4.0)
    busy = f.local_response(inv, 486)
    h.respond(txn, busy)
    assert txn.state is State.COMPLETED
    h.run_until(6.0)
    h.receive_bytes(bytes_of(inv))  # retransmitted INVITE in Completed: the final again
    h.run_until(100)
    expected = sorted(schedule_capped(0.5, 4.0, 36.0, start=4.0) + [6.0])
    assert expected[:6] == [4.0, 4.5, 5.5, 6.0, 7.5, 11.5]
    assert h.times() == expected
    assert all(s.data == bytes_of(busy) for s in h.sent)
    assert h.log() == [
        (0.0, "RequestReceived", txn),
        (36.0, "TransactionTimeout", txn),  # timer H = 64*T1 after the final
        (36.0, "TransactionTerminated", txn),
    ]
    assert_empty(h.layer)


def test_server_invite_ack_confirms_and_timer_i_absorbs_acks() -> None:
    h = Harness()
    inv, txn = _server_invite(h)
    decline = f.local_response(inv, 603, to_tag="srv")
    h.respond(txn, decline)
    h.run_until(2.0)
    ack = f.ack_for(inv, decline)
    h.receive(ack)
    assert txn.state is State.CONFIRMED
    h.run_until(3.0)
    h.receive(ack)  # ACK retransmission: absorbed
    h.receive_bytes(bytes_of(inv))  # INVITE retransmission in Confirmed: absorbed
    h.run_until(100)
    assert h.times() == [0, 0.5, 1.5]  # timer G stopped by the ACK
    assert h.log() == [
        (0.0, "RequestReceived", txn),
        (7.0, "TransactionTerminated", txn),  # timer I = T4 after the ACK; no timeout
    ]
    assert_empty(h.layer)
    # After timer I a late ACK is just an ACK matching nothing.
    h.receive(ack)
    assert h.log()[-1] == (100.0, "RequestReceived", None)


def test_server_invite_2xx_accepted_absorbs_invites_passes_tu_retransmissions() -> None:
    h = Harness()
    inv, txn = _server_invite(h)
    ringing = f.local_response(inv, 180)
    h.respond(txn, ringing)
    h.run_until(1.0)
    ok = f.local_response(inv, 200)
    h.respond(txn, ok)
    assert txn.state is State.ACCEPTED
    h.run_until(1.5)
    h.respond(txn, ok)  # the UA core's own 2xx retransmissions (13.3.1.4)
    h.run_until(2.0)
    h.receive_bytes(bytes_of(inv))  # absorbed: neither passed up nor answered
    h.run_until(2.5)
    h.respond(txn, ok)
    h.respond(txn, f.local_response(inv, 183))  # nothing but a 2xx goes out now
    h.respond(txn, f.local_response(inv, 500))
    h.run_until(100)
    assert [(s.time, s.data) for s in h.sent] == [
        (0.0, bytes_of(ringing)),
        (1.0, bytes_of(ok)),
        (1.5, bytes_of(ok)),
        (2.5, bytes_of(ok)),
    ]
    assert h.log() == [
        (0.0, "RequestReceived", txn),
        (33.0, "TransactionTerminated", txn),  # timer L = 64*T1 after the 2xx
    ]
    assert_empty(h.layer)


def test_server_invite_ack_for_2xx_has_its_own_branch_and_goes_to_the_tu() -> None:
    h = Harness()
    inv, txn = _server_invite(h)
    ok = f.local_response(inv, 200)
    h.respond(txn, ok)
    h.run_until(0.25)
    ack = f.ack_for(inv, ok, same_branch=False)
    h.receive(ack)
    (t, ev), = h.requests_received()[1:]
    assert (t, ev.request, ev.peer, ev.transaction) == (0.25, ack, UDP, None)
    assert txn.state is State.ACCEPTED
    assert len(h.layer.server) == 1  # an ACK never creates a transaction
    h.receive(ack)  # each retransmission of it goes up too
    assert len(h.requests_received()) == 3


def test_server_invite_ack_matching_the_accepted_transaction_goes_to_the_tu() -> None:
    """RFC 6026 8.7: an ACK that matches the transaction in Accepted (an RFC 2543 peer,
    or one that reuses the INVITE's branch) is passed to the TU, not swallowed."""
    for kw in ({}, {"branch_value": None}):
        h = Harness()
        inv, txn = _server_invite(h, TCP, **kw)
        ok = f.local_response(inv, 200)
        h.respond(txn, ok)
        h.run_until(0.5)
        ack = f.ack_for(inv, ok)  # same top Via as the INVITE
        h.receive(ack, TCP)
        (t, ev), = h.requests_received()[1:]
        assert (t, ev.request, ev.peer, ev.transaction) == (0.5, ack, TCP, None)
        assert txn.state is State.ACCEPTED
        h.run_until(100)
        assert h.log()[-1] == (32.0, "TransactionTerminated", txn)


def test_server_invite_provisional_after_final_is_dropped() -> None:
    h = Harness()
    inv, txn = _server_invite(h)
    busy = f.local_response(inv, 486)
    h.respond(txn, busy)
    h.run_until(0.25)
    h.respond(txn, f.local_response(inv, 180))
    h.respond(txn, f.local_response(inv, 200))
    h.respond(txn, f.local_response(inv, 500))
    assert txn.state is State.COMPLETED
    assert txn.last_response is busy
    h.run_until(1.0)
    h.receive_bytes(bytes_of(inv))
    h.run_until(1.5)
    assert [(s.time, s.data) for s in h.sent] == [
        (0.0, bytes_of(busy)),
        (0.5, bytes_of(busy)),  # timer G re-sends the final, not the late 180
        (1.0, bytes_of(busy)),
        (1.5, bytes_of(busy)),
    ]


@pytest.mark.parametrize("peer", [TCP, TLS])
def test_server_invite_reliable_no_timer_g_timer_i_zero(peer: Peer) -> None:
    h = Harness()
    inv, txn = _server_invite(h, peer)
    busy = f.local_response(inv, 486)
    h.respond(txn, busy)
    h.run_until(3.0)
    h.receive(f.ack_for(inv, busy), peer)
    assert h.times() == [0]
    assert h.log() == [
        (0.0, "RequestReceived", txn),
        (3.0, "TransactionTerminated", txn),
    ]
    assert_empty(h.layer)


def test_server_invite_reliable_timer_h_without_ack() -> None:
    h = Harness()
    inv, txn = _server_invite(h, TCP)
    h.run_until(1.0)
    h.respond(txn, f.local_response(inv, 480))
    h.run_until(100)
    assert h.times() == [1.0]
    assert h.log()[1:] == [
        (33.0, "TransactionTimeout", txn),
        (33.0, "TransactionTerminated", txn),
    ]


def test_server_timers_count_from_the_response_time_given() -> None:
    """A TU that answers long after the last SIP input passes ``now`` to ``respond``."""
    h = Harness()
    inv, txn = _server_invite(h)
    h.clock.advance(20.0)  # nothing reaches the layer meanwhile
    txn.respond(f.local_response(inv, 486), now=h.now)
    h._collect()
    h.run_until(100)
    assert h.times()[:3] == [20.0, 20.5, 21.5]
    assert h.log()[1:] == [
        (52.0, "TransactionTimeout", txn),
        (52.0, "TransactionTerminated", txn),
    ]


# Server non-INVITE (17.2.2) -----------------------------------------------------------


def test_server_non_invite_retransmissions_by_state_and_timer_j() -> None:
    h = Harness()
    req = f.request("OPTIONS")
    h.receive(req)
    (_, ev), = h.requests_received()
    txn = ev.transaction
    assert isinstance(txn, ServerTransaction) and txn.state is State.TRYING
    h.run_until(1.0)
    h.receive_bytes(bytes_of(req))  # Trying: absorbed
    h.run_until(2.0)
    trying = f.local_response(req, 100, to_tag=None)
    h.respond(txn, trying)
    assert state_of(txn) is State.PROCEEDING
    h.run_until(3.0)
    h.receive_bytes(bytes_of(req))  # Proceeding: the provisional again
    h.run_until(4.0)
    ok = f.local_response(req, 200)
    h.respond(txn, ok)
    assert state_of(txn) is State.COMPLETED
    h.run_until(5.0)
    h.receive_bytes(bytes_of(req))  # Completed: the final again
    h.run_until(6.0)
    h.respond(txn, f.local_response(req, 180))  # discarded after the final
    h.respond(txn, f.local_response(req, 500))
    assert state_of(txn) is State.COMPLETED
    h.run_until(7.0)
    h.receive_bytes(bytes_of(req))
    h.run_until(100)
    assert [(s.time, s.data) for s in h.sent] == [
        (2.0, bytes_of(trying)),
        (3.0, bytes_of(trying)),
        (4.0, bytes_of(ok)),
        (5.0, bytes_of(ok)),
        (7.0, bytes_of(ok)),
    ]
    assert h.log() == [
        (0.0, "RequestReceived", txn),
        (36.0, "TransactionTerminated", txn),  # timer J = 64*T1 after the final
    ]
    assert_empty(h.layer)


@pytest.mark.parametrize("peer", [TCP, TLS])
def test_server_non_invite_reliable_timer_j_zero(peer: Peer) -> None:
    h = Harness()
    req = f.request("BYE", to_tag="x")
    h.receive(req, peer)
    (_, ev), = h.requests_received()
    txn = ev.transaction
    assert txn is not None
    h.run_until(2.0)
    h.respond(txn, f.local_response(req, 200))
    assert h.log() == [(0.0, "RequestReceived", txn), (2.0, "TransactionTerminated", txn)]
    assert_empty(h.layer)
    # A retransmission after that is a new request for the TU (over TCP the peer
    # has no reason to retransmit, 17.1.2.2).
    h.receive(req, peer)
    assert len(h.requests_received()) == 2


# Matching (17.1.3, 17.2.3) ------------------------------------------------------------


def test_server_ack_matches_its_invite_but_cancel_does_not() -> None:
    h = Harness()
    inv, txn = _server_invite(h)
    cancel = f.cancel_for(inv)
    assert server_key(cancel) != server_key(inv)
    h.receive(cancel)
    (_, ev), = h.requests_received()[1:]
    ctxn = ev.transaction
    assert isinstance(ctxn, ServerTransaction) and ctxn is not txn
    assert ctxn.method == "CANCEL"
    assert h.layer.find_invite_for_cancel(cancel) is txn
    assert h.layer.find_server(cancel) is ctxn
    h.receive_bytes(bytes_of(cancel))  # CANCEL retransmission matches the CANCEL
    assert len(h.requests_received()) == 2
    # An ACK with the INVITE's branch and sent-by is part of the INVITE transaction.
    busy = f.local_response(inv, 487)
    h.respond(txn, busy)
    ack = f.ack_for(inv, busy)
    assert server_key(ack) == server_key(inv)
    h.receive(ack)
    assert txn.state is State.CONFIRMED
    assert len(h.requests_received()) == 2


def test_find_invite_for_cancel_without_invite() -> None:
    h = Harness()
    inv = f.request("INVITE")
    cancel = f.cancel_for(inv)
    assert h.layer.find_invite_for_cancel(cancel) is None
    h.receive(cancel)
    assert h.layer.find_invite_for_cancel(cancel) is None


def test_same_branch_other_sent_by_are_distinct_transactions() -> None:
    h = Harness()
    b = f.branch()
    call = "same-call@test"
    reqs = [
        f.request("INVITE", top_via=f.via("192.0.2.10", 5060, branch_value=b), call_id=call),
        f.request("INVITE", top_via=f.via("192.0.2.11", 5060, branch_value=b), call_id=call),
        f.request("INVITE", top_via=f.via("192.0.2.10", 5070, branch_value=b), call_id=call),
        f.request("INVITE", top_via=f.via("192.0.2.10", None, branch_value=b), call_id=call),
        f.request("OPTIONS", top_via=f.via("192.0.2.10", 5060, branch_value=b), call_id=call),
    ]
    for r in reqs:
        h.receive(r)
    txns = [e.transaction for _, e in h.requests_received()]
    assert len(set(map(id, txns))) == 5
    assert len(h.layer.server) == 5
    # Each retransmission goes to its own transaction.
    for r, txn in zip(reqs, txns, strict=True):
        assert h.layer.find_server(r) is txn
    # The ACK of a non-2xx matches only the transaction with its own sent-by.
    second = txns[1]
    assert second is not None
    busy = f.local_response(reqs[1], 486)
    h.respond(second, busy)
    h.receive(f.ack_for(reqs[1], busy))
    assert second.state is State.CONFIRMED
    assert [t.state for t in txns if t is not second] == [  # type: ignore[union-attr]
        State.PROCEEDING, State.PROCEEDING, State.PROCEEDING, State.TRYING,
    ]


def test_ack_with_invite_branch_but_other_sent_by_matches_nothing() -> None:
    h = Harness()
    inv, txn = _server_invite(h)
    busy = f.local_response(inv, 486)
    h.respond(txn, busy)
    b = parse_via(inv.vias[0]).parameters["branch"]
    ack = f.ack_for(inv, busy, top_via=f.via("192.0.2.99", 5060, branch_value=b))
    h.receive(ack)
    assert txn.state is State.COMPLETED
    assert h.log()[-1] == (0.0, "RequestReceived", None)


def test_branch_parameter_name_is_case_insensitive() -> None:
    h = Harness()
    b = f.branch()
    inv = f.request("INVITE", top_via=f"SIP/2.0/UDP 192.0.2.10:5060;Branch={b}")
    assert server_key(inv) == (b, "192.0.2.10:5060", "INVITE")
    h.receive(inv)
    h.receive_bytes(bytes_of(inv))
    assert len(h.requests_received()) == 1


def test_rfc2543_fallback_key() -> None:
    inv = f.request("INVITE", branch_value=None, cseq=5, from_tag="ft")
    top = inv.vias[0]
    assert server_key(inv) == ("2543", inv.uri, "ft", inv.call_id, "5", top, "INVITE")
    # A branch without the cookie, or the bare cookie, is not an RFC 3261 branch.
    for b in ("1234abcd", MAGIC_COOKIE):
        req = f.request("INVITE", branch_value=b)
        assert server_key(req)[0] == "2543"
    # The To tag is not part of the key, so the ACK (with our tag) maps to the INVITE.
    ack = f.ack_for(inv, make_response(inv, 486, to_tag="ours"))
    assert server_key(ack) == server_key(inv)


def test_rfc2543_matching_of_retransmissions_and_ack() -> None:
    h = Harness()
    inv, txn = _server_invite(h, branch_value=None, call_id="old@2543", cseq=3)
    h.receive_bytes(bytes_of(inv))
    assert len(h.requests_received()) == 1
    # Change any of Request-URI, From tag, Call-ID, CSeq, top Via: a new transaction.
    variants = [
        f.request("INVITE", branch_value=None, call_id="old@2543", cseq=3,
                  uri="sip:other@198.51.100.7"),
        f.request("INVITE", branch_value=None, call_id="old@2543", cseq=3, from_tag="ft2"),
        f.request("INVITE", branch_value=None, call_id="new@2543", cseq=3),
        f.request("INVITE", branch_value=None, call_id="old@2543", cseq=4),
        f.request("INVITE", call_id="old@2543", cseq=3,
                  top_via=f.via("192.0.2.10", 5062)),
    ]
    for v in variants:
        h.receive(v)
    assert len(h.requests_received()) == 1 + len(variants)
    assert len(h.layer.server) == 1 + len(variants)
    # The ACK for a non-2xx final matches its INVITE (To tag added, CSeq method ACK).
    busy = f.local_response(inv, 486, to_tag="srv")
    h.respond(txn, busy)
    h.run_until(0.75)
    h.receive(f.ack_for(inv, busy))
    assert txn.state is State.CONFIRMED
    assert len(h.requests_received()) == 1 + len(variants)
    h.run_until(100)
    assert h.times(bytes_of(busy)) == [0.0, 0.5]
    # CANCEL: its own transaction, and it finds its INVITE by the 2543 key.
    h2 = Harness()
    inv2, txn2 = _server_invite(h2, branch_value=None)
    cancel = f.cancel_for(inv2)
    h2.receive(cancel)
    (_, ev), = h2.requests_received()[1:]
    assert ev.transaction is not None and ev.transaction is not txn2
    assert h2.layer.find_invite_for_cancel(cancel) is txn2


def test_server_request_without_usable_via_or_cseq_does_not_raise() -> None:
    h = Harness()
    req = f.request("OPTIONS")
    req.headers.remove("Via")
    h.receive(req)
    req2 = f.request("OPTIONS")
    req2.headers.set("Via", "garbage")
    req2.headers.set("CSeq", "not a cseq")
    h.receive(req2)
    assert len(h.requests_received()) == 2
    assert all(k[0] == "2543" for k in h.layer.server)


def test_client_response_matching_stray_responses_are_dropped() -> None:
    h = Harness()
    inv = f.outgoing("INVITE")
    txn = h.send(inv)
    other = f.via(host="192.0.2.1", port=5060, branch_value=new_branch())
    assert h.receive(f.response(inv, 200, top_via=other)) is False  # other branch
    assert h.receive(f.response(inv, 200, cseq_method="CANCEL")) is False  # other method
    assert h.receive(f.response(inv, 200, cseq_method="OPTIONS")) is False
    no_via = f.response(inv, 200)
    no_via.headers.remove("Via")
    assert h.receive(no_via) is False
    bad_cseq = f.response(inv, 200)
    bad_cseq.headers.set("CSeq", "one INVITE")
    assert h.receive(bad_cseq) is False
    bad_via = f.response(inv, 200)
    bad_via.headers.set("Via", "not a via")
    assert h.receive(bad_via) is False
    h.run_until(2.0)
    assert txn.state is State.CALLING  # unaffected: still retransmitting
    assert h.times() == [0, 0.5, 1.5]
    assert h.events == []


def test_client_invite_and_cancel_share_the_branch_but_not_the_transaction() -> None:
    h = Harness()
    inv = f.outgoing("INVITE")
    itxn = h.send(inv)
    h.receive(f.response(inv, 180))
    cancel = f.cancel_for(inv)
    ctxn = h.send(cancel)
    assert itxn.branch == ctxn.branch and itxn.key != ctxn.key
    h.run_until(0.25)
    assert h.receive(f.response(cancel, 200)) is True
    assert h.receive(f.response(inv, 487)) is True
    assert h.responses_received() == [(0.0, 180, itxn), (0.25, 200, ctxn), (0.25, 487, itxn)]
    assert ctxn.state is State.COMPLETED and itxn.state is State.COMPLETED


def test_second_client_transaction_with_same_key_survives_the_first() -> None:
    """A TU that sends a second CANCEL (same branch) must still get its answer after the
    first CANCEL transaction ends."""
    h = Harness()
    inv = f.outgoing("INVITE")
    h.send(inv)
    h.receive(f.response(inv, 180))
    cancel = f.cancel_for(inv)
    first = h.send(cancel)
    h.run_until(0.25)
    h.receive(f.response(cancel, 200))
    h.run_until(1.0)
    second = h.send(f.cancel_for(inv))
    h.run_until(5.25)  # timer K of the first
    assert first.state is State.TERMINATED
    assert h.layer.client[second.key] is second
    assert h.receive(f.response(cancel, 200)) is True
    assert second.state is State.COMPLETED


# Configurable timers ------------------------------------------------------------------

CONFIGS = [
    TimerConfig(),
    TimerConfig(t1=0.25, t2=1.0, t4=2.0),
    TimerConfig(t1=1.0, t2=16.0, t4=8.0),
    TimerConfig(t1=0.125, t2=0.5, t4=1.0),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"t1={c.t1},t2={c.t2},t4={c.t4}")
def test_configurable_timers_change_every_schedule(cfg: TimerConfig) -> None:
    t1, t2, t4 = cfg.t1, cfg.t2, cfg.t4
    end = 64 * t1

    # Client INVITE: timer A / B.
    h = Harness(cfg)
    txn = h.send(f.outgoing("INVITE"))
    h.run_until(200)
    assert h.times() == schedule_a(t1)
    assert h.log() == [(end, "TransactionTimeout", txn), (end, "TransactionTerminated", txn)]

    # Client non-INVITE: timer E / F, then K.
    h = Harness(cfg)
    txn = h.send(f.outgoing("OPTIONS"))
    h.run_until(200)
    assert h.times() == schedule_capped(t1, t2, end)
    assert h.log()[0] == (end, "TransactionTimeout", txn)
    h = Harness(cfg)
    req = f.outgoing("OPTIONS")
    txn = h.send(req)
    h.run_until(0.0625)
    h.receive(f.response(req, 200))
    h.run_until(200)
    assert h.log()[-1] == (0.0625 + t4, "TransactionTerminated", txn)

    # Client INVITE 2xx: timer M.
    h = Harness(cfg)
    inv = f.outgoing("INVITE")
    txn = h.send(inv)
    h.receive(f.response(inv, 200))
    h.run_until(200)
    assert h.log()[-1] == (end, "TransactionTerminated", txn)

    # Server INVITE: timer G / H; I after an ACK; L after a 2xx.
    h = Harness(cfg)
    inv, stxn = _server_invite(h)
    busy = f.local_response(inv, 486)
    h.respond(stxn, busy)
    h.run_until(200)
    assert h.times() == schedule_capped(t1, t2, end)
    assert h.log()[1:] == [(end, "TransactionTimeout", stxn), (end, "TransactionTerminated", stxn)]
    h = Harness(cfg)
    inv, stxn = _server_invite(h)
    busy = f.local_response(inv, 486)
    h.respond(stxn, busy)
    h.run_until(0.0625)
    h.receive(f.ack_for(inv, busy))
    h.run_until(200)
    assert h.log()[-1] == (0.0625 + t4, "TransactionTerminated", stxn)
    h = Harness(cfg)
    inv, stxn = _server_invite(h)
    h.respond(stxn, f.local_response(inv, 200))
    h.run_until(200)
    assert h.log()[-1] == (end, "TransactionTerminated", stxn)

    # Server non-INVITE: timer J.
    h = Harness(cfg)
    req = f.request("OPTIONS")
    h.receive(req)
    (_, ev), = h.requests_received()
    assert ev.transaction is not None
    h.respond(ev.transaction, f.local_response(req, 200))
    h.run_until(200)
    assert h.log()[-1] == (end, "TransactionTerminated", ev.transaction)


# CANCEL crossing a 200 (9.1, RFC 6026) -------------------------------------------------


@pytest.mark.parametrize("cancel_answer_first", [True, False])
def test_cancel_crossing_200(cancel_answer_first: bool) -> None:
    h = Harness()
    inv = f.outgoing("INVITE")
    itxn = h.send(inv)
    h.run_until(0.25)
    h.receive(f.response(inv, 180))
    h.run_until(1.25)
    cancel = f.cancel_for(inv)
    ctxn = h.send(cancel)  # the TU gives up...
    h.run_until(1.5)
    ok = f.response(inv, 200, to_tag="callee")  # ...while the callee answers
    cancel_ok = f.response(cancel, 200, to_tag="callee")
    if cancel_answer_first:
        assert h.receive(cancel_ok) is True
        assert h.receive(ok) is True
    else:
        assert h.receive(ok) is True
        assert h.receive(cancel_ok) is True
    # The 200 reached the TU, which must ACK it and send BYE: no 487 will come.
    assert itxn.state is State.ACCEPTED
    assert ctxn.state is State.COMPLETED
    rr = h.responses_received()
    assert (1.5, 200, itxn) in rr and (1.5, 200, ctxn) in rr
    # A (bogus) 487 now is absorbed and not ACKed by the transaction.
    n_sent = len(h.sent)
    assert h.receive(f.response(inv, 487)) is True
    assert len(h.sent) == n_sent
    h.run_until(2.5)
    assert h.receive(ok) is True  # the callee retransmits its 200: up again, re-ACK
    assert h.responses_received()[-1] == (2.5, 200, itxn)
    h.run_until(100)
    assert h.times(bytes_of(inv)) == [0.0]
    assert h.times(bytes_of(cancel)) == [1.25]
    assert [e for e in h.log() if e[1] != "ResponseReceived"] == [
        (6.5, "TransactionTerminated", ctxn),  # timer K
        (33.5, "TransactionTerminated", itxn),  # timer M
    ]
    assert_empty(h.layer)


# Heavy use -----------------------------------------------------------------------------


def test_ten_thousand_concurrent_transactions_all_terminate_without_leak() -> None:
    n = 10_000
    h = Harness()
    layer = h.layer
    client: list[tuple[int, Request, ClientTransaction]] = []
    server: list[tuple[int, Request]] = []
    for i in range(n):
        kind = i % 8
        if kind < 3:
            req = f.outgoing("INVITE")
            client.append((kind, req, h.layer.send_request(req, UDP, h.now)))
        elif kind < 5:
            req = f.outgoing("OPTIONS", transport="UDP" if kind == 3 else "TCP")
            client.append((kind, req, h.layer.send_request(req, UDP if kind == 3 else TCP, h.now)))
        else:
            req = f.request("INVITE" if kind < 7 else "OPTIONS")
            layer.receive_request(req, UDP, h.now)
            server.append((kind, req))
    h._collect()
    assert len(layer) == n
    stxns = {id(e.request): e.transaction for _, e in h.requests_received()}
    assert len(stxns) == len(server)

    h.run_until(1.0)
    for kind, req, _ in client:
        if kind == 1:
            layer.receive_response(f.response(req, 180), h.now)
            layer.receive_response(f.response(req, 486), h.now)
        elif kind == 2:
            layer.receive_response(f.response(req, 200), h.now)
        elif kind == 4:
            layer.receive_response(f.response(req, 200), h.now)
    finals: dict[int, Response] = {}
    for kind, req in server:
        txn = stxns[id(req)]
        assert txn is not None
        resp = f.local_response(req, 486 if kind == 5 else 200)
        finals[id(req)] = resp
        txn.respond(resp, now=h.now)
    h._collect()
    h.run_until(2.0)
    for kind, req in server:
        if kind == 5:
            layer.receive_request(f.ack_for(req, finals[id(req)]), UDP, h.now)
    h._collect()
    assert len(layer) == n - n // 8  # the TCP OPTIONS (timer K = 0) are gone
    h.run_until(200)

    terminated = [ev.transaction for _, ev in h.events if isinstance(ev, TransactionTerminated)]
    timeouts = [ev.transaction for _, ev in h.events if isinstance(ev, TransactionTimeout)]
    assert len(terminated) == n and len(set(map(id, terminated))) == n
    expect_timeouts = {id(t) for kind, _, t in client if kind in (0, 3)}
    assert {id(t) for t in timeouts} == expect_timeouts
    assert all(t.state is State.TERMINATED for _, _, t in client)
    assert all(t is not None and t.state is State.TERMINATED for t in stxns.values())
    assert_empty(layer)
    assert h.max_heap <= 3 * n


def test_timer_heap_stays_bounded_when_retransmission_timers_are_rearmed() -> None:
    h = Harness()
    inv, txn = _server_invite(h)
    h.respond(txn, f.local_response(inv, 500))
    req = f.outgoing("BYE")
    h.send(req)
    h.receive(f.response(req, 100))
    for _ in range(64):
        h.advance(0.5)
        assert len(h.layer._heap) <= 6  # G re-armed, E re-armed every T2, H, F
    assert h.max_heap <= 6
    h.run_until(100)
    assert_empty(h.layer)


def test_timer_heap_drops_entries_of_terminated_transactions() -> None:
    """Short transactions leave timer F (and B, H, ...) entries behind; they must not
    pile up behind a long-lived earlier timer."""
    h = Harness()
    h.send(f.outgoing("INVITE", transport="TCP"), TCP)  # timer B at 32 s stays on top
    for _ in range(5000):
        req = f.outgoing("OPTIONS", transport="TCP")
        h.send(req, TCP)
        h.receive(f.response(req, 200))  # timer K = 0: gone at once, its F remains
        h.advance(1 / 512)
    assert len(h.layer) == 1
    assert h.max_heap < 1200  # without compaction: one stale timer F per transaction
    h.run_until(100)
    assert_empty(h.layer)


# Property: random traffic never raises, and quiet ends every transaction -------------

STATUSES = [100, 180, 183, 200, 202, 486, 487, 503, 603]


@dataclass
class _ServerReq:
    req: Request
    peer: Peer
    txn: ServerTransaction | None
    last: Response | None = None


def _check_events(
    h: Harness, seen_terminated: set[int], owed: dict[int, ServerTransaction]
) -> None:
    """Event invariants; ``owed`` collects every server transaction the TU was given."""
    evs = h.take_events()
    for i, (_, ev) in enumerate(evs):
        txn = getattr(ev, "transaction", None)
        if isinstance(ev, RequestReceived):
            if ev.request.method == "ACK":
                assert txn is None
            else:
                assert isinstance(txn, ServerTransaction) and txn.request is ev.request
                owed[id(txn)] = txn
        if txn is not None:
            assert id(txn) not in seen_terminated, f"event after termination: {ev}"
        if isinstance(ev, TransactionTimeout):
            nxt = evs[i + 1][1]
            assert isinstance(nxt, TransactionTerminated) and nxt.transaction is txn
        if isinstance(ev, TransactionTerminated):
            seen_terminated.add(id(txn))
            assert ev.transaction.state is State.TERMINATED
    for t in itertools.chain(h.layer.client.values(), h.layer.server.values()):
        assert t.state is not State.TERMINATED
        assert id(t) not in seen_terminated


op = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(["INVITE", "OPTIONS", "BYE"]),
              st.sampled_from([UDP, TCP])),
    st.tuples(st.just("resp"), st.integers(0, 50), st.sampled_from(STATUSES),
              st.sampled_from(["ok", "ok", "fork", "wrong_method", "stray", "no_via"])),
    st.tuples(st.just("req"), st.sampled_from(["INVITE", "OPTIONS", "BYE"]),
              st.sampled_from(["3261", "2543"]), st.sampled_from([UDP, TCP])),
    st.tuples(st.just("retx"), st.integers(0, 50)),
    st.tuples(st.just("ack"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("tu"), st.integers(0, 50), st.sampled_from([100, 180, 200, 486, 603])),
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.25, 0.5, 1.0, 4.0, 5.0, 31.75, 32.0, 64.0])),
    st.tuples(st.just("wait"), st.floats(0, 40, allow_nan=False)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfg=st.sampled_from(CONFIGS),
    ops=st.lists(op, max_size=60),
)
def test_random_traffic_never_raises_and_quiet_terminates_everything(
    cfg: TimerConfig, ops: list[tuple[object, ...]]
) -> None:
    h = Harness(cfg)
    clients: list[tuple[Request, ClientTransaction]] = []
    servers: list[_ServerReq] = []
    seen_terminated: set[int] = set()
    owed: dict[int, ServerTransaction] = {}

    for o in ops:
        kind = o[0]
        if kind == "send":
            _, method, peer = o
            req = f.outgoing(str(method), transport=peer[0].upper())  # type: ignore[index]
            clients.append((req, h.send(req, peer)))  # type: ignore[arg-type]
        elif kind == "resp" and clients:
            _, idx, status, variant = o
            req, _ = clients[int(idx) % len(clients)]  # type: ignore[call-overload]
            if variant == "fork":
                resp = f.response(req, int(status), to_tag="other")  # type: ignore[call-overload]
            elif variant == "wrong_method":
                resp = f.response(req, int(status), cseq_method="CANCEL")  # type: ignore
            elif variant == "stray":
                top = f.via(host="192.0.2.1", port=5060, branch_value=new_branch())
                resp = f.response(req, int(status), top_via=top)  # type: ignore[call-overload]
            elif variant == "no_via":
                resp = f.response(req, int(status))  # type: ignore[call-overload]
                resp.headers.remove("Via")
            else:
                resp = f.response(req, int(status))  # type: ignore[call-overload]
            h.receive(resp)
        elif kind == "req":
            _, method, style, peer = o
            req = f.request(str(method), branch_value="new" if style == "3261" else None,
                            to_tag="d" if method == "BYE" else None)
            n = len(h.requests_received())
            h.receive(req, peer)  # type: ignore[arg-type]
            new = h.requests_received()[n:]
            txn = new[0][1].transaction if new else None
            servers.append(_ServerReq(req, peer, txn))  # type: ignore[arg-type]
        elif kind == "retx" and servers:
            s = servers[int(o[1]) % len(servers)]  # type: ignore[call-overload]
            h.receive_bytes(bytes_of(s.req), s.peer)
        elif kind == "ack" and servers:
            s = servers[int(o[1]) % len(servers)]  # type: ignore[call-overload]
            if s.req.method == "INVITE":
                answer = s.last or make_response(s.req, 486, to_tag="x")
                h.receive(f.ack_for(s.req, answer, same_branch=bool(o[2])), s.peer)
        elif kind == "cancel" and servers:
            s = servers[int(o[1]) % len(servers)]  # type: ignore[call-overload]
            cancel = f.cancel_for(s.req)
            h.layer.find_invite_for_cancel(cancel)
            h.receive(cancel, s.peer)
            servers.append(_ServerReq(cancel, s.peer, h.layer.find_server(cancel)))
        elif kind == "tu" and servers:
            s = servers[int(o[1]) % len(servers)]  # type: ignore[call-overload]
            if s.txn is not None:
                s.last = f.local_response(s.req, int(o[2]))  # type: ignore[call-overload]
                h.respond(s.txn, s.last)
        elif kind == "wait":
            h.advance(float(o[1]))  # type: ignore[arg-type]
        _check_events(h, seen_terminated, owed)

    # The TU answers whatever it still owes (a server transaction waits for it).
    for t in owed.values():
        if t.state in (State.TRYING, State.PROCEEDING):
            h.respond(t, f.local_response(t.request, 500))
    # ... and gives up on ringing INVITEs (it would CANCEL them).
    for _, ct in clients:
        if ct.is_invite and ct.state is State.PROCEEDING:
            ct.abandon_after(64 * cfg.t1)
    _check_events(h, seen_terminated, owed)
    quiet_from = h.now
    h.run_until(quiet_from + 64 * cfg.t1 + max(cfg.t4, 32.0))
    _check_events(h, seen_terminated, owed)
    assert_empty(h.layer)
    for _, ct in clients:
        assert ct.state is State.TERMINATED
    for t in owed.values():
        assert t.state is State.TERMINATED
