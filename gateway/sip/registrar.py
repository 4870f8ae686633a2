"""Registrar for kiosks (RFC 3261 section 10.3).

Bindings live in the shared store, one record per binding and one namespace per
address-of-record, so a REGISTER touches at most ``max_contacts`` records whatever
the number of kiosks, and any gateway node can find a kiosk registered through
another.  Each binding remembers the transport, address and port its REGISTER came
from: kiosks sit behind NAT, and that flow is how the gateway reaches them.

Accounts are identified by the user part of the To URI; the digest username must
equal it.  Unknown users get exactly the answers a known user with a wrong password
gets, so the registrar cannot be used to enumerate accounts.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from sipmessage import URI

from gateway.sip.digest import AuthReason, AuthResult, Credential, DigestAuthenticator
from gateway.sip.message import Request, Response, SipParseError, make_response, uri_scheme
from gateway.sip.ratelimit import AuthFailureLimiter
from gateway.store import Record, Store, Value

logger = logging.getLogger(__name__)

Source = tuple[str, str, int]
"""(transport "udp"/"tcp"/"tls", ip, port) a request arrived from."""

AccountKind = Literal["kiosk", "trunk"]
ACCOUNT_KINDS: tuple[AccountKind, ...] = ("kiosk", "trunk")

AOR_NAMESPACE = "registrar.aor"
BINDINGS_PREFIX = "registrar.bindings:"
MAX_DELTA = 2**32 - 1
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset()

_DIGITS = re.compile(r"^[0-9]+$")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_UNQUOTED_VALUE = re.compile(r"[^\s;,\"]+")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_DISPLAY_NAME = re.compile(r'^(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9\-.!%*_+`\'~ \t]*)$')
_QVALUE = re.compile(r"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$")
_SIGNIFICANT_URI_PARAMS = frozenset({"user", "ttl", "method", "maddr", "transport"})


def bindings_namespace(username: str) -> str:
    return BINDINGS_PREFIX + username


# Accounts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """A SIP account: a kiosk that registers here, or a trunk the gateway registers to.

    ``ha1`` maps algorithm names to H(username:realm:password) so a configuration need
    not hold cleartext passwords.
    """

    username: str
    kind: AccountKind
    password: str | None = field(default=None, repr=False)
    ha1: dict[str, str] | None = field(default=None, repr=False)
    display_name: str = ""

    def __post_init__(self) -> None:
        if not self.username:
            raise ValueError("account without username")
        if self.kind not in ACCOUNT_KINDS:
            raise ValueError(f"account {self.username!r}: unknown kind {self.kind!r}")
        _ = self.credential  # validates password / HA1 now rather than at first REGISTER

    @cached_property
    def credential(self) -> Credential:
        return Credential(self.username, self.password, self.ha1 or {})


class AccountDirectory:
    """Accounts by username; built from configuration now, backed by a data store later."""

    def __init__(self, accounts: Iterable[Account] = ()) -> None:
        self._accounts: dict[str, Account] = {}
        for account in accounts:
            if account.username in self._accounts:
                raise ValueError(f"duplicate account {account.username!r}")
            self._accounts[account.username] = account

    @classmethod
    def from_config(cls, entries: Iterable[Mapping[str, object]]) -> AccountDirectory:
        """Accounts from parsed configuration, one mapping per account.

        Keys: username, kind ("kiosk" by default), password, ha1 (algorithm -> hex)
        or the flat ha1_md5 / ha1_sha256 of the configuration file, display_name.
        """
        allowed = {"username", "kind", "password", "ha1", "ha1_md5", "ha1_sha256", "display_name"}
        accounts = []
        for entry in entries:
            unknown = set(entry) - allowed
            if unknown:
                raise ValueError(f"unknown account settings: {', '.join(sorted(unknown))}")
            username = entry.get("username")
            if not isinstance(username, str):
                raise ValueError("account username must be a string")
            kind = entry.get("kind", "kiosk")
            if kind not in ACCOUNT_KINDS:
                raise ValueError(f"account {username!r}: kind must be one of {ACCOUNT_KINDS}")
            password = entry.get("password")
            if password is not None and not isinstance(password, str):
                raise ValueError(f"account {username!r}: password must be a string")
            display_name = entry.get("display_name") or ""
            if not isinstance(display_name, str):
                raise ValueError(f"account {username!r}: display_name must be a string")
            ha1: dict[str, str] = {}
            given = entry.get("ha1")
            if given is not None:
                if not isinstance(given, Mapping):
                    raise ValueError(f"account {username!r}: ha1 must map algorithm to hex")
                for alg, value in given.items():
                    if not isinstance(alg, str) or not isinstance(value, str):
                        raise ValueError(f"account {username!r}: ha1 must map algorithm to hex")
                    ha1[alg] = value
            for key, alg in (("ha1_md5", "MD5"), ("ha1_sha256", "SHA-256")):
                value = entry.get(key)
                if value is not None:
                    if not isinstance(value, str):
                        raise ValueError(f"account {username!r}: {key} must be a string")
                    ha1[alg] = value
            accounts.append(Account(username, kind, password, ha1 or None, display_name))
        return cls(accounts)

    def get(self, username: str) -> Account | None:
        return self._accounts.get(username)

    def __len__(self) -> int:
        return len(self._accounts)


# Bindings and events ------------------------------------------------------------------


def _ms(t: float) -> int:
    return int(round(t * 1000))


@dataclass(frozen=True)
class Binding:
    """One registered contact of an address-of-record.

    ``contact`` is the Contact URI exactly as the kiosk sent it (URI parameters and
    escaped headers included), ``params`` the Contact header parameters other than
    expires, as sent, so a 200 OK and later requests can reproduce both faithfully.
    """

    aor: str
    key: str
    contact: str
    params: str
    q: float
    expires_at: float
    source: Source
    call_id: str
    cseq: int
    user_agent: str
    registered_at: float
    updated_at: float

    @property
    def transport(self) -> str:
        return self.source[0]

    def expires_in(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))

    def contact_header(self, now: float) -> str:
        return f"<{self.contact}>{self.params};expires={self.expires_in(now)}"

    def to_record(self) -> Value:
        transport, ip, port = self.source
        return {
            "contact": self.contact,
            "params": self.params,
            "q": int(round(self.q * 1000)),
            "expires_at": _ms(self.expires_at),
            "transport": transport,
            "ip": ip,
            "port": port,
            "call_id": self.call_id,
            "cseq": self.cseq,
            "user_agent": self.user_agent,
            "registered_at": _ms(self.registered_at),
            "updated_at": _ms(self.updated_at),
        }

    @classmethod
    def from_record(cls, aor: str, key: str, v: Mapping[str, str | int]) -> Binding:
        return cls(
            aor=aor,
            key=key,
            contact=str(v["contact"]),
            params=str(v["params"]),
            q=int(v["q"]) / 1000,
            expires_at=int(v["expires_at"]) / 1000,
            source=(str(v["transport"]), str(v["ip"]), int(v["port"])),
            call_id=str(v["call_id"]),
            cseq=int(v["cseq"]),
            user_agent=str(v["user_agent"]),
            registered_at=int(v["registered_at"]) / 1000,
            updated_at=int(v["updated_at"]) / 1000,
        )


@dataclass(frozen=True)
class RegistrarEvent:
    """A change of an address-of-record's bindings.

    The class says what happened to the AOR as a whole (it became reachable, stayed
    reachable, became unreachable); ``added``/``refreshed``/``removed`` say which
    bindings changed, and ``bindings`` lists those live afterwards.
    """

    aor: str
    bindings: tuple[Binding, ...]
    added: tuple[Binding, ...] = ()
    refreshed: tuple[Binding, ...] = ()
    removed: tuple[Binding, ...] = ()
    source: Source | None = None


class Registered(RegistrarEvent):
    """The AOR had no binding and now has at least one."""


class Refreshed(RegistrarEvent):
    """The AOR had bindings and still has; some were added, refreshed or removed."""


class Unregistered(RegistrarEvent):
    """A REGISTER removed the AOR's last binding."""


class Expired(RegistrarEvent):
    """Bindings ran out without a refresh; ``bindings`` may still hold others."""


# Contact parsing ----------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedContact:
    """One Contact value taken apart; ``param`` gives "" for a parameter without value."""

    uri: str
    params: tuple[tuple[str, str | None], ...]

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k.lower() == name:
                return v if v is not None else ""
        return None

    def params_without_expires(self) -> str:
        return "".join(
            f";{k}" if v is None else f";{k}={v}"
            for k, v in self.params
            if k.lower() != "expires"
        )


def _find_unquoted(s: str, ch: str) -> int:
    quoted = False
    i = 0
    while i < len(s):
        c = s[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ch:
            return i
        i += 1
    return -1


def _parse_params(rest: str) -> tuple[tuple[str, str | None], ...]:
    out: list[tuple[str, str | None]] = []
    i, n = 0, len(rest)
    while True:
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n:
            return tuple(out)
        if rest[i] != ";":
            raise ValueError("junk after contact")
        i += 1
        while i < n and rest[i] in " \t":
            i += 1
        m = _TOKEN.match(rest, i)
        if m is None:
            raise ValueError("empty or bad contact parameter")
        name, i = m.group(), m.end()
        while i < n and rest[i] in " \t":
            i += 1
        value: str | None = None
        if i < n and rest[i] == "=":
            i += 1
            while i < n and rest[i] in " \t":
                i += 1
            quoted = i < n and rest[i] == '"'
            m = (_QUOTED if quoted else _UNQUOTED_VALUE).match(rest, i)
            if m is None:
                raise ValueError(f"contact parameter {name!r} has a bad value")
            value, i = m.group(), m.end()
        out.append((name, value))


def parse_contact(value: str) -> ParsedContact:
    """Split one Contact value into its URI, verbatim, and its header parameters.

    Parameters after ``<...>`` or after a bare addr-spec belong to the header, those
    inside the brackets to the URI (RFC 3261 20.10; RFC 4475 cparam01/cparam02).
    """
    s = value.strip()
    lt = _find_unquoted(s, "<")
    if lt >= 0:
        if not _DISPLAY_NAME.match(s[:lt].strip()):
            raise ValueError("bad display name")
        gt = s.find(">", lt)
        if gt < 0:
            raise ValueError("unterminated <")
        uri, rest = s[lt + 1 : gt], s[gt + 1 :]
    else:
        semi = s.find(";")
        uri, rest = (s, "") if semi < 0 else (s[:semi], s[semi:])
        if "?" in uri or "," in uri:
            # RFC 3261 20.10 / RFC 4475 regbadct: such URIs must be in name-addr form.
            raise ValueError("a URI with headers must be enclosed in <>")
    if not uri or any(c.isspace() for c in uri) or uri_scheme(uri) is None:
        raise ValueError("bad contact URI")
    return ParsedContact(uri, _parse_params(rest))


def contact_key(uri: str) -> str:
    """A binding's identity: URIs equal under RFC 3261 19.1.4 give the same key.

    Parameters other than user/ttl/method/maddr/transport are left out, which is the
    19.1.4 rule when only one side carries them and errs towards "same binding"
    when both carry different values.
    """
    scheme = uri_scheme(uri)
    base, _, headers = uri.partition("?")
    if scheme not in ("sip", "sips"):
        return uri
    try:
        u = URI.parse(base)
    except ValueError:
        return uri
    sig = sorted(
        (k.lower(), (v or "").lower())
        for k, v in u.parameters.items()
        if k.lower() in _SIGNIFICANT_URI_PARAMS
    )
    parts = [u.scheme, u.user or "", u.password or "", u.host.lower(), str(u.port or "")]
    parts += [f"{k}={v}" for k, v in sig]
    parts.append(headers)
    return "\x1f".join(parts)


def _delta_seconds(value: str) -> int:
    """RFC 3261 10.2.1.1 / 20.19: overlarge means 2**32-1, malformed means 3600."""
    value = value.strip()
    if not _DIGITS.match(value):
        return 3600
    if len(value) > 10:
        return MAX_DELTA
    return min(int(value), MAX_DELTA)


def _format_source(source: Source) -> str:
    transport, ip, port = source
    host = f"[{ip}]" if ":" in ip else ip
    return f"{transport}:{host}:{port}"


class _Abort(Exception):
    def __init__(self, status: int, reason: str = "", extra: Iterable[tuple[str, str]] = ()):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = list(extra)


# Registrar ----------------------------------------------------------------------------


class Registrar:
    """Processes REGISTER requests against the shared store."""

    def __init__(
        self,
        accounts: AccountDirectory,
        store: Store,
        auth: DigestAuthenticator,
        *,
        domain: str | None = None,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        max_contacts: int = 10,
        limiter: AuthFailureLimiter | None = None,
        register_kinds: Collection[str] = ("kiosk",),
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        if max_contacts < 1:
            raise ValueError("max_contacts must be at least 1")
        self.accounts = accounts
        self.store = store
        self.auth = auth
        self.domain = domain.lower() if domain else None
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_contacts = max_contacts
        self.limiter = limiter
        # Trunk accounts hold the credentials the gateway presents to a provider; they
        # are not accepted for registrations here unless configured so.
        self.register_kinds = frozenset(register_kinds)

    # Queries ----------------------------------------------------------------------------

    def lookup(self, username: str, now: float) -> list[Binding]:
        """Live bindings of an AOR, highest q first, then most recently refreshed."""
        bindings = [
            Binding.from_record(username, key, value)
            for key, value in self.store.scan(bindings_namespace(username), now)
        ]
        bindings.sort(key=lambda b: (-b.q, -b.updated_at))
        return bindings

    def all_bindings(self, now: float) -> list[Binding]:
        """Every live binding (for keepalives); cost grows with the number of AORs."""
        out: list[Binding] = []
        for username, _ in self.store.scan(AOR_NAMESPACE, now):
            out.extend(self.lookup(username, now))
        return out

    def bindings_count(self, now: float) -> int:
        return sum(
            self.store.count(bindings_namespace(username), now)
            for username, _ in self.store.scan(AOR_NAMESPACE, now)
        )

    def handle_expired(self, records: Iterable[Record], now: float) -> list[Expired]:
        """Events for the bindings among records handed out by ``Store.expire_due``.

        The service calls ``expire_due`` once and passes the result to every owner of
        records in the store; records of other owners are ignored here.
        """
        by_aor: dict[str, list[Binding]] = {}
        for rec in records:
            if rec.namespace.startswith(BINDINGS_PREFIX):
                aor = rec.namespace[len(BINDINGS_PREFIX) :]
                by_aor.setdefault(aor, []).append(Binding.from_record(aor, rec.key, rec.value))
        events = []
        for aor, removed in by_aor.items():
            remaining = tuple(self.lookup(aor, now))
            if not remaining:
                self.store.delete(AOR_NAMESPACE, aor)
            events.append(Expired(aor, remaining, removed=tuple(removed)))
        return events

    # REGISTER ---------------------------------------------------------------------------

    def handle(
        self, req: Request, source: Source, now: float
    ) -> tuple[Response, RegistrarEvent | None]:
        try:
            return self._handle(req, source, now)
        except _Abort as abort:
            response = make_response(
                req, abort.status, abort.reason, self._to_tag(req), abort.extra
            )
            return response, None

    def _handle(
        self, req: Request, source: Source, now: float
    ) -> tuple[Response, RegistrarEvent | None]:
        if req.method != "REGISTER":
            raise _Abort(405, extra=[("Allow", "REGISTER")])
        ip = source[1]
        if self.limiter is not None and self.limiter.is_blocked(ip, now):
            self._log_blocked(req, source, now)
            raise _Abort(403)
        if uri_scheme(req.uri) not in ("sip", "sips"):
            raise _Abort(416)
        try:
            to_uri = req.to_addr.uri
        except ValueError:
            raise _Abort(400, "Bad To") from None
        if to_uri.scheme not in ("sip", "sips"):
            # RFC 4475 unksm2: an AOR must be a SIP or SIPS URI.
            raise _Abort(400, "To Is Not a SIP URI")
        try:
            cseq = req.cseq.sequence
        except SipParseError:
            raise _Abort(400, "Bad CSeq") from None
        call_id = req.call_id.strip()
        if not call_id:
            raise _Abort(400, "Missing Call-ID")
        unsupported = [
            opt for opt in req.headers.get_list("Require") if opt not in SUPPORTED_EXTENSIONS
        ]
        if unsupported:
            raise _Abort(420, extra=[("Unsupported", ", ".join(unsupported))])

        user = to_uri.user or ""
        result = self.auth.verify(req, self._credential, now)
        if not result.ok:
            self._auth_failed(req, source, now, result, user)
        if result.username != user:
            logger.warning(
                "REGISTER from %s: %r may not register %r",
                _format_source(source),
                result.username,
                user,
            )
            raise _Abort(403)
        if self.domain is not None and to_uri.host.lower() != self.domain:
            raise _Abort(404, "Domain Not Served")

        expires_header = req.headers.get("Expires")
        header_expires = _delta_seconds(expires_header) if expires_header is not None else None
        values = req.headers.get_list("Contact")
        if any(v.strip() == "*" for v in values):
            if len(values) != 1 or header_expires != 0:
                raise _Abort(400, "Invalid Wildcard Contact")
            return self._unregister_all(req, user, call_id, cseq, source, now)
        return self._update(req, user, values, header_expires, call_id, cseq, source, now)

    def _credential(self, username: str) -> Credential | None:
        account = self.accounts.get(username)
        if account is None or account.kind not in self.register_kinds:
            return None
        return account.credential

    def _challenge_algorithms(self, user: str) -> list[str] | None:
        """Only the algorithms the To user's account can be checked with.

        An account configured with, say, only an MD5 HA1 would otherwise be challenged
        with SHA-256 first and fail.  This tells such accounts apart from unknown
        users; accounts with a password or every HA1 look exactly like unknown ones.
        """
        credential = self._credential(user)
        if credential is None:
            return None
        return [a for a in self.auth.algorithms if credential.supports(a)]

    def _auth_failed(
        self, req: Request, source: Source, now: float, result: AuthResult, user: str
    ) -> None:
        if result.needs_challenge:
            if result.reason == AuthReason.MISSING_HA1:
                logger.info("account %r has no HA1 for %s", result.username, result.detail)
            challenges = self.auth.challenge(now, result.stale, self._challenge_algorithms(user))
            raise _Abort(401, extra=[("WWW-Authenticate", v) for v in challenges])
        if result.reason in (AuthReason.MALFORMED, AuthReason.URI_MISMATCH):
            logger.info(
                "REGISTER from %s: %s (%s)", _format_source(source), result.reason, result.detail
            )
            raise _Abort(400, "Bad Authorization")
        logger.warning(
            "authentication failure from %s for user %r (To %r): %s",
            _format_source(source),
            result.username,
            req.headers.get("To"),
            result.reason,
        )
        if self.limiter is not None and self.limiter.record_failure(source[1], now):
            logger.warning(
                "blocking %s for %gs after %d authentication failures",
                source[1],
                self.limiter.block,
                self.limiter.limit,
            )
        raise _Abort(403)

    def _log_blocked(self, req: Request, source: Source, now: float) -> None:
        assert self.limiter is not None
        first = self.limiter.note_rejected(source[1], now) == 1
        level = logging.WARNING if first else logging.DEBUG
        logger.log(
            level,
            "refused REGISTER from blocked source %s for %r",
            _format_source(source),
            req.headers.get("To"),
        )

    # Binding updates --------------------------------------------------------------------

    def _current(self, user: str, now: float) -> dict[str, Binding]:
        return {
            key: Binding.from_record(user, key, value)
            for key, value in self.store.scan(bindings_namespace(user), now)
        }

    def _update(
        self,
        req: Request,
        user: str,
        values: list[str],
        header_expires: int | None,
        call_id: str,
        cseq: int,
        source: Source,
        now: float,
    ) -> tuple[Response, RegistrarEvent | None]:
        planned: dict[str, tuple[ParsedContact, int, float]] = {}
        too_brief = False
        for value in values:
            try:
                contact = parse_contact(value)
            except ValueError as exc:
                raise _Abort(400, "Bad Contact") from exc
            if uri_scheme(contact.uri) not in ("sip", "sips"):
                raise _Abort(400, "Contact Is Not a SIP URI")
            q = 1.0
            q_param = contact.param("q")
            if q_param is not None:
                if not _QVALUE.match(q_param):
                    raise _Abort(400, "Bad q Value")
                q = float(q_param)
            exp_param = contact.param("expires")
            if exp_param is not None:
                expires = _delta_seconds(exp_param)
            elif header_expires is not None:
                expires = header_expires
            else:
                expires = self.default_expires
            if 0 < expires < self.min_expires and expires < 3600:
                too_brief = True
            planned[contact_key(contact.uri)] = (contact, min(expires, self.max_expires), q)
        if too_brief:
            raise _Abort(423, extra=[("Min-Expires", str(self.min_expires))])

        existing = self._current(user, now)
        # RFC 3261 10.3 step 7: within one Call-ID, only a higher CSeq may change a binding.
        for key in planned:
            old = existing.get(key)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                raise _Abort(500, "Out of Order CSeq")

        user_agent = req.headers.get("User-Agent") or ""
        now_ms = _ms(now)
        added: list[Binding] = []
        refreshed: list[Binding] = []
        removed: list[Binding] = []
        for key, (contact, expires, q) in planned.items():
            old = existing.get(key)
            if expires == 0:
                if old is not None:
                    removed.append(old)
                continue
            binding = Binding(
                aor=user,
                key=key,
                contact=contact.uri,
                params=contact.params_without_expires(),
                q=q,
                expires_at=(now_ms + expires * 1000) / 1000,
                source=source,
                call_id=call_id,
                cseq=cseq,
                user_agent=user_agent,
                registered_at=old.registered_at if old is not None else now_ms / 1000,
                updated_at=now_ms / 1000,
            )
            (refreshed if old is not None else added).append(binding)
        if len(existing) + len(added) - len(removed) > self.max_contacts:
            raise _Abort(403, "Too Many Contacts")

        self._commit(user, existing, added + refreshed, removed, now)
        after = self._current(user, now)
        event = self._event(
            user, bool(existing), after, tuple(added), tuple(refreshed), tuple(removed), source
        )
        return self._ok(req, after, now), event

    def _unregister_all(
        self, req: Request, user: str, call_id: str, cseq: int, source: Source, now: float
    ) -> tuple[Response, RegistrarEvent | None]:
        existing = self._current(user, now)
        for old in existing.values():
            if old.call_id == call_id and cseq <= old.cseq:
                raise _Abort(500, "Out of Order CSeq")
        removed = list(existing.values())
        self._commit(user, existing, [], removed, now)
        event = self._event(user, bool(existing), {}, (), (), tuple(removed), source)
        return self._ok(req, {}, now), event

    def _commit(
        self,
        user: str,
        existing: Mapping[str, Binding],
        puts: list[Binding],
        deletes: list[Binding],
        now: float,
    ) -> None:
        """Apply all changes or none (RFC 3261 10.3 step 7: otherwise 500)."""
        ns = bindings_namespace(user)
        done: list[str] = []
        try:
            for b in deletes:
                self.store.delete(ns, b.key)
                done.append(b.key)
            for b in puts:
                self.store.put(ns, b.key, b.to_record(), b.expires_at - now, now)
                done.append(b.key)
            self._touch_aor(user, puts, deletes, existing, now)
        except Exception:
            logger.exception("registration update for %r failed; rolling back", user)
            for key in done:
                try:
                    old = existing.get(key)
                    if old is None:
                        self.store.delete(ns, key)
                    elif old.expires_at > now:
                        self.store.put(ns, key, old.to_record(), old.expires_at - now, now)
                except Exception:
                    logger.exception("rollback of %r binding %r failed", user, key)
            raise _Abort(500) from None

    def _touch_aor(
        self,
        user: str,
        puts: list[Binding],
        deletes: list[Binding],
        existing: Mapping[str, Binding],
        now: float,
    ) -> None:
        """Keep the AOR index, which only ``bindings_count`` needs, covering every binding."""
        removed = {b.key for b in deletes}
        live = [b for k, b in existing.items() if k not in removed] + puts
        if not live:
            self.store.delete(AOR_NAMESPACE, user)
            return
        until = max(b.expires_at for b in live)
        marker = self.store.get(AOR_NAMESPACE, user, now)
        if marker is not None and int(marker["until"]) / 1000 >= until:
            return
        self.store.put(AOR_NAMESPACE, user, {"until": _ms(until)}, until - now, now)

    def _event(
        self,
        user: str,
        had_bindings: bool,
        after: Mapping[str, Binding],
        added: tuple[Binding, ...],
        refreshed: tuple[Binding, ...],
        removed: tuple[Binding, ...],
        source: Source,
    ) -> RegistrarEvent | None:
        if not (added or refreshed or removed):
            return None
        current = tuple(sorted(after.values(), key=lambda b: (-b.q, -b.updated_at)))
        cls: type[RegistrarEvent]
        if not had_bindings:
            cls = Registered
        elif current:
            cls = Refreshed
        else:
            cls = Unregistered
        return cls(user, current, added, refreshed, removed, source)

    def _ok(self, req: Request, bindings: Mapping[str, Binding], now: float) -> Response:
        ordered = sorted(bindings.values(), key=lambda b: (-b.q, -b.updated_at))
        extra = [("Contact", b.contact_header(now)) for b in ordered]
        extra.append(("Date", email.utils.formatdate(now, usegmt=True)))
        return make_response(req, 200, to_tag=self._to_tag(req), extra=extra)

    @staticmethod
    def _to_tag(req: Request) -> str:
        """Deterministic, so a retransmission that slips past the transaction layer
        gets the same answer."""
        seed = f"{req.call_id}\x00{req.from_tag}\x00{req.headers.get('CSeq')}"
        return hashlib.sha256(seed.encode("utf-8", "surrogateescape")).hexdigest()[:16]
