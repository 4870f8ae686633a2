"""Accounts: open them, take deposits, reserve funds for calls, charge, credit, refund.

Every money-moving method is one journal entry in one database transaction
(see :mod:`gateway.billing.ledger`) and takes an ``idempotency_key``: call it
again with the same key after a timeout or crash and you get the same entry
back, never a second posting.  Input is checked before the database is
touched; a refused request raises a :class:`~gateway.billing.ledger.LedgerError`
with a message saying what was wrong, and writes nothing.

Balances (all in exact micro-dollars, shown as :class:`Money`):

* ``balance``: everything the account holds (posted);
* ``held``: reserved by active holds for calls in progress;
* ``available``: ``balance - held``, what a new call or hold may use.

Visitor and incarcerated accounts are **prepaid**: their available balance can
never go below zero.  Agency accounts are **postpaid**: charges may take them
below zero, and the negative balance is what the agency owes.

Deposits have no minimum (any amount from $0.01) and a configurable maximum per
deposit (:class:`BillingPolicy`); the maximum may not be set below $50, because
a provider may not refuse deposits of $50 or less.

The methods are blocking (database I/O); the Twisted side calls them in a
thread (``deferToThread``).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from gateway.billing.db import Database, utcnow
from gateway.billing.ledger import (
    ADJUSTMENTS,
    CLEARING,
    SYSTEM_PREFIX,
    Draft,
    HoldError,
    HoldInfo,
    InvalidRequest,
    LedgerError,
    LedgerView,
    Leg,
    PostedEntry,
    VerifyReport,
    check_key,
    check_memo,
    create_account_row,
    is_system,
    load_entry,
    load_hold,
    post,
    verify,
)
from gateway.billing.models import PREPAID_KINDS, Account, Balance, Entry, Posting
from gateway.billing.money import MICROS_PER_CENT, Money, allocate
from gateway.billing.rating import ChargeKind, ChargeLine, Rating

ACCOUNT_KINDS = ("visitor", "incarcerated", "agency")
ACCOUNT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
HOLD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
CALL_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
FACILITY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
DEFAULT_MAX_DEPOSIT = Money.parse("1000.00")
MUST_ACCEPT_UP_TO = Money.parse("50.00")
DEFAULT_HOLD_TTL = timedelta(hours=1)


class AccountExists(LedgerError):
    """An account with that id already exists."""


@dataclass(frozen=True)
class BillingPolicy:
    """Operator-configurable limits."""

    max_deposit: Money = DEFAULT_MAX_DEPOSIT
    hold_ttl: timedelta = DEFAULT_HOLD_TTL

    def __post_init__(self) -> None:
        if not isinstance(self.max_deposit, Money) or self.max_deposit < MUST_ACCEPT_UP_TO:
            raise ValueError(
                f"max_deposit: must be at least {MUST_ACCEPT_UP_TO} (deposits of $50 or less "
                f"may not be refused), got {self.max_deposit!r}"
            )
        if not isinstance(self.hold_ttl, timedelta) or self.hold_ttl <= timedelta(0):
            raise ValueError(f"hold_ttl: expected a positive duration, got {self.hold_ttl!r}")


@dataclass(frozen=True)
class AccountInfo:
    id: str
    owner_kind: str
    owner_ref: str
    display_name: str
    currency: str
    status: str
    created_at: datetime

    @property
    def prepaid(self) -> bool:
        return self.owner_kind in PREPAID_KINDS


@dataclass(frozen=True)
class AccountBalance:
    account_id: str
    available: Money
    held: Money

    @property
    def balance(self) -> Money:
        """Posted balance: available plus what active holds reserve."""
        return self.available + self.held


@dataclass(frozen=True)
class Hold:
    """Funds reserved for a call; active while something is still held."""

    hold_id: str
    account_id: str
    call_id: str | None
    amount: Money
    expires_at: datetime | None
    entry: PostedEntry | None = None  # the entry just posted, when returned by a write

    @property
    def active(self) -> bool:
        return self.amount.micros > 0


# ---------------------------------------------------------------------- account ids


def revenue_account(facility_id: str) -> str:
    return f"{SYSTEM_PREFIX}revenue:{facility_id}"


def additive_account(facility_id: str) -> str:
    """The FCC facility-cost additive is kept apart from rate revenue."""
    return f"{SYSTEM_PREFIX}additive:{facility_id}"


def tax_account(facility_id: str, tax_name: str) -> str:
    """Pass-through tax collected, owed to the taxing authority (per facility, per tax)."""
    return f"{SYSTEM_PREFIX}tax:{facility_id}:{tax_name}"


# ---------------------------------------------------------------------- input checks


def _id(value: object, what: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidRequest(f"{what}: expected an identifier (letters, digits, '_.:-'), "
                             f"got {value!r}")
    return value


def _call_id(value: object) -> str:
    if not isinstance(value, str) or not CALL_ID_RE.match(value):
        raise InvalidRequest(f"call id: expected 1 to 128 printable characters, got {value!r}")
    return value


def _positive_cents(amount: object, what: str) -> Money:
    if not isinstance(amount, Money):
        raise InvalidRequest(f"{what}: expected a Money amount, got {amount!r}")
    if amount.micros <= 0:
        raise InvalidRequest(f"{what}: must be more than $0.00, got {amount}")
    if not amount.is_whole_cents:
        raise InvalidRequest(f"{what}: whole cents only, got {amount}")
    return amount


def _ttl(value: timedelta | None, default: timedelta) -> timedelta:
    ttl = default if value is None else value
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise InvalidRequest(f"ttl: expected a positive duration, got {value!r}")
    return ttl


def default_hold_id(idempotency_key: str) -> str:
    """Derived from the key, so a retried hold request names the same hold."""
    return "hold_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


def _line_request(line: ChargeLine) -> list[object]:
    return [line.kind.value, line.label, line.amount.micros,
            [[p.kind, p.account, m.micros] for p, m in line.by_payer]]


# ---------------------------------------------------------------------- the API


class Accounts:
    """The accounts and money operations, over one billing database."""

    def __init__(
        self,
        db: Database,
        *,
        policy: BillingPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        actor: str = "gateway",
    ) -> None:
        self.db = db
        self.policy = policy or BillingPolicy()
        self.clock = clock
        if not isinstance(actor, str) or not 0 < len(actor) <= 100:
            raise ValueError(f"actor: expected 1 to 100 characters, got {actor!r}")
        self.actor = actor

    # ------------------------------------------------------------ accounts

    def open_account(
        self,
        owner_kind: str,
        owner_ref: str,
        display_name: str = "",
        *,
        account_id: str | None = None,
    ) -> AccountInfo:
        """A new open account with a zero balance (not a journal entry: no money moves)."""
        if owner_kind not in ACCOUNT_KINDS:
            raise InvalidRequest(
                f"owner kind: expected visitor, incarcerated or agency, got {owner_kind!r}"
            )
        if not isinstance(owner_ref, str) or not owner_ref.strip() or len(owner_ref) > 128:
            raise InvalidRequest(f"owner: expected 1 to 128 characters, got {owner_ref!r}")
        if not isinstance(display_name, str) or len(display_name) > 200:
            raise InvalidRequest("display name: expected at most 200 characters")
        if account_id is None:
            account_id = "acct_" + uuid.uuid4().hex[:16]
        _id(account_id, "account id", ACCOUNT_ID_RE)
        if is_system(account_id):
            raise InvalidRequest(f"account id: {SYSTEM_PREFIX!r} is reserved for system accounts")
        try:
            with self.db.write() as s:
                if s.get(Account, account_id) is not None:
                    raise AccountExists(f"account {account_id!r} already exists")
                acct = create_account_row(
                    s, account_id, owner_kind, owner_ref, display_name or owner_ref, self.clock()
                )
                return _info(acct)
        except IntegrityError:  # opened concurrently by another node
            raise AccountExists(f"account {account_id!r} already exists") from None

    def account(self, account_id: str) -> AccountInfo:
        with self.db.read() as s:
            return _info(LedgerView(s, self.clock()).require_account(account_id))

    def balance(self, account_id: str) -> AccountBalance:
        with self.db.read() as s:
            LedgerView(s, self.clock()).require_account(account_id)
            row = s.get(Balance, account_id)
            available, held = (row.available, row.held) if row is not None else (0, 0)
        return AccountBalance(account_id, Money(available), Money(held))

    # ------------------------------------------------------------ money in and out

    def deposit(
        self, account_id: str, amount: Money, *, idempotency_key: str, memo: str = ""
    ) -> PostedEntry:
        """Add funds (e.g. a card payment; use the processor's payment id as the key)."""
        amt = _positive_cents(amount, "deposit amount")
        if amt > self.policy.max_deposit:
            raise InvalidRequest(
                f"deposit amount: at most {self.policy.max_deposit} per deposit, got {amt}"
            )
        memo = check_memo(memo)

        def build(view: LedgerView) -> Draft:
            _customer(view, account_id)
            view.ensure_system_account(CLEARING, "Payments clearing")
            return Draft((Leg(CLEARING, -amt.micros), Leg(account_id, amt.micros)), memo)

        return self._post("deposit", idempotency_key,
                          {"account": account_id, "amount": amt, "memo": memo}, build)

    def refund(
        self, account_id: str, amount: Money, *, idempotency_key: str, memo: str = ""
    ) -> PostedEntry:
        """Return available funds to the payer (e.g. when an account is closed)."""
        amt = _positive_cents(amount, "refund amount")
        memo = check_memo(memo)

        def build(view: LedgerView) -> Draft:
            _customer(view, account_id)
            view.ensure_system_account(CLEARING, "Payments clearing")
            return Draft((Leg(account_id, -amt.micros), Leg(CLEARING, amt.micros)), memo)

        return self._post("refund", idempotency_key,
                          {"account": account_id, "amount": amt, "memo": memo}, build)

    def adjust(
        self, account_id: str, amount: Money, *, idempotency_key: str, memo: str
    ) -> PostedEntry:
        """A staff correction, signed, against ``sys:adjustments``; a reason is required."""
        if not isinstance(amount, Money) or amount.micros == 0:
            raise InvalidRequest(f"adjustment amount: expected a non-zero Money, got {amount!r}")
        if not amount.is_whole_cents:
            raise InvalidRequest(f"adjustment amount: whole cents only, got {amount}")
        if abs(amount.micros) > self.policy.max_deposit.micros:
            raise InvalidRequest(
                f"adjustment amount: at most {self.policy.max_deposit} either way, got {amount}"
            )
        memo = check_memo(memo)
        if not memo.strip():
            raise InvalidRequest("adjustment: a memo saying why is required")

        def build(view: LedgerView) -> Draft:
            _customer(view, account_id)
            view.ensure_system_account(ADJUSTMENTS, "Staff adjustments")
            return Draft((Leg(account_id, amount.micros), Leg(ADJUSTMENTS, -amount.micros)),
                         memo)

        return self._post("adjustment", idempotency_key,
                          {"account": account_id, "amount": amount, "memo": memo}, build)

    # ------------------------------------------------------------ holds

    def place_hold(
        self,
        account_id: str,
        amount: Money,
        *,
        idempotency_key: str,
        call_id: str | None = None,
        hold_id: str | None = None,
        ttl: timedelta | None = None,
    ) -> Hold:
        """Reserve funds for a call; they stay in the account but are not available."""
        amt = _positive_cents(amount, "hold amount")
        check_key(idempotency_key)
        hid = _id(hold_id, "hold id", HOLD_ID_RE) if hold_id is not None else default_hold_id(
            idempotency_key)
        cid = _call_id(call_id) if call_id is not None else None
        life = _ttl(ttl, self.policy.hold_ttl)

        def build(view: LedgerView) -> Draft:
            _customer(view, account_id)
            if view.hold(hid) is not None:
                raise HoldError(f"hold {hid!r} already exists")
            return Draft(
                (Leg(account_id, -amt.micros), Leg(account_id, amt.micros, hid)),
                call_id=cid, hold_id=hid, expires_at=view.now + life,
            )

        request = {"account": account_id, "amount": amt, "hold": hid, "call": cid, "ttl": life,
                   "op": "place"}
        return self._post_hold("hold", idempotency_key, request, build, hid)

    def extend_hold(
        self,
        hold_id: str,
        amount: Money,
        *,
        idempotency_key: str,
        ttl: timedelta | None = None,
    ) -> Hold:
        """Reserve ``amount`` more (may be $0) and push the expiry to now + ttl."""
        if not isinstance(amount, Money) or amount.micros < 0 or not amount.is_whole_cents:
            raise InvalidRequest(f"hold amount: expected whole cents >= $0.00, got {amount!r}")
        life = _ttl(ttl, self.policy.hold_ttl)

        def build(view: LedgerView) -> Draft:
            info = _active_hold(view, hold_id)
            if info.expires_at is not None and info.expires_at <= view.now:
                raise HoldError(f"hold {hold_id!r} expired at {info.expires_at.isoformat()}")
            view.require_open(info.account_id)
            return Draft(
                (Leg(info.account_id, -amount.micros), Leg(info.account_id, amount.micros,
                                                          hold_id)),
                call_id=info.call_id, hold_id=hold_id, expires_at=view.now + life,
            )

        request = {"hold": hold_id, "amount": amount, "ttl": life, "op": "extend"}
        return self._post_hold("hold", idempotency_key, request, build, hold_id)

    def release_hold(self, hold_id: str, *, idempotency_key: str, memo: str = "") -> Hold:
        """Give everything still held back to the available balance; the hold closes."""
        memo = check_memo(memo)

        def build(view: LedgerView) -> Draft:
            info = _active_hold(view, hold_id)
            return Draft(
                (Leg(info.account_id, -info.amount, hold_id), Leg(info.account_id, info.amount)),
                memo, call_id=info.call_id, hold_id=hold_id,
            )

        return self._post_hold("release", idempotency_key, {"hold": hold_id, "memo": memo},
                               build, hold_id)

    def hold(self, hold_id: str) -> Hold | None:
        with self.db.read() as s:
            info = load_hold(s, hold_id)
        return _hold(info) if info is not None else None

    def active_holds(self, account_id: str | None = None) -> list[Hold]:
        with self.db.read() as s:
            q = (
                select(Posting.hold_id)
                .where(Posting.hold_id.is_not(None))
                .group_by(Posting.hold_id)
                .having(func.sum(Posting.amount) > 0)
            )
            if account_id is not None:
                q = q.where(Posting.account_id == account_id)
            holds = []
            for hold_id in s.scalars(q):
                assert hold_id is not None
                info = load_hold(s, hold_id)
                if info is not None:
                    holds.append(_hold(info))
        return sorted(holds, key=lambda h: h.hold_id)

    def release_expired_holds(self) -> list[Hold]:
        """Release holds past their expiry (a call whose node died); run periodically.

        Each release is its own entry keyed ``expire:<hold id>``, so two nodes
        sweeping at once release each hold once.
        """
        now = self.clock()
        released = []
        for h in self.active_holds():
            if h.expires_at is None or h.expires_at > now:
                continue
            hold_id = h.hold_id

            def build(view: LedgerView, hold_id: str = hold_id) -> Draft:
                info = _active_hold(view, hold_id)
                if info.expires_at is not None and info.expires_at > view.now:
                    raise HoldError(f"hold {hold_id!r} was extended")
                return Draft(
                    (Leg(info.account_id, -info.amount, hold_id),
                     Leg(info.account_id, info.amount)),
                    "hold expired", call_id=info.call_id, hold_id=hold_id,
                )

            try:
                released.append(self._post_hold(
                    "release", f"expire:{hold_id}", {"hold": hold_id, "expired": True}, build,
                    hold_id))
            except HoldError:
                continue  # charged, released or extended meanwhile
        return released

    # ------------------------------------------------------------ charges and credits

    def charge_rating(
        self,
        rating: Rating,
        *,
        call_id: str,
        idempotency_key: str,
        holds: Mapping[str, str] | None = None,
        close_holds: bool = False,
    ) -> PostedEntry:
        """Post a rated call (or one increment of it): see :meth:`charge`."""
        if not isinstance(rating, Rating):
            raise InvalidRequest(f"rating: expected a Rating, got {rating!r}")
        return self.charge(
            facility_id=rating.facility_id, call_id=call_id, lines=rating.lines,
            idempotency_key=idempotency_key, holds=holds, close_holds=close_holds,
        )

    def charge(
        self,
        *,
        facility_id: str,
        call_id: str,
        lines: Sequence[ChargeLine],
        idempotency_key: str,
        holds: Mapping[str, str] | None = None,
        close_holds: bool = False,
        memo: str = "",
    ) -> PostedEntry:
        """Debit each payer its part of every line; credit revenue, additive and tax.

        ``holds`` maps a payer account to the hold reserved for this call: the
        payer's part is taken from the hold first, then from available funds.
        ``close_holds`` (the call's last increment) releases what is left of
        those holds in the same entry.  Usage goes to ``sys:revenue:<facility>``,
        the additive to ``sys:additive:<facility>``, each tax to
        ``sys:tax:<facility>:<name>``.  A $0 increment is still recorded (an
        entry without postings), so the call's history is complete.
        """
        fid = _id(facility_id, "facility id", FACILITY_ID_RE)
        cid = _call_id(call_id)
        memo = check_memo(memo)
        for line in lines:
            if not isinstance(line, ChargeLine):
                raise InvalidRequest(f"lines: expected ChargeLine items, got {line!r}")
        hold_map = dict(holds or {})
        for acct_id, hid in hold_map.items():
            if not isinstance(acct_id, str) or not isinstance(hid, str):
                raise InvalidRequest("holds: expected a mapping of account id to hold id")
        request = {
            "facility": fid, "call": cid, "lines": [_line_request(li) for li in lines],
            "holds": sorted(hold_map.items()), "close": bool(close_holds), "memo": memo,
        }

        def build(view: LedgerView) -> Draft:
            legs: list[Leg] = []
            per_payer: dict[str, int] = {}
            for line in lines:
                dest = _destination(view, line, fid)
                for payer, part in line.by_payer:
                    acct = view.require_open(payer.account)
                    if (payer.kind == "family") != (acct.owner_kind in PREPAID_KINDS):
                        raise InvalidRequest(
                            f"payer {payer.name}: a {payer.kind} payer cannot be charged to "
                            f"{acct.owner_kind} account {acct.id!r}"
                        )
                    if part.micros:
                        legs.append(Leg(dest, part.micros))
                        per_payer[acct.id] = per_payer.get(acct.id, 0) + part.micros
            taken: dict[str, int] = {}
            for acct_id, total in per_payer.items():
                hid = hold_map.get(acct_id)
                take = 0
                if hid is not None:
                    info = _owned_hold(view, hid, acct_id)
                    take = min(max(total, 0), info.amount)
                    taken[hid] = take
                    legs.append(Leg(acct_id, -take, hid))
                legs.append(Leg(acct_id, -(total - take)))
            if close_holds:
                for acct_id, hid in hold_map.items():
                    info = _owned_hold(view, hid, acct_id)
                    rest = info.amount - taken.get(hid, 0)
                    legs += [Leg(acct_id, -rest, hid), Leg(acct_id, rest)]
            return Draft(tuple(legs), memo, call_id=cid)

        return self._post("charge", idempotency_key, request, build)

    def credit_call(
        self, call_id: str, account_id: str, amount: Money, *, idempotency_key: str, memo: str
    ) -> PostedEntry:
        """Give back part or all of what an account paid for a call (e.g. a dropped call).

        The credit cannot exceed what the account paid for that call, net of
        earlier credits.  It is taken back from the call's revenue, additive and
        tax accounts in proportion to what they received (largest remainder, in
        whole cents), so crediting a whole call reverses it exactly.
        """
        cid = _call_id(call_id)
        amt = _positive_cents(amount, "credit amount")
        memo = check_memo(memo)
        if not memo.strip():
            raise InvalidRequest("credit: a memo saying why (e.g. \"dropped call\") is required")

        def build(view: LedgerView) -> Draft:
            _customer(view, account_id)
            history = view.call_postings(cid, ("charge", "credit"))
            if not history:
                raise InvalidRequest(f"call {cid!r}: nothing was charged for it")
            paid = -sum(leg.amount for _, leg in history if leg.account_id == account_id)
            if paid <= 0:
                raise InvalidRequest(
                    f"call {cid!r}: account {account_id!r} has nothing left to credit"
                )
            if amt.micros > paid:
                raise InvalidRequest(
                    f"credit amount: {amt} is more than the {Money(paid)} account "
                    f"{account_id!r} paid for call {cid!r} (net of earlier credits)"
                )
            nets: dict[str, int] = {}
            for _, leg in history:
                if is_system(leg.account_id):
                    nets[leg.account_id] = nets.get(leg.account_id, 0) + leg.amount
            sources = sorted((a, n) for a, n in nets.items() if n > 0)
            parts = allocate(amt, [n for _, n in sources], unit=MICROS_PER_CENT)
            legs = [Leg(account_id, amt.micros)]
            legs += [Leg(a, -p.micros) for (a, _), p in zip(sources, parts, strict=True)]
            return Draft(tuple(legs), memo, call_id=cid)

        return self._post("credit", idempotency_key,
                          {"call": cid, "account": account_id, "amount": amt, "memo": memo},
                          build)

    # ------------------------------------------------------------ reading

    def entries_for_call(self, call_id: str) -> list[PostedEntry]:
        with self.db.read() as s:
            rows = s.scalars(select(Entry).where(Entry.call_id == call_id).order_by(Entry.id))
            return [load_entry(s, e) for e in rows]

    def verify(self, anchors: Sequence[tuple[int, str]] = ()) -> VerifyReport:
        return verify(self.db, anchors=anchors)

    # ------------------------------------------------------------ plumbing

    def _post(
        self,
        kind: str,
        idempotency_key: str,
        request: Mapping[str, object],
        build: Callable[[LedgerView], Draft],
    ) -> PostedEntry:
        with self.db.write() as s:
            return post(s, kind=kind, idempotency_key=idempotency_key, request=request,
                        build=build, now=self.clock(), actor=self.actor)

    def _post_hold(
        self,
        kind: str,
        idempotency_key: str,
        request: Mapping[str, object],
        build: Callable[[LedgerView], Draft],
        hold_id: str,
    ) -> Hold:
        with self.db.write() as s:
            entry = post(s, kind=kind, idempotency_key=idempotency_key, request=request,
                         build=build, now=self.clock(), actor=self.actor)
            info = load_hold(s, hold_id)
            if info is None:  # a replayed key that was used for another hold
                raise HoldError(f"hold {hold_id!r} does not exist")
            return _hold(info, entry)


# ---------------------------------------------------------------------- helpers


def _info(acct: Account) -> AccountInfo:
    return AccountInfo(acct.id, acct.owner_kind, acct.owner_ref, acct.display_name,
                       acct.currency, acct.status, acct.created_at)


def _hold(info: HoldInfo, entry: PostedEntry | None = None) -> Hold:
    return Hold(info.hold_id, info.account_id, info.call_id, Money(info.amount),
                info.expires_at, entry)


def _customer(view: LedgerView, account_id: str) -> None:
    """An open visitor, incarcerated or agency account (system accounts move by rule only)."""
    if isinstance(account_id, str) and is_system(account_id):
        raise InvalidRequest(f"account {account_id!r} is a system account")
    view.require_open(account_id)


def _active_hold(view: LedgerView, hold_id: str) -> HoldInfo:
    if not isinstance(hold_id, str) or not hold_id:
        raise InvalidRequest(f"hold id: expected an id, got {hold_id!r}")
    info = view.hold(hold_id)
    if info is None:
        raise HoldError(f"hold {hold_id!r}: no such hold")
    if info.amount <= 0:
        raise HoldError(f"hold {hold_id!r} is closed (nothing is held)")
    return info


def _owned_hold(view: LedgerView, hold_id: str, account_id: str) -> HoldInfo:
    """A hold named for a charge: it must exist and belong to the payer (may be empty)."""
    info = view.hold(hold_id)
    if info is None:
        raise HoldError(f"hold {hold_id!r}: no such hold")
    if info.account_id != account_id:
        raise HoldError(f"hold {hold_id!r} belongs to account {info.account_id!r}, "
                        f"not {account_id!r}")
    return info


def _destination(view: LedgerView, line: ChargeLine, facility_id: str) -> str:
    """Which system account a line's money goes to (created on first use)."""
    if line.kind is ChargeKind.TAX:
        name = line.label.removeprefix("tax:")
        acct = tax_account(facility_id, name)
        if len(acct) > 200:
            raise InvalidRequest(f"tax name {name!r}: too long for an account id")
        view.ensure_system_account(acct, f"{name} collected at {facility_id}")
        return acct
    if line.kind is ChargeKind.USAGE and line.label == "additive":
        acct = additive_account(facility_id)
        view.ensure_system_account(acct, f"Facility-cost additive, {facility_id}")
        return acct
    acct = revenue_account(facility_id)
    view.ensure_system_account(acct, f"Call revenue, {facility_id}")
    return acct
