"""RTP and RTCP at the byte level (RFC 3550, 4585, 5104, draft-alvestrand-rmcat-remb; sans-IO).

The media bridge relays packets without decoding them, so what it needs is cheap access to
a few header fields (payload type, sequence number, timestamp, SSRC), a way to rewrite the
SSRC, the RTCP that a WebRTC endpoint must speak itself (sender and receiver reports, the
keyframe requests PLI and FIR, NACK, REMB) and the receive statistics those reports carry.
Written here, typed and small, rather than taken from aiortc's undocumented ``aiortc.rtp``.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "RTCP_SR",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_BYE",
    "RTCP_RTPFB",
    "RTCP_PSFB",
    "RtcpError",
    "RtpHeader",
    "ReportBlock",
    "SenderReport",
    "ReceiverReport",
    "Bye",
    "Pli",
    "Fir",
    "Nack",
    "Remb",
    "OtherRtcp",
    "RtcpItem",
    "ReceiveStats",
    "is_rtcp",
    "parse_rtp_header",
    "with_ssrc",
    "parse_rtcp",
    "build_sr",
    "build_rr",
    "build_sdes",
    "build_bye",
    "build_pli",
    "build_fir",
    "build_nack",
    "build_remb",
    "ntp_now",
    "ntp_middle",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204
RTCP_RTPFB = 205
RTCP_PSFB = 206

_FMT_NACK = 1
_FMT_PLI = 1
_FMT_FIR = 4
_FMT_AFB = 15  # application layer feedback: REMB

_RTP = struct.Struct("!BBHII")
_RTCP_HEADER = struct.Struct("!BBH")
_SSRC = struct.Struct("!I")
_SR_INFO = struct.Struct("!IIIIII")  # ssrc, ntp sec, ntp frac, rtp ts, packets, octets
_BLOCK = struct.Struct("!IIIIII")
_FB = struct.Struct("!II")
_NTP_EPOCH_OFFSET = 2208988800  # 1900-01-01 to 1970-01-01 in seconds


class RtcpError(ValueError):
    """An RTCP packet that cannot be parsed."""


def is_rtcp(packet: bytes) -> bool:
    """RFC 5761 4: with rtcp-mux, packet types 192-223 are RTCP, everything else RTP."""
    return len(packet) >= 2 and 192 <= packet[1] <= 223


@dataclass(frozen=True)
class RtpHeader:
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int


def parse_rtp_header(packet: bytes) -> RtpHeader | None:
    """The fixed header, or None for something that is not RTP version 2."""
    if len(packet) < 12 or packet[0] >> 6 != 2:
        return None
    b0, b1, seq, ts, ssrc = _RTP.unpack_from(packet)
    return RtpHeader(b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc)


def with_ssrc(packet: bytes, ssrc: int) -> bytes:
    """The same RTP packet with another SSRC; nothing else changes."""
    return packet[:8] + _SSRC.pack(ssrc) + packet[12:]


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int  # 0-255, fixed point /256
    cumulative_lost: int  # signed 24 bits
    highest_sequence: int  # extended
    jitter: int  # in timestamp units
    lsr: int  # middle 32 bits of the NTP time of the last SR received, 0 if none
    dlsr: int  # delay since that SR, 1/65536 s


@dataclass(frozen=True)
class SenderReport:
    ssrc: int
    ntp: int  # 64-bit NTP timestamp
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True)
class Bye:
    ssrcs: tuple[int, ...]


@dataclass(frozen=True)
class Pli:
    sender_ssrc: int
    media_ssrc: int


@dataclass(frozen=True)
class Fir:
    sender_ssrc: int
    entries: tuple[tuple[int, int], ...]  # (ssrc, command sequence number)


@dataclass(frozen=True)
class Nack:
    sender_ssrc: int
    media_ssrc: int
    lost: tuple[int, ...]


@dataclass(frozen=True)
class Remb:
    sender_ssrc: int
    bitrate: int  # bits per second
    ssrcs: tuple[int, ...]


@dataclass(frozen=True)
class OtherRtcp:
    """SDES, APP and feedback we do not interpret; kept so callers can count them."""

    packet_type: int
    fmt: int


RtcpItem = SenderReport | ReceiverReport | Bye | Pli | Fir | Nack | Remb | OtherRtcp


# --------------------------------------------------------------------------- parsing


def _blocks(data: bytes, offset: int, count: int, end: int) -> tuple[ReportBlock, ...]:
    out: list[ReportBlock] = []
    for _ in range(count):
        if offset + 24 > end:
            raise RtcpError("report block truncated")
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        out.append(ReportBlock(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr))
        offset += 24
    return tuple(out)


def _nack_lost(fci: bytes) -> tuple[int, ...]:
    lost: list[int] = []
    for pos in range(0, len(fci) - 3, 4):
        pid, blp = struct.unpack_from("!HH", fci, pos)
        lost.append(pid)
        for bit in range(16):
            if blp & (1 << bit):
                lost.append((pid + bit + 1) & 0xFFFF)
    return tuple(lost)


def _remb(sender: int, fci: bytes) -> Remb | None:
    if len(fci) < 8 or fci[:4] != b"REMB":
        return None
    count = fci[4]
    exponent = fci[5] >> 2
    mantissa = ((fci[5] & 0x03) << 16) | (fci[6] << 8) | fci[7]
    ssrcs = tuple(
        _SSRC.unpack_from(fci, 8 + 4 * i)[0] for i in range(count) if 12 + 4 * i <= len(fci)
    )
    return Remb(sender, mantissa << exponent, ssrcs)


def parse_rtcp(data: bytes) -> list[RtcpItem]:
    """Every packet of a (compound or reduced-size) RTCP datagram, in order.

    Raises RtcpError when the framing itself is broken; unknown packet types are returned
    as OtherRtcp.
    """
    out: list[RtcpItem] = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise RtcpError("truncated RTCP header")
        b0, ptype, length = _RTCP_HEADER.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise RtcpError(f"RTCP version {b0 >> 6}")
        end = pos + 4 + 4 * length
        if end > len(data):
            raise RtcpError("RTCP length exceeds the datagram")
        count = b0 & 0x1F
        body = pos + 4
        if b0 & 0x20 and end > body:  # padding: the last octet says how much
            end -= data[end - 1]
            if end < body:
                raise RtcpError("bad RTCP padding")
        if ptype == RTCP_SR:
            if body + 24 > end:
                raise RtcpError("sender report truncated")
            ssrc, sec, frac, rtp_ts, packets, octets = _SR_INFO.unpack_from(data, body)
            blocks = _blocks(data, body + 24, count, end)
            out.append(SenderReport(ssrc, (sec << 32) | frac, rtp_ts, packets, octets, blocks))
        elif ptype == RTCP_RR:
            if body + 4 > end:
                raise RtcpError("receiver report truncated")
            out.append(ReceiverReport(_SSRC.unpack_from(data, body)[0],
                                      _blocks(data, body + 4, count, end)))
        elif ptype == RTCP_BYE:
            ssrcs = tuple(
                _SSRC.unpack_from(data, body + 4 * i)[0]
                for i in range(count) if body + 4 * i + 4 <= end
            )
            out.append(Bye(ssrcs))
        elif ptype in (RTCP_RTPFB, RTCP_PSFB):
            if body + 8 > end:
                raise RtcpError("feedback packet truncated")
            sender, media = _FB.unpack_from(data, body)
            fci = data[body + 8 : end]
            item: RtcpItem | None = None
            if ptype == RTCP_RTPFB and count == _FMT_NACK:
                item = Nack(sender, media, _nack_lost(fci))
            elif ptype == RTCP_PSFB and count == _FMT_PLI:
                item = Pli(sender, media)
            elif ptype == RTCP_PSFB and count == _FMT_FIR:
                entries = tuple(
                    (_SSRC.unpack_from(fci, i)[0], fci[i + 4])
                    for i in range(0, len(fci) - 7, 8)
                )
                item = Fir(sender, entries)
            elif ptype == RTCP_PSFB and count == _FMT_AFB:
                item = _remb(sender, fci)
            out.append(item if item is not None else OtherRtcp(ptype, count))
        else:
            out.append(OtherRtcp(ptype, count))
        pos = pos + 4 + 4 * length
    return out


# --------------------------------------------------------------------------- building


def _header(count: int, ptype: int, body_len: int) -> bytes:
    if body_len % 4:
        raise ValueError("RTCP body must be a multiple of 4 octets")
    return _RTCP_HEADER.pack(0x80 | count, ptype, body_len // 4)


def _pack_blocks(blocks: Sequence[ReportBlock]) -> bytes:
    out = b""
    for b in blocks[:31]:
        lost = (b.fraction_lost & 0xFF) << 24 | (b.cumulative_lost & 0xFFFFFF)
        out += _BLOCK.pack(b.ssrc, lost, b.highest_sequence & 0xFFFFFFFF, b.jitter & 0xFFFFFFFF,
                           b.lsr & 0xFFFFFFFF, b.dlsr & 0xFFFFFFFF)
    return out


def build_sr(
    ssrc: int, ntp: int, rtp_timestamp: int, packet_count: int, octet_count: int,
    reports: Sequence[ReportBlock] = (),
) -> bytes:
    body = _SR_INFO.pack(
        ssrc, (ntp >> 32) & 0xFFFFFFFF, ntp & 0xFFFFFFFF, rtp_timestamp & 0xFFFFFFFF,
        packet_count & 0xFFFFFFFF, octet_count & 0xFFFFFFFF,
    ) + _pack_blocks(reports)
    return _header(min(len(reports), 31), RTCP_SR, len(body)) + body


def build_rr(ssrc: int, reports: Sequence[ReportBlock] = ()) -> bytes:
    body = _SSRC.pack(ssrc) + _pack_blocks(reports)
    return _header(min(len(reports), 31), RTCP_RR, len(body)) + body


def build_sdes(ssrc: int, cname: str) -> bytes:
    text = cname.encode("utf-8")[:255]
    chunk = _SSRC.pack(ssrc) + bytes([1, len(text)]) + text + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return _header(1, RTCP_SDES, len(chunk)) + chunk


def build_bye(ssrcs: Sequence[int]) -> bytes:
    body = b"".join(_SSRC.pack(s) for s in ssrcs[:31])
    return _header(min(len(ssrcs), 31), RTCP_BYE, len(body)) + body


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return _header(_FMT_PLI, RTCP_PSFB, 8) + _FB.pack(sender_ssrc, media_ssrc)


def build_fir(sender_ssrc: int, media_ssrc: int, sequence: int) -> bytes:
    """RFC 5104 4.3.1: the media SSRC field is 0, the target is in the FCI."""
    body = _FB.pack(sender_ssrc, 0) + _SSRC.pack(media_ssrc) + bytes([sequence & 0xFF, 0, 0, 0])
    return _header(_FMT_FIR, RTCP_PSFB, len(body)) + body


def build_nack(sender_ssrc: int, media_ssrc: int, lost: Iterable[int]) -> bytes:
    fci = b""
    pending = sorted(set(s & 0xFFFF for s in lost))
    while pending:
        pid = pending.pop(0)
        blp = 0
        rest = []
        for s in pending:
            delta = (s - pid) & 0xFFFF
            if 1 <= delta <= 16:
                blp |= 1 << (delta - 1)
            else:
                rest.append(s)
        pending = rest
        fci += struct.pack("!HH", pid, blp)
    body = _FB.pack(sender_ssrc, media_ssrc) + fci
    return _header(_FMT_NACK, RTCP_RTPFB, len(body)) + body


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: Sequence[int]) -> bytes:
    exponent = 0
    mantissa = max(0, int(bitrate))
    while mantissa > 0x3FFFF:
        mantissa >>= 1
        exponent += 1
    fci = b"REMB" + bytes([
        len(ssrcs) & 0xFF, (exponent << 2) | (mantissa >> 16), (mantissa >> 8) & 0xFF,
        mantissa & 0xFF,
    ]) + b"".join(_SSRC.pack(s) for s in ssrcs)
    body = _FB.pack(sender_ssrc, 0) + fci
    return _header(_FMT_AFB, RTCP_PSFB, len(body)) + body


# --------------------------------------------------------------------------- time


def ntp_now(wallclock: float | None = None) -> int:
    """The 64-bit NTP timestamp for a Unix time (default: now)."""
    t = time.time() if wallclock is None else wallclock
    seconds = int(t)
    return ((seconds + _NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32 | int((t - seconds) * (1 << 32))


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits, as carried in LSR."""
    return (ntp >> 16) & 0xFFFFFFFF


# --------------------------------------------------------------------------- receive stats


@dataclass
class ReceiveStats:
    """RFC 3550 appendix A.1, A.3 and A.8 for one remote SSRC: what goes into its report block.

    ``now`` is a monotonic time in seconds, injected so this stays deterministic.
    """

    ssrc: int
    clock_rate: int
    packets: int = 0
    octets: int = 0
    base_seq: int = -1
    max_seq: int = 0
    cycles: int = 0
    jitter: float = 0.0
    _transit: float | None = field(default=None, repr=False)
    _expected_prior: int = field(default=0, repr=False)
    _received_prior: int = field(default=0, repr=False)
    _last_sr: int = field(default=0, repr=False)  # middle 32 bits of the last SR's NTP
    _last_sr_at: float = field(default=0.0, repr=False)

    def update(self, sequence: int, timestamp: int, size: int, now: float) -> None:
        self.packets += 1
        self.octets += size
        if self.base_seq < 0:
            self.base_seq = sequence
            self.max_seq = sequence
        else:
            delta = (sequence - self.max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if sequence < self.max_seq:
                    self.cycles += 1 << 16
                self.max_seq = sequence
            # otherwise a duplicate or a late (reordered) packet: max_seq stays
        if self.clock_rate > 0:
            arrival = now * self.clock_rate
            transit = arrival - timestamp
            if self._transit is not None:
                d = abs(transit - self._transit)
                if d < self.clock_rate * 10:  # ignore timestamp jumps (new source, wrap)
                    self.jitter += (d - self.jitter) / 16.0
            self._transit = transit

    def sender_report(self, ntp: int, now: float) -> None:
        self._last_sr = ntp_middle(ntp)
        self._last_sr_at = now

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def lost(self) -> int:
        if self.base_seq < 0:
            return 0
        return self.extended_max - self.base_seq + 1 - self.packets

    def report_block(self, now: float) -> ReportBlock:
        """The block for the next RR/SR; updates the 'since last report' counters."""
        expected = self.extended_max - self.base_seq + 1 if self.base_seq >= 0 else 0
        expected_interval = expected - self._expected_prior
        received_interval = self.packets - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.packets
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        cumulative = max(-0x800000, min(0x7FFFFF, self.lost))
        dlsr = 0
        if self._last_sr:
            dlsr = int((now - self._last_sr_at) * 65536) & 0xFFFFFFFF
        return ReportBlock(
            self.ssrc, fraction, cumulative, self.extended_max & 0xFFFFFFFF,
            int(self.jitter), self._last_sr, dlsr,
        )
