"""Load and validate the gateway's TOML configuration into frozen dataclasses.

A jail's IT staff edit this file by hand, often under pressure, so every mistake
(unknown key, wrong type, bad value, TOML syntax) stops start-up with a message
that names the file, the line, the dotted key and what was expected::

    conf/gateway.toml:42: sip.t1_ms: expected a positive integer (milliseconds), got "fast"

``tomllib`` gives no positions, so a small scanner (:func:`locate_keys`) maps
every key path to the line it is written on.  All problems found are reported at
once, in file order, so that one edit-check cycle fixes them all.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import os
import re
import secrets
import socket
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.billing.settings import BillingConfig, read_billing
from gateway.webrtc.config import WebRtcConfig, parse_ice_url

PathKey = tuple[str | int, ...]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOG_LEVELS = ("debug", "info", "warning", "error")
TRANSPORTS = ("udp", "tcp", "tls")
DIGEST_ALGORITHMS = ("SHA-256", "MD5")
ACCOUNT_KINDS = ("kiosk",)
DEFAULT_LISTEN = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
WEB_DEFAULT_LISTEN = ("http:127.0.0.1:8080",)
WEB_MEDIA_MODES = ("echo", "test-pattern")  # "bridge" once gateway/bridge exists
WEB_MAX_TOKEN_TTL = 86400  # join tokens are short-lived: a day at most
STAFF_ROLES = ("billing",)  # [[web.staff]] roles: "billing" reads exports, statements, receipts

# RFC 3261 "user" characters (unreserved / user-unreserved), without escapes.
_USER_RE = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/]+$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_KEY_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}\Z")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
# An argon2 hash in PHC form, as argon2-cffi's PasswordHasher().hash(key) writes it.
_ARGON2_RE = re.compile(
    r"^\$argon2(id|i|d)\$v=[0-9]+\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+\Z")


def package_version() -> str:
    """The installed distribution's version (one source of truth: pyproject)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gateway")
    except PackageNotFoundError:
        return "0.0.0+unknown"


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration, with where it is."""

    source: str
    line: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` is what the operator should read."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One SIP listener, e.g. ``udp:[::1]:5060``; port 0 means any free port."""

    transport: Literal["udp", "tcp", "tls"]
    host: str  # an IP literal, IPv6 without brackets
    port: int

    @property
    def hostport(self) -> str:
        """``host:port`` with IPv6 hosts in brackets, as SIP headers want them."""
        return f"{_bracket(self.host)}:{self.port}"

    def __str__(self) -> str:
        return f"{self.transport}:{self.hostport}"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    certificate: Path
    private_key: Path


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 10
    nonce_ttl: int = 300
    algorithms: tuple[str, ...] = DIGEST_ALGORITHMS
    auth_failure_limit: int = 10
    auth_failure_window: int = 60
    auth_block_seconds: int = 300


@dataclass(frozen=True, slots=True)
class Account:
    """A SIP account a kiosk registers and calls with."""

    username: str
    password: str | None = None
    ha1_md5: str | None = None  # lower-case hex, H(username:realm:password)
    ha1_sha256: str | None = None
    display_name: str | None = None
    kind: str = "kiosk"

    def ha1(self, algorithm: str, realm: str) -> str | None:
        """HA1 for a digest algorithm ("MD5" or "SHA-256"), or None if not configured."""
        algo = algorithm.upper()
        if self.password is not None:
            name = {"MD5": "md5", "SHA-256": "sha256"}.get(algo)
            if name is None:
                return None
            data = f"{self.username}:{realm}:{self.password}".encode()
            return hashlib.new(name, data).hexdigest()
        if algo == "MD5":
            return self.ha1_md5
        if algo == "SHA-256":
            return self.ha1_sha256
        return None


@dataclass(frozen=True, slots=True)
class Trunk:
    """A trusted SIP peer (a facility PBX), recognised by source address."""

    name: str
    sources: tuple[IPNetwork, ...]
    uri: str
    username: str | None = None
    password: str | None = None

    def accepts_source(self, host: str) -> bool:
        """True if a packet from ``host`` (an IP literal) comes from this trunk."""
        try:
            addr = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(addr in net for net in self.sources)


@dataclass(frozen=True, slots=True)
class Route:
    """A routing rule; the first one whose ``match`` fully matches the user part wins."""

    match: re.Pattern[str]
    to: str  # "registered", "trunk:NAME" or a SIP URI template with {user}
    strip_prefix: str = ""
    prepend: str = ""

    @property
    def kind(self) -> Literal["registered", "trunk", "uri"]:
        if self.to == "registered":
            return "registered"
        if self.to.startswith("trunk:"):
            return "trunk"
        return "uri"

    @property
    def trunk_name(self) -> str | None:
        return self.to[len("trunk:") :] if self.kind == "trunk" else None

    def matches(self, user: str) -> bool:
        return self.match.fullmatch(user) is not None

    def rewrite(self, user: str) -> str:
        """The user part after strip_prefix and prepend."""
        if self.strip_prefix and user.startswith(self.strip_prefix):
            user = user[len(self.strip_prefix) :]
        return self.prepend + user

    def uri_for(self, user: str) -> str | None:
        """For a URI-template route, the target URI for (rewritten) ``user``."""
        if self.kind != "uri":
            return None
        return self.to.replace("{user}", self.rewrite(user))


@dataclass(frozen=True, slots=True)
class SipConfig:
    listen: tuple[ListenAddress, ...]
    public_host: str
    realm: str = "gateway"
    user_agent: str = "gateway"
    t1_ms: int = 500
    t2_ms: int = 4000
    t4_ms: int = 5000
    max_message_bytes: int = 65535
    max_headers: int = 256
    max_tcp_connections_per_source: int = 32
    tcp_idle_timeout: int = 300
    force_rport: bool = True
    udp_size_threshold: int = 1300
    options_keepalive_seconds: int = 30
    session_expires: int = 1800
    min_se: int = 90
    tls: TlsConfig | None = None
    registrar: RegistrarConfig = field(default_factory=RegistrarConfig)
    accounts: tuple[Account, ...] = ()
    trunks: tuple[Trunk, ...] = ()

    def account(self, username: str) -> Account | None:
        return next((a for a in self.accounts if a.username == username), None)

    def trunk(self, name: str) -> Trunk | None:
        return next((t for t in self.trunks if t.name == name), None)

    def trunk_for_source(self, host: str) -> Trunk | None:
        return next((t for t in self.trunks if t.accepts_source(host)), None)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    node_id: str
    data_dir: Path  # absolute
    log_level: str = "info"
    secret: str | None = None  # None: generated once into data_dir/secret

    def secret_key(self) -> bytes:
        """The HMAC key for nonces and tokens; creates data_dir/secret on first use.

        Kept on disk (not regenerated per start) so that nonces and tokens issued
        before a restart stay valid.
        """
        if self.secret is not None:
            return self.secret.encode()
        path = self.data_dir / "secret"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            value = path.read_text(encoding="utf-8").strip()
            if len(value) < 16:
                raise ConfigError([Problem(str(path), None, None, "the stored secret is "
                                           "shorter than 16 characters; delete the file to "
                                           "generate a new one")]) from None
            return value.encode()
        value = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value + "\n")
        return value.encode()


@dataclass(frozen=True, slots=True)
class StoreConfig:
    redis_url: str = ""  # "" = in-process state
    key_prefix: str = "gateway:"  # every Redis key (and the change channel) starts with it
    # A node silent this long is taken for dead: its expiring records and its calls'
    # billing are taken over by a live node.
    node_timeout_seconds: int = 10

    @property
    def embedded(self) -> bool:
        return not self.redis_url


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str  # resolved: "" in the file becomes sqlite:///<data_dir>/gateway.sqlite3


@dataclass(frozen=True, slots=True)
class WebListenAddress:
    """One web listener, e.g. ``https:0.0.0.0:8443``; port 0 means any free port."""

    scheme: Literal["http", "https"]
    host: str  # an IP literal, IPv6 without brackets
    port: int

    @property
    def hostport(self) -> str:
        return f"{_bracket(self.host)}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}:{self.hostport}"


@dataclass(frozen=True, slots=True)
class StaffKey:
    """One ``[[web.staff]]`` entry: who holds a bearer key, its argon2 hash, its roles."""

    name: str
    key_hash: str  # argon2 PHC string ("$argon2id$v=19$m=...,t=...,p=...$salt$hash")
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The family-facing web server (``[web]``); off unless the table is present."""

    enabled: bool = True
    listen: tuple[WebListenAddress, ...] = (WebListenAddress("http", "127.0.0.1", 8080),)
    certificate: Path | None = None
    private_key: Path | None = None
    allowed_origins: tuple[str, ...] = ()  # normalised "scheme://host[:port]"; same-origin always
    admin_key: str | None = None  # None: the admin API refuses every request
    token_ttl: int = 600
    media_mode: str = "echo"
    max_message_bytes: int = 65536
    join_failure_limit: int = 10  # 0 = no blocking
    join_failure_window: int = 60
    join_block_seconds: int = 300
    staff: tuple[StaffKey, ...] = ()  # [[web.staff]]: bearer keys for the staff API

    @classmethod
    def disabled(cls) -> WebConfig:
        """What a file without a ``[web]`` table gets: a SIP-only gateway."""
        return cls(enabled=False, listen=())


@dataclass(frozen=True, slots=True)
class Config:
    gateway: GatewayConfig
    sip: SipConfig
    routes: tuple[Route, ...]
    store: StoreConfig
    database: DatabaseConfig
    source: Path | None = None  # the file it was loaded from, None for the defaults
    web: WebConfig = field(default_factory=WebConfig.disabled)
    billing: BillingConfig = field(default_factory=BillingConfig)  # [billing], off by default
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)  # [webrtc]: browser media

    def route_for(self, user: str) -> Route | None:
        """The first route matching a Request-URI user part."""
        return next((r for r in self.routes if r.matches(user)), None)


# --------------------------------------------------------------------------- public API


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate a configuration file; raise ConfigError if unusable."""
    p = Path(path)
    source = str(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(source, None, None, f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(source, line, None, "not valid UTF-8")]) from None
    return loads_config(text, source=source, base_dir=p.resolve().parent, path=p)


def loads_config(
    text: str,
    *,
    source: str = "<config>",
    base_dir: Path | None = None,
    path: Path | None = None,
) -> Config:
    """Parse and validate TOML text; relative paths are taken from ``base_dir``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(source, exc)]) from None
    reader = _Reader(source, locate_keys(text), (base_dir or Path.cwd()).resolve())
    config = reader.read(data, path)
    if reader.problems:
        ordered = sorted(reader.problems, key=lambda pr: pr.line or 0)
        raise ConfigError(ordered)
    return config


def default_config() -> Config:
    """The embedded defaults: loopback UDP+TCP on 5060, no accounts, data in ./data."""
    return loads_config("", source="<defaults>")


def _syntax_problem(source: str, exc: tomllib.TOMLDecodeError) -> Problem:
    msg = str(exc)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", msg)
    if m:
        return Problem(
            source,
            int(m.group(1)),
            None,
            f"TOML syntax error: {msg[: m.start()]} (column {m.group(2)})",
        )
    m = re.search(r"\s*\(at end of document\)\s*$", msg)
    if m:
        return Problem(source, None, None, f"TOML syntax error at end of file: {msg[: m.start()]}")
    return Problem(source, None, None, f"TOML syntax error: {msg}")


# --------------------------------------------------------------------------- key locator


class _Scan(Exception):
    pass


class _Locator:
    """Maps key paths to line numbers in TOML text that tomllib already accepted.

    Array elements get integer path parts (``("sip", "accounts", 1, "username")``).
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.lines: dict[PathKey, int] = {}
        self.aot: dict[PathKey, int] = {}  # array-of-tables path -> current index
        self._line_at = (0, 1)  # (offset, its line number): counting from the start
        # every time made files with thousands of accounts take seconds to load

    def line(self) -> int:
        at, no = self._line_at
        if self.i >= at:
            no += self.s.count("\n", at, self.i)
        else:
            no = self.s.count("\n", 0, self.i) + 1
        self._line_at = (self.i, no)
        return no

    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def record(self, path: PathKey) -> None:
        self.lines.setdefault(path, self.line())

    def skip_ws(self, newlines: bool) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#":
                end = self.s.find("\n", self.i)
                self.i = len(self.s) if end < 0 else end
            else:
                return

    def run(self) -> dict[PathKey, int]:
        current: PathKey = ()
        while True:
            self.skip_ws(newlines=True)
            if self.i >= len(self.s):
                return self.lines
            if self.peek(2) == "[[":
                self.i += 2
                parts = self.key()
                self.expect("]]")
                base = self.resolve(parts)
                index = self.aot.get(base, -1) + 1
                self.aot[base] = index
                current = (*base, index)
                self.record(base)
                self.record(current)
            elif self.peek() == "[":
                self.i += 1
                parts = self.key()
                self.expect("]")
                current = self.resolve(parts)
                self.record(current)
            else:
                parts = self.key()
                path = (*current, *parts)
                self.record(path)
                self.expect("=")
                self.value(path)

    def resolve(self, parts: tuple[str, ...]) -> PathKey:
        """Insert the current index after every array-of-tables prefix but the last part."""
        out: PathKey = ()
        for n, part in enumerate(parts):
            out = (*out, part)
            if n < len(parts) - 1 and out in self.aot:
                out = (*out, self.aot[out])
        return out

    def expect(self, token: str) -> None:
        self.skip_ws(newlines=False)
        if not self.s.startswith(token, self.i):
            raise _Scan(token)
        self.i += len(token)

    def key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self.skip_ws(newlines=False)
            c = self.peek()
            if c == '"':
                parts.append(json.loads(self.basic_string()))
            elif c == "'":
                start = self.i + 1
                end = self.s.index("'", start)
                parts.append(self.s[start:end])
                self.i = end + 1
            else:
                m = re.compile(r"[A-Za-z0-9_\-]+").match(self.s, self.i)
                if not m:
                    raise _Scan("key")
                parts.append(m.group())
                self.i = m.end()
            self.skip_ws(newlines=False)
            if self.peek() == ".":
                self.i += 1
                continue
            return tuple(parts)

    def basic_string(self) -> str:
        start = self.i
        self.i += 1
        while self.s[self.i] != '"':
            self.i += 2 if self.s[self.i] == "\\" else 1
        self.i += 1
        return self.s[start : self.i]

    def value(self, path: PathKey) -> None:
        self.skip_ws(newlines=False)
        c3 = self.peek(3)
        c = self.peek()
        if c3 in ('"""', "'''"):
            self.i += 3
            while True:
                if c3 == '"""' and self.s[self.i] == "\\":
                    self.i += 2
                    continue
                if self.s.startswith(c3, self.i):
                    self.i += 3
                    while self.peek() == c3[0]:  # up to two quotes may end the content
                        self.i += 1
                    return
                self.i += 1
        elif c == '"':
            self.basic_string()
        elif c == "'":
            self.i = self.s.index("'", self.i + 1) + 1
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() == "]":
                    self.i += 1
                    return
                self.record((*path, index))
                self.value((*path, index))
                self.skip_ws(newlines=True)
                if self.peek() == ",":
                    self.i += 1
                    index += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip_ws(newlines=False)
                if self.peek() == "}":
                    self.i += 1
                    return
                sub = (*path, *self.key())
                self.record(sub)
                self.expect("=")
                self.value(sub)
                self.skip_ws(newlines=False)
                if self.peek() == ",":
                    self.i += 1
        else:
            m = re.compile(r"[^,\]}\n#]*").match(self.s, self.i)
            assert m is not None
            self.i = m.end()


def locate_keys(text: str) -> dict[PathKey, int]:
    """Line numbers of the keys, tables and array elements in valid TOML text.

    Best effort: on anything unexpected it returns what it found so far, since a
    missing line number must never hide the real error.
    """
    loc = _Locator(text)
    try:
        return loc.run()
    except (_Scan, IndexError, ValueError):
        return loc.lines


# --------------------------------------------------------------------------- validation


def _show(value: Any) -> str:
    """A value as the operator wrote it in TOML, for "got ..." messages."""
    if isinstance(value, bool | int | float | str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


_Table = Mapping[str, Any]


class _Reader:
    """Turns the parsed TOML document into a Config, collecting every problem."""

    def __init__(self, source: str, lines: dict[PathKey, int], base_dir: Path) -> None:
        self.source = source
        self.lines = lines
        self.base_dir = base_dir
        self.problems: list[Problem] = []

    # -- reporting

    def line_of(self, path: PathKey) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def fail(self, path: PathKey, message: str) -> None:
        self.problems.append(Problem(self.source, self.line_of(path), _dotted(path), message))

    def expected(self, path: PathKey, what: str, value: Any) -> None:
        self.fail(path, f"expected {what}, got {_show(value)}")

    # -- structure

    def table(self, parent: _Table, path: PathKey, key: str, known: Iterable[str]) -> _Table:
        """A sub-table (empty if absent), with unknown keys reported."""
        value = parent.get(key, {})
        if not isinstance(value, dict):
            self.expected((*path, key), "a table", value)
            return {}
        self.check_keys(value, (*path, key), known)
        return value

    def table_list(
        self, parent: _Table, path: PathKey, key: str, known: Iterable[str]
    ) -> list[tuple[PathKey, _Table]]:
        """An array of tables ([[key]]), each with its own path."""
        value = parent.get(key, [])
        here = (*path, key)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.expected(here, f"an array of tables ([[{_dotted(here)}]])", value)
            return []
        out: list[tuple[PathKey, _Table]] = []
        for index, item in enumerate(value):
            item_path = (*here, index)
            self.check_keys(item, item_path, known)
            out.append((item_path, item))
        return out

    def check_keys(self, table: _Table, path: PathKey, known: Iterable[str]) -> None:
        known = list(known)
        for key in table:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.5) or [
                k for k in known if k.startswith(key) or key.startswith(k)
            ][:1]
            hint = (
                f'; did you mean "{close[0]}"?'
                if close
                else f" (known keys: {', '.join(known)})"
            )
            self.fail((*path, key), f"unknown key{hint}")

    # -- scalars

    def integer(
        self, table: _Table, path: PathKey, key: str, default: int, *, minimum: int = 1,
        maximum: int | None = None, unit: str = "",
    ) -> int:
        value = table.get(key, default)
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and (value < minimum or (maximum is not None and value > maximum)):
            ok = False
        if ok:
            return int(value)
        if maximum is not None:
            what = f"an integer from {minimum} to {maximum}"
        elif minimum == 1:
            what = "a positive integer"
        elif minimum == 0:
            what = "a non-negative integer"
        else:
            what = f"an integer >= {minimum}"
        self.expected((*path, key), f"{what} ({unit})" if unit else what, value)
        return default

    def boolean(self, table: _Table, path: PathKey, key: str, default: bool) -> bool:
        value = table.get(key, default)
        if isinstance(value, bool):
            return value
        self.expected((*path, key), "true or false", value)
        return default

    def string(
        self, table: _Table, path: PathKey, key: str, default: str | None, *,
        allow_empty: bool = False, pattern: re.Pattern[str] | None = None, what: str = "",
    ) -> str | None:
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, str) and (value or allow_empty):
            if pattern is None or pattern.match(value):
                return value
        self.expected((*path, key), what or ("a string" if allow_empty else "a non-empty string"),
                      value)
        return default

    def choice(
        self, table: _Table, path: PathKey, key: str, default: str, options: Iterable[str]
    ) -> str:
        options = list(options)
        value = table.get(key, default)
        if isinstance(value, str) and value.lower() in options:
            return value.lower()
        self.expected((*path, key), "one of " + ", ".join(json.dumps(o) for o in options), value)
        return default

    def string_list(
        self, table: _Table, path: PathKey, key: str, default: Iterable[str]
    ) -> list[tuple[PathKey, str]]:
        value = table.get(key, list(default))
        here = (*path, key)
        if not isinstance(value, list):
            self.expected(here, "an array of strings", value)
            return []
        out: list[tuple[PathKey, str]] = []
        for index, item in enumerate(value):
            if isinstance(item, str):
                out.append(((*here, index), item))
            else:
                self.expected((*here, index), "a string", item)
        return out

    def file_path(self, table: _Table, path: PathKey, key: str) -> Path | None:
        value = self.string(table, path, key, None)
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    # -- sections

    def read(self, data: _Table, source_path: Path | None) -> Config:
        self.check_keys(data, (), ("gateway", "sip", "routes", "store", "database", "web",
                                   "billing", "webrtc"))
        gateway = self.read_gateway(data)
        sip = self.read_sip(data)
        routes = self.read_routes(data, sip)
        store_t = self.table(data, (), "store", ("redis_url", "key_prefix",
                                                 "node_timeout_seconds"))
        redis_url = self.string(store_t, ("store",), "redis_url", "", allow_empty=True) or ""
        if redis_url and not re.match(r"^(redis|rediss|unix)://", redis_url):
            self.expected(("store", "redis_url"),
                          'an empty string or a redis://, rediss:// or unix:// URL', redis_url)
            redis_url = ""
        key_prefix = self.string(
            store_t, ("store",), "key_prefix", "gateway:", pattern=_KEY_PREFIX_RE,
            what="1 to 64 letters, digits, '.', '_', '-' and ':'",
        ) or "gateway:"
        node_timeout = self.integer(store_t, ("store",), "node_timeout_seconds", 10,
                                    minimum=3, maximum=600, unit="seconds")
        db_t = self.table(data, (), "database", ("url",))
        db_url = self.string(db_t, ("database",), "url", "", allow_empty=True) or ""
        if db_url and not re.match(r"^(sqlite|postgres|postgresql)(\+[A-Za-z0-9_]+)?://", db_url):
            self.expected(("database", "url"),
                          "an empty string, a sqlite:/// or a postgresql:// URL", db_url)
            db_url = ""
        if not db_url:
            db_url = f"sqlite:///{gateway.data_dir / 'gateway.sqlite3'}"
        return Config(
            gateway=gateway,
            sip=sip,
            routes=routes,
            store=StoreConfig(redis_url=redis_url, key_prefix=key_prefix,
                              node_timeout_seconds=node_timeout),
            database=DatabaseConfig(url=db_url),
            source=source_path,
            web=self.read_web(data),
            billing=read_billing(self, data),
            webrtc=self.read_webrtc(data),
        )

    def read_web(self, data: _Table) -> WebConfig:
        """``[web]``: present means on (``enabled`` defaults to true), absent means off."""
        if "web" not in data:
            return WebConfig.disabled()
        p: PathKey = ("web",)
        d = WebConfig()
        t = self.table(data, (), "web", (
            "enabled", "listen", "certificate", "private_key", "allowed_origins", "admin_key",
            "token_ttl", "media_mode", "max_message_bytes", "join_failure_limit",
            "join_failure_window", "join_block_seconds", "staff",
        ))
        enabled = self.boolean(t, p, "enabled", True)
        listen: list[WebListenAddress] = []
        seen: set[tuple[str, str, int]] = set()
        for path, text in self.string_list(t, p, "listen", WEB_DEFAULT_LISTEN):
            addr = parse_web_listen(text)
            if addr is None:
                self.expected(path, '"http:HOST:PORT" or "https:HOST:PORT" with an IP address '
                              "as HOST (IPv6 in brackets) and a port from 0 to 65535", text)
                continue
            ident = (addr.scheme, addr.host, addr.port)
            if ident in seen:
                self.fail(path, f'"{text}" is listed twice')
                continue
            seen.add(ident)
            listen.append(addr)
        if t.get("listen") == [] and enabled:
            self.fail((*p, "listen"), "expected at least one listener (or enabled = false)")
        cert = self.file_path(t, p, "certificate")
        key = self.file_path(t, p, "private_key")
        if ("certificate" in t) != ("private_key" in t):
            given, absent = (("certificate", "private_key") if "certificate" in t
                             else ("private_key", "certificate"))
            self.fail((*p, given), f"{absent} is missing (certificate and private_key go "
                      "together)")
        if enabled and any(a.scheme == "https" for a in listen):
            for name, value in (("certificate", cert), ("private_key", key)):
                if value is None and name not in t:
                    self.fail((*p, name), "required for an https: listener (a path to a PEM "
                              "file)")
            if cert is not None and key is not None:
                problem = _check_tls_files(cert, key)
                if problem is not None:
                    which, message = problem
                    self.fail((*p, which), message)
        origins: list[str] = []
        for path, text in self.string_list(t, p, "allowed_origins", ()):
            origin = normalize_origin(text)
            if origin is None:
                self.expected(path, 'an origin such as "https://visits.example.org" or '
                              '"https://203.0.113.5:8443" (scheme, host and optional port; '
                              "no path)", text)
            elif origin not in origins:
                origins.append(origin)
        admin_key = self.string(t, p, "admin_key", None)
        if admin_key is not None and len(admin_key) < 16:
            self.fail((*p, "admin_key"), "expected a string of at least 16 characters "
                      "(or leave it out to refuse every admin request)")
            admin_key = None
        s = "seconds"
        return WebConfig(
            enabled=enabled,
            listen=tuple(listen),
            certificate=cert,
            private_key=key,
            allowed_origins=tuple(origins),
            admin_key=admin_key,
            token_ttl=self.integer(t, p, "token_ttl", d.token_ttl, maximum=WEB_MAX_TOKEN_TTL,
                                   unit=s),
            media_mode=self.choice(t, p, "media_mode", d.media_mode, WEB_MEDIA_MODES),
            max_message_bytes=self.integer(t, p, "max_message_bytes", d.max_message_bytes,
                                           minimum=4096, maximum=1048576, unit="bytes"),
            join_failure_limit=self.integer(t, p, "join_failure_limit", d.join_failure_limit,
                                            minimum=0, unit="failed joins, 0 = off"),
            join_failure_window=self.integer(t, p, "join_failure_window",
                                             d.join_failure_window, unit=s),
            join_block_seconds=self.integer(t, p, "join_block_seconds", d.join_block_seconds,
                                            unit=s),
            staff=self.read_staff(t, p),
        )

    def read_staff(self, t: _Table, p: PathKey) -> tuple[StaffKey, ...]:
        """``[[web.staff]]``: name, key_hash (argon2) and roles of each staff key."""
        out: list[StaffKey] = []
        for path, item in self.table_list(t, p, "staff", ("name", "key_hash", "roles")):
            name = self.string(item, path, "name", None, pattern=_TOKEN_RE,
                               what="a name of letters, digits, '.', '_' and '-'")
            key_hash = self.string(item, path, "key_hash", None, pattern=_ARGON2_RE,
                                   what='an argon2 hash such as "$argon2id$v=19$m=65536,t=3,'
                                   'p=4$..." (make one with `gateway billing staff-key`)')
            roles: list[str] = []
            for rpath, role in self.string_list(item, path, "roles", ()):
                if role not in STAFF_ROLES:
                    self.expected(rpath, "one of " + ", ".join(f'"{r}"' for r in STAFF_ROLES),
                                  role)
                elif role not in roles:
                    roles.append(role)
            for key in ("name", "key_hash", "roles"):
                if key not in item:
                    self.fail((*path, key), "required in every [[web.staff]]")
            if name is not None and any(k.name == name for k in out):
                self.fail((*path, "name"), f'"{name}" is already used by another staff key')
                continue
            if name is not None and key_hash is not None and "roles" in item:
                out.append(StaffKey(name, key_hash, tuple(roles)))
        return tuple(out)

    def read_webrtc(self, data: _Table) -> WebRtcConfig:
        """``[webrtc]``: the addresses, ports and STUN/TURN servers of browser media.

        Every key is optional; nothing defaults to a public server.
        """
        p: PathKey = ("webrtc",)
        d = WebRtcConfig()
        t = self.table(data, (), "webrtc", ("host_addresses", "port_range", "stun_servers",
                                            "turn_servers"))
        hosts: list[str] = []
        for path, text in self.string_list(t, p, "host_addresses", d.host_addresses):
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                ip = None
            if ip is None or ip.is_unspecified or ip.is_multicast:
                self.expected(path, "an IP address of this host (not 0.0.0.0, :: or "
                              "multicast)", text)
            else:
                hosts.append(str(ip))
        if "host_addresses" in t and not t["host_addresses"]:
            self.fail((*p, "host_addresses"), "expected at least one address")
        port_range: tuple[int, int] | None = None
        if "port_range" in t:
            value = t["port_range"]
            ok = (isinstance(value, list) and len(value) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                  and 1024 <= value[0] <= value[1] <= 65535)
            if ok:
                port_range = (value[0], value[1])
            else:
                self.expected((*p, "port_range"), "[LOW, HIGH], UDP ports with "
                              "1024 <= LOW <= HIGH <= 65535", value)
        stun: list[str] = []
        for path, url in self.string_list(t, p, "stun_servers", ()):
            try:
                if parse_ice_url(url).kind != "stun":
                    raise ValueError("a turn: URL belongs in turn_servers")
                stun.append(url)
            except ValueError:
                self.expected(path, 'a "stun:HOST[:PORT]" URL', url)
        turn: list[dict[str, Any]] = []
        for path, item in self.table_list(t, p, "turn_servers",
                                          ("urls", "username", "credential")):
            urls = item.get("urls")
            url_list = [urls] if isinstance(urls, str) else urls
            if not isinstance(url_list, list) or not url_list or not all(
                    isinstance(u, str) for u in url_list):
                self.expected((*path, "urls"), "a turn:/turns: URL or an array of them", urls)
                continue
            bad = [u for u in url_list if not _is_turn_url(u)]
            if bad:
                self.expected((*path, "urls"), 'a "turn:HOST[:PORT][?transport=udp|tcp]" '
                              'or "turns:..." URL', bad[0])
                continue
            username = self.string(item, path, "username", None)
            credential = self.string(item, path, "credential", None)
            if username is None or credential is None:
                for key, got in (("username", username), ("credential", credential)):
                    if got is None and key not in item:
                        self.fail((*path, key), "required for a TURN server")
                continue
            turn.append({"urls": url_list, "username": username, "credential": credential})
        try:
            return WebRtcConfig(host_addresses=hosts or list(d.host_addresses),
                                port_range=port_range, stun_servers=stun, turn_servers=turn)
        except ValueError as exc:  # checked above; kept so no ValueError escapes
            self.fail(p, str(exc))
            return d

    def read_gateway(self, data: _Table) -> GatewayConfig:
        path: PathKey = ("gateway",)
        t = self.table(data, (), "gateway", ("node_id", "data_dir", "log_level", "secret"))
        node_id = self.string(
            t, path, "node_id", None, pattern=_TOKEN_RE,
            what="a name of letters, digits, '.', '_' and '-'",
        ) or socket.gethostname()
        data_dir = self.file_path(t, path, "data_dir") or self.base_dir / "data"
        log_level = self.choice(t, path, "log_level", "info", LOG_LEVELS)
        secret = self.string(t, path, "secret", None)
        if secret is not None and len(secret) < 16:
            self.fail((*path, "secret"), "expected a string of at least 16 characters "
                      "(or leave it out to generate one in data_dir/secret)")
            secret = None
        return GatewayConfig(
            node_id=node_id, data_dir=data_dir.resolve(), log_level=log_level, secret=secret
        )

    def read_sip(self, data: _Table) -> SipConfig:
        p: PathKey = ("sip",)
        d = SipConfig(listen=(), public_host="")
        t = self.table(data, (), "sip", (
            "listen", "public_host", "realm", "user_agent", "t1_ms", "t2_ms", "t4_ms",
            "max_message_bytes", "max_headers", "max_tcp_connections_per_source",
            "tcp_idle_timeout", "force_rport", "udp_size_threshold",
            "options_keepalive_seconds", "session_expires", "min_se", "tls", "registrar",
            "accounts", "trunks",
        ))
        listen = self.read_listen(t)
        public_host = self.read_public_host(t, listen)
        ms, s, b = "milliseconds", "seconds", "bytes"
        t1 = self.integer(t, p, "t1_ms", d.t1_ms, unit=ms)
        t2 = self.integer(t, p, "t2_ms", d.t2_ms, unit=ms)
        if t2 < t1:
            self.fail((*p, "t2_ms"), f"expected at least t1_ms ({t1}), got {t2}")
        session_expires = self.integer(t, p, "session_expires", d.session_expires, minimum=90,
                                       unit=s)
        min_se = self.integer(t, p, "min_se", d.min_se, minimum=90, unit=s)
        if session_expires < min_se:
            self.fail((*p, "session_expires"), f"expected at least min_se ({min_se}), "
                      f"got {session_expires}")
        tls = self.read_tls(t, listen)
        registrar = self.read_registrar(t)
        return SipConfig(
            listen=tuple(listen),
            public_host=public_host,
            realm=self.string(t, p, "realm", d.realm) or d.realm,
            user_agent=self.string(t, p, "user_agent", f"gateway/{package_version()}")
            or "gateway",
            t1_ms=t1,
            t2_ms=t2,
            t4_ms=self.integer(t, p, "t4_ms", d.t4_ms, unit=ms),
            max_message_bytes=self.integer(t, p, "max_message_bytes", d.max_message_bytes,
                                           minimum=1500, unit=b),
            max_headers=self.integer(t, p, "max_headers", d.max_headers, minimum=16),
            max_tcp_connections_per_source=self.integer(
                t, p, "max_tcp_connections_per_source", d.max_tcp_connections_per_source),
            tcp_idle_timeout=self.integer(t, p, "tcp_idle_timeout", d.tcp_idle_timeout, unit=s),
            force_rport=self.boolean(t, p, "force_rport", d.force_rport),
            udp_size_threshold=self.integer(t, p, "udp_size_threshold", d.udp_size_threshold,
                                            minimum=200, unit=b),
            options_keepalive_seconds=self.integer(
                t, p, "options_keepalive_seconds", d.options_keepalive_seconds, minimum=0,
                unit="seconds, 0 = off"),
            session_expires=session_expires,
            min_se=min_se,
            tls=tls,
            registrar=registrar,
            accounts=self.read_accounts(t, registrar),
            trunks=self.read_trunks(t),
        )

    def read_listen(self, t: _Table) -> list[ListenAddress]:
        out: list[ListenAddress] = []
        seen: set[tuple[str, str, int]] = set()
        for path, text in self.string_list(t, ("sip",), "listen", DEFAULT_LISTEN):
            addr = parse_listen(text)
            if addr is None:
                self.expected(path, '"udp:HOST:PORT", "tcp:HOST:PORT" or "tls:HOST:PORT" with '
                              "an IP address as HOST (IPv6 in brackets) and a port from 0 to "
                              "65535", text)
                continue
            ident = (addr.transport, addr.host, addr.port)
            if ident in seen:
                self.fail(path, f'"{text}" is listed twice')
                continue
            seen.add(ident)
            out.append(addr)
        if t.get("listen") == []:
            self.fail(("sip", "listen"), "expected at least one listener")
        return out

    def read_public_host(self, t: _Table, listen: list[ListenAddress]) -> str:
        value = self.string(t, ("sip",), "public_host", None)
        if value is not None:
            host = value[1:-1] if value.startswith("[") and value.endswith("]") else value
            if _is_ip(host) or _HOSTNAME_RE.match(host):
                return host
            self.expected(("sip", "public_host"), "a host name or IP address (no port)", value)
            return host
        if not listen:
            return "127.0.0.1"
        first = listen[0].host
        if ipaddress.ip_address(first).is_unspecified:
            self.fail(("sip", "public_host"), f'required when the first listener binds the '
                      f'wildcard address {first} (set the address kiosks reach this gateway at)')
        return first

    def read_tls(self, t: _Table, listen: list[ListenAddress]) -> TlsConfig | None:
        p: PathKey = ("sip", "tls")
        needs_tls = any(a.transport == "tls" for a in listen)
        if "tls" not in t:
            if needs_tls:
                self.fail(p, "a [sip.tls] table with certificate and private_key is required "
                          "for a tls: listener")
            return None
        tt = self.table(t, ("sip",), "tls", ("certificate", "private_key"))
        cert = self.file_path(tt, p, "certificate")
        key = self.file_path(tt, p, "private_key")
        for name, value in (("certificate", cert), ("private_key", key)):
            if value is None and name not in tt:
                self.fail((*p, name), "required (a path to a PEM file)")
        if cert is None or key is None:
            return None
        # Checked only when used, so the example file can name paths that do not
        # exist yet; a tls: listener then makes them mandatory.
        problem = _check_tls_files(cert, key) if needs_tls else None
        if problem is not None:
            which, message = problem
            self.fail((*p, which), message)
            return None
        return TlsConfig(certificate=cert, private_key=key)

    def read_registrar(self, t: _Table) -> RegistrarConfig:
        p: PathKey = ("sip", "registrar")
        d = RegistrarConfig()
        r = self.table(t, ("sip",), "registrar", (
            "min_expires", "max_expires", "default_expires", "max_contacts", "nonce_ttl",
            "algorithms", "auth_failure_limit", "auth_failure_window", "auth_block_seconds",
        ))
        s = "seconds"
        min_e = self.integer(r, p, "min_expires", d.min_expires, unit=s)
        max_e = self.integer(r, p, "max_expires", d.max_expires, unit=s)
        if max_e < min_e:
            self.fail((*p, "max_expires"), f"expected at least min_expires ({min_e}), got {max_e}")
        def_e = self.integer(r, p, "default_expires", d.default_expires, unit=s)
        if min_e <= max_e and not min_e <= def_e <= max_e:
            self.fail((*p, "default_expires"),
                      f"expected a value from min_expires ({min_e}) to max_expires ({max_e}), "
                      f"got {def_e}")
        algorithms: list[str] = []
        for path, name in self.string_list(r, p, "algorithms", d.algorithms):
            canon = next((a for a in DIGEST_ALGORITHMS if a == name.upper()), None)
            if canon is None:
                self.expected(path, " or ".join(json.dumps(a) for a in DIGEST_ALGORITHMS), name)
            elif canon in algorithms:
                self.fail(path, f'"{name}" is listed twice')
            else:
                algorithms.append(canon)
        if not algorithms and "algorithms" in r:
            self.fail((*p, "algorithms"), "expected at least one digest algorithm")
        return RegistrarConfig(
            min_expires=min_e,
            max_expires=max_e,
            default_expires=def_e,
            max_contacts=self.integer(r, p, "max_contacts", d.max_contacts),
            nonce_ttl=self.integer(r, p, "nonce_ttl", d.nonce_ttl, unit=s),
            algorithms=tuple(algorithms) or d.algorithms,
            auth_failure_limit=self.integer(r, p, "auth_failure_limit", d.auth_failure_limit),
            auth_failure_window=self.integer(r, p, "auth_failure_window", d.auth_failure_window,
                                             unit=s),
            auth_block_seconds=self.integer(r, p, "auth_block_seconds", d.auth_block_seconds,
                                            unit=s),
        )

    def read_accounts(self, t: _Table, registrar: RegistrarConfig) -> tuple[Account, ...]:
        out: list[Account] = []
        seen: set[str] = set()
        user_what = "a SIP user name (letters, digits and -_.!~*'()&=+$,;?/)"
        for path, a in self.table_list(t, ("sip",), "accounts", (
            "username", "password", "ha1_md5", "ha1_sha256", "display_name", "kind",
        )):
            if "username" not in a:
                self.fail(path, "username is required")
                continue
            username = self.string(a, path, "username", None, pattern=_USER_RE, what=user_what)
            if username is None:
                continue
            if username in seen:
                self.fail((*path, "username"), f'"{username}" is already used by another account')
                continue
            seen.add(username)
            password = self.string(a, path, "password", None)
            ha1_md5 = self.hex_digest(a, path, "ha1_md5", 32)
            ha1_sha256 = self.hex_digest(a, path, "ha1_sha256", 64)
            given = [k for k in ("password", "ha1_md5", "ha1_sha256") if k in a]
            if not given:
                self.fail(path, f'account "{username}": one of password, ha1_md5 or ha1_sha256 '
                          "is required")
            elif "password" in a and len(given) > 1:
                self.fail((*path, given[1]), "give either password or ha1_md5/ha1_sha256, "
                          "not both")
            elif password is None:
                usable = [alg for alg, h in (("MD5", ha1_md5), ("SHA-256", ha1_sha256))
                          if h is not None and alg in registrar.algorithms]
                if not usable and (ha1_md5 or ha1_sha256):
                    self.fail((*path, given[0]), "no HA1 for any algorithm in "
                              f"sip.registrar.algorithms ({', '.join(registrar.algorithms)})")
            out.append(Account(
                username=username,
                password=password,
                ha1_md5=ha1_md5,
                ha1_sha256=ha1_sha256,
                display_name=self.string(a, path, "display_name", None, allow_empty=True),
                kind=self.choice(a, path, "kind", "kiosk", ACCOUNT_KINDS),
            ))
        return tuple(out)

    def hex_digest(self, table: _Table, path: PathKey, key: str, length: int) -> str | None:
        value = self.string(table, path, key, None)
        if value is None:
            return None
        if len(value) == length and _HEX_RE.match(value):
            return value.lower()
        self.expected((*path, key), f"{length} hexadecimal digits", value)
        return None

    def read_trunks(self, t: _Table) -> tuple[Trunk, ...]:
        out: list[Trunk] = []
        seen: set[str] = set()
        for path, tr in self.table_list(t, ("sip",), "trunks", (
            "name", "sources", "uri", "username", "password",
        )):
            missing = [k for k in ("name", "sources", "uri") if k not in tr]
            if missing:
                self.fail(path, f"{', '.join(missing)} required in every [[sip.trunks]]")
                continue
            name = self.string(tr, path, "name", None, pattern=_TOKEN_RE,
                               what="a name of letters, digits, '.', '_' and '-'")
            if name is None:
                continue
            if name in seen:
                self.fail((*path, "name"), f'"{name}" is already used by another trunk')
                continue
            seen.add(name)
            sources: list[IPNetwork] = []
            for spath, cidr in self.string_list(tr, path, "sources", ()):
                try:
                    sources.append(ipaddress.ip_network(cidr, strict=False))
                except ValueError:
                    self.expected(spath, 'an IP network in CIDR form, e.g. "127.0.0.1/32"', cidr)
            if not sources and isinstance(tr.get("sources"), list) and not tr["sources"]:
                self.fail((*path, "sources"), "expected at least one CIDR")
            uri = self.string(tr, path, "uri", None) or ""
            if uri and not _valid_sip_uri(uri):
                self.expected((*path, "uri"), 'a SIP URI, e.g. "sip:127.0.0.1:5070;transport=udp"',
                              uri)
            username = self.string(tr, path, "username", None)
            password = self.string(tr, path, "password", None)
            if ("username" in tr) != ("password" in tr):
                given, absent = (("username", "password") if "username" in tr
                                 else ("password", "username"))
                self.fail((*path, given), f"{absent} is missing (username and password "
                          "go together)")
            out.append(Trunk(name=name, sources=tuple(sources), uri=uri, username=username,
                             password=password))
        return tuple(out)

    def read_routes(self, data: _Table, sip: SipConfig) -> tuple[Route, ...]:
        out: list[Route] = []
        trunks = {tr.name for tr in sip.trunks}
        for path, r in self.table_list(data, (), "routes", ("match", "to", "strip_prefix",
                                                            "prepend")):
            missing = [k for k in ("match", "to") if k not in r]
            if missing:
                self.fail(path, f"{' and '.join(missing)} required in every [[routes]]")
                continue
            pattern_text = self.string(r, path, "match", None)
            to = self.string(r, path, "to", None)
            strip = self.string(r, path, "strip_prefix", "", allow_empty=True) or ""
            prepend = self.string(r, path, "prepend", "", allow_empty=True) or ""
            if prepend and not _USER_RE.match(prepend):
                self.expected((*path, "prepend"), "characters allowed in a SIP user part",
                              prepend)
            if pattern_text is None or to is None:
                continue
            try:
                pattern = re.compile(pattern_text)
            except re.error as exc:
                self.fail((*path, "match"), f"expected a Python regular expression, "
                          f"got {_show(pattern_text)} ({exc})")
                continue
            if to.startswith("trunk:"):
                if to[len("trunk:"):] not in trunks:
                    known = ", ".join(sorted(trunks)) or "none defined"
                    self.fail((*path, "to"), f'"{to}" names no [[sip.trunks]] entry '
                              f"(trunks: {known})")
            elif to != "registered":
                sample = to.replace("{user}", "1000")
                if "{" in sample or "}" in sample or not _valid_sip_uri(sample):
                    self.expected((*path, "to"), '"registered", "trunk:NAME" or a SIP URI '
                                  'template such as "sip:{user}@127.0.0.1:5070"', to)
            out.append(Route(match=pattern, to=to, strip_prefix=strip, prepend=prepend))
        return tuple(out)


def parse_listen(text: str) -> ListenAddress | None:
    """Parse "udp:127.0.0.1:5060" / "tls:[::1]:5061"; None if malformed."""
    m = re.fullmatch(r"(udp|tcp|tls):(\[[^\]]+\]|[^:\[\]]+):(\d{1,5})", text.strip().lower())
    if not m:
        return None
    transport, host, port_s = m.groups()
    host = host.strip("[]")
    if not _is_ip(host):
        return None
    if ":" in host and not m.group(2).startswith("["):
        return None
    port = int(port_s)
    if port > 65535:
        return None
    proto: Literal["udp", "tcp", "tls"] = (
        "udp" if transport == "udp" else "tcp" if transport == "tcp" else "tls"
    )
    return ListenAddress(proto, str(ipaddress.ip_address(host)), port)


def _is_turn_url(url: str) -> bool:
    try:
        return parse_ice_url(url).kind == "turn"
    except ValueError:
        return False


def parse_web_listen(text: str) -> WebListenAddress | None:
    """Parse "http:127.0.0.1:8080" / "https:[::]:8443"; None if malformed."""
    m = re.fullmatch(r"(https?):(\[[^\]]+\]|[^:\[\]]+):(\d{1,5})", text.strip().lower())
    if not m:
        return None
    scheme, host, port_s = m.groups()
    host = host.strip("[]")
    if not _is_ip(host) or (":" in host and not m.group(2).startswith("[")):
        return None
    port = int(port_s)
    if port > 65535:
        return None
    return WebListenAddress("https" if scheme == "https" else "http",
                            str(ipaddress.ip_address(host)), port)


def normalize_origin(text: str) -> str | None:
    """``scheme://host[:port]`` as browsers send it in Origin (default port dropped); None if
    ``text`` is not an http(s) origin."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host or parts.username or parts.password:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if not (_is_ip(host) or _HOSTNAME_RE.match(host)):
        return None
    if port is not None and port == {"http": 80, "https": 443}[scheme]:
        port = None
    shown = _bracket(host)
    return f"{scheme}://{shown}" if port is None else f"{scheme}://{shown}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _valid_sip_uri(uri: str) -> bool:
    if not re.match(r"^sips?:", uri, re.IGNORECASE):
        return False
    from sipmessage import URI

    try:
        URI.parse(uri)
    except ValueError:
        return False
    return True


def _check_tls_files(cert: Path, key: Path) -> tuple[str, str] | None:
    """None if the certificate and key load and belong together, else (key, message)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert_pem = cert.read_bytes()
    except OSError as exc:
        return "certificate", f"cannot read {cert}: {exc.strerror}"
    try:
        key_pem = key.read_bytes()
    except OSError as exc:
        return "private_key", f"cannot read {key}: {exc.strerror}"
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        return "certificate", f"{cert} holds no PEM certificate"
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        return "private_key", f"{key} is encrypted; an unencrypted PEM key is needed"
    except ValueError:
        return "private_key", f"{key} holds no PEM private key"
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if certs[0].public_key().public_bytes(enc, pub) != private.public_key().public_bytes(enc, pub):
        return "private_key", f"{key} does not match the certificate in {cert}"
    return None
