"""SIP message model, parsing, framing and serialization (sans-IO).

Structured header values (URIs, name-addr, Via, CSeq, auth parameters) are parsed
with ``sipmessage``.  The message level is written here because ``sipmessage``'s
``Message.parse`` does not unfold continuation lines, does not frame by
Content-Length (it cannot tell a UDP datagram with trailing noise, a missing or
negative Content-Length, or a stream that holds several messages), and loses the
difference between a malformed message (answer 400) and an unparseable one (drop),
all of which RFC 3261 section 18 and RFC 4475 require.

Header values are kept as unfolded strings in arrival order and parsed lazily: the
transaction layer needs only the top Via, CSeq and Call-ID of most messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from sipmessage import URI, Address, CSeq, Via

MAX_CSEQ = 2**32 - 1

COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
        "Allow", "Allow-Events", "Authentication-Info", "Authorization", "Call-ID",
        "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
        "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
        "Error-Info", "Event", "Expires", "From", "Identity", "In-Reply-To",
        "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version", "Organization",
        "P-Asserted-Identity", "Priority", "Proxy-Authenticate", "Proxy-Authorization",
        "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By",
        "Reject-Contact", "Reply-To", "Request-Disposition", "Require", "Retry-After",
        "Route", "RSeq", "Server", "Session-Expires", "Subject", "Supported",
        "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
        "WWW-Authenticate",
    )
}

# Headers whose values are comma-separated lists (RFC 3261 section 7.3.1).
LIST_HEADERS = frozenset(
    h.lower()
    for h in (
        "Accept", "Accept-Encoding", "Accept-Language", "Allow", "Allow-Events",
        "Contact", "Content-Encoding", "Content-Language", "In-Reply-To",
        "Proxy-Require", "Record-Route", "Require", "Route", "Supported",
        "Unsupported", "Via", "Warning",
    )
)

# Headers that must appear exactly once in a request.
_SINGLE = ("call-id", "cseq", "from", "to", "max-forwards", "content-length")

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_HEADER_NAME = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:")
_STATUS = re.compile(r"^[1-6][0-9][0-9]$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+\-.]*):")


class SipParseError(ValueError):
    """A message that cannot be processed.

    ``status`` is the response to send (400 or 505) where a response can be formed,
    or None where the message must be dropped.  ``partial`` holds what was parsed, so
    that the error response can copy Via, From, To, Call-ID and CSeq.
    """

    def __init__(
        self, reason: str, status: int | None = 400, partial: Request | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial


def canonical_name(name: str) -> str:
    full = _NAME_CACHE.get(name)
    if full is not None:
        return full
    low = name.lower()
    full = COMPACT_FORMS.get(low)
    if full is None:
        full = _CANONICAL.get(low, name)
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:  # names come from the network: stay bounded
        _NAME_CACHE[name] = full
    return full


# Header name as written -> canonical name, and -> (canonical, lower-case canonical,
# whether that is ASCII) for Headers lookups.  Bounded: header names come from peers.
_NAME_CACHE: dict[str, str] = {}
_KEY_CACHE: dict[str, tuple[str, str, bool]] = {}
_NAME_CACHE_MAX = 4096


# Header names (as written) that matched _HEADER_NAME -> canonical name.
_TOKEN_NAMES: dict[str, str] = {}


def _lookup_key(name: str) -> tuple[str, str, bool]:
    key = _KEY_CACHE.get(name)
    if key is None:
        cname = canonical_name(name)
        low = cname.lower()
        key = (cname, low, low.isascii())
        if len(_KEY_CACHE) < _NAME_CACHE_MAX:
            _KEY_CACHE[name] = key
    return key


def _same_name(k: str, cname: str, low: str, ascii_low: bool) -> bool:
    """k.lower() == low, quickly: most stored names are canonical already, and an
    ASCII name of another length cannot match (lower() keeps the length of ASCII
    text, and non-ASCII text never lower-cases to ASCII of a different length)."""
    if k == cname:
        return True
    if ascii_low and len(k) != len(low):
        return False
    return k.lower() == low


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and <...>."""
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    out: list[str] = []
    start = 0
    quoted = False
    angle = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            angle = True
        elif c == ">":
            angle = False
        elif c == "," and not angle:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    out.append(value[start:].strip())
    return out


@dataclass
class Headers:
    """Ordered SIP headers with case-insensitive, compact-form-aware lookup."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, value: str) -> None:
        self.items.append((canonical_name(name), value))

    def insert_first(self, name: str, value: str) -> None:
        self.items.insert(0, (canonical_name(name), value))

    # get and get_all inline _same_name: they run tens of times per message.
    def get(self, name: str, default: str | None = None) -> str | None:
        cname, low, ascii_low = _KEY_CACHE.get(name) or _lookup_key(name)
        n = len(low)
        for k, v in self.items:
            if k == cname or ((not ascii_low or len(k) == n) and k.lower() == low):
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every line of a header, unsplit."""
        cname, low, ascii_low = _KEY_CACHE.get(name) or _lookup_key(name)
        n = len(low)
        return [v for k, v in self.items
                if k == cname or ((not ascii_low or len(k) == n) and k.lower() == low)]

    def get_list(self, name: str) -> list[str]:
        """Every value of a list header, split on commas."""
        out: list[str] = []
        for line in self.get_all(name):
            out.extend(split_list(line))
        return out

    def count(self, name: str) -> int:
        cname, low, ascii_low = _lookup_key(name)
        return sum(1 for k, _ in self.items if _same_name(k, cname, low, ascii_low))

    def remove(self, name: str) -> None:
        cname, low, ascii_low = _lookup_key(name)
        self.items = [(k, v) for k, v in self.items
                      if not _same_name(k, cname, low, ascii_low)]

    def set(self, name: str, value: str) -> None:
        """Replace all lines of a header by one, in place of the first."""
        cname, low, ascii_low = _lookup_key(name)
        out: list[tuple[str, str]] = []
        done = False
        for k, v in self.items:
            if _same_name(k, cname, low, ascii_low):
                if not done:
                    out.append((cname, value))
                    done = True
            else:
                out.append((k, v))
        if not done:
            out.append((cname, value))
        self.items = out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def copy(self) -> Headers:
        return Headers(list(self.items))


class Message:
    headers: Headers
    body: bytes

    # Convenience accessors -------------------------------------------------
    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def vias(self) -> list[str]:
        return self.headers.get_list("Via")

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipParseError("missing Via")
        return parse_via(vias[0])

    @property
    def from_addr(self) -> Address:
        return parse_address(self.headers.get("From") or "")

    @property
    def to_addr(self) -> Address:
        return parse_address(self.headers.get("To") or "")

    @property
    def from_tag(self) -> str | None:
        return _tag_of(self.headers.get("From") or "")

    @property
    def to_tag(self) -> str | None:
        return _tag_of(self.headers.get("To") or "")

    @property
    def content_type(self) -> str:
        v = self.headers.get("Content-Type") or ""
        return v.split(";", 1)[0].strip().lower()

    def _head_lines(self) -> list[str]:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        lines = self._head_lines()
        has_len = False
        for name, value in self.headers.items:
            if name == "Content-Length":
                has_len = True
                value = str(len(self.body))
            lines.append(f"{name}: {value}")
        if not has_len:
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


class Request(Message):
    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        self.method = method
        self.uri = uri
        if headers is None:
            self.headers = Headers()
        elif isinstance(headers, Headers):
            self.headers = headers
        else:
            self.headers = Headers([(canonical_name(k), v) for k, v in headers])
        self.body = body
        self.version = version

    @property
    def parsed_uri(self) -> URI:
        return parse_uri(self.uri)

    def _head_lines(self) -> list[str]:
        return [f"{self.method} {self.uri} {self.version}"]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id!r}>"


class Response(Message):
    def __init__(
        self,
        status: int,
        reason: str = "",
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = reason or REASONS.get(status, "")
        if headers is None:
            self.headers = Headers()
        elif isinstance(headers, Headers):
            self.headers = headers
        else:
            self.headers = Headers([(canonical_name(k), v) for k, v in headers])
        self.body = body

    def _head_lines(self) -> list[str]:
        return [f"SIP/2.0 {self.status} {self.reason}"]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.call_id!r}>"


REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout",
    413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 603: "Decline",
}


@lru_cache(maxsize=1024)
def _tag_of(value: str) -> str | None:
    # Parameters after the name-addr / addr-spec; a tag inside <...> belongs to the URI.
    rest = value
    if ">" in value:
        rest = value.rsplit(">", 1)[1]
    for part in rest.split(";")[1:]:
        k, _, v = part.partition("=")
        if k.strip().lower() == "tag":
            return v.strip() or None
    return None


# The same header values are parsed many times while one message is handled (the
# transaction key, validation, the call layer) and across a call's messages.
# sipmessage's values are immutable (frozen dataclasses, read-only Parameters), so one
# parse per distinct string is shared.  Failures are not cached: they raise again.
_CSeq_parse = lru_cache(maxsize=1024)(CSeq.parse)
_Via_parse = lru_cache(maxsize=1024)(Via.parse)
_Address_parse = lru_cache(maxsize=1024)(Address.parse)
_URI_parse = lru_cache(maxsize=1024)(URI.parse)


def parse_cseq(value: str) -> CSeq:
    try:
        cseq: CSeq = _CSeq_parse(value)
    except ValueError:
        raise SipParseError("bad CSeq") from None
    if cseq.sequence > MAX_CSEQ:
        raise SipParseError("CSeq number out of range")
    return cseq


def parse_via(value: str) -> Via:
    try:
        via: Via = _Via_parse(value)
    except ValueError:
        raise SipParseError("bad Via") from None
    return via


def parse_address(value: str) -> Address:
    """``Address.parse`` (raises ValueError), cached."""
    addr: Address = _Address_parse(value)
    return addr


def parse_uri(value: str) -> URI:
    """``URI.parse`` (raises ValueError), cached."""
    uri: URI = _URI_parse(value)
    return uri


def uri_scheme(uri: str) -> str | None:
    m = _SCHEME.match(uri)
    return m.group(1).lower() if m else None


# Parsing ---------------------------------------------------------------------


def _split_head(data: bytes, stream: bool) -> tuple[bytes, bytes, bool]:
    """Split off the header section; the bool says whether the blank line was seen."""
    idx = data.find(b"\r\n\r\n")
    if idx >= 0:
        return data[:idx], data[idx + 4 :], True
    idx = data.find(b"\n\n")  # bare-LF senders
    if idx >= 0:
        return data[:idx], data[idx + 2 :], True
    if stream:
        raise SipParseError("incomplete", status=None)
    return data.rstrip(b"\r\n"), b"", False


def _unfold(head: str) -> list[str]:
    lines: list[str] = []
    for raw in head.replace("\r\n", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] = lines[-1].rstrip() + " " + raw.strip()
        else:
            lines.append(raw)
    return lines


def parse_head(head: bytes) -> Request | Response:
    """Parse a start line and headers, without the body."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("utf-8", "surrogateescape")
    lines = _unfold(text)
    while lines and not lines[0].strip():
        lines.pop(0)  # RFC 3261 7.5: ignore CRLFs before the start line
    if not lines:
        raise SipParseError("empty message", status=None)
    start = lines[0]
    msg: Request | Response
    if start.startswith("SIP/"):
        parts = start.split(" ", 2)
        if len(parts) < 2 or parts[0] != "SIP/2.0" or not _STATUS.match(parts[1]):
            raise SipParseError("bad status line", status=None)
        msg = Response(int(parts[1]), parts[2] if len(parts) > 2 else "")
        if not msg.reason and len(parts) > 2:
            msg.reason = ""
    else:
        parts = start.split()
        bad_start = len(parts) != 3
        if not bad_start:
            method, uri, version = parts
            bad_start = (not _TOKEN.match(method) or uri.startswith("<")
                         or uri_scheme(uri) is None)
        if bad_start:
            # Parse the headers anyway, so that the 400 can copy Via, From, To...
            msg = Request(parts[0] if parts else "", "", version="")
        else:
            msg = Request(method, uri, version=version)
    items = msg.headers.items
    for line in lines[1:]:
        # Fast path, the same as _HEADER_NAME: a name already seen to be a token, then
        # optional blanks and the first colon (a token cannot hold ":", " " or TAB).
        colon = line.find(":")
        if colon > 0:
            cname = _TOKEN_NAMES.get(line[:colon].rstrip(" \t"))
            if cname is not None:
                items.append((cname, line[colon + 1 :].strip()))
                continue
        if not line.strip():
            continue
        m = _HEADER_NAME.match(line)
        if m is None:
            if isinstance(msg, Response):
                raise SipParseError("bad header line", status=None)
            raise SipParseError("bad header line", partial=msg)
        name = m.group(1)
        cname = canonical_name(name)
        if len(_TOKEN_NAMES) < _NAME_CACHE_MAX:
            _TOKEN_NAMES[name] = cname
        items.append((cname, line[m.end() :].strip()))
    if isinstance(msg, Request) and not msg.version:
        raise SipParseError("bad request line", partial=msg)
    return msg


def _content_length(msg: Message) -> int | None:
    values = msg.headers.get_all("Content-Length")
    if not values:
        return None
    parsed = set()
    for v in values:
        v = v.strip()
        if not v.isdigit() or len(v) > 9:
            raise SipParseError("bad Content-Length")
        parsed.add(int(v))
    if len(parsed) > 1:
        raise SipParseError("conflicting Content-Length")
    return parsed.pop()


def parse_datagram(data: bytes) -> Request | Response:
    """Parse one UDP datagram (RFC 3261 18.3: the body may be cut by Content-Length)."""
    head, body, _ = _split_head(data, stream=False)
    msg = parse_head(head)
    try:
        length = _content_length(msg)
    except SipParseError as exc:
        exc.status = 400 if isinstance(msg, Request) else None
        exc.partial = msg if isinstance(msg, Request) else None
        raise
    if length is not None:
        if length > len(body):
            if isinstance(msg, Response):
                raise SipParseError("body shorter than Content-Length", status=None)
            raise SipParseError("body shorter than Content-Length", partial=msg)
        body = body[:length]
    msg.body = body
    return msg


class StreamFramer:
    """Frames SIP messages out of a TCP/TLS byte stream by Content-Length.

    ``feed`` returns complete messages; a framing error is fatal for the stream
    (RFC 3261 18.3: the connection must be closed), reported as a SipParseError
    in the output list after which nothing more is produced.
    """

    def __init__(self, max_message: int = 65535) -> None:
        self._buf = bytearray()
        self.max_message = max_message
        self.failed = False

    def feed(self, data: bytes) -> list[Request | Response | SipParseError]:
        if self.failed:
            return []
        self._buf += data
        out: list[Request | Response | SipParseError] = []
        while True:
            # Keep-alive CRLFs between messages (RFC 5626 3.5.1) are skipped.
            i = 0
            buf = self._buf
            while i < len(buf) and buf[i] in (13, 10):
                i += 1
            if i:
                del buf[:i]
            if not buf:
                break
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_message:
                    self._fail(out, SipParseError("header section too large", status=None))
                break
            try:
                msg = parse_head(bytes(buf[:end]))
            except SipParseError as exc:
                self._fail(out, exc)
                break
            try:
                length = _content_length(msg)
            except SipParseError as exc:
                exc.partial = msg if isinstance(msg, Request) else None
                self._fail(out, exc)
                break
            if length is None:
                err = SipParseError("missing Content-Length on a stream")
                err.partial = msg if isinstance(msg, Request) else None
                self._fail(out, err)
                break
            total = end + 4 + length
            if total > self.max_message:
                err = SipParseError("message too large", status=513)
                err.partial = msg if isinstance(msg, Request) else None
                self._fail(out, err)
                break
            if len(buf) < total:
                break
            msg.body = bytes(buf[end + 4 : total])
            del buf[:total]
            out.append(msg)
        return out

    def _fail(self, out: list[Request | Response | SipParseError], exc: SipParseError) -> None:
        self.failed = True
        self._buf.clear()
        out.append(exc)

    @property
    def pending(self) -> int:
        return len(self._buf)


# Validation --------------------------------------------------------------------


def validate_request(req: Request) -> None:
    """RFC 3261 8.2 / 16.3 checks that make a request answerable; raises SipParseError."""
    if req.version.upper() != "SIP/2.0":
        raise SipParseError("SIP version not supported", status=505, partial=req)
    h = req.headers
    counts: dict[str, int] = {}
    for k, _ in h.items:
        lk = k.lower()
        counts[lk] = counts.get(lk, 0) + 1
    for name in ("call-id", "cseq", "from", "to", "via"):
        if not counts.get(name):
            raise SipParseError(f"missing {canonical_name(name)}", partial=req)
    for name in _SINGLE:
        if counts.get(name, 0) > 1:
            raise SipParseError(f"more than one {canonical_name(name)}", partial=req)
    try:
        cseq = parse_cseq(h.get("CSeq") or "")
    except SipParseError as exc:
        exc.partial = req
        raise
    if cseq.method != req.method:
        raise SipParseError("CSeq method does not match the request", partial=req)
    vias = h.get_list("Via")
    if not vias:  # only empty Via lines: nothing to answer to
        raise SipParseError("missing Via", partial=req)
    for v in vias:
        try:
            parse_via(v)
        except SipParseError as exc:
            exc.partial = req
            raise
    for name in ("From", "To"):
        try:
            parse_address(h.get(name) or "")
        except ValueError:
            # Non-SIP URIs (RFC 4475 3.3.4) are well-formed name-addrs that
            # sipmessage cannot represent; accept them if the brackets balance.
            if not _generic_name_addr(h.get(name) or ""):
                raise SipParseError(f"bad {name}", partial=req) from None
    for v in h.get_list("Contact"):
        if v == "*":
            continue
        try:
            parse_address(v)
        except ValueError:
            if not _generic_name_addr(v):
                raise SipParseError("bad Contact", partial=req) from None
    mf = h.get("Max-Forwards")
    if mf is not None and not (mf.isdigit() and int(mf) <= 255):
        raise SipParseError("bad Max-Forwards", partial=req)
    if not req.call_id.strip():
        raise SipParseError("empty Call-ID", partial=req)


_GENERIC_NAME_ADDR = re.compile(
    r'^(?:(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9\-.!%*_+`\'~ ]*)\s*'
    r"<[A-Za-z][A-Za-z0-9+\-.]*:[^<>\s]+>|[A-Za-z][A-Za-z0-9+\-.]*:[^<>\s;,]+)"
    r"(?:\s*;\s*[A-Za-z0-9\-.!%*_+`'~]+(?:\s*=\s*(?:[^;\s\"]+|\"(?:[^\"\\]|\\.)*\"))?)*$"
)


def _generic_name_addr(value: str) -> bool:
    return bool(_GENERIC_NAME_ADDR.match(value.strip()))


# Building responses --------------------------------------------------------------


def make_response(
    req: Request,
    status: int,
    reason: str = "",
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response per RFC 3261 8.2.6: copies Via, From, To, Call-ID and CSeq."""
    h = Headers()
    items = h.items
    for k, v in req.headers.items:
        if k in ("Via", "From", "Call-ID", "CSeq"):
            items.append((k, v))
        elif k == "To":
            if to_tag and _tag_of(v) is None and status != 100:
                v = f"{v};tag={to_tag}"
            items.append((k, v))
        elif k == "Record-Route" and 100 < status < 300:
            items.append((k, v))
        elif k == "Timestamp" and status == 100:
            items.append((k, v))
    for k, v in extra:
        items.append((canonical_name(k), v))
    return Response(status, reason, h, body)


def replace_top_via(msg: Message, value: str) -> None:
    """Replace the first Via value, wherever it sits (a line may hold several)."""
    items = msg.headers.items
    for i, (k, v) in enumerate(items):
        if k == "Via":
            parts = split_list(v)
            parts[0] = value
            items[i] = (k, ", ".join(parts))
            return


def pop_top_via(msg: Message) -> None:
    items = msg.headers.items
    for i, (k, v) in enumerate(items):
        if k == "Via":
            parts = split_list(v)
            if len(parts) > 1:
                items[i] = (k, ", ".join(parts[1:]))
            else:
                del items[i]
            return
