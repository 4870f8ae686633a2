"""WebSocket signalling: one :class:`Connection` per browser, one :class:`SignallingHub`
per gateway.

A connection must ``join`` with a token first; it then relays the browser's offer and
trickled candidates to its :class:`~gateway.webrtc.api.MediaSession` and the session's
answer, candidates and state back.  Everything sent to a browser goes through the
connection's outbox and one writer task, so synchronous callers (media callbacks, the
bridge and billing via :meth:`SignallingHub.broadcast`) never wait on a socket and
messages keep their order.  No exception leaves a connection: it is logged and the
socket closed with 1011.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from gateway.config import WebConfig
from gateway.sip.ratelimit import AuthFailureLimiter
from gateway.webrtc.api import IceCandidate, MediaEndpoint, MediaMode, MediaSession, SessionState

from . import protocol as p
from .media import MediaUnavailable
from .security import origin_allowed
from .tokens import JoinClaims, JoinTokens, TokenError

log = logging.getLogger("gateway.web")

_TOKEN_CLOSE = {"expired": p.CLOSE_EXPIRED, "wrong_call": p.CLOSE_FORBIDDEN}
WRITER_DRAIN_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class ParticipantChange:
    """Someone joined or left a call; for the bridge and billing to follow along."""

    kind: str  # "joined" | "left"
    call_id: str
    peer: str
    role: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


_STOP = None  # outbox sentinel: the peer is gone, stop writing


class SignallingHub:
    """Every live signalling connection, by call; pushes events to a call's browsers."""

    def __init__(self) -> None:
        self._calls: dict[str, dict[str, Connection]] = {}
        self._all: set[Connection] = set()
        # Called (synchronously) on every join and leave; the bridge hooks in here.
        self.on_change: Callable[[ParticipantChange], None] | None = None

    # -- public API for the rest of the gateway

    def broadcast(self, call_id: str, event: Mapping[str, Any], *,
                  exclude: str | None = None) -> int:
        """Send ``event`` (``{"kind": ..., ...}``) to every browser in ``call_id``.

        Returns how many connections it was queued for.  An ``ended`` event also closes
        those connections (1000) and their media sessions.  ValueError for an event
        that is not in the protocol (a bug in the caller).
        """
        message = {"type": "event", **p.check_event(dict(event))}
        targets = [c for peer, c in self._calls.get(call_id, {}).items() if peer != exclude]
        for conn in targets:
            conn.send(message)
            if message["kind"] == "ended":
                conn.end(p.CLOSE_NORMAL, "call ended")
        return len(targets)

    def end_call(self, call_id: str, reason: str) -> int:
        """Tell every browser in the call that it ended, and close them."""
        return self.broadcast(call_id, {"kind": "ended", "reason": reason})

    def participants(self, call_id: str) -> dict[str, str]:
        """peer id -> role of the browsers joined to ``call_id``."""
        return {peer: c.role for peer, c in self._calls.get(call_id, {}).items()}

    def calls(self) -> list[str]:
        return sorted(self._calls)

    def __len__(self) -> int:
        """Open connections, joined or not."""
        return len(self._all)

    async def close_all(self, code: int, reason: str, timeout: float) -> None:
        """Close every connection (shutdown) and wait up to ``timeout`` for them."""
        conns = list(self._all)
        for conn in conns:
            conn.end(code, reason)
        if conns:
            waiters = [asyncio.ensure_future(c.done.wait()) for c in conns]
            _, pending = await asyncio.wait(waiters, timeout=timeout)
            for waiter in pending:
                waiter.cancel()

    # -- used by connections

    def _opened(self, conn: Connection) -> None:
        self._all.add(conn)

    def _joined(self, conn: Connection, call_id: str) -> None:
        others = dict(self._calls.get(call_id, {}))
        self._calls.setdefault(call_id, {})[conn.peer] = conn
        self.broadcast(call_id, {"kind": "peer-joined", "peer": conn.peer, "role": conn.role},
                       exclude=conn.peer)
        for peer, other in others.items():  # the newcomer learns who is already there
            conn.send(p.event("peer-joined", peer=peer, role=other.role))
        self._notify(ParticipantChange("joined", call_id, conn.peer, conn.role))

    def _closed(self, conn: Connection, reason: str) -> None:
        self._all.discard(conn)
        call_id = conn.call_id
        if call_id is None:
            return
        members = self._calls.get(call_id, {})
        if members.pop(conn.peer, None) is None:
            return
        if not members:
            del self._calls[call_id]
        self.broadcast(call_id, {"kind": "peer-left", "peer": conn.peer, "role": conn.role,
                                 "reason": reason})
        self._notify(ParticipantChange("left", call_id, conn.peer, conn.role, reason))

    def _notify(self, change: ParticipantChange) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(change)
        except Exception:
            log.exception("web: participant-change hook failed for call %s", change.call_id)


@dataclass
class SignallingContext:
    """What every connection needs; built once by the web server."""

    web: WebConfig
    tokens: JoinTokens
    hub: SignallingHub
    media: MediaEndpoint
    limiter: AuthFailureLimiter | None
    clock: Callable[[], float]
    join_timeout: float = p.JOIN_TIMEOUT
    # RTCIceServer dicts sent in ``joined`` (the [webrtc] STUN/TURN servers); [] = none.
    ice_servers: list[dict[str, Any]] = field(default_factory=list)


class Connection:
    """One browser's signalling socket, from accept to close."""

    def __init__(self, ws: WebSocket, ctx: SignallingContext, source: str) -> None:
        self.ws = ws
        self.ctx = ctx
        self.source = source  # the peer's IP address, for logs and the failure limiter
        self.peer = secrets.token_hex(4)  # opaque id shown to the other participants
        self.claims: JoinClaims | None = None
        self.session: MediaSession | None = None
        self.done = asyncio.Event()
        self._outbox: asyncio.Queue[str | _Close | None] = asyncio.Queue()
        self._closing = False
        self._leave_reason = "disconnected"

    @property
    def call_id(self) -> str | None:
        return self.claims.call_id if self.claims else None

    @property
    def role(self) -> str:
        return self.claims.role if self.claims else ""

    # -- outbox (synchronous, safe from any callback on the loop)

    def send(self, message: dict[str, Any]) -> None:
        if not self._closing:
            self._outbox.put_nowait(p.encode(message))

    def end(self, code: int, reason: str) -> None:
        """Close the socket after what is already queued; later sends are dropped."""
        if not self._closing:
            self._closing = True
            self._outbox.put_nowait(_Close(code, reason[:120]))

    # -- lifecycle

    async def run(self) -> None:
        self.ctx.hub._opened(self)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.ctx.join_timeout, self._join_timed_out)
        reader = asyncio.ensure_future(self._read())
        writer = asyncio.ensure_future(self._write())
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                if not self._closing:  # the browser went away; nothing left to send
                    self._closing = True
                    self._outbox.put_nowait(_STOP)
                try:
                    await asyncio.wait_for(writer, WRITER_DRAIN_SECONDS)
                except (TimeoutError, asyncio.CancelledError):
                    pass
            else:  # our close frame is out: stop waiting for the browser's frames
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        finally:
            timer.cancel()
            for task in (reader, writer):
                if not task.done():
                    task.cancel()
            await self._cleanup()
            self.done.set()

    def _join_timed_out(self) -> None:
        if self.claims is None:
            log.info("web: %s sent no valid join within %.0f s", self.source,
                     self.ctx.join_timeout)
            self.end(p.CLOSE_UNAUTHORIZED, "join required")

    async def _write(self) -> None:
        while True:
            item = await self._outbox.get()
            if item is _STOP:
                return
            try:
                if isinstance(item, _Close):
                    await self.ws.close(item.code, item.reason)
                    return
                await self.ws.send_text(item)
            except Exception:  # the socket is gone under us: nothing more to say
                log.debug("web: send to %s failed", self.source, exc_info=True)
                return

    async def _read(self) -> None:
        try:
            while not self._closing:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    if message.get("code") == p.CLOSE_TOO_BIG:
                        log.info("web: %s sent a message over %d bytes", self.source,
                                 self.ctx.web.max_message_bytes)
                    return
                text = message.get("text")
                if text is None:
                    self.send(p.error("invalid_message", "send JSON in text frames, "
                                      "not binary"))
                    continue
                await self._handle(text)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("web: signalling failed for %s (call %s)", self.source,
                          self.call_id)
            self._leave_reason = "error"
            self.end(p.CLOSE_INTERNAL_ERROR, "internal error")

    async def _cleanup(self) -> None:
        session, self.session = self.session, None
        self.ctx.hub._closed(self, self._leave_reason)
        media = ""
        if session is not None:
            session.on_local_candidate = None
            session.on_state = None
            try:
                await session.close()
            except Exception:
                log.exception("web: closing the media session of call %s failed",
                              self.call_id)
            media = media_summary(session)
        if self.claims is not None:
            log.info("web: %s left call %s (%s)%s", self.peer, self.call_id,
                     self._leave_reason, media)

    # -- messages

    async def _handle(self, text: str) -> None:
        try:
            msg = p.parse_client_message(text)
        except p.ProtocolError as exc:
            self.send(p.error(exc.code, exc.message, exc.field))
            return
        if isinstance(msg, p.Ping):
            self.send(p.pong(msg.id))
        elif isinstance(msg, p.Join):
            await self._join(msg)
        elif self.session is None:
            self.send(p.error("join_required", "send join with a token first", "type"))
        elif isinstance(msg, p.Offer):
            await self._offer(self.session, msg.sdp)
        elif isinstance(msg, p.Candidate):
            await self._candidate(self.session, msg.candidate)
        elif isinstance(msg, p.Hangup):
            self._leave_reason = "hangup"
            self.send(p.event("ended", reason="hangup"))
            self.end(p.CLOSE_NORMAL, "hangup")

    async def _join(self, msg: p.Join) -> None:
        if self.claims is not None:
            self.send(p.error("already_joined", f"already joined call {self.call_id}",
                              "type"))
            return
        ctx = self.ctx
        now = ctx.clock()
        try:
            claims = ctx.tokens.verify(msg.token, now=now, call_id=msg.call_id)
        except TokenError as exc:
            blocked = False
            if ctx.limiter is not None:  # (an empty limiter is falsy: it has __len__)
                blocked = ctx.limiter.record_failure(self.source, now)
            log.info("web: join refused from %s: %s%s", self.source, exc.reason,
                     "; source blocked" if blocked else "")
            self.end(_TOKEN_CLOSE.get(exc.reason, p.CLOSE_UNAUTHORIZED), str(exc))
            return
        mode: MediaMode = "test-pattern" if ctx.web.media_mode == "test-pattern" else "echo"
        try:
            session = ctx.media.create_session(claims.call_id, mode)
        except MediaUnavailable as exc:
            self.send(p.error("media_unavailable", str(exc) or "media is unavailable"))
            self.end(p.CLOSE_TRY_AGAIN_LATER, "media unavailable")
            return
        session.on_local_candidate = self._local_candidate
        session.on_state = self._media_state
        self.session = session
        self.claims = claims
        self.send(p.joined(claims.call_id, claims.role, self.peer, ctx.ice_servers))
        ctx.hub._joined(self, claims.call_id)
        log.info("web: %s (%s) joined call %s as %s", self.peer, self.source, claims.call_id,
                 claims.role)

    async def _offer(self, session: MediaSession, sdp: str) -> None:
        try:
            answer = await session.accept_offer(sdp)
        except ValueError as exc:
            self.send(p.error("invalid_sdp", str(exc) or "the offer was refused", "sdp"))
            return
        except MediaUnavailable as exc:
            self.send(p.error("media_unavailable", str(exc) or "media is unavailable"))
            return
        except Exception:
            log.exception("web: accept_offer failed for call %s", self.call_id)
            self.send(p.error("media_error", "the gateway could not answer the offer"))
            self._leave_reason = "error"
            self.end(p.CLOSE_INTERNAL_ERROR, "media error")
            return
        self.send(p.answer(answer))

    async def _candidate(self, session: MediaSession, candidate: IceCandidate | None) -> None:
        try:
            await session.add_remote_candidate(candidate)
        except ValueError as exc:
            self.send(p.error("invalid_candidate", str(exc) or "the candidate was refused",
                              "candidate"))
        except Exception:
            log.exception("web: add_remote_candidate failed for call %s", self.call_id)
            self.send(p.error("media_error", "the gateway could not use the candidate"))
            self._leave_reason = "error"
            self.end(p.CLOSE_INTERNAL_ERROR, "media error")

    # -- media session callbacks (synchronous, on the loop)

    def _local_candidate(self, candidate: IceCandidate | None) -> None:
        self.send(p.candidate(candidate))

    def _media_state(self, state: SessionState) -> None:
        if state == "connected":
            self.send(p.event("connected"))
        elif state == "failed":
            # The browser sees ICE fail too and may restart ICE with a new offer.
            log.info("web: media of %s in call %s failed", self.peer, self.call_id)
        elif state == "closed" and not self._closing:
            self._leave_reason = "media-closed"
            self.send(p.event("ended", reason="media-closed"))
            self.end(p.CLOSE_NORMAL, "media closed")


def media_summary(session: MediaSession) -> str:
    """What the media session counted, for the leave log line (ops and the browser tests).

    ``; media rx audio=812 video=1534 tx audio=812 video=1534 packets;
    codecs audio=opus/48000/2 video=VP8/90000``; "" if the session cannot say.
    """
    try:
        st = session.stats()
    except Exception:
        log.debug("web: stats of a closed media session failed", exc_info=True)
        return ""

    def counts(d: Mapping[str, int]) -> str:
        return " ".join(f"{k}={d.get(k, 0)}" for k in ("audio", "video"))

    codecs = " ".join(f"{k}={v}" for k, v in sorted(st.codecs.items())) or "none"
    return (f"; media rx {counts(st.packets_received)} tx {counts(st.packets_sent)} "
            f"packets; codecs {codecs}")


async def serve_signalling(ws: WebSocket, ctx: SignallingContext) -> None:
    """The ``/ws`` endpoint: Origin and failure-limit checks, then one Connection."""
    source = ws.client.host if ws.client else "unknown"
    try:
        origin = ws.headers.get("origin")
        if not origin_allowed(origin, ws.headers.get("host"), ws.url.scheme,
                              ctx.web.allowed_origins):
            log.info("web: WebSocket from %s refused: Origin %r not allowed", source,
                     (origin or "")[:100])
            await ws.accept()
            await ws.close(p.CLOSE_FORBIDDEN, "origin not allowed")
            return
        limiter = ctx.limiter
        now = ctx.clock()
        if limiter is not None and limiter.is_blocked(source, now):
            if limiter.note_rejected(source, now) == 1:
                log.warning("web: %s is blocked after too many failed joins", source)
            await ws.accept()
            await ws.close(p.CLOSE_TOO_MANY_FAILURES, "too many failed joins; try later")
            return
        await ws.accept()
        await Connection(ws, ctx, source).run()
    except Exception:
        log.exception("web: WebSocket from %s failed", source)
        try:
            await ws.close(p.CLOSE_INTERNAL_ERROR, "internal error")
        except Exception:
            pass
