"""The SIP endpoint core: transport-layer checks, UAS request processing, dispatch (sans-IO).

Bytes and an injected ``now`` go in (``receive_datagram``, ``receive_stream``); bytes to
send (``messages_to_send``), application events (``next_event``) and the next deadline
(``get_timer`` / ``handle_timer``) come out.  The Twisted adapters in ``transport.py``
only move bytes and call ``handle_timer``.

Nothing raised while handling one message may escape: a bug triggered by one peer's
packet is logged, the message is answered 500 where possible, and every other peer goes
on being served.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .message import (
    Request,
    Response,
    SipParseError,
    make_response,
    parse_datagram,
    parse_via,
    replace_top_via,
    split_list,
    uri_scheme,
    validate_request,
)
from .transaction import (
    ClientTransaction,
    Peer,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimerConfig,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    new_branch,
)

log = logging.getLogger("gateway.sip")

KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "UPDATE", "INFO",
        "PRACK", "MESSAGE", "SUBSCRIBE", "NOTIFY", "REFER", "PUBLISH",
    }
)
ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "UPDATE", "INFO")
ALLOW = ", ".join(ALLOWED_METHODS)
SUPPORTED_EXTENSIONS = frozenset({"timer"})
SUPPORTED = "timer"
URI_SCHEMES = frozenset({"sip", "sips", "tel"})


@dataclass(frozen=True)
class CoreConfig:
    """What the core needs to know of its own transports and limits."""

    local: dict[str, tuple[str, int]]  # transport -> (public host, port)
    user_agent: str = "gateway"
    force_rport: bool = True
    max_message_bytes: int = 65535
    max_headers: int = 256
    udp_size_threshold: int = 1300
    timers: TimerConfig = field(default_factory=TimerConfig)


class Handler(Protocol):
    """Request handlers plugged into the core: the registrar and the call layer."""

    def handle_request(self, core: SipCore, req: Request, peer: Peer,
                       txn: ServerTransaction | None, now: float) -> bool: ...


@dataclass
class Timer:
    deadline: float
    callback: Callable[[float], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True
        # The heap entry stays until its deadline (a session timer's is ~30 min away);
        # drop the callback now so that it does not keep the whole call alive.
        self.callback = _noop


def _noop(now: float) -> None:
    return None


class SipCore:
    """One SIP endpoint: transactions, transport rules of RFC 3261 section 18, dispatch."""

    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.transactions = TransactionLayer(config.timers)
        self._events: deque[Any] = deque()
        self._out: list[tuple[Peer, bytes]] = []
        self._timers: list[tuple[float, int, Timer]] = []
        self._compact_at = 1024
        self._seq = itertools.count()
        self.now = 0.0
        # Handlers for new requests, tried in order; the first that returns True owns it.
        self.handlers: list[Handler] = []
        # Callbacks for client transactions: txn -> (on_response, on_timeout).
        self._client_cb: dict[ClientTransaction, tuple[
            Callable[[Response, ClientTransaction], None],
            Callable[[ClientTransaction], None] | None]] = {}
        self.stats = {"rx": 0, "tx": 0, "bad": 0, "dropped": 0, "errors": 0}
        # TCP peers we chose for a large request instead of UDP (18.1.1): if the TCP
        # connection cannot be made, the transport falls back to UDP.
        self.upgraded: dict[Peer, Peer] = {}

    # -- output --------------------------------------------------------------------
    def messages_to_send(self) -> list[tuple[Peer, bytes]]:
        out = self._out
        txn_out = self.transactions.messages_to_send()
        if txn_out:
            out.extend(txn_out)
        self._out = []
        self.stats["tx"] += len(out)
        return out

    def next_event(self) -> Any:
        return self._events.popleft() if self._events else None

    def emit(self, event: Any) -> None:
        self._events.append(event)

    def get_timer(self) -> float | None:
        heap = self._timers
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        own = heap[0][0] if heap else None
        txn = self.transactions.get_timer()
        if own is None:
            return txn
        if txn is None:
            return own
        return min(own, txn)

    def handle_timer(self, now: float) -> None:
        self.now = now
        self._guard(self.transactions.handle_timer, now)
        self._drain()
        heap = self._timers
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if not timer.cancelled:
                timer.cancelled = True
                self._guard(timer.callback, now)
        self._drain()

    def call_later(self, delay: float, callback: Callable[[float], None]) -> Timer:
        timer = Timer(self.now + delay, callback)
        heap = self._timers
        heapq.heappush(heap, (timer.deadline, next(self._seq), timer))
        if len(heap) > self._compact_at:
            # Cancelled timers wait in the heap until their deadline; drop them once
            # they could be the bulk of it (amortised O(1) per timer).
            heap[:] = [e for e in heap if not e[2].cancelled]
            heapq.heapify(heap)
            self._compact_at = max(1024, 2 * len(heap))
        return timer

    # -- input ---------------------------------------------------------------------
    def receive_datagram(self, data: bytes, peer: Peer, now: float) -> None:
        """One UDP datagram (RFC 3261 18.3: a datagram holds one message)."""
        self.now = now
        self.stats["rx"] += 1
        if len(data) > self.config.max_message_bytes:
            self.stats["dropped"] += 1
            return
        if not data.strip(b"\r\n\x00 "):
            return  # keep-alive (RFC 5626 4.4.1)
        try:
            msg = parse_datagram(data)
        except SipParseError as exc:
            self._reject(exc, peer)
            return
        except Exception:  # noqa: BLE001 - a parser bug must not take the gateway down
            log.exception("parser failed on a datagram from %s:%s", peer[1], peer[2])
            self.stats["errors"] += 1
            return
        self._guard(self._receive, msg, peer)

    def receive_message(self, msg: Request | Response | SipParseError, peer: Peer,
                        now: float) -> None:
        """One message framed from a stream (TCP/TLS) by the transport adapter."""
        self.now = now
        self.stats["rx"] += 1
        if isinstance(msg, SipParseError):
            self._reject(msg, peer)
            return
        self._guard(self._receive, msg, peer)

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001
            self.stats["errors"] += 1
            log.exception("internal error while handling SIP input")

    def _reject(self, exc: SipParseError, peer: Peer) -> None:
        self.stats["bad"] += 1
        req = exc.partial
        if exc.status is None or req is None or not req.vias:
            self.stats["dropped"] += 1
            log.info("dropped an unparseable message from %s:%s (%s)", peer[1], peer[2],
                     exc.reason)
            return
        log.info("answered %s to %s:%s: %s", exc.status, peer[1], peer[2], exc.reason)
        resp = make_response(req, exc.status, _reason(exc.status, exc.reason))
        self.send_response(resp, peer)

    def _receive(self, msg: Request | Response, peer: Peer) -> None:
        if isinstance(msg, Response):
            self._receive_response(msg)
            return
        if len(msg.headers.items) > self.config.max_headers:
            self._reject(SipParseError("too many headers", partial=msg), peer)
            return
        try:
            validate_request(msg)
        except SipParseError as exc:
            self._reject(exc, peer)
            return
        self._stamp_via(msg, peer)
        self.transactions.receive_request(msg, peer, self.now)
        self._drain()

    def _receive_response(self, resp: Response) -> None:
        # 18.1.2: a response must have exactly one Via, ours; anything else is dropped.
        vias = resp.vias
        if len(vias) != 1 or resp.status > 699:
            self.stats["dropped"] += 1
            return
        try:
            resp.cseq  # noqa: B018 - validates CSeq
        except SipParseError:
            self.stats["dropped"] += 1
            return
        if not self.transactions.receive_response(resp, self.now):
            self.stats["dropped"] += 1
        self._drain()

    def _stamp_via(self, req: Request, peer: Peer) -> None:
        """18.2.1: add received (and rport, RFC 3581) to the top Via."""
        top = req.vias[0]
        via = parse_via(top)
        params = via.parameters
        need_received = via.host.strip("[]") != peer[1]
        need_rport = "rport" in params and not params.get("rport")
        if not need_received and not need_rport:
            return
        new = top
        if need_rport:
            new = _set_param(new, "rport", str(peer[2]))
        if need_received:
            new = _set_param(new, "received", peer[1])
        replace_top_via(req, new)

    # -- dispatch ------------------------------------------------------------------
    def _drain(self) -> None:
        txns = self.transactions
        while True:
            ev = txns.next_event()
            if ev is None:
                return
            if isinstance(ev, RequestReceived):
                self._guard(self._on_request, ev.request, ev.peer, ev.transaction)
            elif isinstance(ev, ResponseReceived):
                cb = self._client_cb.get(ev.transaction)
                if cb is not None:
                    self._guard(cb[0], ev.response, ev.transaction)
            elif isinstance(ev, TransactionTimeout):
                t = ev.transaction
                if isinstance(t, ClientTransaction):
                    cb = self._client_cb.get(t)
                    if cb is not None and cb[1] is not None:
                        self._guard(cb[1], t)
            elif isinstance(ev, TransactionTerminated):
                t = ev.transaction
                if isinstance(t, ClientTransaction):
                    self._client_cb.pop(t, None)

    def _on_request(self, req: Request, peer: Peer, txn: ServerTransaction | None) -> None:
        method = req.method
        if txn is None:
            # ACK for a 2xx: only the call layer can place it.
            for h in self.handlers:
                if h.handle_request(self, req, peer, None, self.now):
                    return
            return
        scheme = uri_scheme(req.uri)
        if scheme not in URI_SCHEMES:
            self.respond(txn, req, 416)
            return
        if method not in KNOWN_METHODS:
            self.respond(txn, req, 501, extra=[("Allow", ALLOW)])
            return
        if method not in ALLOWED_METHODS:
            self.respond(txn, req, 405, extra=[("Allow", ALLOW)])
            return
        if method != "CANCEL":
            unsupported = [
                t for t in req.headers.get_list("Require") if t.lower() not in SUPPORTED_EXTENSIONS
            ]
            if unsupported:
                self.respond(txn, req, 420, extra=[("Unsupported", ", ".join(unsupported))])
                return
        for h in self.handlers:
            if h.handle_request(self, req, peer, txn, self.now):
                return
        if method == "OPTIONS":
            self.respond(txn, req, 200, to_tag=secrets.token_hex(6), extra=self.capabilities())
        elif method == "CANCEL":
            self.respond(txn, req, 481)
        elif req.to_tag:
            self.respond(txn, req, 481)
        else:
            self.respond(txn, req, 404)

    def capabilities(self) -> list[tuple[str, str]]:
        return [
            ("Allow", ALLOW),
            ("Accept", "application/sdp"),
            ("Supported", SUPPORTED),
            ("Server", self.config.user_agent),
        ]

    # -- sending -------------------------------------------------------------------
    def respond(self, txn: ServerTransaction, req: Request, status: int, reason: str = "",
                to_tag: str | None = None, extra: Iterable[tuple[str, str]] = (),
                body: bytes = b"") -> Response:
        resp = make_response(req, status, reason, to_tag=to_tag, extra=extra, body=body)
        txn.respond(resp, now=self.now)
        return resp

    def send_response(self, resp: Response, peer: Peer) -> None:
        """A response outside any transaction (a 400 to a bad request, a 2xx resend)."""
        self._out.append((self.response_peer(resp, peer), resp.to_bytes()))

    def response_peer(self, resp: Response, peer: Peer) -> Peer:
        """18.2.2 / RFC 3581: where a response goes.  maddr is never honoured: a
        gateway must not be usable to reflect traffic to a third party."""
        if peer[0] != "udp" or self.config.force_rport:
            return peer
        try:
            via = parse_via(resp.vias[0])
        except (SipParseError, IndexError):
            return peer
        params = via.parameters
        if "rport" in params:
            return peer
        return ("udp", peer[1], via.port or 5060)

    def send_request(self, req: Request, peer: Peer,
                     on_response: Callable[[Response, ClientTransaction], None],
                     on_timeout: Callable[[ClientTransaction], None] | None = None
                     ) -> ClientTransaction:
        """Send a request in a new client transaction; adds our Via."""
        peer = self._choose_transport(req, peer)
        self.add_via(req, peer[0])
        txn = self.transactions.send_request(req, peer, self.now)
        self._client_cb[txn] = (on_response, on_timeout)
        return txn

    def send_stateless(self, peer: Peer, data: bytes) -> None:
        self._out.append((peer, data))

    def add_via(self, req: Request, transport: str, branch: str | None = None) -> None:
        host, port = self.local_address(transport)
        branch = branch or new_branch()
        via = f"SIP/2.0/{transport.upper()} {host}:{port};branch={branch};rport"
        req.headers.insert_first("Via", via)

    def local_address(self, transport: str) -> tuple[str, int]:
        local = self.config.local
        if transport in local:
            return local[transport]
        return next(iter(local.values()))

    def contact(self, transport: str, user: str = "gw") -> str:
        host, port = self.local_address(transport)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{user}@{host}:{port}{suffix}>"

    def _choose_transport(self, req: Request, peer: Peer) -> Peer:
        """18.1.1: a request over the size threshold goes over TCP where possible."""
        if (
            peer[0] == "udp"
            and "tcp" in self.config.local
            and len(req.body) + 600 > self.config.udp_size_threshold
            and len(req.to_bytes()) + 80 > self.config.udp_size_threshold
        ):
            tcp = ("tcp", peer[1], peer[2])
            self.upgraded[tcp] = peer
            return tcp
        return peer


def _reason(status: int, detail: str) -> str:
    from .message import REASONS

    base = REASONS.get(status, "Error")
    if status == 400 and detail:
        return f"Bad Request ({detail})"
    return base


def _set_param(via: str, name: str, value: str) -> str:
    parts = via.split(";")
    out = [parts[0]]
    found = False
    for p in parts[1:]:
        k = p.split("=", 1)[0].strip().lower()
        if k == name:
            out.append(f"{name}={value}")
            found = True
        else:
            out.append(p)
    if not found:
        out.append(f"{name}={value}")
    return ";".join(out)


def header_tokens(req: Request, name: str) -> list[str]:
    return [t.strip().lower() for t in split_list(req.headers.get(name) or "")]
