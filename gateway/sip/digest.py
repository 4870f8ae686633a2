"""HTTP digest authentication for SIP (RFC 3261 section 22, RFC 2617, RFC 7616, RFC 8760).

The server side keeps no per-challenge state: a nonce carries its own issue time and
an HMAC over that time and the realm, keyed by a secret that every gateway node
shares, so a client challenged by one node can answer any other.  Nonce-count replay
tracking is a bounded, per-node best effort on top of that.

Header values are parsed here rather than with ``sipmessage.AuthCredentials``, whose
parameter splitter cuts quoted values at commas (RFC 7616's own example challenge has
``qop="auth, auth-int"``) and does not accept tabs as whitespace.  Challenges are
still formatted with ``sipmessage.AuthChallenge``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sipmessage import URI, AuthChallenge, AuthParameters

from gateway.sip.message import Request

# hashlib names of the digest algorithms (RFC 7616 section 6.1 / IANA registry).
_HASHLIB_NAMES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


def _available(name: str) -> bool:
    try:
        hashlib.new(name)
    except ValueError:  # OpenSSL builds without SHA-512/256
        return False
    return True


_HASHES = {alg: hl for alg, hl in _HASHLIB_NAMES.items() if _available(hl)}

# Canonical spellings of every algorithm this module can compute, strongest first.
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(
    name
    for base in ("SHA-512-256", "SHA-256", "MD5")
    if base in _HASHES
    for name in (base, base + "-sess")
)

_NONCE_TS = 8  # milliseconds since the epoch, big-endian
_NONCE_SALT = 8
_NONCE_MAC = 16
_NONCE_LEN = 43  # base64url of 32 bytes, unpadded
_NC_WINDOW = 64
_NC = re.compile(r"^[0-9a-fA-F]{8}$")
_HEX = re.compile(r"^[0-9a-f]+$")
_SCHEME = re.compile(r"[ \t]*([A-Za-z0-9!#$%&'*+\-.^_`|~]+)(?:[ \t]+|$)")
_PARAM_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_UNQUOTED = re.compile(r"[^\s,\"]+")


def canonical_algorithm(name: str) -> str | None:
    """The registry spelling of an algorithm name (they compare case-insensitively)."""
    for alg in SUPPORTED_ALGORITHMS:
        if alg.lower() == name.strip().lower():
            return alg
    return None


def _base(algorithm: str) -> str:
    return algorithm[:-5] if algorithm.endswith("-sess") else algorithm


def _h(algorithm: str, data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.new(_HASHES[_base(algorithm)], data).hexdigest()


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), the value a configuration may store instead of a password."""
    alg = canonical_algorithm(algorithm)
    if alg is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return _h(alg, f"{username}:{realm}:{password}")


def digest_response(
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest of RFC 7616 section 3.4.1 (RFC 2069 form when qop is None)."""
    alg = canonical_algorithm(algorithm)
    if alg is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    if alg.endswith("-sess"):
        ha1 = _h(alg, f"{ha1}:{nonce}:{cnonce or ''}")
    if qop == "auth-int":
        ha2 = _h(alg, f"{method}:{uri}:{_h(alg, body)}")
    else:
        ha2 = _h(alg, f"{method}:{uri}")
    if qop is None:
        return _h(alg, f"{ha1}:{nonce}:{ha2}")
    return _h(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Split a challenge or credentials value into its scheme and auth-params.

    Parameter names are lower-cased and quoted values unescaped.  Raises ValueError
    on anything that is not ``scheme name=value, ...``, including repeated names.
    """
    m = _SCHEME.match(value)
    if m is None:
        raise ValueError("no auth scheme")
    scheme = m.group(1)
    params: dict[str, str] = {}
    s = value
    i = m.end()
    n = len(s)
    while True:
        while i < n and s[i] in " \t,":
            i += 1
        if i >= n:
            break
        nm = _PARAM_NAME.match(s, i)
        if nm is None:
            raise ValueError("bad auth-param name")
        name = nm.group().lower()
        i = nm.end()
        while i < n and s[i] in " \t":
            i += 1
        if i >= n or s[i] != "=":
            raise ValueError(f"auth-param {name!r} has no value")
        i += 1
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted string")
                c = s[i]
                if c == "\\" and i + 1 < n:
                    buf.append(s[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    buf.append(c)
                    i += 1
            val = "".join(buf)
        else:
            vm = _UNQUOTED.match(s, i)
            if vm is None:
                raise ValueError(f"auth-param {name!r} has an empty value")
            val = vm.group()
            i = vm.end()
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] != ",":
            raise ValueError("auth-params must be separated by commas")
        if name in params:
            raise ValueError(f"auth-param {name!r} repeated")
        params[name] = val
    return scheme, params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Credentials -------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """What the server knows about a user: a cleartext password, HA1 hashes, or both.

    ``ha1`` maps a base algorithm name ("MD5", "SHA-256", ...) to
    H(username:realm:password) for the authenticator's realm, so that a configuration
    need not hold cleartext passwords.  An HA1 wins over the password.
    """

    username: str
    password: str | None = field(default=None, repr=False)
    ha1: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        normalized: dict[str, str] = {}
        for alg, value in self.ha1.items():
            canon = canonical_algorithm(alg)
            if canon is None or canon.endswith("-sess"):
                raise ValueError(f"HA1 for unsupported algorithm {alg!r}")
            value = value.strip().lower()
            if len(value) != len(_h(canon, b"")) or not _HEX.match(value):
                raise ValueError(f"HA1 for {canon} is not a {canon} hex digest")
            normalized[canon] = value
        if self.password is None and not normalized:
            raise ValueError(f"credential for {self.username!r} has neither password nor HA1")
        object.__setattr__(self, "ha1", normalized)

    def supports(self, algorithm: str) -> bool:
        """Whether ``ha1_for`` can answer, without hashing anything."""
        return self.password is not None or _base(algorithm) in self.ha1

    def ha1_for(self, algorithm: str, realm: str) -> str | None:
        base = _base(algorithm)
        stored = self.ha1.get(base)
        if stored is not None:
            return stored
        if self.password is not None:
            return _h(base, f"{self.username}:{realm}:{self.password}")
        return None


class AuthReason(StrEnum):
    OK = "ok"
    NO_CREDENTIALS = "no credentials for this realm"
    MALFORMED = "malformed credentials"
    UNSUPPORTED_ALGORITHM = "algorithm not offered"
    BAD_QOP = "qop not offered"
    URI_MISMATCH = "digest uri does not match the request"
    UNKNOWN_USER = "unknown user"
    MISSING_HA1 = "no HA1 for the chosen algorithm"
    WRONG_RESPONSE = "wrong response"
    STALE_NONCE = "stale nonce"
    REPLAY = "nonce count replayed"


_CHALLENGE_AGAIN = frozenset(
    {
        AuthReason.NO_CREDENTIALS,
        AuthReason.UNSUPPORTED_ALGORITHM,
        AuthReason.BAD_QOP,
        AuthReason.STALE_NONCE,
        AuthReason.REPLAY,
        AuthReason.MISSING_HA1,
    }
)
_BAD_CREDENTIALS = frozenset({AuthReason.UNKNOWN_USER, AuthReason.WRONG_RESPONSE})


@dataclass(frozen=True)
class AuthResult:
    """Outcome of ``DigestAuthenticator.verify``.

    ``stale`` is only set when the client proved it knows the password, so that a
    fresh challenge with ``stale=true`` lets it retry without asking its user.
    """

    ok: bool
    username: str | None
    stale: bool
    reason: AuthReason
    algorithm: str | None = None
    detail: str = ""

    @property
    def needs_challenge(self) -> bool:
        """Answer 401 with a fresh challenge (RFC 3261 22.2)."""
        return self.reason in _CHALLENGE_AGAIN

    @property
    def bad_credentials(self) -> bool:
        """A guess that failed: unknown user or wrong password, indistinguishable outside."""
        return self.reason in _BAD_CREDENTIALS


def _fail(reason: AuthReason, username: str | None = None, detail: str = "") -> AuthResult:
    stale = reason in (AuthReason.STALE_NONCE, AuthReason.REPLAY)
    return AuthResult(False, username, stale, reason, detail=detail)


# Server ------------------------------------------------------------------------------

_NC_MASK = (1 << _NC_WINDOW) - 1


@dataclass(slots=True)
class _NonceCounts:
    top: int  # highest nc seen
    seen: int  # bit i set: nc == top - i was seen
    forget_at: float


class DigestAuthenticator:
    """Issues digest challenges and verifies Authorization headers for one realm."""

    def __init__(
        self,
        realm: str,
        secret: bytes,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        nonce_ttl: float = 300,
        *,
        require_qop: bool = True,
        track_nc: bool = True,
        max_tracked_nonces: int = 65536,
        clock_skew: float = 30.0,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        if nonce_ttl <= 0:
            raise ValueError("nonce_ttl must be positive")
        algs: list[str] = []
        for name in algorithms:
            canon = canonical_algorithm(name)
            if canon is None:
                raise ValueError(f"unsupported digest algorithm {name!r}")
            if canon not in algs:
                algs.append(canon)
        if not algs:
            raise ValueError("at least one algorithm is needed")
        self.realm = realm
        self.algorithms: tuple[str, ...] = tuple(algs)
        self.nonce_ttl = nonce_ttl
        self.require_qop = require_qop
        self.track_nc = track_nc
        self.max_tracked_nonces = max_tracked_nonces
        self.clock_skew = clock_skew
        self._secret = secret
        self._realm_bytes = realm.encode("utf-8")
        self._random = random
        self._nc: OrderedDict[str, _NonceCounts] = OrderedDict()  # LRU

    # Nonces -------------------------------------------------------------------------

    def _mac(self, ts: bytes, salt: bytes) -> bytes:
        return hmac.new(self._secret, ts + salt + self._realm_bytes, hashlib.sha256).digest()[
            :_NONCE_MAC
        ]

    def make_nonce(self, now: float) -> str:
        ts = struct.pack(">Q", max(0, int(now * 1000)))
        salt = self._random(_NONCE_SALT)
        raw = ts + salt + self._mac(ts, salt)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def nonce_state(self, nonce: str, now: float) -> str:
        """Returns "valid", "stale" (ours but too old) or "invalid"."""
        if len(nonce) != _NONCE_LEN:
            return "invalid"
        try:
            raw = base64.b64decode(nonce + "=", altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            return "invalid"
        ts, salt, mac = raw[:_NONCE_TS], raw[_NONCE_TS:-_NONCE_MAC], raw[-_NONCE_MAC:]
        if not hmac.compare_digest(mac, self._mac(ts, salt)):
            return "invalid"
        issued = struct.unpack(">Q", ts)[0] / 1000
        if issued > now + self.clock_skew:
            return "invalid"
        if now - issued > self.nonce_ttl:
            return "stale"
        return "valid"

    def _accept_nc(self, nonce: str, nc: int, now: float) -> bool:
        """Sliding-window replay check, so that reordered requests still pass once."""
        table = self._nc
        entry = table.get(nonce)
        if entry is None:
            table[nonce] = _NonceCounts(nc, 1, now + self.nonce_ttl + self.clock_skew)
            while table and (
                len(table) > self.max_tracked_nonces or next(iter(table.values())).forget_at <= now
            ):
                table.popitem(last=False)
            return True
        if nc > entry.top:
            shift = nc - entry.top
            entry.seen = ((entry.seen << shift) | 1) & _NC_MASK if shift < _NC_WINDOW else 1
            entry.top = nc
        else:
            offset = entry.top - nc
            if offset >= _NC_WINDOW or (entry.seen >> offset) & 1:
                return False
            entry.seen |= 1 << offset
        table.move_to_end(nonce)
        return True

    @property
    def tracked_nonces(self) -> int:
        return len(self._nc)

    # Challenge ------------------------------------------------------------------------

    def challenge(
        self, now: float, stale: bool = False, algorithms: Iterable[str] | None = None
    ) -> list[str]:
        """WWW-Authenticate values, one per algorithm, most preferred first (RFC 8760 2.4).

        ``algorithms`` narrows the offer, for a user whose stored HA1 covers only some.
        """
        nonce = self.make_nonce(now)
        offer = self.algorithms
        if algorithms is not None:
            wanted = {canonical_algorithm(a) for a in algorithms}
            offer = tuple(a for a in self.algorithms if a in wanted) or self.algorithms
        out = []
        for alg in offer:
            params = {"realm": self.realm, "nonce": nonce, "algorithm": alg, "qop": "auth"}
            if stale:
                params["stale"] = "true"
            out.append(str(AuthChallenge(scheme="Digest", parameters=AuthParameters(**params))))
        return out

    # Verification ---------------------------------------------------------------------

    def _credentials(self, req: Request, header: str) -> dict[str, str] | AuthResult:
        malformed = False
        for value in req.headers.get_all(header):
            m = _SCHEME.match(value)
            if m is None or m.group(1).lower() != "digest":
                continue  # other schemes are not ours to judge (RFC 4475 regaut01)
            try:
                _, params = parse_auth_header(value)
            except ValueError:
                malformed = True
                continue
            if params.get("realm") == self.realm:
                return params
        if malformed:
            return _fail(AuthReason.MALFORMED, detail="unparseable Digest credentials")
        return _fail(AuthReason.NO_CREDENTIALS)

    def verify(
        self,
        req: Request,
        lookup: Callable[[str], Credential | None],
        now: float,
        header: str = "Authorization",
    ) -> AuthResult:
        """Check the request's digest credentials for this realm.

        Unknown users take the same path, and cost the same hashing, as wrong
        passwords; the nonce is judged only after the response, so that ``stale``
        is never granted to a guess.
        """
        got = self._credentials(req, header)
        if isinstance(got, AuthResult):
            return got
        p = got

        username = p.get("username")
        if "username*" in p:
            if username is not None:
                return _fail(AuthReason.MALFORMED, detail="both username and username*")
            username = _decode_ext_value(p["username*"])
        if not username:
            return _fail(AuthReason.MALFORMED, detail="no username")
        if p.get("userhash", "false").lower() == "true":
            return _fail(AuthReason.MALFORMED, username, "userhash is not supported")
        for name in ("nonce", "uri", "response"):
            if name not in p:
                return _fail(AuthReason.MALFORMED, username, f"no {name}")

        algorithm = canonical_algorithm(p.get("algorithm", "MD5"))
        if algorithm is None or algorithm not in self.algorithms:
            return _fail(AuthReason.UNSUPPORTED_ALGORITHM, username, p.get("algorithm", "MD5"))

        qop = p.get("qop")  # hashed as sent, whatever its case
        nc_value = 0
        if qop is None:
            if self.require_qop or algorithm.endswith("-sess"):
                return _fail(AuthReason.BAD_QOP, username, "qop missing")
        else:
            if qop.lower() != "auth":
                return _fail(AuthReason.BAD_QOP, username, qop)
            nc, cnonce = p.get("nc", ""), p.get("cnonce", "")
            if not _NC.match(nc) or not cnonce:
                return _fail(AuthReason.MALFORMED, username, "bad nc or cnonce")
            nc_value = int(nc, 16)
            if nc_value == 0:
                return _fail(AuthReason.MALFORMED, username, "nc is zero")

        if not same_uri(p["uri"], req.uri):
            return _fail(AuthReason.URI_MISMATCH, username, p["uri"])

        credential = lookup(username)
        ha1 = credential.ha1_for(algorithm, self.realm) if credential is not None else None
        expected = digest_response(
            algorithm,
            # Same hashing as a real check, so timing does not tell users apart.
            ha1 if ha1 is not None else _h(algorithm, self._random(16)),
            p["nonce"],
            req.method,
            p["uri"],
            qop=qop,
            nc=p.get("nc"),
            cnonce=p.get("cnonce"),
        )
        if credential is None:
            return _fail(AuthReason.UNKNOWN_USER, username)
        if ha1 is None:
            return _fail(AuthReason.MISSING_HA1, username, algorithm)
        if not hmac.compare_digest(
            p["response"].lower().encode("utf-8"), expected.encode("ascii")
        ):
            return _fail(AuthReason.WRONG_RESPONSE, username)

        state = self.nonce_state(p["nonce"], now)
        if state != "valid":
            return _fail(AuthReason.STALE_NONCE, username, state)
        if self.track_nc and qop is not None and not self._accept_nc(p["nonce"], nc_value, now):
            return _fail(AuthReason.REPLAY, username, p.get("nc", ""))
        return AuthResult(True, username, False, AuthReason.OK, algorithm)


def _decode_ext_value(value: str) -> str:
    """RFC 8187 ext-value (charset'lang'pct-encoded), as in RFC 7616 username*."""
    charset, _, rest = value.partition("'")
    _, _, encoded = rest.partition("'")
    try:
        return urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="strict")
    except (LookupError, UnicodeDecodeError):
        return ""


_SIGNIFICANT_URI_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def same_uri(a: str, b: str) -> bool:
    """RFC 3261 19.1.4 comparison, falling back to string equality for other schemes."""
    if a == b:
        return True
    a_rest, _, a_headers = a.partition("?")
    b_rest, _, b_headers = b.partition("?")
    try:
        ua, ub = URI.parse(a_rest), URI.parse(b_rest)
    except ValueError:
        return False
    if ua.scheme not in ("sip", "sips") or ua.scheme != ub.scheme:
        return False
    if (ua.user, ua.password, ua.port) != (ub.user, ub.password, ub.port):
        return False
    if ua.host.lower() != ub.host.lower() or a_headers != b_headers:
        return False
    pa = {k.lower(): (v or "").lower() for k, v in ua.parameters.items()}
    pb = {k.lower(): (v or "").lower() for k, v in ub.parameters.items()}
    for k in _SIGNIFICANT_URI_PARAMS:
        if pa.get(k) != pb.get(k):
            return False
    return all(pa[k] == pb[k] for k in pa.keys() & pb.keys())


# Client ------------------------------------------------------------------------------


def select_challenge(values: Iterable[str]) -> str | None:
    """The Digest challenge with the strongest algorithm this module can answer."""
    best: tuple[int, str] | None = None
    for value in values:
        try:
            scheme, params = parse_auth_header(value)
        except ValueError:
            continue
        if scheme.lower() != "digest" or "nonce" not in params or "realm" not in params:
            continue
        alg = canonical_algorithm(params.get("algorithm", "MD5"))
        if alg is None:
            continue
        rank = SUPPORTED_ALGORITHMS.index(alg)
        if best is None or rank < best[0]:
            best = (rank, value)
    return best[1] if best else None


def authorization_for(
    challenge: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int,
    *,
    body: bytes = b"",
) -> str:
    """An Authorization (or Proxy-Authorization) value answering one challenge value.

    Prefers qop=auth, then auth-int, and falls back to the RFC 2069 form when the
    challenge offers no qop.  Raises ValueError for challenges it cannot answer.
    """
    scheme, p = parse_auth_header(challenge)
    if scheme.lower() != "digest":
        raise ValueError(f"not a Digest challenge: {scheme}")
    if "realm" not in p or "nonce" not in p:
        raise ValueError("challenge without realm or nonce")
    algorithm = canonical_algorithm(p.get("algorithm", "MD5"))
    if algorithm is None:
        raise ValueError(f"unsupported digest algorithm {p.get('algorithm')!r}")
    qop: str | None = None
    if "qop" in p:
        offered = [q.strip().lower() for q in p["qop"].split(",")]
        if "auth" in offered:
            qop = "auth"
        elif "auth-int" in offered:
            qop = "auth-int"
        else:
            raise ValueError(f"no supported qop in {p['qop']!r}")
    if nc < 1 or nc > 0xFFFFFFFF:
        raise ValueError("nc out of range")
    nc_hex = f"{nc:08x}"
    realm, nonce = p["realm"], p["nonce"]
    ha1 = compute_ha1(algorithm, username, realm, password)
    response = digest_response(
        algorithm, ha1, nonce, method, uri, qop=qop, nc=nc_hex, cnonce=cnonce, body=body
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
    ]
    if "algorithm" in p:
        parts.append(f"algorithm={algorithm}")
    if qop is not None:
        parts += [f"cnonce={_quote(cnonce)}", f"qop={qop}", f"nc={nc_hex}"]
    if "opaque" in p:
        parts.append(f"opaque={_quote(p['opaque'])}")
    return "Digest " + ", ".join(parts)
