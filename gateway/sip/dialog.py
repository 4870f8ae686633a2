"""SIP dialogs (RFC 3261 section 12): identifiers, route sets, CSeq, in-dialog requests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from sipmessage import URI

from .message import Request, Response
from .transaction import Peer


def new_tag() -> str:
    return secrets.token_hex(6)


def _uri_of(name_addr: str) -> str:
    v = name_addr.strip()
    if "<" in v:
        return v[v.index("<") + 1 : v.index(">")]
    return v.split(";", 1)[0].strip()


def peer_for_uri(uri: str, default_transport: str = "udp") -> Peer:
    """Where to send a request for a SIP URI (numeric hosts; no DNS on this path)."""
    parsed = URI.parse(uri)
    transport = (parsed.parameters.get("transport") or "").lower()
    if parsed.scheme == "sips":
        transport = "tls"
    transport = transport or default_transport
    port = parsed.port or (5061 if transport == "tls" else 5060)
    host = parsed.parameters.get("maddr") or parsed.host
    return (transport, host.strip("[]"), port)


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # From (UAC) / To (UAS) header value without tag
    remote_uri: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int | None = None
    peer: Peer = ("udp", "", 0)
    is_uac: bool = True

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(cls, req: Request, local_tag: str, peer: Peer) -> Dialog:
        """12.1.1: the dialog a UAS forms by answering a request."""
        contacts = req.headers.get_list("Contact")
        target = _uri_of(contacts[0]) if contacts else str(req.uri)
        return cls(
            call_id=req.call_id,
            local_tag=local_tag,
            remote_tag=req.from_tag or "",
            local_uri=_strip_tag(req.headers.get("To") or ""),
            remote_uri=_strip_tag(req.headers.get("From") or ""),
            remote_target=target,
            route_set=req.headers.get_list("Record-Route"),
            local_cseq=secrets.randbelow(2**15) + 1,
            remote_cseq=req.cseq.sequence,
            peer=peer,
            is_uac=False,
        )

    @classmethod
    def as_uac(cls, req: Request, resp: Response, peer: Peer) -> Dialog:
        """12.1.2: the dialog a UAC forms from a 2xx or 1xx with a To tag."""
        contacts = resp.headers.get_list("Contact")
        target = _uri_of(contacts[0]) if contacts else req.uri
        routes = list(reversed(resp.headers.get_list("Record-Route")))
        return cls(
            call_id=req.call_id,
            local_tag=req.from_tag or "",
            remote_tag=resp.to_tag or "",
            local_uri=_strip_tag(req.headers.get("From") or ""),
            remote_uri=_strip_tag(resp.headers.get("To") or ""),
            remote_target=target,
            route_set=routes,
            local_cseq=req.cseq.sequence,
            peer=peer,
            is_uac=True,
        )

    def update_target(self, msg: Request | Response) -> None:
        """Target refresh (12.2): a re-INVITE/UPDATE or its 2xx may move the contact."""
        contacts = msg.headers.get_list("Contact")
        if contacts:
            self.remote_target = _uri_of(contacts[0])

    def next_peer(self, default: Peer) -> Peer:
        """Where in-dialog requests go: the first route, else the remote target, else
        the flow the dialog was made on (kiosks behind NAT)."""
        return self.peer if self.peer[1] else default

    def request(self, method: str, body: bytes = b"", content_type: str | None = None,
                extra: list[tuple[str, str]] | None = None, cseq: int | None = None) -> Request:
        """12.2.1.1: a request within the dialog (loose routing only)."""
        if cseq is None:
            if method not in ("ACK", "CANCEL"):
                self.local_cseq += 1
            cseq = self.local_cseq
        req = Request(method, self.remote_target)
        items = req.headers.items
        for r in self.route_set:
            items.append(("Route", r))
        items.append(("Max-Forwards", "70"))
        items.append(("From", f"{self.local_uri};tag={self.local_tag}"))
        items.append(("To", f"{self.remote_uri};tag={self.remote_tag}"))
        items.append(("Call-ID", self.call_id))
        items.append(("CSeq", f"{cseq} {method}"))
        if extra:
            items.extend(extra)
        if body:
            items.append(("Content-Type", content_type or "application/sdp"))
        req.body = body
        return req

    def check_remote_cseq(self, req: Request) -> bool:
        """12.2.2: a lower CSeq than the last one seen is out of order (answer 500)."""
        seq = req.cseq.sequence
        if self.remote_cseq is not None and seq <= self.remote_cseq and req.method != "ACK":
            return False
        if req.method != "ACK":
            self.remote_cseq = seq
        return True


def _strip_tag(value: str) -> str:
    """The header value without its tag parameter (the one outside <...>)."""
    head, sep, tail = value.rpartition(">")
    if not sep:
        head, tail = "", value
    params = [p for p in tail.split(";") if p.split("=")[0].strip().lower() != "tag"]
    return head + sep + ";".join(params)
