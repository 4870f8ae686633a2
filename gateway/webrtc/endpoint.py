"""The gateway's own WebRTC endpoint: ICE, DTLS-SRTP, BUNDLE, and RTP/RTCP at packet level.

Why not aiortc's ``RTCPeerConnection``: it hands out decoded frames (or, through private
hooks, reassembled encoded frames), owns RTCP, and has no ICE restart.  The media bridge
relays RTP *packets* between a browser and a SIP kiosk without transcoding, so it needs
every SRTP-decrypted RTP and RTCP packet as bytes, a way to send packets of its own, and
keyframe requests that cross from one leg to the other.  So the endpoint is assembled from
the lower pieces, each used where it is good:

- ICE: aioice's ``Connection`` (checks, nomination, consent) with our own gathering on
  configured addresses and a synchronous data path (``ice.py``);
- DTLS-SRTP: pyOpenSSL and pylibsrtp directly (``dtls.py``), so the association outlives
  an ICE restart;
- SDP: the SIP side's offer/answer for codecs plus the WebRTC attributes (``jsep.py``);
- RTP/RTCP: small typed helpers (``rtp.py``); the endpoint itself sends sender/receiver
  reports, SDES, REMB, answers NACKs from a short history and turns PLI/FIR into events.

Everything runs on the one asyncio loop that Twisted also runs on; the per-packet path
is synchronous (datagram in, callback, datagram out), and the only heavy work, the test
pattern's video encoder, runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pylibsrtp
from aioice import Candidate

from gateway.sip.sdp import Origin

from . import rtp
from .api import (
    IceCandidate,
    MediaEndpoint,
    MediaMode,
    MediaSession,
    SessionState,
    SessionStats,
)
from .config import WebRtcConfig
from .dtls import Certificate, DtlsSrtp
from .ice import IceAgent, candidate_to_sdp, parse_candidate
from .jsep import (
    DEFAULT_PREFERENCES,
    CodecPreference,
    LocalTransport,
    MediaPlan,
    OfferError,
    RemoteTransport,
    build_answer,
    codec_caps,
    new_origin,
    read_offer,
)
from .testpattern import TestPattern

__all__ = ["Feedback", "OfferError", "WebRtcEndpoint", "WebRtcSession"]

log = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("echo", "test-pattern", "bridge")
RTCP_INTERVAL = 1.0  # seconds, randomised by +-50% (RFC 3550 6.3.1)
DISCONNECTED_AFTER = 5.0  # seconds without any datagram from the browser
ICE_DEADLINE = 30.0  # seconds for ICE (or an ICE restart) to find a working pair
# As the answerer, our checks on a new ICE agent (first offer or ICE restart) are useless
# until the browser has applied our answer: sent earlier, they carry credentials it does not
# know yet and fail, and after such failures Chrome sometimes never checks our new port, so
# an ICE restart never completes.  The browser's first check with our new ufrag proves it
# has the answer, so our checks start then, or after this many seconds if none comes (a
# browser that sends no checks of its own, ICE-lite-like, still gets ours).
CHECKS_FALLBACK = 1.0
DTLS_DEADLINE = 30.0  # seconds from ICE connected to a finished handshake
NACK_HISTORY = 512  # sent video packets kept for retransmission
KEYFRAME_FORWARD_GAP = 0.1  # echo mode: at most one forwarded keyframe request per 100 ms
_SEQ_TS = struct.Struct("!HI")
_SSRC = struct.Struct("!I")


@dataclass(frozen=True)
class Feedback:
    """RTCP feedback from the browser about media we send it.

    ``type`` is "pli" / "fir" (send a keyframe), "nack" (``lost`` sequence numbers; the
    endpoint already retransmitted what it still had) or "remb" (``bitrate``, the
    browser's estimate of what it can receive).  ``kind`` is the media kind of our SSRC
    it names, None if it names none of ours.
    """

    type: Literal["pli", "fir", "nack", "remb"]
    kind: str | None
    media_ssrc: int
    lost: tuple[int, ...] = ()
    bitrate: int | None = None


class WebRtcEndpoint:
    """Creates sessions; holds the DTLS certificate they share (regenerated before expiry)."""

    def __init__(self, config: WebRtcConfig, *, certificate: Certificate | None = None) -> None:
        self.config = config
        self._certificate = certificate or Certificate.generate()
        self.sessions: dict[str, WebRtcSession] = {}

    @property
    def certificate(self) -> Certificate:
        now = datetime.datetime.now(tz=datetime.UTC)
        if self._certificate.expires - now < datetime.timedelta(days=1):
            self._certificate = Certificate.generate()
        return self._certificate

    def create_session(
        self,
        call_id: str,
        mode: MediaMode,
        *,
        codec_preferences: Mapping[str, Sequence[CodecPreference]] | None = None,
    ) -> WebRtcSession:
        if mode not in MODES:
            raise ValueError(f"unknown media mode {mode!r}; expected one of {', '.join(MODES)}")
        existing = self.sessions.get(call_id)
        if existing is not None and not existing.closed:
            raise ValueError(f"a session for call {call_id!r} is already open")
        session = WebRtcSession(self, call_id, mode, codec_preferences)
        self.sessions[call_id] = session
        return session

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            await session.close()


@dataclass
class _SendState:
    packets: int = 0
    octets: int = 0
    last_timestamp: int = 0
    last_sent_at: float = 0.0
    clock_rate: int = 90000


class WebRtcSession:
    """One browser's media session; implements ``api.MediaSession`` plus the packet API.

    Callbacks (attributes, all optional, called on the event loop):
    ``on_local_candidate(IceCandidate | None)``, ``on_state(state)``,
    ``on_rtp(kind, packet)`` and ``on_rtcp(packet)`` with SRTP already removed,
    ``on_feedback(Feedback)``.  Candidates are only ever reported after ``accept_offer``
    has returned, so the answer can be sent first.

    ``answer_candidates``: put the host candidates in the answer (default) or trickle
    them all.  ``video_bitrate_cap``: the REMB value sent to the browser (bits/s, None
    for no REMB).
    """

    def __init__(
        self,
        endpoint: WebRtcEndpoint,
        call_id: str,
        mode: MediaMode,
        codec_preferences: Mapping[str, Sequence[CodecPreference]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.call_id = call_id
        self.mode: MediaMode = mode
        self.on_local_candidate: Callable[[IceCandidate | None], None] | None = None
        self.on_state: Callable[[SessionState], None] | None = None
        self.on_rtp: Callable[[str, bytes], None] | None = None
        self.on_rtcp: Callable[[bytes], None] | None = None
        self.on_feedback: Callable[[Feedback], None] | None = None
        self.answer_candidates = True
        self.video_bitrate_cap: int | None = 2_000_000
        self.codec_preferences: dict[str, list[CodecPreference]] = {
            k: list(v) for k, v in DEFAULT_PREFERENCES.items()
        }
        for kind, prefs in (codec_preferences or {}).items():
            self.set_codec_preferences(kind, prefs)

        self._state: SessionState = "new"
        self._closed = False
        self._lock = asyncio.Lock()
        self._origin: Origin = new_origin()
        self._answers = 0
        self._remote: RemoteTransport | None = None
        self._setup: str | None = None  # our DTLS role in the SDP: "active" | "passive"
        self._ice: IceAgent | None = None  # carries our packets
        self._pending_ice: IceAgent | None = None  # an ICE restart in progress
        self._early_candidates: list[IceCandidate | None] = []
        self._ice_restarts = 0
        self._certificate: Certificate | None = None  # pinned: the answer's fingerprint
        self._dtls: DtlsSrtp | None = None
        self._dtls_timer: asyncio.TimerHandle | None = None
        self._srtp_tx: pylibsrtp.Session | None = None
        self._srtp_rx: pylibsrtp.Session | None = None
        self._pending_out: list[bytes] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_rx = 0.0
        self._failure: str | None = None

        self._plans: dict[str, MediaPlan] = {}
        self._pt_kind: dict[int, str] = {}
        self._ssrc_kind: dict[int, str] = {}
        self._remote_media_ssrc: dict[str, int] = {}
        self._local_ssrc: dict[str, int] = {}
        self._local_kind: dict[int, str] = {}
        taken: set[int] = set()
        for kind in ("audio", "video"):
            ssrc = 0
            while ssrc == 0 or ssrc in taken:
                ssrc = random.getrandbits(32)
            taken.add(ssrc)
            self._local_ssrc[kind] = ssrc
            self._local_kind[ssrc] = kind
        self._cname = secrets.token_hex(8)
        self._stream_id = "gw-" + secrets.token_hex(6)

        self._rx_stats: dict[int, rtp.ReceiveStats] = {}
        self._tx: dict[str, _SendState] = {}
        self._history: dict[str, OrderedDict[int, bytes]] = {}
        self._fir_seq = 0
        self._last_forwarded_keyframe = 0.0
        self._packets_received: dict[str, int] = {}
        self._bytes_received: dict[str, int] = {}
        self._counters: dict[str, int] = {
            "rtcp_received": 0, "rtcp_sent": 0, "srtp_errors": 0, "rtp_unknown": 0,
            "rtcp_malformed": 0, "pli_received": 0, "fir_received": 0, "nack_received": 0,
            "retransmitted": 0, "keyframes_requested": 0, "dtls_datagrams": 0,
            "callback_errors": 0,
        }
        self._remb_received: int | None = None
        self._remote_reports: dict[str, rtp.ReportBlock] = {}
        self._rtt: dict[str, float] = {}
        self._pattern: TestPattern | None = None

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failure(self) -> str | None:
        """Why the session failed, when it did."""
        return self._failure

    @property
    def negotiated(self) -> dict[str, MediaPlan]:
        """kind -> what the last answer agreed (payload type, fmtp, rtcp-fb, direction)."""
        return dict(self._plans)

    @property
    def local_ssrcs(self) -> dict[str, int]:
        return dict(self._local_ssrc)

    def set_codec_preferences(self, kind: str, preferences: Sequence[CodecPreference]) -> None:
        """Codecs allowed for ``kind``, best first; takes effect at the next offer."""
        if kind not in ("audio", "video"):
            raise ValueError(f"unknown media kind {kind!r}")
        codec_caps(kind, preferences)  # raises for an unknown name
        self.codec_preferences[kind] = list(preferences)

    async def accept_offer(self, sdp: str) -> str:
        """Answer an offer or re-offer; a changed ice-ufrag/pwd restarts ICE.

        Raises OfferError (a ValueError) for an offer that cannot be answered; the session
        is then as it was before the call, and still closable.
        """
        async with self._lock:
            if self._closed:
                raise RuntimeError(f"session {self.call_id} is closed")
            offer, remote = read_offer(sdp)
            previous = self._remote
            if previous is not None and sorted(previous.fingerprints) != sorted(
                remote.fingerprints
            ):
                raise OfferError("the re-offer changes the DTLS fingerprint; "
                                 "a new DTLS association needs a new session")
            certificate = self._certificate or self.endpoint.certificate
            setup = self._setup or ("passive" if remote.setup == "active" else "active")
            if remote.setup == setup:
                raise OfferError(f"a=setup:{remote.setup} conflicts with our established "
                                 f"DTLS role ({setup})")
            restart = previous is not None and (
                (remote.ice_ufrag, remote.ice_pwd) != (previous.ice_ufrag, previous.ice_pwd)
            )
            agent: IceAgent | None = None
            host: list[Candidate] = []
            if self._ice is None or restart:
                agent = self._new_agent(remote)
                try:
                    host = await agent.gather_host_candidates()
                except OSError:
                    await agent.close()
                    raise
            target = agent or self._pending_ice or self._ice
            assert target is not None
            candidates = list(target.local_candidates) if agent is None else host
            servers = bool(self.endpoint.config.stun_servers or self.endpoint.config.turn_servers)
            with_candidates = self.answer_candidates and bool(candidates)
            local = LocalTransport(
                ice_ufrag=target.local_username,
                ice_pwd=target.local_password,
                fingerprint=("sha-256", certificate.fingerprint("sha-256")),
                setup=setup,
                candidates=[candidate_to_sdp(c) for c in candidates] if with_candidates else [],
                end_of_candidates=with_candidates and not servers,
                address=candidates[0].host if with_candidates else "0.0.0.0",
                port=candidates[0].port if with_candidates else 9,
                ssrcs=dict(self._local_ssrc),
                cname=self._cname,
                stream_id=self._stream_id,
            )
            self._answers += 1
            origin = Origin(self._origin.username, self._origin.sess_id, self._answers,
                            "IN", "IP4", "0.0.0.0")
            try:
                answer, plans = build_answer(offer, remote, local, self.codec_preferences,
                                             origin=origin)
                if agent is not None:
                    await self._feed_remote_candidates(agent, remote)
                if self._closed:
                    raise RuntimeError(f"session {self.call_id} was closed meanwhile")
            except BaseException:
                self._answers -= 1
                if agent is not None:
                    await agent.close()
                raise

            # Committed from here on.
            self._remote = remote
            self._setup = setup
            self._certificate = certificate
            self._apply_plans(plans)
            if self._dtls is None:
                self._dtls = DtlsSrtp(certificate, client=setup == "active",
                                      remote_fingerprints=remote.fingerprints)
            if agent is not None:
                if self._ice is None:
                    self._ice = agent
                else:
                    if self._pending_ice is not None:
                        self._spawn(self._pending_ice.close())
                    self._pending_ice = agent
                for early in self._early_candidates:
                    with contextlib.suppress(ValueError):
                        await self._add_candidate_to(agent, early, remote)
                self._early_candidates.clear()
                self._spawn(self._connect(agent))
                if not (with_candidates and not servers):  # else the answer says it all
                    self._spawn(self._trickle(agent, [] if with_candidates else host,
                                              plans[0].mid, plans[0].index))
            if self._state == "new":
                self._set_state("connecting")
            if self._pattern is not None and self._srtp_tx is not None:
                await self._restart_pattern()
            return answer

    async def add_remote_candidate(self, candidate: IceCandidate | None) -> None:
        """A trickled browser candidate; None or an empty candidate is end-of-candidates.

        Candidates for m-lines other than the BUNDLE transport, mDNS (.local) and TCP
        candidates are ignored; a malformed one raises ValueError.
        """
        if self._closed:
            return
        if candidate is not None and candidate.candidate.strip() in ("", "a=end-of-candidates"):
            candidate = None
        agent = self._pending_ice or self._ice
        if agent is None:
            if candidate is not None:
                parse_candidate(candidate.candidate)  # malformed: fail now, not later
            self._early_candidates.append(candidate)
            return
        if candidate is not None and self._remote is not None:
            parsed, ufrag = parse_candidate(candidate.candidate)
            if ufrag is not None:
                matching = [a for a in (self._pending_ice, self._ice)
                            if a is not None and a.remote_username == ufrag]
                if not matching:
                    log.info("%s: candidate for an old ICE generation ignored", self.call_id)
                    return
                agent = matching[0]
        await self._add_candidate_to(agent, candidate, self._remote)

    def stats(self) -> SessionStats:
        codecs: dict[str, str] = {}
        for kind, plan in self._plans.items():
            c = plan.codec
            codecs[kind] = f"{c.name}/{c.clock_rate}" + (f"/{c.channels}" if c.channels > 1
                                                         else "")
        packets_sent = {kind: s.packets for kind, s in self._tx.items()}
        extra: dict[str, Any] = dict(self._counters)
        lost: dict[str, int] = {}
        jitter: dict[str, float] = {}
        for ssrc, st in self._rx_stats.items():
            rx_kind = self._ssrc_kind.get(ssrc)
            if rx_kind is not None:
                lost[rx_kind] = lost.get(rx_kind, 0) + st.lost
                jitter[rx_kind] = st.jitter / max(1, st.clock_rate)
        extra.update(
            state=self._state,
            ice_restarts=self._ice_restarts,
            selected_pair=self._ice.selected_pair if self._ice is not None else None,
            dtls_profile=(self._dtls.profile.openssl_name.decode()
                          if self._dtls is not None and self._dtls.profile else None),
            bytes_sent={kind: s.octets for kind, s in self._tx.items()},
            packets_lost=lost,
            jitter_seconds=jitter,
            remote_fraction_lost={k: b.fraction_lost / 256 for k, b in
                                  self._remote_reports.items()},
            rtt_seconds=dict(self._rtt),
            remb_received=self._remb_received,
            failure=self._failure,
        )
        if self._pattern is not None:
            extra["pattern_frames_sent"] = self._pattern.frames_sent
            extra["pattern_audio_frames_sent"] = self._pattern.audio_frames_sent
        return SessionStats(
            packets_received=dict(self._packets_received),
            packets_sent=packets_sent,
            bytes_received=dict(self._bytes_received),
            codecs=codecs,
            extra=extra,
        )

    async def close(self) -> None:
        """Stop media, say BYE and close_notify if connected, release the sockets."""
        if self._closed:
            return
        self._closed = True
        if self._pattern is not None:
            await self._pattern.stop()
        if self._srtp_tx is not None:
            with contextlib.suppress(Exception):
                self._send_rtcp_now(rtp.build_rr(self._local_ssrc["audio"]) +
                                    rtp.build_bye(list(self._local_ssrc.values())))
        if self._dtls is not None:
            self._send_datagrams(self._dtls.close())
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        for agent in (self._pending_ice, self._ice):
            if agent is not None:
                with contextlib.suppress(Exception):
                    await agent.close()
        self._set_state("closed")
        if self.endpoint.sessions.get(self.call_id) is self:
            del self.endpoint.sessions[self.call_id]

    # --- packet API for the bridge

    def send_rtp(self, kind: str, packet: bytes) -> bool:
        """Send one RTP packet to the browser as ``kind``; False if it cannot go now.

        The SSRC is replaced by this session's SSRC for ``kind`` (the one in the answer);
        payload type, sequence number, timestamp and payload are sent as given.
        """
        tx = self._srtp_tx
        agent = self._ice
        if tx is None or agent is None or self._closed:
            return False
        plan = self._plans.get(kind)
        if plan is None or not plan.direction.sends:
            return False
        if len(packet) < 12 or packet[0] >> 6 != 2:
            return False
        ssrc = self._local_ssrc[kind]
        if packet[8:12] != _SSRC.pack(ssrc):
            packet = rtp.with_ssrc(packet, ssrc)
        try:
            protected = tx.protect(packet)
        except pylibsrtp.Error:
            self._counters["srtp_errors"] += 1
            return False
        if not agent.send_now(protected):
            return False
        state = self._tx.get(kind)
        if state is None:
            state = self._tx[kind] = _SendState(clock_rate=plan.codec.clock_rate)
        seq, timestamp = _SEQ_TS.unpack_from(packet, 2)
        state.packets += 1
        state.octets += len(packet) - 12
        state.last_timestamp = timestamp
        state.last_sent_at = asyncio.get_running_loop().time()
        if plan.nack:
            history = self._history.setdefault(kind, OrderedDict())
            history[seq] = packet
            if len(history) > NACK_HISTORY:
                history.popitem(last=False)
        return True

    def send_rtcp(self, packet: bytes) -> bool:
        """Send an RTCP packet (compound or not) to the browser as given."""
        if self._closed:
            return False
        return self._send_rtcp_now(packet)

    def request_keyframe(self, kind: str = "video") -> bool:
        """Ask the browser's encoder for a keyframe: PLI, plus FIR if ccm fir was agreed."""
        plan = self._plans.get(kind)
        if plan is None or not ("nack pli" in plan.codec.rtcp_fb or plan.fir):
            return False
        media = self._remote_media_ssrc.get(kind)
        if media is None and plan.remote_ssrcs:
            media = plan.remote_ssrcs[0]
        if media is None:
            return False
        sender = self._local_ssrc[kind]
        packet = rtp.build_rr(sender)
        if "nack pli" in plan.codec.rtcp_fb:
            packet += rtp.build_pli(sender, media)
        if plan.fir:
            self._fir_seq = (self._fir_seq + 1) & 0xFF
            packet += rtp.build_fir(sender, media, self._fir_seq)
        sent = self.send_rtcp(packet)
        if sent:
            self._counters["keyframes_requested"] += 1
        return sent

    # ------------------------------------------------------------------ internals

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: background task failed", self.call_id, exc_info=task.exception())

    def _set_state(self, state: SessionState) -> None:
        if state == self._state or (self._state == "closed"):
            return
        self._state = state
        log.info("%s: %s", self.call_id, state)
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:
                log.exception("%s: on_state callback failed", self.call_id)

    def _fail(self, reason: str) -> None:
        if self._closed or self._state == "failed":
            return
        self._failure = reason
        log.warning("%s: failed: %s", self.call_id, reason)
        self._set_state("failed")

    def _new_agent(self, remote: RemoteTransport) -> IceAgent:
        config = self.endpoint.config
        holder: list[IceAgent] = []

        def closed() -> None:
            if holder and holder[0] is self._ice and not self._closed:
                self._fail("ICE consent expired or the connection closed")

        agent = IceAgent(
            controlling=remote.ice_lite,
            host_addresses=config.host_addresses,
            port_range=config.port_range,
            stun_servers=config.stun(),
            turn_servers=config.turn(),
            on_data=self._on_datagram,
            on_closed=closed,
        )
        holder.append(agent)
        agent.remote_username = remote.ice_ufrag
        agent.remote_password = remote.ice_pwd
        agent.remote_is_lite = remote.ice_lite
        return agent

    async def _feed_remote_candidates(self, agent: IceAgent, remote: RemoteTransport) -> None:
        for line in remote.candidates:
            try:
                await self._add_candidate_to(
                    agent, IceCandidate(line, remote.tag_mid, remote.tag_index), remote)
            except ValueError as exc:
                raise OfferError(f"bad a=candidate in the offer: {exc}") from exc
        if remote.end_of_candidates:
            await self._add_candidate_to(agent, None, remote)

    async def _add_candidate_to(
        self, agent: IceAgent, candidate: IceCandidate | None, remote: RemoteTransport | None
    ) -> None:
        if candidate is None:
            if not agent.remote_candidates:
                # Every candidate was unusable (say, mDNS only): the browser can still reach
                # us and be learned as peer-reflexive, so do not let aioice give up now.
                log.info("%s: end-of-candidates without a usable candidate; waiting for "
                         "the browser's checks", self.call_id)
                return
            with contextlib.suppress(ValueError):  # end-of-candidates twice
                await agent.add_remote_candidate(None)
            return
        if remote is not None:
            if candidate.sdp_mid is not None and remote.tag_mid is not None:
                if candidate.sdp_mid != remote.tag_mid:
                    return  # a transport that BUNDLE discards
            elif candidate.sdp_mline_index is not None and (
                candidate.sdp_mline_index != remote.tag_index
            ):
                return
        parsed, _ = parse_candidate(candidate.candidate)
        if parsed.transport.lower() != "udp":
            return
        if parsed.host.endswith(".local"):
            log.debug("%s: mDNS candidate ignored (not resolvable from the gateway)",
                      self.call_id)
            return
        try:
            await agent.add_remote_candidate(parsed)
        except ValueError:
            log.info("%s: candidate after end-of-candidates ignored", self.call_id)

    async def _trickle(
        self, agent: IceAgent, host: Sequence[Candidate], mid: str | None, index: int
    ) -> None:
        """Report candidates not in the answer, then end-of-candidates."""
        await asyncio.sleep(0)  # let accept_offer's caller send the answer first
        ufrag = agent.local_username

        def emit(candidate: IceCandidate | None) -> None:
            if self.on_local_candidate is not None and not self._closed:
                try:
                    self.on_local_candidate(candidate)
                except Exception:
                    log.exception("%s: on_local_candidate callback failed", self.call_id)

        for c in host:
            emit(IceCandidate(candidate_to_sdp(c, ufrag), mid, index))
        async for c in agent.gather_server_candidates():
            emit(IceCandidate(candidate_to_sdp(c, ufrag), mid, index))
        emit(None)

    async def _connect(self, agent: IceAgent) -> None:
        try:
            await asyncio.wait_for(self._run_checks(agent), ICE_DEADLINE)
        except (ConnectionError, TimeoutError) as exc:
            reason = (str(exc) if isinstance(exc, ConnectionError)
                      else f"no working candidate pair within {ICE_DEADLINE:g} s")
            if agent is self._pending_ice:
                self._pending_ice = None
                if self._state == "connected":  # the old path still carries media: keep it
                    log.warning("%s: ICE restart failed (%s); staying on the old path",
                                self.call_id, reason)
                else:
                    self._fail(f"ICE restart failed: {reason}")
            elif agent is self._ice:
                self._fail(f"ICE failed: {reason}")
            await agent.close()
            return
        if self._closed:
            return
        if agent is self._pending_ice:
            old, self._ice, self._pending_ice = self._ice, agent, None
            self._ice_restarts += 1
            log.info("%s: ICE restart complete, now %s", self.call_id, agent.selected_pair)
            if old is not None:
                self._spawn(old.close())
        elif agent is not self._ice:
            await agent.close()  # superseded meanwhile
            return
        self._flush_pending()
        dtls = self._dtls
        if dtls is not None and dtls.state == "new" and dtls.client:
            self._send_datagrams(dtls.start())
            self._after_dtls()
        if dtls is not None and dtls.state != "connected":
            self._spawn(self._dtls_deadline())

    async def _run_checks(self, agent: IceAgent) -> None:
        """Start ``agent``'s checks once the browser has our answer (see CHECKS_FALLBACK).

        Checks the browser sends meanwhile are answered and kept by aioice, and become
        triggered checks as soon as ``connect()`` starts.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(agent.remote_checked.wait(), CHECKS_FALLBACK)
        if agent is not self._ice and agent is not self._pending_ice:
            raise ConnectionError("superseded before its checks started")
        await agent.connect()

    async def _dtls_deadline(self) -> None:
        await asyncio.sleep(DTLS_DEADLINE)
        if self._dtls is not None and self._dtls.state == "connecting":
            self._fail("DTLS handshake did not finish")

    def _flush_pending(self) -> None:
        pending, self._pending_out = self._pending_out, []
        self._send_datagrams(pending)

    def _send_datagrams(self, datagrams: Sequence[bytes]) -> None:
        agent = self._ice
        for data in datagrams:
            if agent is None or not agent.send_now(data):
                if len(self._pending_out) < 64:
                    self._pending_out.append(data)
            else:
                self._counters["dtls_datagrams"] += 1

    def _send_rtcp_now(self, packet: bytes) -> bool:
        tx = self._srtp_tx
        agent = self._ice
        if tx is None or agent is None:
            return False
        try:
            protected = tx.protect_rtcp(packet)
        except pylibsrtp.Error:
            self._counters["srtp_errors"] += 1
            return False
        if not agent.send_now(protected):
            return False
        self._counters["rtcp_sent"] += 1
        return True

    # --- receive path

    def _on_datagram(self, data: bytes) -> None:
        if self._closed or not data:
            return
        self._last_rx = asyncio.get_running_loop().time()
        if self._state == "disconnected":
            self._set_state("connected")
        first = data[0]
        if 127 < first < 192:
            rx = self._srtp_rx
            if rx is None:
                return
            if len(data) > 1 and 192 <= data[1] <= 223:
                try:
                    plain = rx.unprotect_rtcp(data)
                except pylibsrtp.Error:
                    self._counters["srtp_errors"] += 1
                    return
                self._on_rtcp(plain)
            else:
                try:
                    plain = rx.unprotect(data)
                except pylibsrtp.Error:
                    self._counters["srtp_errors"] += 1
                    return
                self._on_rtp(plain)
        elif 19 < first < 64 and self._dtls is not None:
            self._send_datagrams(self._dtls.receive(data))
            self._after_dtls()

    def _after_dtls(self) -> None:
        dtls = self._dtls
        if dtls is None:
            return
        if dtls.state == "connected" and self._srtp_rx is None:
            self._srtp_tx, self._srtp_rx = dtls.tx, dtls.rx
            profile = dtls.profile.openssl_name.decode() if dtls.profile else "?"
            log.info("%s: DTLS-SRTP up (%s)", self.call_id, profile)
            self._set_state("connected")
            self._spawn(self._rtcp_loop())
            self._start_mode()
        elif dtls.state == "failed":
            self._fail(dtls.failure or "DTLS failed")
        elif dtls.state == "closed" and not self._closed:
            log.info("%s: the browser closed DTLS", self.call_id)
            self._spawn(self.close())
            return
        self._arm_dtls_timer()

    def _arm_dtls_timer(self) -> None:
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
            self._dtls_timer = None
        if self._dtls is None or self._closed:
            return
        delay = self._dtls.timeout()
        if delay is not None:
            self._dtls_timer = asyncio.get_running_loop().call_later(delay, self._dtls_fire)

    def _dtls_fire(self) -> None:
        self._dtls_timer = None
        if self._dtls is None or self._closed:
            return
        self._send_datagrams(self._dtls.handle_timeout())
        self._after_dtls()

    def _apply_plans(self, plans: Sequence[MediaPlan]) -> None:
        self._plans = {p.kind: p for p in plans}
        self._pt_kind = {}
        for plan in plans:
            for pt in plan.payload_types:
                self._pt_kind[pt] = plan.kind
        learned = {s: k for s, k in self._ssrc_kind.items() if k in self._plans}
        self._ssrc_kind = learned
        for plan in plans:
            for ssrc in plan.remote_ssrcs:
                self._ssrc_kind[ssrc] = plan.kind

    def _on_rtp(self, packet: bytes) -> None:
        if len(packet) < 12:
            return
        pt = packet[1] & 0x7F
        seq, timestamp = _SEQ_TS.unpack_from(packet, 2)
        ssrc = _SSRC.unpack_from(packet, 8)[0]
        kind = self._ssrc_kind.get(ssrc)
        if kind is None or self._pt_kind.get(pt) != kind:
            kind = self._pt_kind.get(pt)
            if kind is None:
                self._counters["rtp_unknown"] += 1
                return
            self._ssrc_kind[ssrc] = kind
        plan = self._plans[kind]
        if pt == plan.codec.payload_type:
            self._remote_media_ssrc[kind] = ssrc
        stats = self._rx_stats.get(ssrc)
        if stats is None:
            stats = self._rx_stats[ssrc] = rtp.ReceiveStats(ssrc, plan.codec.clock_rate)
        stats.update(seq, timestamp, len(packet), self._last_rx)
        self._packets_received[kind] = self._packets_received.get(kind, 0) + 1
        self._bytes_received[kind] = self._bytes_received.get(kind, 0) + len(packet)
        if self.mode == "echo":
            self.send_rtp(kind, packet)
        if self.on_rtp is not None:
            try:
                self.on_rtp(kind, packet)
            except Exception:
                self._callback_failed("on_rtp")

    def _on_rtcp(self, packet: bytes) -> None:
        self._counters["rtcp_received"] += 1
        try:
            items = rtp.parse_rtcp(packet)
        except rtp.RtcpError:
            self._counters["rtcp_malformed"] += 1
            items = []
        now = self._last_rx
        for item in items:
            if isinstance(item, rtp.SenderReport):
                stats = self._rx_stats.get(item.ssrc)
                if stats is not None:
                    stats.sender_report(item.ntp, now)
                self._take_reports(item.reports)
            elif isinstance(item, rtp.ReceiverReport):
                self._take_reports(item.reports)
            elif isinstance(item, rtp.Pli):
                self._counters["pli_received"] += 1
                self._feedback(Feedback("pli", self._local_kind.get(item.media_ssrc),
                                        item.media_ssrc))
            elif isinstance(item, rtp.Fir):
                for ssrc, _ in item.entries:
                    if ssrc in self._local_kind:
                        self._counters["fir_received"] += 1
                        self._feedback(Feedback("fir", self._local_kind[ssrc], ssrc))
            elif isinstance(item, rtp.Nack):
                self._counters["nack_received"] += 1
                kind = self._local_kind.get(item.media_ssrc)
                if kind is not None:
                    self._retransmit(kind, item.lost)
                self._feedback(Feedback("nack", kind, item.media_ssrc, lost=item.lost))
            elif isinstance(item, rtp.Remb):
                self._remb_received = item.bitrate
                ours = [s for s in item.ssrcs if s in self._local_kind]
                self._feedback(Feedback("remb", self._local_kind.get(ours[0]) if ours else None,
                                        ours[0] if ours else 0, bitrate=item.bitrate))
        if self.on_rtcp is not None:
            try:
                self.on_rtcp(packet)
            except Exception:
                self._callback_failed("on_rtcp")

    def _callback_failed(self, name: str) -> None:
        """A bridge callback raised: count it, log the first few (this is per packet)."""
        self._counters["callback_errors"] += 1
        if self._counters["callback_errors"] <= 3:
            log.exception("%s: %s callback failed", self.call_id, name)

    def _take_reports(self, blocks: Sequence[rtp.ReportBlock]) -> None:
        for block in blocks:
            kind = self._local_kind.get(block.ssrc)
            if kind is None:
                continue
            self._remote_reports[kind] = block
            if block.lsr:
                now = rtp.ntp_middle(rtp.ntp_now())
                rtt = ((now - block.lsr - block.dlsr) & 0xFFFFFFFF) / 65536.0
                if rtt < 60:
                    self._rtt[kind] = rtt

    def _feedback(self, event: Feedback) -> None:
        if event.type in ("pli", "fir") and event.kind == "video":
            if self.mode == "echo":
                now = asyncio.get_running_loop().time()
                if now - self._last_forwarded_keyframe >= KEYFRAME_FORWARD_GAP:
                    self._last_forwarded_keyframe = now
                    self.request_keyframe("video")
            elif self._pattern is not None:
                self._pattern.request_keyframe()
        if self.on_feedback is not None:
            try:
                self.on_feedback(event)
            except Exception:
                log.exception("%s: on_feedback callback failed", self.call_id)

    def _retransmit(self, kind: str, lost: Sequence[int]) -> None:
        history = self._history.get(kind)
        tx, agent = self._srtp_tx, self._ice
        if not history or tx is None or agent is None:
            return
        for seq in lost:
            packet = history.get(seq)
            if packet is None:
                continue
            try:
                if agent.send_now(tx.protect(packet)):
                    self._counters["retransmitted"] += 1
            except pylibsrtp.Error:
                self._counters["srtp_errors"] += 1

    # --- periodic RTCP and liveness

    async def _rtcp_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(RTCP_INTERVAL * (0.5 + random.random()))
            now = loop.time()
            if self._state == "connected" and now - self._last_rx > DISCONNECTED_AFTER:
                self._set_state("disconnected")
            packet = self._build_report(now)
            if packet:
                self._send_rtcp_now(packet)

    def _build_report(self, now: float) -> bytes:
        out = b""
        sdes = b""
        ntp = rtp.ntp_now()
        for kind, plan in self._plans.items():
            ssrc = self._local_ssrc[kind]
            blocks = [st.report_block(now) for s, st in self._rx_stats.items()
                      if self._ssrc_kind.get(s) == kind][:31]
            sent = self._tx.get(kind)
            if sent is not None and sent.packets:
                elapsed = max(0.0, now - sent.last_sent_at)
                timestamp = sent.last_timestamp + int(elapsed * sent.clock_rate)
                out += rtp.build_sr(ssrc, ntp, timestamp, sent.packets, sent.octets, blocks)
            else:
                out += rtp.build_rr(ssrc, blocks)
            sdes += rtp.build_sdes(ssrc, self._cname)
            if kind == "video" and plan.remb and self.video_bitrate_cap:
                media = sorted({s for s, k in self._ssrc_kind.items() if k == "video"
                                and s in self._rx_stats})
                if media:
                    sdes += rtp.build_remb(ssrc, self.video_bitrate_cap, media)
        return out + sdes

    # --- modes

    def _start_mode(self) -> None:
        if self.mode == "test-pattern" and self._pattern is None:
            self._pattern = TestPattern(self.send_rtp, self._plans.get("video"),
                                        self._plans.get("audio"))
            self._pattern.start()

    async def _restart_pattern(self) -> None:
        """A re-offer that changed a codec restarts the pattern with the new one."""
        old = self._pattern
        if old is None:
            return

        def codecs(video: MediaPlan | None, audio: MediaPlan | None) -> tuple[object, ...]:
            return tuple(None if p is None else (p.codec.name, p.codec.payload_type)
                         for p in (video, audio))

        if codecs(old.video, old.audio) == codecs(self._plans.get("video"),
                                                  self._plans.get("audio")):
            return
        await old.stop()
        self._pattern = None
        self._start_mode()


if TYPE_CHECKING:

    def _implements_api(
        endpoint: WebRtcEndpoint, session: WebRtcSession
    ) -> tuple[MediaEndpoint, MediaSession]:
        """mypy checks here that the classes satisfy the protocols of api.py."""
        return endpoint, session
