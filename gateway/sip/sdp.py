"""SDP (RFC 8866/4566) model, parser and serializer, and RFC 3264 offer/answer (sans-IO).

Written by hand because no maintained Python SDP library covers parsing, building and
offer/answer together; this module needs none, and does no I/O.

The parser is strict about what it cannot make sense of (it raises ``SdpError`` naming the
line) and lenient about what it can: LF-only line ends, blank lines, a missing ``t=`` and
lines out of the RFC order inside a section are accepted.  Attribute values are kept as
text, in order, and parsed on demand by the helpers, so nothing the gateway does not
understand is lost when a description is passed on.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

__all__ = [
    "ASSOCIATED_CODECS",
    "STATIC_PAYLOAD_TYPES",
    "SRTP_KEY_LENGTHS",
    "Attribute",
    "Bandwidth",
    "Capabilities",
    "Codec",
    "CodecCap",
    "Connection",
    "Crypto",
    "Direction",
    "H264ProfileLevelId",
    "KeyParam",
    "MediaCaps",
    "MediaDescription",
    "NegotiatedMedia",
    "Origin",
    "RtcpAttr",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "Ssrc",
    "SsrcGroup",
    "Timing",
    "apply_answer",
    "bump_version",
    "create_offer",
    "negotiate",
    "parse",
    "parse_fmtp",
]


class SdpError(ValueError):
    """A description that cannot be used; ``line`` is its 1-based line number, if known.

    A ValueError so that callers answering 488/400 can catch one type for all bad input.
    """

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {reason}" if line is not None else reason)
        self.reason = reason
        self.line = line


# --------------------------------------------------------------------------- tables

# RFC 3551 tables 4 and 5: payload types that need no rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

# Formats that ride along with a media codec rather than carry media on their own: an
# m-line is only accepted when a real codec was chosen, and these do not count towards
# MediaCaps.max_codecs.
ASSOCIATED_CODECS = frozenset({"telephone-event", "cn", "rtx", "red", "ulpfec", "flexfec-03"})

# Master key + salt length in bytes per SDES crypto-suite (RFC 4568, 6188, 7714).
SRTP_KEY_LENGTHS: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
    "AES_192_CM_HMAC_SHA1_80": 38,
    "AES_192_CM_HMAC_SHA1_32": 38,
    "AES_256_CM_HMAC_SHA1_80": 46,
    "AES_256_CM_HMAC_SHA1_32": 46,
    "AEAD_AES_128_GCM": 28,
    "AEAD_AES_256_GCM": 44,
}

SECURE_PROTOS = frozenset({"RTP/SAVP", "RTP/SAVPF"})
DEFAULT_PROTOS = ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF")

_WS = re.compile(r"[ \t]+")
_DIGITS = re.compile(r"[0-9]{1,20}")
_HEX6 = re.compile(r"[0-9A-Fa-f]{6}")
_RTPMAP = re.compile(r"([0-9]{1,3})[ \t]+([^/ \t]+)/([0-9]{1,10})(?:/([0-9]{1,3}))?")


def _show(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _fields(value: str) -> list[str]:
    value = value.strip(" \t")
    return _WS.split(value) if value else []


def _number(token: str, what: str, line: int | None, maximum: int | None = None) -> int:
    # int() alone would take "1_0", " 1" and non-ASCII digits, and fail on huge strings.
    if not _DIGITS.fullmatch(token):
        raise SdpError(f"{what} must be a decimal number, got {_show(token)}", line)
    value = int(token)
    if maximum is not None and value > maximum:
        raise SdpError(f"{what} {value} is out of range (max {maximum})", line)
    return value


def _static_rtpmap(pt: int) -> RtpMap | None:
    static = STATIC_PAYLOAD_TYPES.get(pt)
    if static is None:
        return None
    return RtpMap(pt, static[0], static[1], static[2] if static[2] != 1 else None)


def _fmt_key(token: str) -> int | str:
    """Compare numeric formats by value so that "096" and "96" are the same payload type."""
    if token.isascii() and token.isdigit() and len(token) <= 3:
        return int(token)
    return token


# --------------------------------------------------------------------------- model


class Direction(StrEnum):
    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, send: bool, recv: bool) -> Direction:
        if send and recv:
            return cls.SENDRECV
        if send:
            return cls.SENDONLY
        if recv:
            return cls.RECVONLY
        return cls.INACTIVE

    def reversed(self) -> Direction:
        """The same stream seen from the other end (RFC 3264 6.1)."""
        return Direction.from_flags(self.receives, self.sends)

    def __and__(self, other: Direction) -> Direction:
        return Direction.from_flags(self.sends and other.sends, self.receives and other.receives)


_DIRECTIONS = frozenset(d.value for d in Direction)


@dataclass
class Origin:
    username: str
    sess_id: str
    sess_version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )

    def bumped(self) -> Origin:
        """RFC 3264 section 8: a changed re-offer must carry a higher version."""
        return Origin(
            self.username, self.sess_id, self.sess_version + 1,
            self.nettype, self.addrtype, self.address,
        )

    @classmethod
    def for_address(
        cls, address: str, sess_id: str, sess_version: int = 1, username: str = "-"
    ) -> Origin:
        return cls(username, sess_id, sess_version, "IN", _addrtype(address), address)


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


@dataclass
class Connection:
    nettype: str
    addrtype: str
    address: str
    """As written, including any multicast ``/ttl/count`` suffix."""

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls("IN", _addrtype(address), address)


@dataclass
class Bandwidth:
    bwtype: str
    value: int

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.value}"


@dataclass
class Timing:
    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)
    """The ``r=`` lines that follow this ``t=``, as written."""


@dataclass
class Attribute:
    name: str
    value: str | None = None
    """None for a property attribute (``a=rtcp-mux``), text otherwise (may be empty)."""
    line: int | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True)
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        tail = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


@dataclass
class Codec:
    """A payload type resolved through rtpmap or the static table, with its fmtp and rtcp-fb."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: dict[str, str] = field(default_factory=dict)
    rtcp_fb: list[str] = field(default_factory=list)
    fmtp_line: int | None = field(default=None, compare=False, repr=False)

    def is_named(self, name: str) -> bool:
        return self.name.lower() == name.lower()

    @property
    def is_associated(self) -> bool:
        return self.name.lower() in ASSOCIATED_CODECS

    def param(self, key: str) -> str | None:
        """fmtp parameter names are case-insensitive (RFC 8866 6.15 leaves it to the codec)."""
        low = key.lower()
        for k, v in self.fmtp.items():
            if k.lower() == low:
                return v
        return None

    def rtpmap(self) -> RtpMap:
        return RtpMap(
            self.payload_type, self.name, self.clock_rate,
            self.channels if self.channels != 1 else None,
        )


@dataclass
class RtcpAttr:
    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None

    def __str__(self) -> str:
        if self.address is None:
            return str(self.port)
        return f"{self.port} {self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True)
class Ssrc:
    ssrc: int
    attribute: str
    value: str | None = None


@dataclass(frozen=True)
class SsrcGroup:
    semantics: str
    ssrcs: tuple[int, ...]


@dataclass
class KeyParam:
    """One RFC 4568 key-param; for ``inline`` the key||salt, lifetime and MKI are split out."""

    method: str
    key_salt: str
    lifetime: str | None = None
    mki: str | None = None

    def __str__(self) -> str:
        out = f"{self.method}:{self.key_salt}"
        if self.lifetime is not None:
            out += f"|{self.lifetime}"
        if self.mki is not None:
            out += f"|{self.mki}"
        return out

    def key_bytes(self) -> bytes:
        """The decoded master key and salt; SdpError if it is not valid base64."""
        text = self.key_salt
        text += "=" * (-len(text) % 4)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SdpError(f"crypto key is not valid base64: {_show(self.key_salt)}") from exc

    @classmethod
    def parse(cls, text: str, line: int | None = None) -> KeyParam:
        method, sep, info = text.partition(":")
        if not sep or not method or not info:
            raise SdpError(f"crypto key-param must be 'method:info', got {_show(text)}", line)
        if method != "inline":
            return cls(method, info)
        parts = info.split("|")
        if len(parts) > 3 or not parts[0]:
            raise SdpError(f"bad inline key-param {_show(text)}", line)
        lifetime: str | None = None
        mki: str | None = None
        if len(parts) == 3:
            lifetime, mki = parts[1], parts[2]
        elif len(parts) == 2:
            if ":" in parts[1]:
                mki = parts[1]
            else:
                lifetime = parts[1]
        if lifetime is not None and not lifetime:
            raise SdpError(f"empty key lifetime in {_show(text)}", line)
        if mki is not None and not re.fullmatch(r"[0-9]{1,20}:[0-9]{1,3}", mki):
            raise SdpError(f"bad MKI {_show(mki)}, expected 'value:length'", line)
        return cls(method, parts[0], lifetime, mki)


@dataclass
class Crypto:
    """An RFC 4568 ``a=crypto`` line."""

    tag: int
    suite: str
    key_params: list[KeyParam]
    session_params: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        out = f"{self.tag} {self.suite} " + ";".join(str(k) for k in self.key_params)
        return out + "".join(f" {p}" for p in self.session_params)

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> Crypto:
        tokens = _fields(value)
        if len(tokens) < 3:
            raise SdpError("a=crypto needs 'tag crypto-suite key-params'", line)
        tag = _number(tokens[0], "crypto tag", line, 999_999_999)
        keys = [KeyParam.parse(k, line) for k in tokens[2].split(";")]
        return cls(tag, tokens[1], keys, tokens[3:])


def parse_fmtp(params: str) -> dict[str, str]:
    """``a=fmtp`` parameters as a dict, in order; a parameter without '=' maps to ''.

    Splits on the first '=' only, so base64 values (sprop-parameter-sets) survive.
    """
    out: dict[str, str] = {}
    for part in params.split(";"):
        part = part.strip(" \t")
        if not part:
            continue
        key, _, value = part.partition("=")
        out.setdefault(key.strip(" \t"), value.strip(" \t"))
    return out


class _HasAttributes:
    attributes: list[Attribute]

    def get(self, name: str) -> str | None:
        """Value of the first attribute called ``name`` (None if absent or a flag)."""
        for a in self.attributes:
            if a.name == name:
                return a.value
        return None

    def get_all(self, name: str) -> list[Attribute]:
        return [a for a in self.attributes if a.name == name]

    def has(self, name: str) -> bool:
        return any(a.name == name for a in self.attributes)

    def add(self, name: str, value: str | None = None) -> Attribute:
        attr = Attribute(name, value)
        self.attributes.append(attr)
        return attr

    def remove(self, name: str) -> int:
        before = len(self.attributes)
        self.attributes = [a for a in self.attributes if a.name != name]
        return before - len(self.attributes)

    def _direction_attr(self) -> Direction | None:
        for a in self.attributes:
            if a.name in _DIRECTIONS and a.value is None:
                return Direction(a.name)
        return None

    def set_direction(self, direction: Direction) -> None:
        """Replace any direction attribute, keeping the position of the first."""
        out: list[Attribute] = []
        done = False
        for a in self.attributes:
            if a.name in _DIRECTIONS:
                if not done:
                    out.append(Attribute(direction.value))
                    done = True
            else:
                out.append(a)
        if not done:
            out.append(Attribute(direction.value))
        self.attributes = out


@dataclass
class MediaDescription(_HasAttributes):
    kind: str
    port: int
    proto: str
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    title: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    line: int | None = field(default=None, compare=False, repr=False)

    # --- serialization

    def lines(self) -> Iterator[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        yield " ".join(["m=" + self.kind, port, self.proto, *self.formats])
        if self.title is not None:
            yield f"i={self.title}"
        for c in self.connections:
            yield f"c={c}"
        for b in self.bandwidths:
            yield f"b={b}"
        if self.key is not None:
            yield f"k={self.key}"
        for a in self.attributes:
            yield f"a={a}"

    def __str__(self) -> str:
        return "".join(line + "\r\n" for line in self.lines())

    # --- transport

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    @property
    def is_sdes(self) -> bool:
        """SRTP keyed in the SDP itself (RFC 4568), as opposed to DTLS-SRTP."""
        return self.proto.upper() in SECURE_PROTOS

    @property
    def uses_feedback(self) -> bool:
        return self.proto.upper().endswith("AVPF")

    @property
    def rejected(self) -> bool:
        return self.port == 0

    @property
    def connection(self) -> Connection | None:
        return self.connections[0] if self.connections else None

    def bandwidth(self, bwtype: str) -> int | None:
        for b in self.bandwidths:
            if b.bwtype.upper() == bwtype.upper():
                return b.value
        return None

    def set_bandwidth(self, bwtype: str, value: int) -> None:
        self.bandwidths = [b for b in self.bandwidths if b.bwtype.upper() != bwtype.upper()]
        self.bandwidths.append(Bandwidth(bwtype, value))

    # --- RTP payload types

    def payload_types(self) -> list[int]:
        """The m= formats as RTP payload types, duplicates dropped."""
        out: list[int] = []
        for f in self.formats:
            pt = _number(f, "payload type", self.line, 127)
            if pt not in out:
                out.append(pt)
        return out

    def rtpmaps(self) -> dict[int, RtpMap]:
        out: dict[int, RtpMap] = {}
        for a in self.get_all("rtpmap"):
            m = _RTPMAP.fullmatch((a.value or "").strip(" \t"))
            if m is None:
                raise SdpError(
                    f"a=rtpmap must be 'PT name/rate[/channels]', got {_show(a.value or '')}",
                    a.line,
                )
            pt = _number(m.group(1), "rtpmap payload type", a.line, 127)
            channels = None
            if m.group(4) is not None:
                channels = _number(m.group(4), "rtpmap channels", a.line, 255)
                if channels == 0:
                    raise SdpError("rtpmap channels must be at least 1", a.line)
            rate = _number(m.group(3), "rtpmap clock rate", a.line)
            if rate == 0:
                raise SdpError("rtpmap clock rate must not be 0", a.line)
            out.setdefault(pt, RtpMap(pt, m.group(2), rate, channels))
        return out

    def rtpmap(self, pt: int) -> RtpMap | None:
        """The rtpmap for ``pt``, or the RFC 3551 static mapping when there is none."""
        return self.rtpmaps().get(pt) or _static_rtpmap(pt)

    def _by_format(self, name: str) -> dict[int | str, tuple[str, Attribute]]:
        out: dict[int | str, tuple[str, Attribute]] = {}
        for a in self.get_all(name):
            text = (a.value or "").strip(" \t")
            fmt, _, rest = text.partition(" ")
            if not fmt:
                raise SdpError(f"a={name} needs a format", a.line)
            out.setdefault(_fmt_key(fmt), (rest.strip(" \t"), a))
        return out

    def fmtp_raw(self, fmt: int | str) -> str | None:
        found = self._by_format("fmtp").get(_fmt_key(str(fmt)))
        return found[0] if found is not None else None

    def fmtp(self, fmt: int | str) -> dict[str, str]:
        raw = self.fmtp_raw(fmt)
        return parse_fmtp(raw) if raw is not None else {}

    def rtcp_fb(self, fmt: int | str) -> list[str]:
        """Feedback types for ``fmt``, wildcard ``*`` lines included, in line order."""
        key = _fmt_key(str(fmt))
        out: list[str] = []
        for a in self.get_all("rtcp-fb"):
            tokens = _fields(a.value or "")
            if len(tokens) < 2:
                raise SdpError("a=rtcp-fb needs 'PT|* type [subtype]'", a.line)
            if tokens[0] == "*" or _fmt_key(tokens[0]) == key:
                value = " ".join(tokens[1:])
                if value not in out:
                    out.append(value)
        return out

    def codecs(self) -> list[Codec]:
        """Known codecs in the m= order; dynamic payload types without rtpmap are skipped."""
        maps = self.rtpmaps()
        fmtps = self._by_format("fmtp")
        out: list[Codec] = []
        for pt in self.payload_types():
            rtpmap = maps.get(pt) or _static_rtpmap(pt)
            if rtpmap is None:
                continue
            raw = fmtps.get(pt)
            out.append(
                Codec(
                    pt, rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels or 1,
                    parse_fmtp(raw[0]) if raw is not None else {},
                    self.rtcp_fb(pt),
                    raw[1].line if raw is not None else None,
                )
            )
        return out

    def codec(self, pt: int) -> Codec | None:
        for c in self.codecs():
            if c.payload_type == pt:
                return c
        return None

    # --- other attributes

    def direction(self, default: Direction = Direction.SENDRECV) -> Direction:
        """The a=sendrecv/... of this m-line, else ``default`` (the session-level one)."""
        return self._direction_attr() or default

    @property
    def rtcp(self) -> RtcpAttr | None:
        for a in self.get_all("rtcp"):
            tokens = _fields(a.value or "")
            if len(tokens) not in (1, 4):
                raise SdpError("a=rtcp must be 'port [nettype addrtype address]'", a.line)
            port = _number(tokens[0], "rtcp port", a.line, 65535)
            if len(tokens) == 1:
                return RtcpAttr(port)
            return RtcpAttr(port, tokens[1], tokens[2], tokens[3])
        return None

    @property
    def rtcp_mux(self) -> bool:
        return self.has("rtcp-mux")

    @property
    def mid(self) -> str | None:
        value = self.get("mid")
        return value.strip(" \t") if value is not None else None

    def ssrcs(self) -> list[Ssrc]:
        out: list[Ssrc] = []
        for a in self.get_all("ssrc"):
            text = (a.value or "").strip(" \t")
            num, _, rest = text.partition(" ")
            ssrc = _number(num, "ssrc", a.line, 2**32 - 1)
            rest = rest.strip(" \t")
            if not rest:
                raise SdpError("a=ssrc needs 'ssrc-id attribute[:value]'", a.line)
            name, sep, value = rest.partition(":")
            out.append(Ssrc(ssrc, name, value if sep else None))
        return out

    def ssrc_groups(self) -> list[SsrcGroup]:
        out: list[SsrcGroup] = []
        for a in self.get_all("ssrc-group"):
            tokens = _fields(a.value or "")
            if not tokens:
                raise SdpError("a=ssrc-group needs semantics", a.line)
            ids = tuple(_number(t, "ssrc", a.line, 2**32 - 1) for t in tokens[1:])
            out.append(SsrcGroup(tokens[0], ids))
        return out

    def crypto(self) -> list[Crypto]:
        return [Crypto.parse(a.value or "", a.line) for a in self.get_all("crypto")]


@dataclass
class SessionDescription(_HasAttributes):
    origin: Origin
    session_name: str = "-"
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    times: list[Timing] = field(default_factory=list)
    zone: str | None = None
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        yield "v=0"
        yield f"o={self.origin}"
        yield f"s={self.session_name}"
        if self.information is not None:
            yield f"i={self.information}"
        if self.uri is not None:
            yield f"u={self.uri}"
        for e in self.emails:
            yield f"e={e}"
        for p in self.phones:
            yield f"p={p}"
        if self.connection is not None:
            yield f"c={self.connection}"
        for b in self.bandwidths:
            yield f"b={b}"
        for t in self.times:
            yield f"t={t.start} {t.stop}"
            for r in t.repeats:
                yield f"r={r}"
        if self.zone is not None:
            yield f"z={self.zone}"
        if self.key is not None:
            yield f"k={self.key}"
        for a in self.attributes:
            yield f"a={a}"
        for m in self.media:
            yield from m.lines()

    def __str__(self) -> str:
        return "".join(line + "\r\n" for line in self.lines())

    def encode(self) -> bytes:
        return str(self).encode("utf-8")

    @classmethod
    def parse(cls, data: str | bytes) -> SessionDescription:
        return parse(data)

    def copy(self) -> SessionDescription:
        return copy.deepcopy(self)

    @property
    def direction(self) -> Direction:
        """Session-level default direction (RFC 8866 6.7)."""
        return self._direction_attr() or Direction.SENDRECV

    def media_direction(self, media: MediaDescription) -> Direction:
        return media.direction(self.direction)

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """A media-level c= overrides the session-level one."""
        return media.connection or self.connection

    def bandwidth(self, bwtype: str) -> int | None:
        for b in self.bandwidths:
            if b.bwtype.upper() == bwtype.upper():
                return b.value
        return None


def bump_version(sdp: SessionDescription) -> SessionDescription:
    """A copy with o= sess-version + 1, for a re-offer or changed answer (RFC 3264 8)."""
    out = sdp.copy()
    out.origin = out.origin.bumped()
    return out


# --------------------------------------------------------------------------- parser

_SESSION_ONCE = frozenset("osiuczk")
_MEDIA_TYPES = frozenset("icbka")
_MEDIA_ONCE = frozenset("ik")
_KNOWN_TYPES = frozenset("vosiuepcbtrzkam")


def _decode(data: object) -> str:
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"not UTF-8 (byte {exc.start})") from exc
    if not isinstance(data, str):
        raise SdpError(f"expected str or bytes, got {type(data).__name__}")
    try:
        data.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SdpError(f"not encodable as UTF-8 (character {exc.start})") from exc
    return data


def _parse_connection(value: str, line: int) -> Connection:
    tokens = _fields(value)
    if len(tokens) != 3:
        raise SdpError(
            f"c= needs 'nettype addrtype address', got {len(tokens)} fields", line
        )
    return Connection(*tokens)


def _parse_bandwidth(value: str, line: int) -> Bandwidth:
    bwtype, sep, amount = value.strip(" \t").partition(":")
    if not sep or not bwtype:
        raise SdpError(f"b= must be 'bwtype:bandwidth', got {_show(value)}", line)
    return Bandwidth(bwtype, _number(amount, "bandwidth", line))


def _parse_media(value: str, line: int) -> MediaDescription:
    tokens = _fields(value)
    if len(tokens) < 3:
        raise SdpError("m= needs 'media port proto fmt...'", line)
    kind, port_text, proto = tokens[:3]
    port_part, slash, count_part = port_text.partition("/")
    port = _number(port_part, "m= port", line, 65535)
    count = None
    if slash:
        count = _number(count_part, "m= port count", line, 65535)
        if count == 0:
            raise SdpError("m= port count must be at least 1", line)
    return MediaDescription(kind, port, proto, tokens[3:], count, line=line)


def parse(data: str | bytes) -> SessionDescription:
    """Parse an SDP body; any problem is an SdpError naming the line."""
    text = _decode(data)
    origin: Origin | None = None
    seen: set[str] = set()
    media: MediaDescription | None = None
    media_seen: set[str] = set()
    started = False
    session_name: str | None = None
    pending = SessionDescription(Origin("-", "0", 0))

    for number, raw in enumerate(text.split("\n"), 1):
        if raw.endswith("\r"):
            raw = raw[:-1]
        if not raw:
            continue
        if "\r" in raw:
            raise SdpError("stray CR inside a line", number)
        if "\x00" in raw:
            raise SdpError("NUL character", number)
        kind = raw[0]
        if len(raw) < 2 or raw[1] != "=" or not ("a" <= kind <= "z"):
            raise SdpError(f"expected '<letter>=<value>', got {_show(raw)}", number)
        value = raw[2:]
        if not started:
            if kind != "v":
                raise SdpError("a description must start with v=0", number)
            if value.strip(" \t") != "0":
                raise SdpError(f"unsupported SDP version {_show(value)}", number)
            started = True
            continue
        if kind == "v":
            raise SdpError("repeated v= line", number)
        if kind == "m":
            media = _parse_media(value, number)
            media_seen = set()
            pending.media.append(media)
            continue
        if kind not in _KNOWN_TYPES:
            raise SdpError(f"unknown line type {kind}=", number)
        if media is not None:
            if kind not in _MEDIA_TYPES:
                raise SdpError(f"{kind}= is not allowed in a media section", number)
            if kind in _MEDIA_ONCE:
                if kind in media_seen:
                    raise SdpError(f"repeated {kind}= line in a media section", number)
                media_seen.add(kind)
            if kind == "i":
                media.title = value
            elif kind == "c":
                media.connections.append(_parse_connection(value, number))
            elif kind == "b":
                media.bandwidths.append(_parse_bandwidth(value, number))
            elif kind == "k":
                media.key = value
            else:
                media.attributes.append(_parse_attribute(value, number))
            continue
        if kind in _SESSION_ONCE:
            if kind in seen:
                raise SdpError(f"repeated {kind}= line", number)
            seen.add(kind)
        if kind == "o":
            tokens = _fields(value)
            if len(tokens) != 6:
                raise SdpError(
                    "o= needs 'username sess-id sess-version nettype addrtype address', "
                    f"got {len(tokens)} fields",
                    number,
                )
            version = _number(tokens[2], "o= sess-version", number)
            origin = Origin(tokens[0], tokens[1], version, tokens[3], tokens[4], tokens[5])
        elif kind == "s":
            session_name = value
        elif kind == "i":
            pending.information = value
        elif kind == "u":
            pending.uri = value
        elif kind == "e":
            pending.emails.append(value)
        elif kind == "p":
            pending.phones.append(value)
        elif kind == "c":
            pending.connection = _parse_connection(value, number)
        elif kind == "b":
            pending.bandwidths.append(_parse_bandwidth(value, number))
        elif kind == "t":
            tokens = _fields(value)
            if len(tokens) != 2:
                raise SdpError("t= needs 'start-time stop-time'", number)
            start = _number(tokens[0], "t= start", number)
            pending.times.append(Timing(start, _number(tokens[1], "t= stop", number)))
        elif kind == "r":
            if not pending.times:
                raise SdpError("r= must follow a t= line", number)
            if not value.strip(" \t"):
                raise SdpError("empty r= line", number)
            pending.times[-1].repeats.append(value)
        elif kind == "z":
            pending.zone = value
        elif kind == "k":
            pending.key = value
        else:
            pending.attributes.append(_parse_attribute(value, number))

    if not started:
        raise SdpError("empty description")
    if origin is None:
        raise SdpError("missing o= line")
    if session_name is None:
        raise SdpError("missing s= line")
    pending.origin = origin
    pending.session_name = session_name
    return pending


def _parse_attribute(value: str, line: int) -> Attribute:
    name, sep, rest = value.partition(":")
    if not name:
        raise SdpError("a= line without an attribute name", line)
    return Attribute(name, rest if sep else None, line)


# --------------------------------------------------------------------------- H.264


@dataclass(frozen=True)
class H264ProfileLevelId:
    """RFC 6184 profile-level-id: profile_idc, profile-iop (constraint flags), level_idc."""

    profile_idc: int
    profile_iop: int
    level_idc: int

    DEFAULT = "420010"  # RFC 6184 8.1: Baseline, level 1, when the parameter is absent

    @classmethod
    def parse(cls, text: str | None, line: int | None = None) -> H264ProfileLevelId:
        text = cls.DEFAULT if text is None else text.strip(" \t")
        if not _HEX6.fullmatch(text):
            raise SdpError(f"profile-level-id must be 6 hex digits, got {_show(text)}", line)
        raw = bytes.fromhex(text)
        return cls(raw[0], raw[1], raw[2])

    def __str__(self) -> str:
        return f"{self.profile_idc:02x}{self.profile_iop:02x}{self.level_idc:02x}"

    @property
    def _one_b_by_flag(self) -> bool:
        return self.profile_idc in (0x42, 0x4D, 0x58)

    @property
    def profile(self) -> str:
        """The profile named by profile_idc and the constraint flags.

        Flag combinations that mean the same decoder (H.264 A.2: 42e0, 42c0, 4d80 are all
        Constrained Baseline) compare equal; constraint_set3 is ignored where it only marks
        level 1b.
        """
        idc, iop = self.profile_idc, self.profile_iop
        s0, s1 = bool(iop & 0x80), bool(iop & 0x40)
        s4, s5 = bool(iop & 0x08), bool(iop & 0x04)
        if iop & 0x03:
            return f"{idc:02x}{iop:02x}"
        if idc == 0x42:
            return "constrained-baseline" if s1 else "baseline"
        if idc == 0x4D:
            return "constrained-baseline" if s0 else "main"
        if idc == 0x58:
            if s0 and s1:
                return "constrained-baseline"
            return "baseline" if s0 else "extended"
        if idc == 0x64:
            if s4 and s5:
                return "constrained-high"
            return "progressive-high" if s4 else "high"
        return f"{idc:02x}{iop:02x}"

    @property
    def is_level_1b(self) -> bool:
        if self.level_idc == 9:
            return True
        return self._one_b_by_flag and self.level_idc == 11 and bool(self.profile_iop & 0x10)

    @property
    def level_rank(self) -> int:
        """Orders levels, with 1b between 1 and 1.1."""
        return 21 if self.is_level_1b else self.level_idc * 2

    def with_level_of(self, other: H264ProfileLevelId) -> H264ProfileLevelId:
        """This profile at ``other``'s level, re-encoding level 1b for this profile."""
        iop = self.profile_iop
        if other.is_level_1b:
            if self._one_b_by_flag:
                return H264ProfileLevelId(self.profile_idc, iop | 0x10, 11)
            return H264ProfileLevelId(self.profile_idc, iop, 9)
        if self._one_b_by_flag:
            iop &= ~0x10
        return H264ProfileLevelId(self.profile_idc, iop, other.level_idc)


# --------------------------------------------------------------------------- capabilities


@dataclass
class CodecCap:
    """A codec we accept.

    ``fmtp`` is what we put in offers and answers (our receive parameters);
    ``required_fmtp`` must appear with these values in the remote codec to match; ``match``
    is a last, custom test.  H.264 is always matched on packetization-mode and profile.
    """

    name: str
    clock_rate: int
    channels: int = 1
    fmtp: dict[str, str] = field(default_factory=dict)
    required_fmtp: dict[str, str] = field(default_factory=dict)
    payload_type: int | None = None
    rtcp_fb: list[str] | None = None
    match: Callable[[Codec], bool] | None = None

    @property
    def is_associated(self) -> bool:
        return self.name.lower() in ASSOCIATED_CODECS


@dataclass
class MediaCaps:
    """What we take for one media kind; ``codecs`` is in our order of preference."""

    codecs: list[CodecCap]
    rtcp_fb: list[str] = field(default_factory=list)
    direction: Direction = Direction.SENDRECV
    rtcp_mux: bool = True
    bandwidth: dict[str, int] = field(default_factory=dict)
    attributes: list[Attribute] = field(default_factory=list)
    protos: tuple[str, ...] = DEFAULT_PROTOS
    offer_proto: str = "RTP/AVP"
    max_streams: int = 1
    max_codecs: int | None = None
    prefer_local_order: bool = False


@dataclass
class Capabilities:
    media: dict[str, MediaCaps]
    crypto_suites: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
    session_name: str = "-"
    bandwidth: dict[str, int] = field(default_factory=dict)
    attributes: list[Attribute] = field(default_factory=list)


PortSource = Mapping[int, int] | Callable[[int, str], int]
RandomBytes = Callable[[int], bytes]


def _port_for(ports: PortSource, index: int, kind: str) -> int:
    if isinstance(ports, Mapping):
        if index not in ports:
            raise ValueError(f"no local port given for m-line {index}")
        port = ports[index]
    else:
        port = ports(index, kind)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} for m-line {index} is out of range")
    return port


def _new_key(suite: str, random_bytes: RandomBytes) -> KeyParam:
    size = SRTP_KEY_LENGTHS[suite]
    raw = random_bytes(size)
    if len(raw) != size:
        raise ValueError(f"random_bytes({size}) returned {len(raw)} bytes")
    return KeyParam("inline", base64.b64encode(raw).decode("ascii"))


# --------------------------------------------------------------------------- matching


def _h264_answer_fmtp(offered: Codec, cap: CodecCap) -> dict[str, str] | None:
    """Our fmtp for an offered H.264 payload type, or None if we cannot decode it."""
    ours = Codec(0, cap.name, cap.clock_rate, fmtp=dict(cap.fmtp))
    if (offered.param("packetization-mode") or "0") != (ours.param("packetization-mode") or "0"):
        return None
    theirs_pli = H264ProfileLevelId.parse(offered.param("profile-level-id"), offered.fmtp_line)
    ours_pli = H264ProfileLevelId.parse(ours.param("profile-level-id"))
    if theirs_pli.profile != ours_pli.profile:
        return None
    asymmetric = (
        offered.param("level-asymmetry-allowed") == "1"
        and ours.param("level-asymmetry-allowed") == "1"
    )
    if asymmetric or ours_pli.level_rank <= theirs_pli.level_rank:
        level_from = ours_pli
    else:
        level_from = theirs_pli
    answer_pli = theirs_pli.with_level_of(level_from)
    out: dict[str, str] = {}
    for key, value in cap.fmtp.items():
        out[key] = str(answer_pli) if key.lower() == "profile-level-id" else value
    if "profile-level-id" not in {k.lower() for k in out}:
        out["profile-level-id"] = str(answer_pli)
    return out


def _matches(offered: Codec, cap: CodecCap, kind: str) -> dict[str, str] | None:
    """Our fmtp for ``offered`` if ``cap`` takes it, else None."""
    if not offered.is_named(cap.name) or offered.clock_rate != cap.clock_rate:
        return None
    if kind == "audio" and offered.channels != cap.channels:
        return None
    for key, want in cap.required_fmtp.items():
        got = offered.param(key)
        if got is None or got.lower() != want.lower():
            return None
    if cap.match is not None and not cap.match(offered):
        return None
    if cap.name.lower() == "h264":
        return _h264_answer_fmtp(offered, cap)
    if cap.name.lower() == "telephone-event" and not cap.fmtp:
        return dict(offered.fmtp)
    if cap.name.lower() == "rtx":
        out = {k: v for k, v in offered.fmtp.items() if k.lower() == "apt"}
        out.update({k: v for k, v in cap.fmtp.items() if k.lower() != "apt"})
        return out
    return dict(cap.fmtp)


def _fmtp_text(params: Mapping[str, str]) -> str:
    return ";".join(f"{k}={v}" if v != "" else k for k, v in params.items())


def _choose_crypto(
    media: MediaDescription, suites: Sequence[str]
) -> Crypto | None:
    for offered in media.crypto():
        if offered.suite not in suites or offered.suite not in SRTP_KEY_LENGTHS:
            continue
        if offered.session_params:
            continue  # we implement none, and some (UNENCRYPTED_SRTP...) must not be ignored
        if len(offered.key_params) == 0 or any(k.method != "inline" for k in offered.key_params):
            continue
        try:
            if any(
                len(k.key_bytes()) != SRTP_KEY_LENGTHS[offered.suite] for k in offered.key_params
            ):
                continue
        except SdpError:
            continue
        return offered
    return None


@dataclass
class _Chosen:
    codec: Codec
    cap_index: int
    fmtp: dict[str, str]
    rtcp_fb: list[str]


def _choose_codecs(media: MediaDescription, caps: MediaCaps) -> list[_Chosen]:
    kind = media.kind.lower()
    offered = media.codecs()
    primaries: list[_Chosen] = []
    for codec in offered:
        if codec.is_associated:
            continue
        for index, cap in enumerate(caps.codecs):
            if cap.is_associated:
                continue
            fmtp = _matches(codec, cap, kind)
            if fmtp is None:
                continue
            supported = caps.rtcp_fb if cap.rtcp_fb is None else cap.rtcp_fb
            fb = [f for f in codec.rtcp_fb if f in supported]
            primaries.append(_Chosen(codec, index, fmtp, fb))
            break
    if caps.prefer_local_order:
        primaries.sort(key=lambda c: c.cap_index)
    if caps.max_codecs is not None:
        primaries = primaries[: caps.max_codecs]
    if not primaries:
        return []
    chosen_pts = {c.codec.payload_type for c in primaries}
    rates = {c.codec.clock_rate for c in primaries}
    extras: list[_Chosen] = []
    for codec in offered:
        if not codec.is_associated:
            continue
        name = codec.name.lower()
        if name in ("telephone-event", "cn") and codec.clock_rate not in rates:
            continue
        if name == "rtx":
            apt = codec.param("apt")
            if apt is None or _fmt_key(apt) not in chosen_pts:
                continue
        for index, cap in enumerate(caps.codecs):
            if not cap.is_associated:
                continue
            fmtp = _matches(codec, cap, kind)
            if fmtp is not None:
                extras.append(_Chosen(codec, index, fmtp, []))
                break
    if caps.prefer_local_order:
        return primaries + extras
    order = {c.payload_type: i for i, c in enumerate(offered)}
    return sorted(primaries + extras, key=lambda c: order[c.codec.payload_type])


def _add_codec_lines(
    media: MediaDescription, pt: int, name: str, rate: int, channels: int,
    fmtp: Mapping[str, str], rtcp_fb: Sequence[str],
) -> None:
    media.add("rtpmap", str(RtpMap(pt, name, rate, channels if channels != 1 else None)))
    if fmtp:
        media.add("fmtp", f"{pt} {_fmtp_text(fmtp)}")
    for fb in rtcp_fb:
        media.add("rtcp-fb", f"{pt} {fb}")


def _rejected(offered: MediaDescription) -> MediaDescription:
    """RFC 3264 6: port 0, same proto, at least one of the offered formats."""
    out = MediaDescription(offered.kind, 0, offered.proto, offered.formats[:1] or ["0"])
    if offered.mid is not None:
        out.add("mid", offered.mid)
    return out


# --------------------------------------------------------------------------- offer/answer


def _new_session(caps: Capabilities, origin: Origin, address: str) -> SessionDescription:
    sdp = SessionDescription(
        origin=copy.copy(origin),
        session_name=caps.session_name,
        connection=Connection.for_address(address),
        times=[Timing(0, 0)],
    )
    for bwtype, value in caps.bandwidth.items():
        sdp.bandwidths.append(Bandwidth(bwtype, value))
    sdp.attributes.extend(copy.copy(a) for a in caps.attributes)
    return sdp


def negotiate(
    offer: SessionDescription,
    caps: Capabilities,
    *,
    origin: Origin,
    address: str,
    ports: PortSource,
    random_bytes: RandomBytes = secrets.token_bytes,
) -> SessionDescription:
    """Our RFC 3264 answer to ``offer``.

    One m-line per offered m-line, in order; those we cannot or will not take (unknown
    kind or proto, no common codec, no usable SDES suite, over ``max_streams``, or a local
    port of 0) get port 0.  ``ports`` maps the m-line index (or ``(index, kind)``) to our
    RTP port; ``random_bytes`` makes SRTP keys.  Raises SdpError for malformed offers.
    """
    answer = _new_session(caps, origin, address)
    accepted: dict[str, int] = {}
    for index, m in enumerate(offer.media):
        kind = m.kind.lower()
        kind_caps = caps.media.get(kind)
        if (
            kind_caps is None
            or m.port == 0
            or m.proto.upper() not in {p.upper() for p in kind_caps.protos}
            or not m.is_rtp
            or accepted.get(kind, 0) >= kind_caps.max_streams
        ):
            answer.media.append(_rejected(m))
            continue
        chosen = _choose_codecs(m, kind_caps)
        _ = m.rtcp  # the caller needs it to send RTCP: fail now, not after answering
        offered_crypto = _choose_crypto(m, caps.crypto_suites) if m.is_sdes else None
        if not chosen or (m.is_sdes and offered_crypto is None):
            answer.media.append(_rejected(m))
            continue
        port = _port_for(ports, index, kind)
        if port == 0:
            answer.media.append(_rejected(m))
            continue
        accepted[kind] = accepted.get(kind, 0) + 1
        crypto: Crypto | None = None
        if offered_crypto is not None:
            crypto = Crypto(
                offered_crypto.tag, offered_crypto.suite,
                [_new_key(offered_crypto.suite, random_bytes)],
            )

        out = MediaDescription(m.kind, port, m.proto, [str(c.codec.payload_type) for c in chosen])
        for bwtype, value in kind_caps.bandwidth.items():
            out.bandwidths.append(Bandwidth(bwtype, value))
        if m.mid is not None:
            out.add("mid", m.mid)
        for c in chosen:
            _add_codec_lines(
                out, c.codec.payload_type, c.codec.name, c.codec.clock_rate, c.codec.channels,
                c.fmtp, c.rtcp_fb,
            )
        out.add((offer.media_direction(m).reversed() & kind_caps.direction).value)
        if m.rtcp_mux and kind_caps.rtcp_mux:
            out.add("rtcp-mux")
        if crypto is not None:
            out.add("crypto", str(crypto))
        out.attributes.extend(copy.copy(a) for a in kind_caps.attributes)
        answer.media.append(out)
    return answer


def _allocate_pt(used: set[int]) -> int:
    """The lowest free dynamic payload type, then the RFC 5761 4 range 35-63."""
    candidates: list[int] = [*range(96, 128), *range(35, 64)]
    for pt in candidates:
        if pt not in used:
            used.add(pt)
            return pt
    raise ValueError("out of dynamic payload types")


def create_offer(
    caps: Capabilities,
    *,
    origin: Origin,
    address: str,
    ports: PortSource,
    kinds: Sequence[str] | None = None,
    random_bytes: RandomBytes = secrets.token_bytes,
) -> SessionDescription:
    """An offer with one m-line per kind (default: every kind in ``caps``, in its order).

    Payload types: the CodecCap's own, else the static one, else dynamic from 96.  An
    ``rtx`` cap becomes one rtx payload type per codec of its clock rate, right after it.
    """
    sdp = _new_session(caps, origin, address)
    for index, kind in enumerate(kinds if kinds is not None else list(caps.media)):
        kind_caps = caps.media.get(kind)
        if kind_caps is None:
            raise ValueError(f"no capabilities for media kind {kind!r}")
        port = _port_for(ports, index, kind)
        m = MediaDescription(kind, port, kind_caps.offer_proto)
        for bwtype, value in kind_caps.bandwidth.items():
            m.bandwidths.append(Bandwidth(bwtype, value))
        used = {c.payload_type for c in kind_caps.codecs if c.payload_type is not None}
        rtx_caps = [c for c in kind_caps.codecs if c.name.lower() == "rtx"]
        for cap in kind_caps.codecs:
            if cap.name.lower() == "rtx":
                continue
            pt = cap.payload_type
            if pt is None:
                for spt, (sname, srate, schannels) in STATIC_PAYLOAD_TYPES.items():
                    if (
                        sname.lower() == cap.name.lower()
                        and srate == cap.clock_rate
                        and schannels == cap.channels
                        and spt not in used
                    ):
                        pt = spt
                        used.add(spt)
                        break
            if pt is None:
                pt = _allocate_pt(used)
            fb: list[str] = []
            if not cap.is_associated:
                fb = list(kind_caps.rtcp_fb if cap.rtcp_fb is None else cap.rtcp_fb)
            m.formats.append(str(pt))
            _add_codec_lines(m, pt, cap.name, cap.clock_rate, cap.channels, cap.fmtp, fb)
            if cap.is_associated:
                continue
            for rtx in rtx_caps:
                if rtx.clock_rate != cap.clock_rate:
                    continue
                rtx_pt = _allocate_pt(used)
                m.formats.append(str(rtx_pt))
                params = {"apt": str(pt)}
                params.update({k: v for k, v in rtx.fmtp.items() if k.lower() != "apt"})
                _add_codec_lines(m, rtx_pt, rtx.name, rtx.clock_rate, 1, params, [])
        m.add(kind_caps.direction.value)
        if kind_caps.rtcp_mux:
            m.add("rtcp-mux")
        if m.is_sdes:
            for tag, suite in enumerate(caps.crypto_suites, 1):
                m.add("crypto", str(Crypto(tag, suite, [_new_key(suite, random_bytes)])))
        m.attributes.extend(copy.copy(a) for a in kind_caps.attributes)
        sdp.media.append(m)
    return sdp


@dataclass
class NegotiatedMedia:
    """One m-line after offer/answer, from the local side's point of view.

    ``codecs`` are in the answer's order with the remote side's fmtp (what it wants to
    receive) and the rtcp-fb both sides agreed to; ``direction`` is ours.
    """

    index: int
    kind: str
    proto: str
    rejected: bool
    mid: str | None = None
    codecs: list[Codec] = field(default_factory=list)
    direction: Direction = Direction.INACTIVE
    remote_address: str | None = None
    remote_port: int = 0
    remote_rtcp_address: str | None = None
    remote_rtcp_port: int = 0
    rtcp_mux: bool = False
    local_crypto: Crypto | None = None
    remote_crypto: Crypto | None = None

    @property
    def codec(self) -> Codec | None:
        """The codec to send: the first one that is not telephone-event, CN, rtx..."""
        return next((c for c in self.codecs if not c.is_associated), None)

    @property
    def telephone_event(self) -> Codec | None:
        return next((c for c in self.codecs if c.is_named("telephone-event")), None)


def apply_answer(
    offer: SessionDescription,
    answer: SessionDescription,
    *,
    local: Literal["offerer", "answerer"] = "offerer",
) -> list[NegotiatedMedia]:
    """Check that ``answer`` is a valid RFC 3264 answer to ``offer`` and say what was agreed.

    With ``local="answerer"`` the same check runs on an answer we made, and the result
    describes the offerer as the remote side.
    """
    if len(answer.media) != len(offer.media):
        raise SdpError(
            f"answer has {len(answer.media)} m-lines but the offer has {len(offer.media)}"
        )
    remote_sdp = answer if local == "offerer" else offer
    out: list[NegotiatedMedia] = []
    for index, (om, am) in enumerate(zip(offer.media, answer.media, strict=True)):
        where = f"answer m-line {index + 1}"
        if am.kind.lower() != om.kind.lower():
            raise SdpError(f"{where} is {am.kind!r} but the offer has {om.kind!r}", am.line)
        if am.proto.upper() != om.proto.upper():
            raise SdpError(f"{where} proto {am.proto} differs from the offer's {om.proto}", am.line)
        result = NegotiatedMedia(index, om.kind, om.proto, am.port == 0, am.mid or om.mid)
        out.append(result)
        if am.port == 0:
            continue
        if om.port == 0:
            raise SdpError(f"{where} accepts a stream the offer rejected", am.line)
        if not am.formats:
            raise SdpError(f"{where} has no formats", am.line)
        if om.is_rtp:
            _check_codecs(om, am, where, result, remote_sdp is answer)
        offer_dir = offer.media_direction(om)
        answer_dir = answer.media_direction(am)
        if (answer_dir.sends and not offer_dir.receives) or (
            answer_dir.receives and not offer_dir.sends
        ):
            raise SdpError(
                f"{where} direction {answer_dir} is not allowed for an offered {offer_dir}",
                am.line,
            )
        result.direction = answer_dir.reversed() if local == "offerer" else answer_dir
        if om.is_sdes:
            _check_crypto(om, am, where, result, local)
        rm = am if remote_sdp is answer else om
        conn = remote_sdp.connection_for(rm)
        result.remote_address = conn.host if conn is not None else None
        result.remote_port = rm.port
        result.rtcp_mux = om.rtcp_mux and am.rtcp_mux
        rtcp = rm.rtcp
        if result.rtcp_mux:
            result.remote_rtcp_port = rm.port
            result.remote_rtcp_address = result.remote_address
        elif rtcp is not None:
            result.remote_rtcp_port = rtcp.port
            result.remote_rtcp_address = rtcp.address or result.remote_address
        else:
            result.remote_rtcp_port = rm.port + 1 if rm.port < 65535 else 0
            result.remote_rtcp_address = result.remote_address
    return out


def _check_codecs(
    om: MediaDescription, am: MediaDescription, where: str, result: NegotiatedMedia,
    remote_is_answer: bool,
) -> None:
    offered_pts = om.payload_types()
    offered = {c.payload_type: c for c in om.codecs()}
    answer_maps = am.rtpmaps()
    for pt in am.payload_types():
        if pt not in offered_pts:
            raise SdpError(f"{where} uses payload type {pt}, which the offer did not list", am.line)
        mine = offered.get(pt)
        theirs = answer_maps.get(pt)
        if mine is not None and theirs is not None and (
            theirs.encoding.lower() != mine.name.lower() or theirs.clock_rate != mine.clock_rate
        ):
            raise SdpError(
                f"{where} maps payload type {pt} to {theirs.encoding}/{theirs.clock_rate}, "
                f"offered as {mine.name}/{mine.clock_rate}",
                am.line,
            )
        # An answer may leave out the rtpmap of a payload type it takes from the offer.
        if theirs is not None:
            name, rate, channels = theirs.encoding, theirs.clock_rate, theirs.channels or 1
        elif mine is not None:
            name, rate, channels = mine.name, mine.clock_rate, mine.channels
        else:
            continue
        remote = am if remote_is_answer else om
        result.codecs.append(
            Codec(pt, name, rate, channels, remote.fmtp(pt), am.rtcp_fb(pt))
        )


def _check_crypto(
    om: MediaDescription, am: MediaDescription, where: str, result: NegotiatedMedia,
    local: str,
) -> None:
    offered = om.crypto()
    answered = am.crypto()
    if not offered:
        return
    if len(answered) != 1:
        raise SdpError(f"{where} must carry exactly one a=crypto, has {len(answered)}", am.line)
    chosen = answered[0]
    match = next((c for c in offered if c.tag == chosen.tag), None)
    if match is None:
        raise SdpError(f"{where} a=crypto tag {chosen.tag} was not offered", am.line)
    if match.suite != chosen.suite:
        raise SdpError(
            f"{where} a=crypto tag {chosen.tag} is {chosen.suite}, offered as {match.suite}",
            am.line,
        )
    if local == "offerer":
        result.local_crypto, result.remote_crypto = match, chosen
    else:
        result.local_crypto, result.remote_crypto = chosen, match
