"""Call legs and the back-to-back user agent (sans-IO, on top of ``SipCore``).

Each call has an inbound leg (we are its UAS) and, once routed, an outbound leg (we
are its UAC); the two are separate dialogs with separate Call-IDs, so a kiosk never
learns the far side's identifiers.  SDP is passed through unchanged for now; the
media bridge will later anchor media here.

The routing seam is event-shaped: an ``IncomingCall`` event is emitted and the
application answers with ``connect``, ``reject`` or, for calls it starts itself,
``originate``.  That keeps routing free to consult a database or another node.
"""

from __future__ import annotations

import logging
import random
import re
import secrets
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .core import SipCore, Timer, header_tokens
from .dialog import Dialog, new_tag, peer_for_uri
from .message import Request, Response, make_response
from .transaction import ClientTransaction, Peer, ServerTransaction, State, new_branch

log = logging.getLogger("gateway.sip.calls")

LegState = Literal["calling", "early", "answered", "confirmed", "ended"]


# -- events (for the application) ---------------------------------------------------


@dataclass
class IncomingCall:
    """A new authenticated call: answer with CallLayer.connect / reject."""

    call: Call
    caller: str  # account username or trunk name
    caller_kind: str  # "kiosk" or "trunk"
    request_uri: str
    user: str  # Request-URI user part
    sdp: bytes
    from_user: str = ""  # the From URI's user part as the caller sent it (a PBX's number)

    @property
    def presented_user(self) -> str:
        """Who the callee is shown: a kiosk by its account, a trunk call by its number."""
        if self.caller_kind == "trunk" and self.from_user:
            return self.from_user
        return self.caller


@dataclass
class CallAnswered:
    call: Call


@dataclass
class CallEnded:
    call: Call
    reason: str
    ended_by: str  # "caller", "callee", "gateway", "timeout"
    status: int | None = None


@dataclass
class DtmfReceived:
    call: Call
    leg: str
    digit: str
    duration_ms: int


@dataclass
class KeyframeRequested:
    call: Call
    leg: str


# -- authorization seam ----------------------------------------------------------------


@dataclass
class Identity:
    name: str
    kind: str  # "kiosk" or "trunk"


Authorizer = Callable[[SipCore, Request, Peer, ServerTransaction, float], "Identity | None"]
"""Checks who sent an INVITE; answers the challenge/403 itself and returns None if not
authorized."""


@dataclass
class SessionTimerConfig:
    session_expires: int = 1800
    min_se: int = 90


@dataclass
class Leg:
    call: Call
    name: str  # "a" (inbound) or "b" (outbound)
    is_uas: bool
    peer: Peer
    state: LegState = "calling"
    dialog: Dialog | None = None
    invite: Request | None = None
    invite_txn: ServerTransaction | ClientTransaction | None = None
    local_sdp: bytes = b""  # the last SDP we sent on this leg
    # UAS side: our 2xx to the INVITE, retransmitted until the ACK (13.3.1.4).
    pending_2xx: bytes | None = None
    pending_2xx_cseq: int = 0
    retrans_timer: Timer | None = None
    retrans_interval: float = 0.5
    retrans_started: float = 0.0
    # UAC side
    got_provisional: bool = False
    cancel_pending: bool = False
    cancel_sent: bool = False
    ring_timer: Timer | None = None
    ack: bytes | None = None
    invite_attempts: int = 0
    # in-dialog offer/answer in progress on this leg
    reinvite_out: ClientTransaction | None = None
    reinvite_in: ServerTransaction | None = None
    glare_timer: Timer | None = None
    # session timer (RFC 4028)
    se_interval: int = 0
    we_refresh: bool = False
    se_timer: Timer | None = None

    def other(self) -> Leg | None:
        return self.call.b if self is self.call.a else self.call.a


@dataclass
class Call:
    id: str
    a: Leg = field(init=False)
    b: Leg | None = None
    caller: str = ""
    callee: str = ""
    created: float = 0.0
    answered: float | None = None
    ended: float | None = None
    end_reason: str = ""
    routed: bool = False

    @property
    def active(self) -> bool:
        return self.ended is None


class CallLayer:
    """Handles INVITE, ACK, BYE, CANCEL, UPDATE and INFO for the core."""

    def __init__(self, core: SipCore, authorize: Authorizer,
                 timers: SessionTimerConfig | None = None, ring_timeout: float = 120.0) -> None:
        self.core = core
        self.authorize = authorize
        self.st = timers or SessionTimerConfig()
        self.ring_timeout = ring_timeout
        self.calls: dict[str, Call] = {}
        # (Call-ID, our tag) -> leg, for every leg with a dialog (tags known).
        self.legs: dict[tuple[str, str], Leg] = {}

    # ------------------------------------------------------------------ dispatch
    def handle_request(self, core: SipCore, req: Request, peer: Peer,
                       txn: ServerTransaction | None, now: float) -> bool:
        method = req.method
        if txn is None:  # ACK for a 2xx
            if method == "ACK":
                self._on_ack(req)
            return True
        if method == "CANCEL":
            self._on_cancel(req, txn)
            return True
        if method not in ("INVITE", "BYE", "UPDATE", "INFO", "ACK"):
            return False
        if req.to_tag:
            leg = self.legs.get((req.call_id, req.to_tag))
            if leg is None or leg.dialog is None:
                core.respond(txn, req, 481)
                return True
            self._in_dialog(leg, req, txn)
            return True
        if method != "INVITE":
            core.respond(txn, req, 481)
            return True
        self._new_invite(req, peer, txn)
        return True

    # ------------------------------------------------------------------ new calls
    def _new_invite(self, req: Request, peer: Peer, txn: ServerTransaction) -> None:
        core = self.core
        if req.body:
            ctype = req.content_type
            if ctype != "application/sdp":
                core.respond(txn, req, 415, extra=[("Accept", "application/sdp")])
                return
        accept = req.headers.get("Accept")
        if accept is not None and req.headers.get_list("Accept"):
            types = [a.split(";")[0].strip().lower() for a in req.headers.get_list("Accept")]
            if not any(t in ("application/sdp", "application/*", "*/*") for t in types):
                core.respond(txn, req, 406, extra=[
                    ("Accept", "application/sdp"),
                    ("Warning", '399 gateway "application/sdp is required"')])
                return
        se = _session_expires(req)
        if se is not None and se[0] < self.st.min_se:
            core.respond(txn, req, 422, extra=[("Min-SE", str(self.st.min_se))])
            return
        ident = self.authorize(core, req, peer, txn, core.now)
        if ident is None:
            return
        call = Call(id=secrets.token_hex(8), created=core.now, caller=ident.name)
        leg = Leg(call=call, name="a", is_uas=True, peer=peer, invite=req, invite_txn=txn)
        call.a = leg
        local_tag = new_tag()
        leg.dialog = Dialog.as_uas(req, local_tag, peer)
        self.calls[call.id] = call
        self.legs[(req.call_id, local_tag)] = leg
        txn.user_data = leg
        core.respond(txn, req, 100)
        try:
            user = req.parsed_uri.user or ""
        except ValueError:
            user = ""
        call.callee = user
        log.info("call %s: INVITE from %s (%s) for %s", call.id, ident.name, ident.kind, req.uri)
        try:
            from_user = req.from_addr.uri.user or ""
        except ValueError:
            from_user = ""
        core.emit(IncomingCall(call, ident.name, ident.kind, req.uri, user, req.body,
                               _safe_user(from_user)))

    def reject(self, call: Call, status: int = 404, reason: str = "") -> None:
        """Routing said no: fail the inbound INVITE."""
        a = call.a
        if a.state in ("calling", "early") and isinstance(a.invite_txn, ServerTransaction):
            assert a.invite is not None and a.dialog is not None
            self.core.respond(a.invite_txn, a.invite, status, reason, to_tag=a.dialog.local_tag)
        self._end(call, reason or f"rejected {status}", "gateway", status)

    def connect(self, call: Call, target_uri: str, peer: Peer | None = None,
                from_user: str | None = None) -> Leg:
        """Routing said yes: place the outbound leg of an inbound call."""
        a = call.a
        assert a.invite is not None
        call.routed = True
        b = self._make_uac_leg(call, target_uri, peer, from_user or call.caller, a.invite.body,
                               a.invite.content_type or "application/sdp")
        call.b = b
        return b

    def originate(self, target_uri: str, peer: Peer | None, from_user: str,
                  sdp: bytes = b"") -> Call:
        """A call the gateway starts itself (towards a kiosk); the app owns the other side."""
        call = Call(id=secrets.token_hex(8), created=self.core.now, caller=from_user)
        self.calls[call.id] = call
        call.a = self._make_uac_leg(call, target_uri, peer, from_user, sdp, "application/sdp")
        call.a.name = "a"
        return call

    def _make_uac_leg(self, call: Call, target_uri: str, peer: Peer | None, from_user: str,
                      body: bytes, ctype: str) -> Leg:
        core = self.core
        if peer is None:
            peer = peer_for_uri(target_uri)
        host, port = core.local_address(peer[0])
        req = Request("INVITE", target_uri)
        call_id = f"{secrets.token_hex(10)}@{host}"
        items = req.headers.items
        items.append(("Max-Forwards", "70"))
        items.append(("From", f"<sip:{from_user}@{_hostport(host, port)}>;tag={new_tag()}"))
        items.append(("To", f"<{target_uri}>"))
        items.append(("Call-ID", call_id))
        items.append(("CSeq", f"{secrets.randbelow(2**15) + 1} INVITE"))
        items.append(("Contact", core.contact(peer[0])))
        items.append(("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"))
        items.append(("Supported", "timer"))
        items.append(("Session-Expires", str(self.st.session_expires)))
        items.append(("Min-SE", str(self.st.min_se)))
        items.append(("User-Agent", core.config.user_agent))
        if body:
            items.append(("Content-Type", ctype))
            req.body = body
        leg = Leg(call=call, name="b", is_uas=False, peer=peer, invite=req, local_sdp=body)
        self._send_invite(leg, req)
        leg.ring_timer = core.call_later(self.ring_timeout, lambda now: self._ring_timeout(leg))
        return leg

    def _ring_timeout(self, leg: Leg) -> None:
        """Nobody answered in time: CANCEL the callee, 480 to the caller."""
        if leg.state not in ("calling", "early") or not leg.call.active:
            return
        log.info("call %s: no answer within %.0f s", leg.call.id, self.ring_timeout)
        self._send_cancel(leg)
        other = leg.other()
        if other is not None and other.is_uas and other.state in ("calling", "early"):
            self._fail_uas(other, 480, "No Answer")
        self._end(leg.call, "no answer", "timeout", 480)

    def _send_invite(self, leg: Leg, req: Request) -> None:
        leg.invite = req
        leg.invite_attempts += 1
        self.legs[(req.call_id, req.from_tag or "")] = leg
        leg.invite_txn = self.core.send_request(
            req, leg.peer,
            lambda resp, t: self._uac_invite_response(leg, resp, t),
            lambda t: self._uac_invite_timeout(leg),
        )

    # ------------------------------------------------------------------ UAC leg
    def _uac_invite_response(self, leg: Leg, resp: Response, txn: ClientTransaction) -> None:
        code = resp.status
        call = leg.call
        if code == 100:
            return
        if code < 200:
            leg.got_provisional = True
            if leg.cancel_pending:
                self._send_cancel(leg)
                return
            if resp.to_tag and leg.dialog is None:
                assert leg.invite is not None
                leg.dialog = Dialog.as_uac(leg.invite, resp, leg.peer)
                leg.state = "early"
            other = leg.other()
            if other is not None and other.is_uas and other.state in ("calling", "early"):
                self._relay_provisional(other, resp)
            return
        if code < 300:
            self._uac_2xx(leg, resp)
            return
        # Failure.
        if code == 422 and leg.invite_attempts < 3 and leg.invite is not None:
            min_se = resp.headers.get("Min-SE")
            if min_se and min_se.split(";")[0].strip().isdigit():
                self._retry_invite_with_se(leg, int(min_se.split(";")[0].strip()))
                return
        leg.state = "ended"
        other = leg.other()
        if other is not None and other.is_uas and other.state in ("calling", "early"):
            self._fail_uas(other, _relay_status(code), resp.reason)
        self._end(call, f"{code} {resp.reason}".strip(), "callee", code)

    def _retry_invite_with_se(self, leg: Leg, min_se: int) -> None:
        """RFC 4028 section 7.4: retry a 422'd INVITE with the larger interval."""
        old = leg.invite
        assert old is not None
        req = Request("INVITE", old.uri, old.headers.copy(), old.body)
        req.headers.remove("Via")
        seq = old.cseq.sequence + 1
        req.headers.set("CSeq", f"{seq} INVITE")
        req.headers.set("Session-Expires", str(max(min_se, self.st.session_expires)))
        req.headers.set("Min-SE", str(min_se))
        self._send_invite(leg, req)

    def _uac_2xx(self, leg: Leg, resp: Response) -> None:
        core = self.core
        call = leg.call
        assert leg.invite is not None
        if leg.dialog is None or leg.state in ("calling", "early"):
            if leg.dialog is None or leg.dialog.remote_tag != (resp.to_tag or ""):
                leg.dialog = Dialog.as_uac(leg.invite, resp, leg.peer)
            leg.dialog.update_target(resp)
            leg.dialog.route_set = list(reversed(resp.headers.get_list("Record-Route")))
            self.legs[(leg.dialog.call_id, leg.dialog.local_tag)] = leg
            leg.state = "answered"
            if leg.ring_timer is not None:
                leg.ring_timer.cancel()
            self._setup_session_timer_uac(leg, resp)
            if not call.active or leg.cancel_pending:
                # 200 crossed our CANCEL (or the call died): ACK then BYE (15, 9.1).
                self._send_ack(leg, b"")
                self._send_bye(leg, "cancelled")
                return
            other = leg.other()
            if other is None:
                # Originated call: nobody to wait for.
                self._send_ack(leg, b"")
                leg.state = "confirmed"
                call.answered = core.now
                core.emit(CallAnswered(call))
                return
            if other.is_uas and other.state in ("calling", "early"):
                self._answer_uas(other, resp)
            return
        # A retransmitted 2xx (or another fork).
        if leg.dialog is not None and leg.dialog.remote_tag == (resp.to_tag or ""):
            if leg.ack is not None:
                core.send_stateless(leg.dialog.next_peer(leg.peer), leg.ack)
        else:
            fork = Dialog.as_uac(leg.invite, resp, leg.peer)
            tmp = Leg(call=call, name="fork", is_uas=False, peer=leg.peer, dialog=fork)
            self._send_ack(tmp, b"")
            self._send_bye(tmp, "fork")

    def _send_ack(self, leg: Leg, body: bytes) -> None:
        assert leg.invite is not None
        leg.ack = self._ack_2xx(leg, leg.invite.cseq.sequence, body)

    def _ack_2xx(self, leg: Leg, cseq: int, body: bytes = b"") -> bytes:
        """ACK a 2xx to an INVITE or re-INVITE of the leg's dialog (13.2.2.4): its own
        branch, sent outside any transaction; returns the bytes for re-ACKing."""
        d = leg.dialog
        assert d is not None
        ack = d.request("ACK", body=body, cseq=cseq)
        peer = d.next_peer(leg.peer)
        self.core.add_via(ack, peer[0], new_branch())
        data = ack.to_bytes()
        self.core.send_stateless(peer, data)
        return data

    def _uac_invite_timeout(self, leg: Leg) -> None:
        if leg.state in ("calling", "early"):
            leg.state = "ended"
            other = leg.other()
            if other is not None and other.is_uas and other.state in ("calling", "early"):
                self._fail_uas(other, 408, "Request Timeout")
            self._end(leg.call, "no answer from the far end", "timeout", 408)

    def _send_cancel(self, leg: Leg) -> None:
        """9.1: same Request-URI, Call-ID, From, To, CSeq number and Via branch."""
        inv = leg.invite
        txn = leg.invite_txn
        if inv is None or not isinstance(txn, ClientTransaction):
            return
        leg.cancel_pending = True
        if not leg.got_provisional or leg.cancel_sent:
            return  # sent when the first provisional arrives, and only once
        leg.cancel_sent = True
        cancel = Request("CANCEL", inv.uri)
        items = cancel.headers.items
        items.append(("Via", inv.vias[0]))
        for k, v in inv.headers.items:
            if k in ("From", "To", "Call-ID", "Route", "Max-Forwards"):
                items.append((k, v))
        items.append(("CSeq", f"{inv.cseq.sequence} CANCEL"))
        txns = self.core.transactions
        ctxn = txns.send_request(cancel, txn.peer, self.core.now)
        self.core._client_cb[ctxn] = (lambda r, t: None, None)
        # If the callee never answers the INVITE after our CANCEL, forget it (9.1).
        txn.abandon_after(64 * self.core.config.timers.t1)

    # ------------------------------------------------------------------ UAS leg
    def _relay_provisional(self, uas: Leg, resp: Response) -> None:
        assert uas.invite is not None and uas.dialog is not None
        txn = uas.invite_txn
        assert isinstance(txn, ServerTransaction)
        extra = [("Contact", self.core.contact(uas.peer[0]))]
        body = resp.body
        if body:
            extra.append(("Content-Type", resp.content_type or "application/sdp"))
        self.core.respond(txn, uas.invite, resp.status, resp.reason,
                          to_tag=uas.dialog.local_tag, extra=extra, body=body)
        uas.state = "early"

    def _answer_uas(self, uas: Leg, b_resp: Response) -> None:
        core = self.core
        assert uas.invite is not None and uas.dialog is not None
        txn = uas.invite_txn
        assert isinstance(txn, ServerTransaction)
        extra = [("Contact", core.contact(uas.peer[0])),
                 ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"),
                 ("Supported", "timer")]
        extra.extend(self._setup_session_timer_uas(uas, uas.invite))
        body = b_resp.body
        if body:
            extra.append(("Content-Type", b_resp.content_type or "application/sdp"))
        resp = make_response(uas.invite, 200, "OK", to_tag=uas.dialog.local_tag,
                             extra=extra, body=body)
        uas.local_sdp = body
        txn.respond(resp)
        uas.state = "answered"
        uas.pending_2xx = resp.to_bytes()
        uas.pending_2xx_cseq = uas.invite.cseq.sequence
        self._start_2xx_retransmit(uas)

    def _start_2xx_retransmit(self, uas: Leg) -> None:
        t = self.core.config.timers
        uas.retrans_interval = t.t1
        uas.retrans_started = self.core.now
        if uas.peer[0] == "udp":
            uas.retrans_timer = self.core.call_later(t.t1, lambda now: self._retransmit_2xx(uas))
        else:
            uas.retrans_timer = self.core.call_later(64 * t.t1,
                                                     lambda now: self._retransmit_2xx(uas))

    def _retransmit_2xx(self, uas: Leg) -> None:
        """13.3.1.4: resend the 2xx until the ACK, give up after 64*T1 and hang up."""
        core = self.core
        t = core.config.timers
        if uas.pending_2xx is None:
            return
        if core.now - uas.retrans_started >= 64 * t.t1:
            uas.pending_2xx = None
            log.warning("call %s: no ACK for our 200; ending the call", uas.call.id)
            uas.state = "confirmed"  # a dialog exists: end it with BYE (13.3.1.4)
            self._hangup_leg(uas, "no ACK")
            other = uas.other()
            if other is not None:
                self._hangup_leg(other, "no ACK on the other leg")
            self._end(uas.call, "no ACK", "gateway")
            return
        core.send_stateless(uas.peer, uas.pending_2xx)
        uas.retrans_interval = min(uas.retrans_interval * 2, t.t2)
        uas.retrans_timer = core.call_later(uas.retrans_interval,
                                            lambda now: self._retransmit_2xx(uas))

    def _fail_uas(self, uas: Leg, status: int, reason: str = "") -> None:
        txn = uas.invite_txn
        if isinstance(txn, ServerTransaction) and uas.invite is not None and uas.dialog:
            self.core.respond(txn, uas.invite, status, reason, to_tag=uas.dialog.local_tag)
        uas.state = "ended"

    def _on_ack(self, req: Request) -> None:
        leg = self.legs.get((req.call_id, req.to_tag or ""))
        if leg is None or not leg.is_uas:
            return
        if leg.pending_2xx is not None and req.cseq.sequence == leg.pending_2xx_cseq:
            leg.pending_2xx = None
            if leg.retrans_timer is not None:
                leg.retrans_timer.cancel()
            if leg.state == "answered":
                leg.state = "confirmed"
                call = leg.call
                other = leg.other()
                if other is not None and other.state == "answered" and other.dialog:
                    self._send_ack(other, req.body)
                    other.state = "confirmed"
                call.answered = self.core.now
                log.info("call %s: connected", call.id)
                self.core.emit(CallAnswered(call))
            elif req.body:
                # ACK to a relayed re-INVITE that carried its offer in the 200.
                other = leg.other()
                if other is not None and other.ack is None and other.dialog:
                    self._send_ack(other, req.body)

    def _on_cancel(self, req: Request, txn: ServerTransaction) -> None:
        core = self.core
        inv_txn = core.transactions.find_invite_for_cancel(req)
        if inv_txn is None:
            core.respond(txn, req, 481)
            return
        core.respond(txn, req, 200)
        leg = inv_txn.user_data
        if not isinstance(leg, Leg):
            if inv_txn.last_response is None or inv_txn.last_response.status < 200:
                core.respond(inv_txn, inv_txn.request, 487)
            return
        if leg.state not in ("calling", "early"):
            return  # already answered: CANCEL has no effect (9.2)
        self._fail_uas(leg, 487, "Request Terminated")
        other = leg.other()
        if other is not None and other.state in ("calling", "early"):
            self._send_cancel(other)
        self._end(leg.call, "cancelled by the caller", "caller", 487)

    # ------------------------------------------------------------------ in dialog
    def _in_dialog(self, leg: Leg, req: Request, txn: ServerTransaction) -> None:
        core = self.core
        d = leg.dialog
        assert d is not None
        if not d.check_remote_cseq(req):
            core.respond(txn, req, 500, "Out of order CSeq")
            return
        method = req.method
        if method == "BYE":
            core.respond(txn, req, 200)
            was_early = leg.state in ("calling", "early")
            leg.state = "ended"
            self._cancel_leg_timers(leg)
            other = leg.other()
            if other is not None:
                if other.state in ("calling", "early") and not other.is_uas:
                    self._send_cancel(other)
                elif other.is_uas and other.state in ("calling", "early"):
                    self._fail_uas(other, 487)
                else:
                    self._hangup_leg(other, "peer hung up")
            who = "caller" if leg.name == "a" else "callee"
            if was_early:
                who = "callee"
            self._end(leg.call, f"BYE from the {who}", who)
            return
        if method == "INFO":
            self._on_info(leg, req, txn)
            return
        # re-INVITE or UPDATE: relay the offer/answer to the other leg.
        if leg.reinvite_out is not None or (method == "INVITE" and leg.reinvite_in is not None):
            core.respond(txn, req, 491)
            return
        if method == "INVITE" and req.body and req.content_type != "application/sdp":
            core.respond(txn, req, 415, extra=[("Accept", "application/sdp")])
            return
        d.update_target(req)
        self._refresh_session_timer_from_request(leg, req)
        other = leg.other()
        if method == "INVITE":
            core.respond(txn, req, 100)
        if other is None or other.dialog is None or other.state != "confirmed":
            extra = self._session_timer_headers(leg, req)
            extra.append(("Contact", core.contact(leg.peer[0])))
            body = leg.local_sdp if method == "INVITE" else b""
            if body:
                extra.append(("Content-Type", "application/sdp"))
            core.respond(txn, req, 200, to_tag=d.local_tag, extra=extra, body=body)
            if method == "INVITE":
                self._track_reinvite_2xx(leg, req)
            return
        if method == "INVITE":
            leg.reinvite_in = txn
        self._relay_offer(leg, other, req, txn)

    def _relay_offer(self, src: Leg, dst: Leg, req: Request, txn: ServerTransaction) -> None:
        core = self.core
        assert dst.dialog is not None
        method = req.method
        fwd = dst.dialog.request(method, body=req.body,
                                 content_type=req.content_type or "application/sdp",
                                 extra=[("Contact", core.contact(dst.peer[0])),
                                        ("Supported", "timer")]
                                 + self._refresh_headers(dst))
        if req.body:
            dst.local_sdp = req.body

        def on_response(resp: Response, t: ClientTransaction) -> None:
            if resp.status < 200:
                return
            if method == "INVITE":
                dst.reinvite_out = None
                if resp.status < 300:
                    # ACK now if the offer was ours to make; else wait for src's ACK.
                    assert dst.dialog is not None
                    dst.dialog.update_target(resp)
                    self._ack_2xx(dst, fwd.cseq.sequence)
            if 200 <= resp.status < 300:
                self._session_refreshed(dst, resp)
            self._answer_relayed(src, req, txn, resp)

        def on_timeout(t: ClientTransaction) -> None:
            if method == "INVITE":
                dst.reinvite_out = None
            self._answer_relayed(src, req, txn, None)

        ctxn = core.send_request(fwd, dst.dialog.next_peer(dst.peer), on_response, on_timeout)
        if method == "INVITE":
            dst.reinvite_out = ctxn

    def _answer_relayed(self, src: Leg, req: Request, txn: ServerTransaction,
                        resp: Response | None) -> None:
        core = self.core
        assert src.dialog is not None
        if req.method == "INVITE":
            src.reinvite_in = None
        if resp is None:
            core.respond(txn, req, 408, to_tag=src.dialog.local_tag)
            return
        status = resp.status
        if status == 491:
            core.respond(txn, req, 491, to_tag=src.dialog.local_tag)
            return
        if status >= 300:
            core.respond(txn, req, _relay_status(status), resp.reason,
                         to_tag=src.dialog.local_tag)
            return
        extra = self._session_timer_headers(src, req)
        extra.append(("Contact", core.contact(src.peer[0])))
        if resp.body:
            extra.append(("Content-Type", resp.content_type or "application/sdp"))
            src.local_sdp = resp.body
        core.respond(txn, req, 200, to_tag=src.dialog.local_tag, extra=extra, body=resp.body)
        if req.method == "INVITE":
            self._track_reinvite_2xx(src, req)

    def _track_reinvite_2xx(self, leg: Leg, req: Request) -> None:
        txn = self.core.transactions.find_server(req)
        if txn is None or txn.last_response is None:
            return
        leg.pending_2xx = txn.last_response.to_bytes()
        leg.pending_2xx_cseq = req.cseq.sequence
        state = leg.state
        self._start_2xx_retransmit(leg)
        leg.state = state

    def reinvite(self, leg: Leg, sdp: bytes | None = None) -> None:
        """Send a re-INVITE on a leg (a session refresh or a new offer), with glare
        handling (14.1): on 491, retry after a random back-off."""
        core = self.core
        d = leg.dialog
        if d is None or leg.state != "confirmed" or not leg.call.active:
            return
        if leg.reinvite_out is not None or leg.reinvite_in is not None:
            return
        body = leg.local_sdp if sdp is None else sdp
        if sdp is not None:
            leg.local_sdp = sdp
        req = d.request("INVITE", body=body,
                        extra=[("Contact", core.contact(leg.peer[0])), ("Supported", "timer")]
                        + self._refresh_headers(leg))

        def on_response(resp: Response, t: ClientTransaction) -> None:
            if resp.status < 200:
                return
            leg.reinvite_out = None
            if resp.status < 300:
                assert leg.dialog is not None
                leg.dialog.update_target(resp)
                self._ack_2xx(leg, req.cseq.sequence)
                self._session_refreshed(leg, resp)
            elif resp.status == 491:
                delay = self.glare_delay(leg)
                log.info("call %s: re-INVITE glare on leg %s; retry in %.2fs", leg.call.id,
                         leg.name, delay)
                leg.glare_timer = core.call_later(delay, lambda now: self.reinvite(leg, sdp))
            elif resp.status in (408, 481):
                self._hangup_leg(leg, "re-INVITE failed")
                other = leg.other()
                if other is not None:
                    self._hangup_leg(other, "other leg lost")
                self._end(leg.call, f"re-INVITE {resp.status}", "gateway", resp.status)

        leg.reinvite_out = core.send_request(req, d.next_peer(leg.peer), on_response,
                                             lambda t: on_response(Response(408), t))

    def glare_delay(self, leg: Leg) -> float:
        """14.1: the Call-ID owner waits 2.1-4 s, the other side 0-2 s, in 10 ms units."""
        assert leg.dialog is not None
        if leg.dialog.is_uac:
            return random.randint(210, 400) / 100
        return random.randint(0, 200) / 100

    def _on_info(self, leg: Leg, req: Request, txn: ServerTransaction) -> None:
        core = self.core
        ctype = req.content_type
        call = leg.call
        body = req.body.decode("utf-8", "replace")
        if ctype == "application/dtmf-relay":
            m = re.search(r"Signal\s*=\s*([0-9A-Da-d*#])", body)
            dur = re.search(r"Duration\s*=\s*(\d+)", body)
            if m:
                core.emit(DtmfReceived(call, leg.name, m.group(1).upper(),
                                       int(dur.group(1)) if dur else 0))
        elif ctype == "application/dtmf":
            digit = body.strip()[:1]
            if digit:
                core.emit(DtmfReceived(call, leg.name, digit.upper(), 0))
        elif ctype == "application/media_control+xml":
            if "picture_fast_update" in body:
                core.emit(KeyframeRequested(call, leg.name))
        elif req.body:
            core.respond(txn, req, 415, extra=[
                ("Accept", "application/dtmf-relay, application/media_control+xml")])
            return
        core.respond(txn, req, 200)
        other = leg.other()
        if other is not None and other.dialog is not None and other.state == "confirmed":
            info = other.dialog.request("INFO", body=req.body, content_type=ctype)
            core.send_request(info, other.dialog.next_peer(other.peer), lambda r, t: None)

    # ------------------------------------------------------------------ session timers
    def _setup_session_timer_uas(self, leg: Leg, req: Request) -> list[tuple[str, str]]:
        se = _session_expires(req)
        uac_supports = "timer" in header_tokens(req, "Supported")
        if se is not None:
            interval, refresher = se
        else:
            interval, refresher = self.st.session_expires, None
        interval = max(interval, self.st.min_se)
        if refresher is None:
            refresher = "uac" if uac_supports else "uas"
        leg.se_interval = interval
        leg.we_refresh = refresher == "uas"
        self._arm_session_timer(leg)
        out = [("Session-Expires", f"{interval};refresher={refresher}")]
        if uac_supports:
            out.append(("Require", "timer"))
        return out

    def _setup_session_timer_uac(self, leg: Leg, resp: Response) -> None:
        se = _session_expires(resp)
        if se is None:
            # The far end does not do session timers: we refresh (RFC 4028 7.2).
            leg.se_interval = self.st.session_expires
            leg.we_refresh = True
        else:
            leg.se_interval = se[0]
            leg.we_refresh = se[1] != "uas"
        self._arm_session_timer(leg)

    def _refresh_session_timer_from_request(self, leg: Leg, req: Request) -> None:
        se = _session_expires(req)
        if se is not None:
            leg.se_interval = max(se[0], self.st.min_se)
            # The sender of a refresh is the refresher unless it says otherwise.
            refresher = se[1] or "uac"
            leg.we_refresh = refresher == "uas"
        if leg.se_interval:
            self._arm_session_timer(leg)

    def _session_timer_headers(self, leg: Leg, req: Request) -> list[tuple[str, str]]:
        if not leg.se_interval:
            return []
        refresher = "uas" if leg.we_refresh else "uac"
        out = [("Session-Expires", f"{leg.se_interval};refresher={refresher}")]
        if "timer" in header_tokens(req, "Supported"):
            out.append(("Require", "timer"))
        return out

    def _refresh_headers(self, leg: Leg) -> list[tuple[str, str]]:
        if not leg.se_interval:
            return []
        return [("Session-Expires", f"{leg.se_interval};refresher=uac"),
                ("Min-SE", str(self.st.min_se))]

    def _session_refreshed(self, leg: Leg, resp: Response) -> None:
        se = _session_expires(resp)
        if se is not None:
            leg.se_interval = se[0]
            leg.we_refresh = se[1] != "uas"
        if leg.se_interval:
            self._arm_session_timer(leg)

    def _arm_session_timer(self, leg: Leg) -> None:
        if leg.se_timer is not None:
            leg.se_timer.cancel()
        interval = leg.se_interval
        if not interval:
            return
        if leg.we_refresh:
            leg.se_timer = self.core.call_later(interval / 2, lambda now: self._refresh(leg))
        else:
            # 10.2: expire at SE minus a third (at most 32 s) without a refresh.
            grace = min(32.0, interval / 3)
            leg.se_timer = self.core.call_later(interval - grace,
                                                lambda now: self._session_expired(leg))

    def _refresh(self, leg: Leg) -> None:
        if not leg.call.active or leg.state != "confirmed":
            return
        self.reinvite(leg)
        # If the refresh is delayed (glare), the non-refresher may time out; re-arm.
        self._arm_session_timer(leg)

    def _session_expired(self, leg: Leg) -> None:
        if not leg.call.active:
            return
        log.warning("call %s: session timer expired on leg %s", leg.call.id, leg.name)
        self._hangup_leg(leg, "session timer expired")
        other = leg.other()
        if other is not None:
            self._hangup_leg(other, "session timer expired on the other leg")
        self._end(leg.call, "session timer expired", "timeout", 408)

    # ------------------------------------------------------------------ teardown
    def hangup(self, call: Call, reason: str = "ended by the gateway") -> None:
        """End a call from the application (the visit's end time, staff action)."""
        for leg in (call.a, call.b):
            if leg is None:
                continue
            if leg.is_uas and leg.state in ("calling", "early"):
                self._fail_uas(leg, 480, "Temporarily Unavailable")
            elif not leg.is_uas and leg.state in ("calling", "early"):
                self._send_cancel(leg)
            else:
                self._hangup_leg(leg, reason)
        self._end(call, reason, "gateway")

    def _hangup_leg(self, leg: Leg, reason: str) -> None:
        if leg.state in ("answered", "confirmed") and leg.dialog is not None:
            if not leg.is_uas and leg.state == "answered" and leg.ack is None:
                # Its 2xx is still waiting for the other leg's ACK: every 2xx is ACKed
                # (13.2.2.4) before the BYE, or the callee keeps resending it.
                self._send_ack(leg, b"")
            self._send_bye(leg, reason)
        leg.state = "ended"
        self._cancel_leg_timers(leg)

    def _send_bye(self, leg: Leg, reason: str) -> None:
        d = leg.dialog
        assert d is not None
        bye = d.request("BYE", extra=[("Reason", f'SIP;cause=200;text="{reason}"')])
        self.core.send_request(bye, d.next_peer(leg.peer), lambda r, t: None)
        leg.state = "ended"
        self._cancel_leg_timers(leg)

    def _cancel_leg_timers(self, leg: Leg) -> None:
        for t in (leg.retrans_timer, leg.glare_timer, leg.se_timer, leg.ring_timer):
            if t is not None:
                t.cancel()
        # Cancelled: nothing needs them (and the call lingers for 64*T1 after its end).
        leg.retrans_timer = leg.glare_timer = leg.se_timer = leg.ring_timer = None
        leg.pending_2xx = None

    def _end(self, call: Call, reason: str, ended_by: str, status: int | None = None) -> None:
        if call.ended is not None:
            return
        call.ended = self.core.now
        call.end_reason = reason
        for leg in (call.a, call.b):
            if leg is not None:
                self._cancel_leg_timers(leg)
        log.info("call %s: ended (%s, by %s)", call.id, reason, ended_by)
        self.core.emit(CallEnded(call, reason, ended_by, status))
        # Keep the legs reachable for late ACK/BYE retransmissions, then forget them.
        self.core.call_later(64 * self.core.config.timers.t1, lambda now: self._forget(call))

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        for leg in (call.a, call.b):
            if leg is None:
                continue
            # Only the keys a leg is filed under (its dialog's; a UAC leg's INVITE Call-ID
            # and From tag): scanning every leg made each call's end O(live calls).
            for key in _leg_keys(leg):
                if self.legs.get(key) is leg:
                    del self.legs[key]
            _break_cycles(call, leg)


def _break_cycles(call: Call, leg: Leg) -> None:
    """Let a forgotten call be freed by reference counting.

    Call <-> Leg, Leg <-> its INVITE server transaction (user_data) and Leg -> Timer ->
    callback -> Leg are reference cycles: left alone, every call waits for a full
    garbage collection, whose pauses grow with the number of calls in memory (hundreds
    of milliseconds at a few hundred calls/s).  Whoever still holds the Call (an event
    handler) sees no difference: leg.call becomes a weak proxy to it.
    """
    leg.retrans_timer = leg.glare_timer = leg.se_timer = leg.ring_timer = None
    txn = leg.invite_txn
    if isinstance(txn, ServerTransaction) and txn.user_data is leg and (
            txn.state is State.TERMINATED):
        txn.user_data = None
    leg.call = weakref.proxy(call)


def _leg_keys(leg: Leg) -> list[tuple[str, str]]:
    """The (Call-ID, our tag) keys CallLayer.legs may hold for a leg."""
    keys = []
    if leg.dialog is not None:
        keys.append((leg.dialog.call_id, leg.dialog.local_tag))
    if not leg.is_uas and leg.invite is not None:
        keys.append((leg.invite.call_id, leg.invite.from_tag or ""))
    return keys


def _session_expires(msg: Request | Response) -> tuple[int, str | None] | None:
    v = msg.headers.get("Session-Expires")
    if v is None:
        return None
    parts = [p.strip() for p in v.split(";")]
    if not parts[0].isdigit():
        return None
    refresher = None
    for p in parts[1:]:
        k, _, val = p.partition("=")
        if k.strip().lower() == "refresher":
            refresher = val.strip().lower() or None
    return int(parts[0]), refresher


def _relay_status(code: int) -> int:
    """Statuses that describe our hop, not the callee, are not relayed as they are."""
    if code in (401, 407, 422, 423, 481, 491):
        return 500 if code != 481 else 404
    if 300 <= code < 400:
        return 480
    return code


def _hostport(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


_USER_SAFE = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,64}$")


def _safe_user(user: str) -> str:
    """A caller's user part we are willing to copy into our own From header."""
    return user if _USER_SAFE.match(user) else ""
