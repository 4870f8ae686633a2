"""Browser offers and our answers (JSEP, RFC 8829; BUNDLE 8843; ICE SDP 8839; DTLS 8842).

Codec choice reuses the SIP side's offer/answer (``gateway.sip.sdp.negotiate``): one codec
per kind, the first of the session's preference list that the browser offers, so the media
bridge can insist on the codec the kiosk has and relay without transcoding.  This module
adds what SIP does not have: BUNDLE, ICE credentials and candidates, DTLS fingerprint and
setup role, msid/ssrc for our streams.  Sans-IO: text in, text out.

Decisions, in one place:

- Only the first BUNDLE group is used, and only ``UDP/TLS/RTP/SAVPF`` audio/video m-lines in
  it are accepted (one per kind); everything else (data channels, a second video, m-lines
  outside the group) is rejected with port 0.  rtcp-mux is required.
- rtcp-fb answered for video: ``nack``, ``nack pli``, ``ccm fir``, ``goog-remb``.  Not
  ``transport-cc``: the gateway does not send transport-wide feedback, and answering it
  without sending the feedback would stall Chrome's bandwidth estimate.  Without it Chrome
  uses REMB (which the endpoint sends as a bitrate cap) and receiver-report loss.
- No RTP header extensions and no RTX, RED or FEC are answered: packets the browser sends
  then carry none of them, so they can be relayed to a SIP kiosk unchanged.
- ``a=setup``: we answer ``active`` (we start DTLS) unless the browser offered ``active``.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.sip import sdp
from gateway.sip.sdp import Codec, CodecCap, Direction, MediaCaps, SessionDescription

from .dtls import FINGERPRINT_ALGORITHMS

__all__ = [
    "DEFAULT_PREFERENCES",
    "PROTO",
    "CodecPreference",
    "LocalTransport",
    "MediaPlan",
    "OfferError",
    "RemoteTransport",
    "build_answer",
    "codec_caps",
    "read_offer",
]

PROTO = "UDP/TLS/RTP/SAVPF"
KINDS = ("audio", "video")

_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
_FINGERPRINT_VALUE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+")

VIDEO_FEEDBACK = ["nack", "nack pli", "ccm fir", "goog-remb"]

CodecPreference = str | CodecCap
"""A codec name known here ("VP8", "H264", "opus", "PCMU", "PCMA") or a CodecCap."""

BUILTIN_CODECS: dict[str, CodecCap] = {
    "vp8": CodecCap("VP8", 90000),
    "h264": CodecCap("H264", 90000, fmtp={
        "level-asymmetry-allowed": "1", "packetization-mode": "1", "profile-level-id": "42e01f",
    }),
    "opus": CodecCap("opus", 48000, 2, fmtp={"minptime": "10", "useinbandfec": "1"}),
    "pcmu": CodecCap("PCMU", 8000),
    "pcma": CodecCap("PCMA", 8000),
}

DEFAULT_PREFERENCES: dict[str, list[CodecPreference]] = {
    "audio": ["opus", "PCMU", "PCMA"],
    "video": ["VP8", "H264"],
}


class OfferError(ValueError):
    """A browser offer the gateway cannot answer; the message says why."""


@dataclass
class RemoteTransport:
    """The browser's side of the one BUNDLE transport."""

    tag_index: int
    tag_mid: str | None
    bundle_mids: list[str]
    ice_ufrag: str
    ice_pwd: str
    ice_lite: bool
    fingerprints: list[tuple[str, str]]
    setup: str
    candidates: list[str] = field(default_factory=list)
    end_of_candidates: bool = False


@dataclass
class LocalTransport:
    """Our side: what goes into every accepted m-line of the answer."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: tuple[str, str]  # (algorithm, value)
    setup: str  # "active" | "passive"
    candidates: list[str] = field(default_factory=list)  # "candidate:..." lines
    end_of_candidates: bool = False
    address: str = "0.0.0.0"  # default candidate, for c= and the m= port
    port: int = 9
    ssrcs: dict[str, int] = field(default_factory=dict)  # kind -> our SSRC
    cname: str = ""
    stream_id: str = ""


@dataclass
class MediaPlan:
    """One accepted m-line: what was agreed, from the gateway's point of view."""

    index: int
    mid: str | None
    kind: str
    codec: Codec  # the browser's payload type, fmtp and agreed rtcp-fb
    telephone_event: Codec | None
    direction: Direction  # ours: sendrecv, sendonly (we only send), ...
    remote_ssrcs: list[int]

    @property
    def payload_types(self) -> set[int]:
        pts = {self.codec.payload_type}
        if self.telephone_event is not None:
            pts.add(self.telephone_event.payload_type)
        return pts

    @property
    def fir(self) -> bool:
        return "ccm fir" in self.codec.rtcp_fb

    @property
    def remb(self) -> bool:
        return "goog-remb" in self.codec.rtcp_fb

    @property
    def nack(self) -> bool:
        return "nack" in self.codec.rtcp_fb


def codec_caps(kind: str, preferences: Sequence[CodecPreference]) -> list[CodecCap]:
    """The CodecCaps for a preference list; ValueError for a name we do not know."""
    caps: list[CodecCap] = []
    for pref in preferences:
        if isinstance(pref, CodecCap):
            caps.append(copy.deepcopy(pref))
            continue
        cap = BUILTIN_CODECS.get(pref.lower())
        if cap is None or (kind == "video") != (cap.clock_rate == 90000):
            raise ValueError(f"unknown {kind} codec {pref!r}; known: "
                             + ", ".join(c.name for c in BUILTIN_CODECS.values()))
        caps.append(copy.deepcopy(cap))
    return caps


def _capabilities(preferences: Mapping[str, Sequence[CodecPreference]]) -> sdp.Capabilities:
    media: dict[str, MediaCaps] = {}
    for kind in KINDS:
        prefs = preferences.get(kind, DEFAULT_PREFERENCES[kind])
        codecs = codec_caps(kind, prefs)
        if kind == "audio":
            codecs += [CodecCap("telephone-event", 48000), CodecCap("telephone-event", 8000)]
        media[kind] = MediaCaps(
            codecs=codecs,
            rtcp_fb=list(VIDEO_FEEDBACK) if kind == "video" else [],
            protos=(PROTO,),
            offer_proto=PROTO,
            rtcp_mux=True,
            max_streams=1,
            max_codecs=1,
            prefer_local_order=True,
        )
    return sdp.Capabilities(media=media)


def _attr(offer: SessionDescription, media: sdp.MediaDescription, name: str) -> str | None:
    value = media.get(name)
    if value is None:
        value = offer.get(name)
    return value.strip() if value is not None else None


def read_offer(text: str) -> tuple[SessionDescription, RemoteTransport]:
    """Parse and check a browser offer; OfferError says what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise OfferError("the offer is empty")
    try:
        offer = sdp.parse(text)
    except sdp.SdpError as exc:
        raise OfferError(f"the offer is not valid SDP: {exc}") from exc
    if not offer.media:
        raise OfferError("the offer has no media (m=) lines")
    bundle: list[str] = []
    for group in offer.get_all("group"):
        tokens = (group.value or "").split()
        if tokens and tokens[0] == "BUNDLE":
            bundle = tokens[1:]
            break
    # The BUNDLE tag: the first m-line in the group (or the first m-line without BUNDLE).
    tag_index = 0
    if bundle:
        mids = [m.mid for m in offer.media]
        present = [mid for mid in bundle if mid in mids]
        if not present:
            raise OfferError("a=group:BUNDLE names no m-line of the offer")
        tag_index = mids.index(present[0])
    tag = offer.media[tag_index]
    ufrag = _attr(offer, tag, "ice-ufrag")
    pwd = _attr(offer, tag, "ice-pwd")
    if not ufrag:
        raise OfferError("the offer has no a=ice-ufrag")
    if not pwd:
        raise OfferError("the offer has no a=ice-pwd")
    if not (4 <= len(ufrag) <= 256 and _ICE_CHARS.fullmatch(ufrag)):
        raise OfferError(f"a=ice-ufrag {ufrag[:40]!r} is not 4-256 ice-chars")
    if not (22 <= len(pwd) <= 256 and _ICE_CHARS.fullmatch(pwd)):
        raise OfferError("a=ice-pwd is not 22-256 ice-chars")
    fingerprints: list[tuple[str, str]] = []
    for attr in tag.get_all("fingerprint") or offer.get_all("fingerprint"):
        algorithm, _, value = (attr.value or "").strip().partition(" ")
        value = value.strip()
        if not _FINGERPRINT_VALUE.fullmatch(value):
            raise OfferError(f"a=fingerprint {attr.value!r} is malformed")
        fingerprints.append((algorithm.lower(), value.upper()))
    if not fingerprints:
        raise OfferError("the offer has no a=fingerprint (DTLS-SRTP is required)")
    if not any(a in FINGERPRINT_ALGORITHMS for a, _ in fingerprints):
        raise OfferError("no a=fingerprint uses a supported hash (sha-1 ... sha-512)")
    setup = (_attr(offer, tag, "setup") or "active").lower()
    if setup not in ("actpass", "active", "passive"):
        raise OfferError(f"a=setup:{setup} is not actpass, active or passive")
    candidates = [f"candidate:{a.value}" for a in tag.get_all("candidate") if a.value]
    return offer, RemoteTransport(
        tag_index=tag_index,
        tag_mid=tag.mid,
        bundle_mids=bundle,
        ice_ufrag=ufrag,
        ice_pwd=pwd,
        ice_lite=offer.has("ice-lite"),
        fingerprints=fingerprints,
        setup=setup,
        candidates=candidates,
        end_of_candidates=tag.has("end-of-candidates") or offer.has("end-of-candidates"),
    )


def build_answer(
    offer: SessionDescription,
    remote: RemoteTransport,
    local: LocalTransport,
    preferences: Mapping[str, Sequence[CodecPreference]],
    *,
    origin: sdp.Origin,
) -> tuple[str, list[MediaPlan]]:
    """Our answer text and the m-lines it accepts; OfferError if it accepts none."""
    usable = offer.copy()
    for index, m in enumerate(usable.media):
        in_bundle = not remote.bundle_mids or m.mid in remote.bundle_mids
        if not remote.bundle_mids and index != remote.tag_index:
            in_bundle = False  # without BUNDLE only one transport: the first m-line's
        if m.port == 0 and m.has("bundle-only") and in_bundle:
            m.port = 9  # RFC 8843 6: bundle-only m-lines are offered with port 0
        if not in_bundle or m.kind.lower() not in KINDS or not m.rtcp_mux:
            m.port = 0
    try:
        answer = sdp.negotiate(
            usable, _capabilities(preferences), origin=origin, address=local.address,
            ports=lambda index, kind: local.port,
        )
        agreed = sdp.apply_answer(usable, answer, local="answerer")
    except sdp.SdpError as exc:
        raise OfferError(f"cannot answer the offer: {exc}") from exc
    plans: list[MediaPlan] = []
    for result in agreed:
        if result.rejected or result.codec is None:
            continue
        offered = usable.media[result.index]
        plans.append(MediaPlan(
            index=result.index,
            mid=result.mid,
            kind=result.kind.lower(),
            codec=result.codec,
            telephone_event=result.telephone_event,
            direction=result.direction,
            remote_ssrcs=sorted({s.ssrc for s in offered.ssrcs()}),
        ))
    if not plans:
        raise OfferError("the offer has no audio or video the gateway can take "
                         "(needs BUNDLE, rtcp-mux, UDP/TLS/RTP/SAVPF and a common codec)")
    accepted_mids = [p.mid for p in plans if p.mid is not None]
    if accepted_mids:
        answer.add("group", "BUNDLE " + " ".join(accepted_mids))
    answer.add("msid-semantic", "WMS *")
    first = True
    for plan in plans:
        m = answer.media[plan.index]
        m.add("ice-ufrag", local.ice_ufrag)
        m.add("ice-pwd", local.ice_pwd)
        m.add("ice-options", "trickle")
        m.add("fingerprint", f"{local.fingerprint[0]} {local.fingerprint[1]}")
        m.add("setup", local.setup)
        ssrc = local.ssrcs.get(plan.kind)
        if plan.direction.sends and ssrc is not None:
            track = f"{local.stream_id}-{plan.kind}"
            m.add("msid", f"{local.stream_id} {track}")
            m.add("ssrc", f"{ssrc} cname:{local.cname}")
            m.add("ssrc", f"{ssrc} msid:{local.stream_id} {track}")
        if first:  # candidates belong to the BUNDLE transport: the first accepted m-line
            for line in local.candidates:
                m.add("candidate", line[len("candidate:"):] if line.startswith("candidate:")
                      else line)
            if local.end_of_candidates:
                m.add("end-of-candidates")
            first = False
    return str(answer), plans


def new_origin() -> sdp.Origin:
    return sdp.Origin("-", str(secrets.randbits(62)), 1, "IN", "IP4", "0.0.0.0")
