"""A call's charging session: reserve, debit per increment, warn, cut off, settle.

Sans-IO, like the SIP cores: every function here takes the time (``now``, in
seconds) and the ledger's answers as arguments, and returns what to post next
(with idempotency keys), events, and the next deadline.  It reads no clock and
does no I/O; :mod:`gateway.billing.calls` runs its requests against the ledger
and :mod:`gateway.billing.service` drives it from the reactor.

The money rules, and why:

* **One rating per call.**  The amount a call costs is ``rate_call`` for its
  whole duration, rounded once (see :mod:`gateway.billing.rating`).  Debiting
  as the call goes must not change that, so increment *k* debits exactly
  ``R(b_k) - R(b_(k-1))`` line by line and payer by payer, where ``R(s)`` is
  the rating of ``s`` media seconds and ``b_k = k * increment_seconds``.  The
  differences telescope: after *n* increments exactly ``R(b_n)`` has been
  debited, and the settlement debits ``R(final) - R(b_n)``.  Every partial
  amount is >= 0 because each line of ``R`` is a floor of a non-decreasing
  exact amount.
* **Funds first.**  Before the call, a hold reserves a first block (e.g. 5
  minutes) from each prepaid payer; a call whose payer cannot cover the first
  increment is refused (402).  Agencies are postpaid and always pass.
* **Never past the money.**  From the funds a payer has for this call
  (debited so far + still held + available) the session works out the last
  affordable media second, warns ``warning_seconds`` before it, asks for the
  call to be ended when it is reached (always after the warning), and never
  bills beyond it: seconds after the cut-off that the cut-off did not catch in
  time are the operator's, not the family's (``uncharged_seconds``).
* **Never more than metered.**  The billed time is the meter's reading, floored
  to whole seconds, or on recovery the last persisted reading (see
  :mod:`gateway.billing.calls`); increments are debited only once completed.
* **Daily free minutes.**  A plan may give its first payer account
  ``free_minutes_per_day``; what is left of that day's allowance (the
  facility's local date of the call's start) is worked out once, at
  reservation, and fixed in :class:`CallFacts` (``free_seconds``), so every
  ``R(s)`` of the call is rated with the same ``free_minutes_remaining`` and
  the increments still telescope to the rating of the whole call.
* **Dropped calls are credited.**  A call ended by a gateway or media fault
  (not by a party, not deliberately by the gateway) is credited under
  :class:`CreditPolicy`; the credit is its own ledger entry and shows on the
  receipt.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

from gateway.billing.models import PREPAID_KINDS
from gateway.billing.money import MICROS_PER_CENT, ZERO, Money
from gateway.billing.rates import CapSchedule, Facility, Service
from gateway.billing.rating import (
    ChargeLine,
    Increment,
    Payer,
    PayerSplit,
    Rating,
    SplitPeriod,
    rate_call,
)

MAX_CALL_SECONDS = 7 * 86400  # beyond this a payer counts as unlimited (postpaid, $0 rate)
_RATING_CACHE = 256
FAULT_ENDERS = ("gateway", "timeout")

EndedBy = str  # "caller", "callee", "gateway", "timeout" (as in CallEnded)


# ---------------------------------------------------------------------- policy


@dataclass(frozen=True)
class CreditPolicy:
    """What a dropped call (a fault on our side) gives back, automatically.

    ``whole_call_under_seconds``: a dropped call with less media than this is
    credited in full (0 = never).  ``last_minute``: otherwise the last started
    minute is credited (what that minute cost).
    """

    last_minute: bool = True
    whole_call_under_seconds: int = 60


@dataclass(frozen=True)
class SessionPolicy:
    """The ``[billing]`` knobs a session needs (see :mod:`gateway.billing.settings`)."""

    increment: Increment = "per_minute_round_up"
    increment_seconds: int = 60
    first_block_seconds: int = 300
    warning_seconds: int = 120
    hold_ttl_seconds: int = 900
    credit: CreditPolicy = field(default_factory=CreditPolicy)

    def __post_init__(self) -> None:
        for name in ("increment_seconds", "first_block_seconds", "hold_ttl_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive whole number, got {value!r}")
        if self.first_block_seconds < self.increment_seconds:
            raise ValueError("first_block_seconds: must be at least one increment")
        if self.warning_seconds < 0:
            raise ValueError("warning_seconds: must be >= 0")


# ---------------------------------------------------------------------- facts


@dataclass(frozen=True)
class PayerRef:
    """A configured payer: an account and its share (percent); its kind comes from the ledger."""

    account: str
    share: Decimal = Decimal(100)


@dataclass(frozen=True)
class CallRequest:
    """A new call that a billing plan matched, before anything is reserved."""

    call_id: str
    node_id: str
    plan: str
    facility_id: str
    service: Service
    caller: str
    callee: str
    setup_at: datetime
    payers: tuple[PayerRef, ...]
    free_minutes_per_day: int = 0  # the plan's daily allowance for its first payer

    @property
    def free_account(self) -> str | None:
        """The account whose daily allowance the call draws on, None if there is none."""
        if self.free_minutes_per_day <= 0 or not self.payers:
            return None
        return self.payers[0].account


@dataclass(frozen=True)
class CallFacts:
    """What never changes during a call; persisted once, at reservation."""

    call_id: str
    node_id: str
    plan: str
    facility_id: str
    service: Service
    caller: str
    callee: str
    setup_at: datetime
    increment: Increment
    increment_seconds: int
    payers: tuple[tuple[Payer, Decimal], ...]
    holds: tuple[tuple[str, str], ...]  # (prepaid account, hold id)
    free_account: str | None = None  # whose daily free minutes the call draws on
    free_seconds: int = 0  # free seconds granted to this call at reservation

    @property
    def free_minutes(self) -> Decimal:
        """``free_minutes_remaining`` for every rating of this call."""
        return Decimal(self.free_seconds) / 60

    @property
    def split(self) -> PayerSplit:
        return PayerSplit((SplitPeriod(date.min, self.payers),))

    @property
    def hold_map(self) -> dict[str, str]:
        return dict(self.holds)

    def prepaid(self) -> list[Payer]:
        return [p for p, _ in self.payers if p.kind == "family"]


@dataclass(frozen=True)
class AccountState:
    """A payer account as the ledger sees it when the call is reserved."""

    owner_kind: str
    status: str
    available: int  # µ$


@dataclass(frozen=True)
class Funds:
    """What a prepaid payer still has for this call: its hold and its available balance."""

    available: int  # µ$
    held: int = 0  # µ$ left in this call's hold
    hold_expires: datetime | None = None

    @property
    def total(self) -> int:
        return self.available + self.held


# ---------------------------------------------------------------------- keys


def hold_id_for(call_id: str, index: int) -> str:
    """Derived from the call id, so a retried reservation names the same hold."""
    return f"call_{hashlib.sha256(call_id.encode()).hexdigest()[:24]}_{index}"


def increment_key(call_id: str, n: int) -> str:
    return f"call:{call_id}:inc:{n}"


def settle_key(call_id: str) -> str:
    return f"call:{call_id}:settle"


def credit_key(call_id: str, account: str) -> str:
    return f"call:{call_id}:credit:{account}"


def hold_key(call_id: str, index: int) -> str:
    return f"call:{call_id}:hold:{index}"


def extend_key(call_id: str, index: int, n: int) -> str:
    return f"call:{call_id}:ext:{index}:{n}"


def parse_increment_key(call_id: str, key: str) -> int | None:
    prefix = f"call:{call_id}:inc:"
    if key.startswith(prefix) and key[len(prefix):].isdigit():
        return int(key[len(prefix):])
    return None


# ---------------------------------------------------------------------- pricing


class Pricer:
    """``R(s)``, the call's rating for ``s`` media seconds, and what follows from it.

    Everything that depends on the call but not on time: facility, service,
    start, payers, increment mode.  Ratings are cached (a few hundred), since the
    same seconds are priced again and again (affordability, increments).
    """

    def __init__(self, facts: CallFacts, facility: Facility,
                 caps: CapSchedule | None = None) -> None:
        if facility.id != facts.facility_id:
            raise ValueError(f"facility {facility.id!r} is not the call's {facts.facility_id!r}")
        self.facts = facts
        self.facility = facility
        self.caps = caps
        self.split = facts.split
        self._cache: OrderedDict[int, Rating] = OrderedDict()

    def rating(self, seconds: int) -> Rating:
        r = self._cache.get(seconds)
        if r is not None:
            self._cache.move_to_end(seconds)
            return r
        r = rate_call(self.facility, self.facts.service, self.facts.setup_at, seconds,
                      split=self.split, increment=self.facts.increment,
                      free_minutes_remaining=self.facts.free_minutes, caps=self.caps)
        self._cache[seconds] = r
        if len(self._cache) > _RATING_CACHE:
            self._cache.popitem(last=False)
        return r

    def cost(self, payer: Payer, seconds: int) -> int:
        """What ``payer`` owes for the first ``seconds`` of the call, µ$."""
        return self.rating(seconds).amount_for(payer).micros

    def boundary(self, n: int) -> int:
        return n * self.facts.increment_seconds

    def lines_between(self, start: int, end: int, what: str) -> tuple[ChargeLine, ...]:
        """The charge lines that take the debited amount from ``R(start)`` to ``R(end)``."""
        if end < start:
            raise ValueError(f"cannot charge backwards from {start} s to {end} s")
        a, b = self.rating(start), self.rating(end)
        out = []
        for la, lb in zip(a.lines, b.lines, strict=True):
            if (la.kind, la.label) != (lb.kind, lb.label):  # same facility and date: never
                raise ValueError("ratings of one call have different lines")
            parts_a = dict(la.by_payer)
            out.append(ChargeLine(
                kind=lb.kind, label=lb.label, amount=lb.amount - la.amount,
                exact_micros=lb.exact_micros - la.exact_micros,
                explanation=f"{what}: {lb.label} for media seconds {start}-{end}",
                by_payer=tuple((p, m - parts_a.get(p, ZERO)) for p, m in lb.by_payer),
            ))
        return tuple(out)

    def affordable(self, totals: Mapping[str, int]) -> int | None:
        """The last media second every prepaid payer can pay for, None if unlimited.

        ``totals``: per prepaid account, everything it has for this call
        (debited so far + held + available).  Monotone search over ``R``.
        """
        payers = [p for p in self.facts.prepaid() if p.account in totals]
        if not payers:
            return None

        def ok(s: int) -> bool:
            return all(self.cost(p, s) <= totals[p.account] for p in payers)

        if not ok(0):
            return 0
        hi = 1024
        while ok(hi):
            if hi >= MAX_CALL_SECONDS:
                return None
            hi = min(hi * 2, MAX_CALL_SECONDS)
        lo = 0  # ok(lo), not ok(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                lo = mid
            else:
                hi = mid
        return lo


# ---------------------------------------------------------------------- reservation


@dataclass(frozen=True)
class HoldRequest:
    account: str
    hold_id: str
    amount: int  # µ$, whole cents
    idempotency_key: str
    ttl_seconds: int


@dataclass(frozen=True)
class Reservation:
    facts: CallFacts
    holds: tuple[HoldRequest, ...]


@dataclass(frozen=True)
class Refusal:
    """The call may not proceed: SIP status, reason phrase, and a line for the log."""

    status: int
    reason: str
    detail: str


def free_seconds_granted(free_minutes_per_day: int, used_seconds: int) -> int:
    """What is left of a daily allowance of ``free_minutes_per_day`` after ``used_seconds``.

    Rounded down to a multiple of 3 seconds (at most 2 seconds less), the finest
    grant that ``rate_call`` takes as an exact decimal number of minutes.
    """
    left = max(0, free_minutes_per_day * 60 - max(0, used_seconds))
    return left - left % 3


def _floor_cents(micros: int) -> int:
    return max(0, micros) // MICROS_PER_CENT * MICROS_PER_CENT


def plan_reservation(
    request: CallRequest,
    facility: Facility,
    policy: SessionPolicy,
    accounts: Mapping[str, AccountState | None],
    caps: CapSchedule | None = None,
    free_seconds_used: int = 0,
) -> Reservation | Refusal:
    """Decide the payers' kinds and the holds for the first block, or refuse.

    Runs inside the reservation's database transaction (``accounts`` read under
    the ledger lock), so the funds check cannot race another call's.
    ``free_seconds_used``: what the free account already used (or was granted by
    calls still open) of its allowance on the local day of the call's start; the
    rest is granted to this call.
    """
    payers: list[tuple[Payer, Decimal]] = []
    for ref in request.payers:
        state = accounts.get(ref.account)
        if state is None or state.status != "open" or state.owner_kind not in (
                *PREPAID_KINDS, "agency"):
            what = "does not exist" if state is None else f"is {state.status}"
            if state is not None and state.status == "open":
                what = f"is a {state.owner_kind} account"
            return Refusal(480, "Billing account unavailable",
                           f"payer account {ref.account!r} {what}")
        kind: Literal["family", "agency"] = (
            "family" if state.owner_kind in PREPAID_KINDS else "agency")
        payers.append((Payer(kind, ref.account), ref.share))
    try:
        split = PayerSplit((SplitPeriod(date.min, tuple(payers)),))
    except ValueError as exc:
        return Refusal(480, "Billing misconfigured", str(exc))
    holds_for = [p.account for p, _ in payers if p.kind == "family"]
    facts = CallFacts(
        call_id=request.call_id, node_id=request.node_id, plan=request.plan,
        facility_id=request.facility_id, service=request.service, caller=request.caller,
        callee=request.callee, setup_at=request.setup_at, increment=policy.increment,
        increment_seconds=policy.increment_seconds, payers=split.periods[0].shares,
        holds=tuple((a, hold_id_for(request.call_id, i)) for i, a in enumerate(holds_for)),
        free_account=request.free_account,
        free_seconds=free_seconds_granted(request.free_minutes_per_day, free_seconds_used)
        if request.free_account is not None else 0,
    )
    try:
        pricer = Pricer(facts, facility, caps)
        first = {p.account: pricer.cost(p, policy.increment_seconds) for p in facts.prepaid()}
        block = {p.account: pricer.cost(p, policy.first_block_seconds) for p in facts.prepaid()}
    except ValueError as exc:  # e.g. no rate for this service on this date
        return Refusal(480, "Billing unavailable", f"cannot price the call: {exc}")
    holds = []
    for i, (account, hold_id) in enumerate(facts.holds):
        state = accounts[account]
        assert state is not None
        if state.available < first[account]:
            return Refusal(
                402, "Insufficient funds",
                f"account {account!r} has {Money(state.available)} available; the first "
                f"{policy.increment_seconds} s cost {Money(first[account])}",
            )
        amount = _floor_cents(min(block[account], state.available))
        if amount > 0:
            holds.append(HoldRequest(account, hold_id, amount, hold_key(request.call_id, i),
                                     policy.hold_ttl_seconds))
    placed = {h.account for h in holds}
    facts = replace(facts, holds=tuple((a, h) for a, h in facts.holds if a in placed))
    return Reservation(facts, tuple(holds))


# ---------------------------------------------------------------------- during the call


@dataclass(frozen=True)
class IncrementCharge:
    """Debit increment ``index`` (media seconds ``start``-``end``)."""

    index: int
    start: int
    end: int
    lines: tuple[ChargeLine, ...]
    idempotency_key: str
    memo: str


@dataclass(frozen=True)
class HoldExtension:
    """Reserve up to ``amount`` more (whole cents, may be 0) and push the expiry."""

    account: str
    hold_id: str
    amount: int
    idempotency_key: str
    ttl_seconds: int


@dataclass(frozen=True)
class LowBalance:
    """Funds for this call run out in ``seconds_left`` media seconds (sent once)."""

    call_id: str
    seconds_left: int
    accounts: tuple[str, ...]


@dataclass(frozen=True)
class OutOfFunds:
    """The prepaid funds are used up: end the call now (always after a LowBalance)."""

    call_id: str
    media_seconds: int


SessionEvent = LowBalance | OutOfFunds


@dataclass(frozen=True)
class Tick:
    charges: tuple[IncrementCharge, ...] = ()
    extensions: tuple[HoldExtension, ...] = ()
    events: tuple[SessionEvent, ...] = ()
    next_deadline: float | None = None  # tick again no later than this (cut-off, warning)

    @property
    def has_io(self) -> bool:
        return bool(self.charges or self.extensions)


@dataclass(frozen=True)
class TickResult:
    """What the ledger did with a Tick: increments posted (in order) and fresh funds."""

    debited: int  # how many of the tick's charges were posted
    funds: Mapping[str, Funds]
    error: str | None = None
    # The call already has its CDR: another node took it for lost and settled it.
    settled: bool = False


@dataclass(frozen=True)
class EndInfo:
    at: float
    reason: str
    ended_by: EndedBy
    status: int | None = None
    deliberate: bool = False  # ended on purpose by the gateway (funds, visit end, staff)

    @property
    def fault(self) -> bool:
        """A drop caused by the gateway or the network, not a party or a decision."""
        return self.ended_by in FAULT_ENDERS and not self.deliberate


@dataclass(frozen=True)
class SettleRequest:
    """Everything the settlement needs, frozen, so it can run in a thread or on recovery."""

    facts: CallFacts
    policy: SessionPolicy
    media_seconds: int  # metered, floored to whole seconds
    end: EndInfo
    answered_at: float | None
    warned_seconds_left: int | None = None
    recovered: bool = False


class ChargingSession:
    """One reserved call, driven by the service on the reactor thread."""

    def __init__(self, reservation: Reservation, facility: Facility, policy: SessionPolicy,
                 funds: Mapping[str, Funds], caps: CapSchedule | None = None) -> None:
        self.facts = reservation.facts
        self.policy = policy
        self.pricer = Pricer(self.facts, facility, caps)
        self.state: Literal["reserved", "answered", "ended"] = "reserved"
        self.answered_at: float | None = None
        self.media = 0.0
        self.increments = 0  # confirmed debited
        self.busy = False  # a Tick's ledger work is in flight
        self.warned_seconds_left: int | None = None
        self.exhausted = False
        self.end_info: EndInfo | None = None
        self.last_error: str | None = None
        self._ext = {a: 0 for a, _ in self.facts.holds}
        self.funds: dict[str, Funds] = {}
        self.affordable: int | None = None
        self._set_funds(funds)

    @property
    def call_id(self) -> str:
        return self.facts.call_id

    # ------------------------------------------------------------ inputs

    def answered(self, now: float) -> None:
        if self.state == "reserved":
            self.state = "answered"
            self.answered_at = now

    def end(self, info: EndInfo, media_seconds: float) -> SettleRequest:
        """The call is over: no more ticks; what to settle."""
        self.media = max(self.media, media_seconds)
        if self.end_info is None:
            self.end_info = info
        self.state = "ended"
        return self.settle_request()

    def settle_request(self) -> SettleRequest:
        assert self.end_info is not None
        return SettleRequest(
            facts=self.facts, policy=self.policy, media_seconds=int(self.media),
            end=self.end_info, answered_at=self.answered_at,
            warned_seconds_left=self.warned_seconds_left,
        )

    def tick(self, now: float, media_seconds: float) -> Tick:
        """Read the meter: debit completed increments, extend holds, warn, cut off."""
        if self.state != "answered":
            return Tick()
        self.media = max(self.media, media_seconds)
        secs = int(self.media)
        events: list[SessionEvent] = []
        aff = self.affordable
        if aff is not None:
            left = aff - self.media
            if self.warned_seconds_left is None and left <= self.policy.warning_seconds:
                self.warned_seconds_left = max(0, int(left))
                events.append(LowBalance(self.call_id, self.warned_seconds_left,
                                         tuple(p.account for p in self.facts.prepaid())))
            if left <= 0 and not self.exhausted:
                self.exhausted = True
                events.append(OutOfFunds(self.call_id, min(secs, aff)))
        deadline = self.deadline(now, self.media)
        if self.busy:
            return Tick(events=tuple(events), next_deadline=deadline)
        billable = secs if aff is None else min(secs, aff)
        due = billable // self.facts.increment_seconds
        charges = []
        for k in range(self.increments + 1, due + 1):
            start, end = self.pricer.boundary(k - 1), self.pricer.boundary(k)
            charges.append(IncrementCharge(
                k, start, end, self.pricer.lines_between(start, end, f"increment {k}"),
                increment_key(self.call_id, k), f"call {self.call_id}: increment {k}, "
                f"media seconds {start}-{end}",
            ))
        extensions = self._extensions(now, secs, due)
        tick = Tick(tuple(charges), tuple(extensions), tuple(events), deadline)
        self.busy = tick.has_io
        return tick

    def deadline(self, now: float, media_seconds: float) -> float | None:
        """When the next warning or cut-off falls due (assuming media flows), None if never.

        Pure: the service arms a timer for it, so the cut-off is on time, not up
        to a heartbeat late.
        """
        if self.state != "answered" or self.affordable is None or self.exhausted:
            return None
        left = self.affordable - max(self.media, media_seconds)
        if self.warned_seconds_left is None:
            return now + max(0.0, left - self.policy.warning_seconds)
        return now + max(0.0, left)

    def applied(self, result: TickResult) -> None:
        """The ledger's answer to the last Tick with I/O."""
        self.busy = False
        self.increments += result.debited
        self.last_error = result.error
        self._set_funds(result.funds)

    # ------------------------------------------------------------ persistence

    def snapshot(self, now: float) -> dict[str, str | int]:
        """The heartbeat record (store values are str or int); recovery reads ``media_ms``.

        The call's fixed facts are in the database (``billing_calls``); payers and
        holds are repeated here so the record explains itself to another node.
        """
        return {
            "node": self.facts.node_id,
            "call": self.call_id,
            "facility": self.facts.facility_id,
            "payers": ",".join(p.account for p, _ in self.facts.payers),
            "holds": ",".join(f"{a}={h}" for a, h in self.facts.holds),
            "media_ms": int(self.media * 1000),
            "heartbeat_ms": int(now * 1000),
            "answered_ms": int(self.answered_at * 1000) if self.answered_at is not None else 0,
            "increments": self.increments,
            "warned_left": -1 if self.warned_seconds_left is None else self.warned_seconds_left,
        }

    # ------------------------------------------------------------ internals

    def _set_funds(self, funds: Mapping[str, Funds]) -> None:
        self.funds.update(funds)
        totals = {}
        for p in self.facts.prepaid():
            f = self.funds.get(p.account)
            if f is not None:
                spent = self.pricer.cost(p, self.pricer.boundary(self.increments))
                totals[p.account] = spent + f.total
        self.affordable = self.pricer.affordable(totals) if totals else None

    def _extensions(self, now: float, secs: int, due: int) -> list[HoldExtension]:
        """Top up a hold that covers less than half the next block, or is half expired.

        Extensions run before the tick's charges (see :mod:`gateway.billing.calls`),
        so the hold is still open when it is extended; a hold already used up is
        closed and cannot be extended, and the charges then come from available
        funds, which the ledger still never lets go below zero.
        """
        out = []
        now_dt = datetime.fromtimestamp(now, UTC)
        block = self.policy.first_block_seconds
        ttl = self.policy.hold_ttl_seconds
        for index, (account, hold_id) in enumerate(self.facts.holds):
            f = self.funds.get(account)
            if f is None or f.held <= 0:
                continue
            payer = Payer("family", account)
            upto_due = self.pricer.cost(payer, self.pricer.boundary(due))
            pending = upto_due - self.pricer.cost(payer, self.pricer.boundary(self.increments))
            held_after = f.held - pending
            need = self.pricer.cost(payer, secs + block) - upto_due
            low = 2 * held_after < need
            expiring = f.hold_expires is not None and (
                (f.hold_expires - now_dt).total_seconds() < ttl / 2)
            amount = min(_floor_cents(need - held_after), _floor_cents(f.available)) if low else 0
            if amount <= 0 and not expiring:
                continue
            n = self._ext[account] = self._ext[account] + 1
            out.append(HoldExtension(account, hold_id, amount,
                                     extend_key(self.call_id, index, n), ttl))
        return out


# ---------------------------------------------------------------------- settlement


@dataclass(frozen=True)
class Settlement:
    """How a call ends in the ledger: the remainder to debit, credits, and the rating."""

    rating: Rating
    lines: tuple[ChargeLine, ...]  # R(billed) - R(already debited)
    billed_seconds: int  # media seconds charged for
    metered_seconds: int  # what the meter (or recovery) said
    uncharged_seconds: int  # metered but beyond the funds: not charged
    credits: tuple[tuple[Payer, Money], ...]
    credit_reason: str

    @property
    def credit_total(self) -> Money:
        return sum((m for _, m in self.credits), ZERO)


def plan_settlement(
    request: SettleRequest,
    pricer: Pricer,
    debited: int,
    funds: Mapping[str, Funds],
) -> Settlement:
    """Settle exactly ``R(billed)``: never more than metered, never beyond the funds.

    ``debited``: increments the ledger holds for the call (read under the lock,
    so an increment whose answer was lost still counts); its media was metered
    (an increment is debited only once completed), so the billed time is at
    least that.  ``funds``: the prepaid payers' holds and balances, also read
    under the lock.
    """
    floor = pricer.boundary(debited)
    metered = max(request.media_seconds, floor)
    totals = {}
    for p in pricer.facts.prepaid():
        f = funds.get(p.account, Funds(0))
        totals[p.account] = pricer.cost(p, floor) + f.total
    cap = pricer.affordable(totals)
    billed = metered if cap is None else max(floor, min(metered, cap))
    rating = pricer.rating(billed)
    lines = pricer.lines_between(floor, billed, "settlement")
    credits, reason = _credits(request, pricer, billed)
    return Settlement(rating, lines, billed, metered, metered - billed, credits, reason)


def _credits(request: SettleRequest, pricer: Pricer,
             billed: int) -> tuple[tuple[tuple[Payer, Money], ...], str]:
    end = request.end
    policy = request.policy.credit
    if not end.fault or billed <= 0:
        return (), ""
    cause = "the gateway restarted" if request.recovered else end.reason
    if policy.whole_call_under_seconds and billed < policy.whole_call_under_seconds:
        start = 0
        reason = (f"the call dropped after less than {policy.whole_call_under_seconds} "
                  f"seconds ({cause}): the whole call is credited")
    elif policy.last_minute:
        start = 60 * ((billed - 1) // 60)
        reason = f"the call dropped ({cause}): the last started minute is credited"
    else:
        return (), ""
    out = []
    for payer, _ in pricer.facts.payers:
        amount = pricer.cost(payer, billed) - pricer.cost(payer, start)
        if amount > 0:
            out.append((payer, Money(amount)))
    return tuple(out), reason if out else ""
