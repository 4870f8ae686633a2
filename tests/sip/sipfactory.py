"""Builders of SIP test messages, as wire bytes parsed back into messages.

Requests are written out as text and parsed with ``parse_datagram`` so that the
transaction layer is driven by what would come off the wire.
"""

from __future__ import annotations

import itertools

from gateway.sip.message import Request, Response, make_response, parse_datagram
from gateway.sip.transaction import MAGIC_COOKIE

_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}"


def branch() -> str:
    return f"{MAGIC_COOKIE}{unique('t')}"


def via(host: str = "192.0.2.10", port: int | None = 5060, transport: str = "UDP",
        branch_value: str | None = None, extra: str = "") -> str:
    hostport = host if port is None else f"{host}:{port}"
    value = f"SIP/2.0/{transport} {hostport}"
    if branch_value is not None:
        value += f";branch={branch_value}"
    return value + extra


def request(
    method: str = "INVITE",
    *,
    uri: str = "sip:kiosk@198.51.100.7",
    top_via: str | None = None,
    branch_value: str | None = "new",
    cseq: int = 1,
    cseq_method: str | None = None,
    call_id: str | None = None,
    from_tag: str | None = "ft1",
    to_tag: str | None = None,
    route: str | None = None,
    body: bytes = b"",
) -> Request:
    """A request off the wire.  ``branch_value="new"`` makes a fresh RFC 3261 branch,
    None leaves the Via without one (an RFC 2543 peer)."""
    if top_via is None:
        b = branch() if branch_value == "new" else branch_value
        top_via = via(branch_value=b)
    call_id = call_id or f"{unique('call')}@test.invalid"
    from_hdr = "\"Family\" <sip:family@203.0.113.5>"
    if from_tag:
        from_hdr += f";tag={from_tag}"
    to_hdr = f"<{uri}>"
    if to_tag:
        to_hdr += f";tag={to_tag}"
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {top_via}",
        "Via: SIP/2.0/UDP 192.0.2.200:5060;branch=z9hG4bKproxy",
        "Max-Forwards: 70",
        f"From: {from_hdr}",
        f"To: {to_hdr}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
    ]
    if route:
        lines.append(f"Route: {route}")
    lines.append("Contact: <sip:family@203.0.113.5:5060>")
    lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    msg = parse_datagram(data)
    assert isinstance(msg, Request)
    return msg


def outgoing(method: str = "INVITE", *, transport: str = "UDP", route: str | None = None,
             cseq: int = 1, call_id: str | None = None, branch_value: str | None = None,
             ) -> Request:
    """A request our TU sends: one Via, ours, with a fresh branch."""
    b = branch_value or branch()
    top = via(host="192.0.2.1", port=5060, transport=transport, branch_value=b) + ";rport"
    lines = [
        f"{method} sip:visitor@198.51.100.7 SIP/2.0",
        f"Via: {top}",
        "Max-Forwards: 70",
        "From: <sip:gw@192.0.2.1>;tag=gwtag",
        "To: <sip:visitor@198.51.100.7>",
        f"Call-ID: {call_id or unique('out') + '@gw'}",
        f"CSeq: {cseq} {method}",
    ]
    if route:
        lines.append(f"Route: {route}")
    lines.append("Contact: <sip:gw@192.0.2.1:5060>")
    lines.append("Content-Length: 0")
    msg = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, to_tag: str | None = "tt1",
             cseq_method: str | None = None, top_via: str | None = None) -> Response:
    """The response a peer would send to ``req``, as parsed bytes."""
    resp = make_response(req, status, to_tag=to_tag)
    if cseq_method is not None:
        resp.headers.set("CSeq", f"{req.cseq.sequence} {cseq_method}")
    if top_via is not None:
        resp.headers.remove("Via")
        resp.headers.insert_first("Via", top_via)
    msg = parse_datagram(resp.to_bytes())
    assert isinstance(msg, Response)
    return msg


def local_response(req: Request, status: int, to_tag: str | None = "ourtag") -> Response:
    """A response our TU hands to a server transaction."""
    return make_response(req, status, to_tag=to_tag)


def ack_for(invite: Request, resp: Response, *, same_branch: bool = True,
            top_via: str | None = None) -> Request:
    """An ACK from the peer: for a non-2xx (same branch, 17.1.1.3) or, with
    ``same_branch=False``, for a 2xx (a new transaction, 13.2.2.4)."""
    if top_via is None:
        top_via = invite.vias[0]
        if not same_branch:
            top_via = via(branch_value=branch())
    lines = [
        f"ACK {invite.uri} SIP/2.0",
        f"Via: {top_via}",
        "Max-Forwards: 70",
        f"From: {invite.headers.get('From')}",
        f"To: {resp.headers.get('To')}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {invite.cseq.sequence} ACK",
        "Content-Length: 0",
    ]
    msg = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def cancel_for(invite: Request) -> Request:
    """A CANCEL for ``invite`` (9.1): same Request-URI, Call-ID, From, To, CSeq
    number and top Via."""
    lines = [
        f"CANCEL {invite.uri} SIP/2.0",
        f"Via: {invite.vias[0]}",
        "Max-Forwards: 70",
        f"From: {invite.headers.get('From')}",
        f"To: {invite.headers.get('To')}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {invite.cseq.sequence} CANCEL",
        "Content-Length: 0",
    ]
    msg = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg
