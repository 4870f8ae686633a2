"""The back-to-back user agent, driven by bytes and a Clock (no sockets, no sleeps)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet.task import Clock

from gateway.sip.b2bua import (
    CallAnswered,
    CallEnded,
    CallLayer,
    DtmfReceived,
    Identity,
    IncomingCall,
    KeyframeRequested,
    SessionTimerConfig,
)
from gateway.sip.core import CoreConfig, SipCore
from gateway.sip.message import Request, Response, parse_datagram
from gateway.sip.transaction import Peer

GW = ("udp", "127.0.0.1", 5060)
A: Peer = ("udp", "127.0.0.1", 6001)  # the caller (kiosk or trunk)
B: Peer = ("udp", "127.0.0.1", 6002)  # the callee
SDP_A = (b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 7000 RTP/AVP 0\r\n")
SDP_B = (b"v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 8000 RTP/AVP 0\r\n")


class Harness:
    """A gateway core plus two scripted peers on a fake clock."""

    def __init__(self, se: SessionTimerConfig | None = None) -> None:
        self.clock = Clock()
        self.core = SipCore(CoreConfig(local={"udp": ("127.0.0.1", 5060)}))
        self.calls = CallLayer(self.core, self._authorize, se or SessionTimerConfig(1800, 90))
        self.core.handlers.append(self.calls)
        self.sent: list[tuple[float, Peer, Any]] = []
        self.events: list[Any] = []
        self.auto_route = True

    def _authorize(self, core: SipCore, req: Request, peer: Peer, txn: Any, now: float) -> Any:
        return Identity("pbx", "trunk")

    def pump(self) -> None:
        for peer, data in self.core.messages_to_send():
            self.sent.append((self.clock.seconds(), peer, parse_datagram(data)))
        while (ev := self.core.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, IncomingCall) and self.auto_route:
                self.calls.connect(ev.call, "sip:bob@127.0.0.1:6002", B)
        for peer, data in self.core.messages_to_send():
            self.sent.append((self.clock.seconds(), peer, parse_datagram(data)))

    def send(self, peer: Peer, msg: Request | Response | bytes) -> None:
        data = msg if isinstance(msg, bytes) else msg.to_bytes()
        self.core.receive_datagram(data, peer, self.clock.seconds())
        self.pump()

    def advance(self, seconds: float) -> None:
        end = self.clock.seconds() + seconds
        while True:
            deadline = self.core.get_timer()
            if deadline is None or deadline > end:
                break
            self.clock.advance(max(0.0, deadline - self.clock.seconds()))
            self.core.handle_timer(self.clock.seconds())
            self.pump()
        self.clock.advance(end - self.clock.seconds())

    def take(self, peer: Peer | None = None) -> list[Any]:
        out = [m for _, p, m in self.sent if peer is None or p == peer]
        self.sent = [s for s in self.sent if not (peer is None or s[1] == peer)]
        return out

    def last_request(self, peer: Peer, method: str) -> Request:
        reqs = [m for _, p, m in self.sent if p == peer and isinstance(m, Request)
                and m.method == method]
        assert reqs, f"no {method} sent to {peer}"
        return reqs[-1]

    def responses(self, peer: Peer, method: str | None = None) -> list[Response]:
        return [m for _, p, m in self.sent if p == peer and isinstance(m, Response)
                and (method is None or m.cseq.method == method)]


def invite(branch: str = "z9hG4bKa1", cseq: int = 1, body: bytes = SDP_A,
           extra: list[tuple[str, str]] | None = None) -> Request:
    req = Request("INVITE", "sip:2001@127.0.0.1:5060")
    h = req.headers
    h.add("Via", f"SIP/2.0/UDP 127.0.0.1:6001;branch={branch};rport")
    h.add("Max-Forwards", "70")
    h.add("From", "<sip:kiosk1@127.0.0.1>;tag=fa")
    h.add("To", "<sip:2001@127.0.0.1>")
    h.add("Call-ID", "call-a@127.0.0.1")
    h.add("CSeq", f"{cseq} INVITE")
    h.add("Contact", "<sip:kiosk1@127.0.0.1:6001>")
    for k, v in extra or []:
        h.add(k, v)
    if body:
        h.add("Content-Type", "application/sdp")
    req.body = body
    return req


def respond(req: Request, status: int, to_tag: str | None = "tb", body: bytes = b"",
            extra: list[tuple[str, str]] | None = None) -> Response:
    resp = Response(status)
    for k, v in req.headers.items:
        if k in ("Via", "From", "Call-ID", "CSeq"):
            resp.headers.add(k, v)
        elif k == "To":
            resp.headers.add(k, v if (";tag=" in v or to_tag is None) else f"{v};tag={to_tag}")
    if status < 300 and status > 100:
        resp.headers.add("Contact", "<sip:bob@127.0.0.1:6002>")
    for k, v in extra or []:
        resp.headers.add(k, v)
    if body:
        resp.headers.add("Content-Type", "application/sdp")
    resp.body = body
    return resp


def in_dialog(method: str, dialog_of: Response | Request, cseq: int, branch: str,
              from_peer: Peer, body: bytes = b"", ctype: str = "application/sdp",
              extra: list[tuple[str, str]] | None = None) -> Request:
    """A request from the peer that received ``dialog_of`` (our 200 or our INVITE)."""
    if isinstance(dialog_of, Response):  # we answered the caller: A sends in-dialog
        from_v = dialog_of.headers.get("From") or ""
        to_v = dialog_of.headers.get("To") or ""
    else:  # we called B: B sends in-dialog, From/To swapped
        from_v = (dialog_of.headers.get("To") or "") + ";tag=tb"
        to_v = dialog_of.headers.get("From") or ""
    req = Request(method, "sip:gw@127.0.0.1:5060")
    h = req.headers
    h.add("Via", f"SIP/2.0/UDP {from_peer[1]}:{from_peer[2]};branch={branch};rport")
    h.add("Max-Forwards", "70")
    h.add("From", from_v)
    h.add("To", to_v)
    h.add("Call-ID", dialog_of.call_id)
    h.add("CSeq", f"{cseq} {method}")
    for k, v in extra or []:
        h.add(k, v)
    if body:
        h.add("Content-Type", ctype)
    req.body = body
    return req


def connected(h: Harness) -> tuple[Response, Request]:
    """Run a call to Connected; returns (our 200 to A, our INVITE to B)."""
    h.send(A, invite())
    b_inv = h.last_request(B, "INVITE")
    h.send(B, respond(b_inv, 180))
    h.send(B, respond(b_inv, 200, body=SDP_B))
    ok = [r for r in h.responses(A, "INVITE") if r.status == 200][-1]
    h.send(A, in_dialog("ACK", ok, 1, "z9hG4bKack1", A))
    return ok, b_inv


def test_basic_call_passes_sdp_through_and_acks_after_the_caller():
    h = Harness()
    h.send(A, invite())
    assert [r.status for r in h.responses(A)] == [100]
    b_inv = h.last_request(B, "INVITE")
    assert b_inv.body == SDP_A
    assert b_inv.call_id != "call-a@127.0.0.1"  # separate dialogs
    h.send(B, respond(b_inv, 180))
    assert [r.status for r in h.responses(A)] == [100, 180]
    h.send(B, respond(b_inv, 200, body=SDP_B))
    ok = h.responses(A)[-1]
    assert ok.status == 200 and ok.body == SDP_B and ok.to_tag
    # B is not ACKed until A's ACK arrives (A's ACK may carry the answer).
    assert not [m for m in h.take(B) if isinstance(m, Request) and m.method == "ACK"]
    h.send(A, in_dialog("ACK", ok, 1, "z9hG4bKack1", A))
    acks = [m for m in h.take(B) if isinstance(m, Request) and m.method == "ACK"]
    assert len(acks) == 1 and acks[0].to_tag == "tb"
    assert any(isinstance(e, CallAnswered) for e in h.events)


def test_2xx_to_caller_is_retransmitted_until_ack_then_call_ends_without_ack():
    h = Harness()
    h.send(A, invite())
    b_inv = h.last_request(B, "INVITE")
    h.send(B, respond(b_inv, 200, body=SDP_B))
    h.take()
    h.advance(40)
    times = [t for t, p, m in h.sent if p == A and isinstance(m, Response) and m.status == 200]
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    # After 64*T1 without ACK both legs get a BYE.
    byes = [(p, m) for _, p, m in h.sent if isinstance(m, Request) and m.method == "BYE"]
    assert {p for p, _ in byes} == {A, B}
    assert any(isinstance(e, CallEnded) and e.reason == "no ACK" for e in h.events)


def test_cancel_before_any_provisional_waits_for_one():
    h = Harness()
    inv = invite()
    h.send(A, inv)
    b_inv = h.last_request(B, "INVITE")
    cancel = Request("CANCEL", inv.uri)
    for k, v in inv.headers.items:
        if k in ("Via", "From", "To", "Call-ID", "Max-Forwards"):
            cancel.headers.add(k, v)
    cancel.headers.add("CSeq", "1 CANCEL")
    h.send(A, cancel)
    statuses = sorted((r.cseq.method, r.status) for r in h.responses(A))
    assert ("CANCEL", 200) in statuses and ("INVITE", 487) in statuses
    assert not [m for _, p, m in h.sent if p == B and isinstance(m, Request)
                and m.method == "CANCEL"]  # 9.1: not before a provisional
    h.send(B, respond(b_inv, 180))
    b_cancel = h.last_request(B, "CANCEL")
    assert b_cancel.vias[0] == b_inv.vias[0] and b_cancel.cseq.sequence == b_inv.cseq.sequence
    h.send(B, respond(b_cancel, 200))
    h.send(B, respond(b_inv, 487))
    ack = h.last_request(B, "ACK")
    assert ack.cseq.method == "ACK"
    ended = [e for e in h.events if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].ended_by == "caller"


def test_200_crossing_cancel_is_acked_then_byed():
    h = Harness()
    inv = invite()
    h.send(A, inv)
    b_inv = h.last_request(B, "INVITE")
    h.send(B, respond(b_inv, 180))
    cancel = Request("CANCEL", inv.uri)
    for k, v in inv.headers.items:
        if k in ("Via", "From", "To", "Call-ID", "Max-Forwards"):
            cancel.headers.add(k, v)
    cancel.headers.add("CSeq", "1 CANCEL")
    h.send(A, cancel)
    h.last_request(B, "CANCEL")
    h.take()
    # B answered before it saw our CANCEL.
    h.send(B, respond(b_inv, 200, body=SDP_B))
    to_b = [m for m in h.take(B) if isinstance(m, Request)]
    assert [m.method for m in to_b] == ["ACK", "BYE"]
    assert to_b[0].to_tag == "tb" and to_b[1].to_tag == "tb"
    # A got its 487 and no 200.
    assert not [r for r in h.responses(A) if r.status == 200]


def test_bye_from_caller_hangs_up_callee():
    h = Harness()
    ok, b_inv = connected(h)
    h.take()
    h.send(A, in_dialog("BYE", ok, 2, "z9hG4bKbye1", A))
    assert [r.status for r in h.responses(A, "BYE")] == [200]
    bye = h.last_request(B, "BYE")
    assert bye.to_tag == "tb"
    ended = [e for e in h.events if isinstance(e, CallEnded)]
    assert ended[0].ended_by == "caller"


def test_reinvite_is_relayed_and_answered():
    h = Harness()
    ok, b_inv = connected(h)
    h.take()
    new_sdp = SDP_A.replace(b"7000", b"7100").replace(b"a 1 1", b"a 1 2")
    h.send(A, in_dialog("INVITE", ok, 2, "z9hG4bKre1", A, body=new_sdp))
    fwd = h.last_request(B, "INVITE")
    assert fwd.body == new_sdp and fwd.to_tag == "tb"
    h.send(B, respond(fwd, 200, body=SDP_B))
    # B's 2xx to our re-INVITE is ACKed by us; A gets the answer.
    assert h.last_request(B, "ACK").cseq.sequence == fwd.cseq.sequence
    assert [r for r in h.responses(A, "INVITE") if r.status == 200][-1].body == SDP_B


def test_reinvite_glare_gets_491_and_we_back_off():
    random.seed(1)
    h = Harness()
    ok, b_inv = connected(h)
    h.take()
    leg_b = next(iter(h.calls.calls.values())).b
    assert leg_b is not None
    h.calls.reinvite(leg_b)  # our refresh towards B is in flight
    h.pump()
    ours = h.last_request(B, "INVITE")
    # B sends its own re-INVITE at the same time: we answer 491 (14.2).
    h.send(B, in_dialog("INVITE", b_inv, 5, "z9hG4bKglare", B, body=SDP_B))
    assert [r.status for r in h.responses(B, "INVITE")][-1] == 491
    # B answers our re-INVITE 491 too: we retry after 2.1-4 s (we own B's Call-ID).
    h.take()
    h.send(B, respond(ours, 491))
    h.advance(2.0)
    assert not [m for m in h.take(B) if isinstance(m, Request) and m.method == "INVITE"]
    h.advance(2.1)
    retry = [m for m in h.take(B) if isinstance(m, Request) and m.method == "INVITE"]
    assert len({m.cseq.sequence for m in retry}) == 1  # one new transaction (+ retransmits)
    assert retry[0].cseq.sequence > ours.cseq.sequence


def test_glare_delay_ranges():
    h = Harness()
    ok, b_inv = connected(h)
    call = next(iter(h.calls.calls.values()))
    assert call.b is not None
    owner = [h.calls.glare_delay(call.b) for _ in range(200)]
    other = [h.calls.glare_delay(call.a) for _ in range(200)]
    assert 2.1 <= min(owner) and max(owner) <= 4.0
    assert 0.0 <= min(other) and max(other) <= 2.0


def test_session_timer_refresh_by_us_when_callee_has_no_timer_support():
    h = Harness(SessionTimerConfig(session_expires=120, min_se=90))
    ok, b_inv = connected(h)
    assert b_inv.headers.get("Session-Expires") == "120"
    h.take()
    h.advance(59)
    assert not [m for m in h.take(B) if isinstance(m, Request) and m.method == "INVITE"]
    h.advance(2)
    refresh = [m for m in h.take(B) if isinstance(m, Request) and m.method == "INVITE"]
    assert len({m.cseq.sequence for m in refresh}) == 1 and refresh[0].body == SDP_A


def test_session_expires_when_caller_stops_refreshing():
    h = Harness(SessionTimerConfig(session_expires=120, min_se=90))
    inv = invite(extra=[("Supported", "timer"), ("Session-Expires", "120;refresher=uac")])
    h.send(A, inv)
    b_inv = h.last_request(B, "INVITE")
    h.send(B, respond(b_inv, 200, body=SDP_B,
                      extra=[("Session-Expires", "120;refresher=uas")]))
    ok = [r for r in h.responses(A, "INVITE") if r.status == 200][-1]
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    h.send(A, in_dialog("ACK", ok, 1, "z9hG4bKack1", A))
    # A refreshes once at 60 s: the session lives on.
    h.advance(60)
    h.send(A, in_dialog("UPDATE", ok, 2, "z9hG4bKupd1", A,
                        extra=[("Session-Expires", "120;refresher=uac")]))
    upd = h.last_request(B, "UPDATE")
    h.send(B, respond(upd, 200, extra=[("Session-Expires", "120;refresher=uas")]))
    assert [r.status for r in h.responses(A, "UPDATE")] == [200]
    h.take()
    # Then A goes silent: at 120 - 32 = 88 s after the refresh the call ends.
    h.advance(87)
    assert not any(isinstance(e, CallEnded) for e in h.events)
    h.advance(2)
    ended = [e for e in h.events if isinstance(e, CallEnded)]
    assert ended and ended[0].reason == "session timer expired"
    assert {p for _, p, m in h.sent if isinstance(m, Request) and m.method == "BYE"} == {A, B}


def test_session_expires_below_min_se_gets_422():
    h = Harness(SessionTimerConfig(session_expires=1800, min_se=90))
    h.send(A, invite(extra=[("Session-Expires", "30")]))
    r = h.responses(A)[-1]
    assert r.status == 422 and r.headers.get("Min-SE") == "90"


def test_422_from_callee_is_retried_with_its_min_se():
    h = Harness(SessionTimerConfig(session_expires=120, min_se=90))
    h.send(A, invite())
    b_inv = h.last_request(B, "INVITE")
    h.send(B, respond(b_inv, 422, extra=[("Min-SE", "600")]))
    retry = h.last_request(B, "INVITE")
    assert retry.cseq.sequence == b_inv.cseq.sequence + 1
    assert retry.headers.get("Session-Expires") == "600"
    assert retry.call_id == b_inv.call_id


def test_offerless_invite_offer_in_200_answer_in_ack():
    h = Harness()
    h.send(A, invite(body=b""))
    b_inv = h.last_request(B, "INVITE")
    assert b_inv.body == b""
    h.send(B, respond(b_inv, 200, body=SDP_B))  # B's offer
    ok = [r for r in h.responses(A, "INVITE") if r.status == 200][-1]
    assert ok.body == SDP_B
    ack = in_dialog("ACK", ok, 1, "z9hG4bKack1", A, body=SDP_A)  # A's answer
    h.send(A, ack)
    b_ack = h.last_request(B, "ACK")
    assert b_ack.body == SDP_A


def test_failure_is_relayed_and_auth_challenges_are_not():
    h = Harness()
    h.send(A, invite())
    b_inv = h.last_request(B, "INVITE")
    h.send(B, respond(b_inv, 486))
    assert h.responses(A)[-1].status == 486
    h2 = Harness()
    h2.send(A, invite())
    b_inv = h2.last_request(B, "INVITE")
    h2.send(B, respond(b_inv, 407))
    assert h2.responses(A)[-1].status == 500


def test_ringing_too_long_cancels_callee_and_gives_480():
    h = Harness()
    h.calls.ring_timeout = 60
    h.send(A, invite())
    b_inv = h.last_request(B, "INVITE")
    h.send(B, respond(b_inv, 180))
    h.advance(59)
    assert h.responses(A)[-1].status == 180
    h.advance(2)
    assert h.responses(A)[-1].status == 480
    cancels = [m for _, p, m in h.sent if p == B and isinstance(m, Request)
               and m.method == "CANCEL"]
    assert len({c.vias[0] for c in cancels}) == 1  # one CANCEL transaction
    assert any(isinstance(e, CallEnded) and e.ended_by == "timeout" for e in h.events)
    # The callee never answers the INVITE: its transaction is dropped after 64*T1.
    h.advance(40)
    assert not [t for t in h.core.transactions.client.values() if t.method == "INVITE"]


def test_callee_timeout_gives_408():
    h = Harness()
    h.send(A, invite())
    h.advance(33)
    assert h.responses(A)[-1].status == 408
    assert any(isinstance(e, CallEnded) and e.ended_by == "timeout" for e in h.events)


def test_unknown_dialog_gets_481():
    h = Harness()
    req = in_dialog("BYE", respond(invite(), 200), 2, "z9hG4bKx", A)
    h.send(A, req)
    assert h.responses(A)[-1].status == 481


def test_info_dtmf_and_picture_fast_update_are_events_and_relayed():
    h = Harness()
    ok, b_inv = connected(h)
    h.take()
    h.send(A, in_dialog("INFO", ok, 2, "z9hG4bKi1", A, body=b"Signal=5\r\nDuration=160\r\n",
                        ctype="application/dtmf-relay"))
    xml = (b'<?xml version="1.0" encoding="utf-8" ?><media_control><vc_primitive>'
           b"<to_encoder><picture_fast_update/></to_encoder></vc_primitive></media_control>")
    h.send(A, in_dialog("INFO", ok, 3, "z9hG4bKi2", A, body=xml,
                        ctype="application/media_control+xml"))
    dtmf = [e for e in h.events if isinstance(e, DtmfReceived)]
    assert dtmf and dtmf[0].digit == "5" and dtmf[0].duration_ms == 160
    assert any(isinstance(e, KeyframeRequested) for e in h.events)
    assert [r.status for r in h.responses(A, "INFO")] == [200, 200]
    infos = [m for m in h.take(B) if isinstance(m, Request) and m.method == "INFO"]
    assert len(infos) == 2


def test_out_of_order_cseq_in_dialog_gets_500():
    h = Harness()
    ok, _ = connected(h)
    h.send(A, in_dialog("INFO", ok, 5, "z9hG4bKi5", A, body=b"Signal=1\r\n",
                        ctype="application/dtmf-relay"))
    h.send(A, in_dialog("INFO", ok, 4, "z9hG4bKi4", A, body=b"Signal=1\r\n",
                        ctype="application/dtmf-relay"))
    assert [r.status for r in h.responses(A, "INFO")] == [200, 500]


@pytest.mark.parametrize("transport", ["tcp"])
def test_no_2xx_retransmission_over_reliable_transport(transport: str):
    h = Harness()
    a_tcp: Peer = (transport, "127.0.0.1", 6001)
    inv = invite()
    inv.headers.set("Via", "SIP/2.0/TCP 127.0.0.1:6001;branch=z9hG4bKt1")
    h.send(a_tcp, inv)
    b_inv = h.last_request(B, "INVITE")
    h.send(B, respond(b_inv, 200, body=SDP_B))
    h.take()
    h.advance(10)
    assert not [m for _, p, m in h.sent if p == a_tcp]


def test_caller_bye_before_its_ack_still_acks_the_callee_2xx():
    """13.2.2.4: every 2xx is ACKed; a BYE that overtakes the caller's ACK must not
    leave the callee resending its 200."""
    h = Harness()
    h.send(A, invite())
    b_inv = h.last_request(B, "INVITE")
    h.send(B, respond(b_inv, 200, body=SDP_B))
    ok = [r for r in h.responses(A, "INVITE") if r.status == 200][-1]
    h.take()
    h.send(A, in_dialog("BYE", ok, 2, "z9hG4bKbye1", A))
    assert [m.method for m in h.take(B) if isinstance(m, Request)] == ["ACK", "BYE"]
