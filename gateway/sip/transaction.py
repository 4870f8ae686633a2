"""SIP transaction layer (RFC 3261 section 17, as updated by RFC 6026), sans-IO.

Messages and an injected ``now`` go in; bytes to send (``messages_to_send``), events
for the transaction user (``next_event``) and the next deadline (``get_timer``) come
out.  Retransmissions happen only on unreliable transports.  2xx responses to INVITE
are retransmitted by the UA core, not here (RFC 6026 section 7.1): the server INVITE
transaction only sits in the Accepted state to absorb retransmitted INVITEs.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from sipmessage import Via

from .message import Request, Response, SipParseError, parse_via

Peer = tuple[str, str, int]
"""(transport, host, port): transport is "udp", "tcp" or "tls"."""

MAGIC_COOKIE = "z9hG4bK"


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def is_reliable(peer: Peer) -> bool:
    return peer[0] != "udp"


def _branch_of(via: Via) -> str:
    """The branch parameter; parameter names are case-insensitive (RFC 3261 7.3.1)."""
    params = via.parameters
    value = params.get("branch")
    if value is None:
        for k, v in params.items():
            if k.lower() == "branch":
                value = v
                break
    return value or ""


@dataclass(frozen=True)
class TimerConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    # Timer D (unreliable); RFC 3261 says "at least 32 s".
    d: float = 32.0


class State(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# Events for the transaction user ----------------------------------------------------


@dataclass
class RequestReceived:
    """A new request (not a retransmission); answer it with ``ServerTransaction.respond``."""

    request: Request
    peer: Peer
    transaction: ServerTransaction | None  # None for ACK (to a 2xx) that matched nothing


@dataclass
class ResponseReceived:
    response: Response
    transaction: ClientTransaction


@dataclass
class TransactionTimeout:
    """Timer B/F (client: no final answer) or H (server: no ACK for a non-2xx final)."""

    transaction: ClientTransaction | ServerTransaction


@dataclass
class TransactionTerminated:
    transaction: ClientTransaction | ServerTransaction


Event: TypeAlias = (
    RequestReceived | ResponseReceived | TransactionTimeout | TransactionTerminated
)


class _Base:
    layer: TransactionLayer
    peer: Peer
    state: State
    key: tuple[str, ...]

    def __init__(self, layer: TransactionLayer, peer: Peer, key: tuple[str, ...]) -> None:
        self.layer = layer
        self.peer = peer
        self.key = key
        self.reliable = is_reliable(peer)
        self._timer_gen = 0
        self._in_heap = 0  # this transaction's entries in the layer's timer heap
        self.user_data: object = None

    def _timer(self, name: str, delay: float) -> None:
        self.layer._schedule(self, name, delay)

    def _terminate(self) -> None:
        if self.state is State.TERMINATED:
            return
        self.state = State.TERMINATED
        self.layer._remove(self)
        self.layer._events.append(TransactionTerminated(self))  # type: ignore[arg-type]

    def _fire(self, name: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class ClientTransaction(_Base):
    """Client INVITE (17.1.1, with RFC 6026 Accepted) or non-INVITE (17.1.2) transaction."""

    def __init__(self, layer: TransactionLayer, request: Request, peer: Peer, branch: str) -> None:
        method = request.method
        super().__init__(layer, peer, (branch, method))
        self.request = request
        self.branch = branch
        self.method = method
        self.is_invite = method == "INVITE"
        self.data = request.to_bytes()
        self.last_response: Response | None = None
        self.ack: bytes | None = None
        t = layer.timers
        self._interval = t.t1
        self.state = State.CALLING if self.is_invite else State.TRYING
        layer._send(peer, self.data)
        if not self.reliable:
            self._timer("A" if self.is_invite else "E", t.t1)
        self._timer("B" if self.is_invite else "F", 64 * t.t1)

    def _fire(self, name: str) -> None:
        t = self.layer.timers
        st = self.state
        if name == "A" and st is State.CALLING:
            self.layer._send(self.peer, self.data)
            self._interval *= 2
            self._timer("A", self._interval)
        elif name == "E" and st in (State.TRYING, State.PROCEEDING):
            self.layer._send(self.peer, self.data)
            if st is State.TRYING:
                self._interval = min(self._interval * 2, t.t2)
            else:
                self._interval = t.t2
            self._timer("E", self._interval)
        elif (name == "B" and st is State.CALLING) or (
            name == "F" and st in (State.TRYING, State.PROCEEDING)
        ):
            self.layer._events.append(TransactionTimeout(self))
            self._terminate()
        elif name == "C" and st in (State.CALLING, State.PROCEEDING):
            # Our CANCEL got no final answer to the INVITE (9.1): give up on it.
            self.layer._events.append(TransactionTimeout(self))
            self._terminate()
        elif name in ("D", "K", "M"):
            self._terminate()

    def receive(self, resp: Response) -> None:
        code = resp.status
        st = self.state
        t = self.layer.timers
        if self.is_invite:
            if code < 200:
                if st in (State.CALLING, State.PROCEEDING):
                    self.state = State.PROCEEDING
                    self._pass(resp)
            elif code < 300:
                if st in (State.CALLING, State.PROCEEDING, State.ACCEPTED):
                    # Every 2xx goes up: the TU acknowledges each (retransmission or fork).
                    if st is not State.ACCEPTED:
                        self.state = State.ACCEPTED
                        self._timer("M", 64 * t.t1)
                    self._pass(resp)
            else:
                if st in (State.CALLING, State.PROCEEDING):
                    self.state = State.COMPLETED
                    self.ack = self._build_ack(resp).to_bytes()
                    self.layer._send(self.peer, self.ack)
                    self._pass(resp)
                    self._timer("D", 0 if self.reliable else t.d)
                elif st is State.COMPLETED and self.ack is not None:
                    self.layer._send(self.peer, self.ack)
        else:
            if code < 200:
                if st in (State.TRYING, State.PROCEEDING):
                    self.state = State.PROCEEDING
                    self._pass(resp)
            elif st in (State.TRYING, State.PROCEEDING):
                self.state = State.COMPLETED
                self._pass(resp)
                self._timer("K", 0 if self.reliable else t.t4)

    def abandon_after(self, delay: float) -> None:
        """After we CANCEL, the INVITE ends by itself if no final answer comes (9.1)."""
        self._timer("C", delay)

    def _pass(self, resp: Response) -> None:
        self.last_response = resp
        self.layer._events.append(ResponseReceived(resp, self))

    def _build_ack(self, resp: Response) -> Request:
        """ACK for a non-2xx final response (17.1.1.3): same branch, To from the response."""
        req = self.request
        ack = Request("ACK", req.uri)
        items = ack.headers.items
        items.append(("Via", req.vias[0]))
        for k, v in req.headers.items:
            if k in ("From", "Call-ID", "Route", "Max-Forwards"):
                items.append((k, v))
        items.append(("To", resp.headers.get("To") or req.headers.get("To") or ""))
        items.append(("CSeq", f"{req.cseq.sequence} ACK"))
        return ack

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.method} {self.branch} {self.state.value}>"


class ServerTransaction(_Base):
    """Server INVITE (17.2.1, with RFC 6026 Accepted) or non-INVITE (17.2.2) transaction."""

    def __init__(
        self, layer: TransactionLayer, request: Request, peer: Peer, key: tuple[str, ...]
    ) -> None:
        super().__init__(layer, peer, key)
        self.request = request
        self.method = request.method
        self.is_invite = request.method == "INVITE"
        self.last_response: Response | None = None
        self._last_bytes: bytes | None = None
        self.to_tag: str | None = None
        self._interval = layer.timers.t1
        self.state = State.PROCEEDING if self.is_invite else State.TRYING

    def respond(self, resp: Response, now: float | None = None) -> None:
        """Send a response from the TU through this transaction.

        ``now`` is the current time; pass it when the TU answers outside the handling
        of a SIP input or timer (otherwise timers G/H/J/L count from the last time the
        layer was given).
        """
        if now is not None:
            self.layer._now = now
        code = resp.status
        st = self.state
        t = self.layer.timers
        if st is State.ACCEPTED:
            if 200 <= code < 300:
                self._send(resp)  # a 2xx retransmission from the UA core (RFC 6026 8.7)
            return
        if st in (State.TERMINATED, State.CONFIRMED, State.COMPLETED):
            # After a final response anything more from the TU is discarded (17.2.1,
            # 17.2.2): a late provisional must not replace the final that timer G and
            # request retransmissions re-send, nor take a non-INVITE back to Proceeding.
            return
        self._send(resp)
        if code < 200:
            if not self.is_invite:
                self.state = State.PROCEEDING
            return
        if self.is_invite:
            if code < 300:
                self.state = State.ACCEPTED
                self._timer("L", 64 * t.t1)
            else:
                self.state = State.COMPLETED
                if not self.reliable:
                    self._timer("G", t.t1)
                self._timer("H", 64 * t.t1)
        else:
            self.state = State.COMPLETED
            self._timer("J", 0 if self.reliable else 64 * t.t1)

    def _send(self, resp: Response) -> None:
        data = resp.to_bytes()
        self.last_response = resp
        self._last_bytes = data
        self.layer._send_response(self.peer, resp, data)

    def _retransmit(self) -> None:
        if self._last_bytes is not None and self.last_response is not None:
            self.layer._send_response(self.peer, self.last_response, self._last_bytes)

    def receive_retransmission(self, req: Request, peer: Peer | None = None) -> None:
        st = self.state
        if req.method == "ACK":
            if self.is_invite and st is State.COMPLETED:
                self.state = State.CONFIRMED
                self._timer("I", 0 if self.reliable else self.layer.timers.t4)
            elif st is State.ACCEPTED:
                # RFC 6026 8.7: an ACK in Accepted goes up to the TU (it acknowledges the
                # 2xx: an RFC 2543 peer's ACK, or one that reused the INVITE's branch).
                self.layer._events.append(RequestReceived(req, peer or self.peer, None))
            return
        if st in (State.PROCEEDING, State.COMPLETED):
            if peer is not None and peer != self.peer:
                # The same request over another flow (a NAT rebinding, or a client that
                # moved from UDP to TCP): answer where it came from this time.
                if self._last_bytes is not None and self.last_response is not None:
                    self.layer._send_response(peer, self.last_response, self._last_bytes)
                return
            self._retransmit()

    def _fire(self, name: str) -> None:
        t = self.layer.timers
        st = self.state
        if name == "G" and st is State.COMPLETED:
            self._retransmit()
            self._interval = min(self._interval * 2, t.t2)
            self._timer("G", self._interval)
        elif name == "H" and st is State.COMPLETED:
            self.layer._events.append(TransactionTimeout(self))
            self._terminate()
        elif name in ("I", "J", "L"):
            self._terminate()

    def __repr__(self) -> str:
        return f"<ServerTransaction {self.method} {self.key} {self.state.value}>"


class TransactionLayer:
    """All transactions of one SIP endpoint, with one timer heap."""

    def __init__(self, timers: TimerConfig | None = None) -> None:
        self.timers = timers or TimerConfig()
        self.client: dict[tuple[str, ...], ClientTransaction] = {}
        self.server: dict[tuple[str, ...], ServerTransaction] = {}
        self._heap: list[tuple[float, int, _Base, str, int]] = []
        self._stale = 0  # heap entries of terminated transactions
        self._seq = itertools.count()
        self._now = 0.0
        self._out: list[tuple[Peer, bytes]] = []
        self._events: deque[Event] = deque()

    # Output -----------------------------------------------------------------
    def messages_to_send(self) -> list[tuple[Peer, bytes]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, txn, _, gen = heap[0]
            if gen == txn._timer_gen and txn.state is not State.TERMINATED:
                return deadline
            heapq.heappop(heap)
            txn._in_heap -= 1
            self._stale -= 1
        return None

    def handle_timer(self, now: float) -> None:
        self._now = now
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, txn, name, gen = heapq.heappop(heap)
            txn._in_heap -= 1
            if gen == txn._timer_gen and txn.state is not State.TERMINATED:
                txn._fire(name)
            else:
                self._stale -= 1

    # Input ------------------------------------------------------------------
    def receive_request(self, req: Request, peer: Peer, now: float) -> None:
        """Match a request to a server transaction (17.2.3) or hand it to the TU."""
        self._now = now
        self.handle_timer(now)
        key = server_key(req)
        txn = self.server.get(key)
        if txn is not None:
            if _same_request(txn.request, req):
                txn.receive_retransmission(req, peer)
                return
            # A peer reusing a branch for another request (RFC 4475 has several): not a
            # retransmission.  The new transaction takes the key; the old one runs out.
            if req.method == "ACK":
                return
        if req.method == "ACK":
            # An ACK for a 2xx (its own branch): the dialog layer's business.
            self._events.append(RequestReceived(req, peer, None))
            return
        txn = ServerTransaction(self, req, peer, key)
        self.server[key] = txn
        self._events.append(RequestReceived(req, peer, txn))

    def receive_response(self, resp: Response, now: float) -> bool:
        """Match a response to a client transaction (17.1.3); False means stray (drop)."""
        self._now = now
        self.handle_timer(now)
        try:
            branch = _branch_of(resp.top_via)
            method = resp.cseq.method
        except (SipParseError, ValueError):
            return False
        txn = self.client.get((branch, method))
        if txn is None:
            return False
        txn.receive(resp)
        return True

    def send_request(self, req: Request, peer: Peer, now: float) -> ClientTransaction:
        """Start a client transaction; the request's top Via must carry its branch."""
        self._now = now
        branch = _branch_of(parse_via(req.vias[0]))
        txn = ClientTransaction(self, req, peer, branch)
        self.client[txn.key] = txn
        return txn

    def send_stateless(self, peer: Peer, data: bytes) -> None:
        """Bytes outside any transaction: an ACK to a 2xx, a 2xx retransmission."""
        self._out.append((peer, data))

    def find_server(self, req: Request) -> ServerTransaction | None:
        return self.server.get(server_key(req))

    def find_invite_for_cancel(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (9.2)."""
        key = server_key(cancel)
        return self.server.get((*key[:-1], "INVITE"))

    # Internals --------------------------------------------------------------
    def _send(self, peer: Peer, data: bytes) -> None:
        self._out.append((peer, data))

    def _send_response(self, peer: Peer, resp: Response, data: bytes) -> None:
        self._out.append((peer, data))

    def _schedule(self, txn: _Base, name: str, delay: float) -> None:
        # Zero timers (reliable transports) fire on the next handle_timer call.
        heapq.heappush(
            self._heap, (self._now + delay, next(self._seq), txn, name, txn._timer_gen)
        )
        txn._in_heap += 1

    def _remove(self, txn: _Base) -> None:
        txn._timer_gen += 1
        # Only if it is still the one registered under its key: the TU may have started
        # another client transaction with the same branch and method (a second CANCEL).
        table: dict[tuple[str, ...], ClientTransaction] | dict[tuple[str, ...], ServerTransaction]
        table = self.client if isinstance(txn, ClientTransaction) else self.server
        if table.get(txn.key) is txn:
            del table[txn.key]
        # A terminated transaction's timers stay in the heap until they reach its top;
        # drop them in one pass once they are the bulk of it (a live transaction holds
        # at most three entries), so that the heap and the transactions it references
        # stay proportional to the live ones.  Counting the stale entries also catches
        # a transaction that ends long before its last timer (a non-INVITE client
        # transaction ends at timer K, 5 s, but its timer F entry is due at 32 s, and it
        # would keep the request and response in memory until then).
        self._stale += txn._in_heap
        heap = self._heap
        if len(heap) > 4 * len(self) + 1024 or self._stale > len(heap) // 8 + 256:
            heap[:] = [e for e in heap if e[4] == e[2]._timer_gen]
            heapq.heapify(heap)
            self._stale = 0

    def __len__(self) -> int:
        return len(self.client) + len(self.server)


def server_key(req: Request) -> tuple[str, ...]:
    """The server transaction key of 17.2.3, with the RFC 2543 fallback."""
    vias = req.vias
    top = vias[0] if vias else ""
    try:
        via = parse_via(top)
        branch = _branch_of(via)
        sent_by = f"{via.host}:{via.port or ''}"
    except SipParseError:
        branch = ""
        sent_by = top
    method = req.method
    if method == "ACK":
        method = "INVITE"
    if branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return (branch, sent_by, method)
    # RFC 2543 matching (17.2.3, second part): Request-URI, tags, Call-ID, CSeq, top Via.
    # The To tag is left out so that an ACK (which carries our tag) matches its INVITE.
    try:
        cseq = str(req.cseq.sequence)
    except SipParseError:
        cseq = ""
    return ("2543", req.uri, req.from_tag or "", req.call_id, cseq, top, method)


def _same_request(orig: Request, req: Request) -> bool:
    """A retransmission repeats Call-ID, CSeq number and From tag of the original."""
    try:
        return (
            orig.call_id == req.call_id
            and orig.cseq.sequence == req.cseq.sequence
            and orig.from_tag == req.from_tag
        )
    except SipParseError:
        return False
