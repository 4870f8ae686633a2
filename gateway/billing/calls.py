"""The ledger side of charging sessions: reserve, debit, settle, recover (blocking).

Each method is one or a few database transactions; the Twisted service calls
them through ``deferToThread``.  The decisions are made by the sans-IO
:mod:`gateway.billing.session`, here fed with what the ledger says *under its
lock*, so a funds check cannot race a concurrent call.

Crash safety: why a call is settled, and settled once
-----------------------------------------------------
* **Reservation** writes the call's fixed facts (``billing_calls``) and its
  holds in one transaction: either the call exists for billing, with its
  reserved funds, or nothing was written.
* **Increments** are ledger entries keyed ``call:<id>:inc:<n>``; posting one
  again (a retry, a recovery) returns the first entry and writes nothing.  An
  increment is posted only once its media was metered.
* **Settlement** (the remainder of the rating, the release of what is still
  held, any dropped-call credit) and the CDR are **one transaction**, started
  by taking the ledger lock and checking that no CDR exists.  So a CDR exists
  exactly when the call is settled, a second settlement finds the CDR and
  writes nothing, and two nodes recovering the same call queue on the lock.
* **Recovery** (after a crash): every ``billing_calls`` row of this node
  without a CDR is an open call.  It is settled from the last heartbeat the
  shared store kept (media seconds at that heartbeat), or, if the store was
  in-process and lost, from the ledger alone: ``n`` increments posted prove
  ``n * increment_seconds`` of metered media.  Either figure is at most what
  was really metered, and the settlement is ``R(max(heartbeat, n*inc)) -
  R(n*inc)`` on top of what the increments debited, so the call costs exactly
  ``rate_call`` of a duration it really had: never more than metered usage,
  never twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.billing.accounts import Accounts, Hold
from gateway.billing.cdr import RECOVERED_CAUSE, Cdr
from gateway.billing.db import Database
from gateway.billing.export import EXPORT_VERSION, csv_line
from gateway.billing.ledger import (
    HoldError,
    IdempotencyConflict,
    InsufficientFunds,
    LedgerError,
    LedgerView,
    PostedEntry,
    load_hold,
    lock_head,
    post,
)
from gateway.billing.models import Balance, CallRecord, CallStart, Entry
from gateway.billing.money import MICROS_PER_CENT, Money
from gateway.billing.rates import CapSchedule, Facility, Service
from gateway.billing.rating import INCREMENTS, Payer
from gateway.billing.session import (
    AccountState,
    CallFacts,
    CallRequest,
    EndInfo,
    Funds,
    Pricer,
    Refusal,
    Reservation,
    SessionPolicy,
    Settlement,
    SettleRequest,
    Tick,
    TickResult,
    credit_key,
    parse_increment_key,
    plan_reservation,
    plan_settlement,
    settle_key,
)

log = logging.getLogger("gateway.billing.calls")


class CallLedgerError(Exception):
    """A call cannot be settled as it stands (e.g. its facility is no longer configured)."""


class _Joined(Accounts):
    """Accounts whose entries join an open transaction.

    The settlement, its credits and the CDR must commit together (and the
    reservation with its call row), so they share one transaction; the money
    rules stay those of :class:`Accounts`, whose ``_post``/``_post_hold`` seam
    is the only thing replaced.
    """

    def __init__(self, base: Accounts, session: Session) -> None:
        super().__init__(base.db, policy=base.policy, clock=base.clock, actor=base.actor)
        self._session = session

    def _post(self, kind: str, idempotency_key: str, request: Mapping[str, object],
              build: Callable[[LedgerView], Any]) -> PostedEntry:
        return post(self._session, kind=kind, idempotency_key=idempotency_key,
                    request=request, build=build, now=self.clock(), actor=self.actor)

    def _post_hold(self, kind: str, idempotency_key: str, request: Mapping[str, object],
                   build: Callable[[LedgerView], Any], hold_id: str) -> Hold:
        entry = self._post(kind, idempotency_key, request, build)
        info = load_hold(self._session, hold_id)
        if info is None:
            raise HoldError(f"hold {hold_id!r} does not exist")
        return Hold(info.hold_id, info.account_id, info.call_id, Money(info.amount),
                    info.expires_at, entry)


@dataclass(frozen=True)
class Reserved:
    reservation: Reservation
    funds: dict[str, Funds]


@dataclass(frozen=True)
class OpenCall:
    """A call with a ``billing_calls`` row and no CDR (for recovery)."""

    facts: CallFacts
    last_activity: datetime  # the last ledger entry for it, or its setup time


def facts_from_row(row: CallStart) -> CallFacts:
    payers = tuple(
        (Payer(cast(Any, str(kind)), str(account)), Decimal(str(share)))
        for kind, account, share in row.payers
    )
    increment = row.increment if row.increment in INCREMENTS else "per_minute_round_up"
    return CallFacts(
        call_id=row.call_id, node_id=row.node_id, plan=row.plan, facility_id=row.facility_id,
        service=cast(Service, row.service), caller=row.caller, callee=row.callee,
        setup_at=row.setup_at, increment=increment,
        increment_seconds=row.increment_seconds, payers=payers,
        holds=tuple((str(a), str(h)) for a, h in row.holds),
        free_account=row.free_account, free_seconds=row.free_seconds or 0,
    )


def _payers_json(facts: CallFacts) -> list[list[str]]:
    return [[p.kind, p.account, format(share.normalize(), "f")] for p, share in facts.payers]


class CallLedger:
    """Blocking operations for charging sessions over one billing database."""

    def __init__(self, accounts: Accounts, facilities: Mapping[str, Facility],
                 caps: CapSchedule | None = None) -> None:
        self.accounts = accounts
        self.db: Database = accounts.db
        self.facilities = dict(facilities)
        self.caps = caps

    def clock(self) -> datetime:
        return self.accounts.clock()

    def facility(self, facility_id: str) -> Facility:
        try:
            return self.facilities[facility_id]
        except KeyError:
            raise CallLedgerError(f"facility {facility_id!r} is not configured") from None

    # ------------------------------------------------------------ reservation

    def reserve(self, request: CallRequest, policy: SessionPolicy) -> Reserved | Refusal:
        """Check the payers, place the first-block holds and record the call, atomically."""
        facility = self.facility(request.facility_id)
        with self.db.write() as s:
            lock_head(s)
            if s.get(CallStart, request.call_id) is not None:
                raise CallLedgerError(f"call {request.call_id!r} is already reserved")
            view = LedgerView(s, self.clock())
            states: dict[str, AccountState | None] = {}
            for ref in request.payers:
                acct = view.account(ref.account)
                states[ref.account] = None if acct is None else AccountState(
                    acct.owner_kind, acct.status, view.balance(ref.account)[0])
            used = 0
            if request.free_account is not None:
                used = _free_seconds_used(s, request.free_account, facility, request.setup_at)
            plan = plan_reservation(request, facility, policy, states, self.caps, used)
            if isinstance(plan, Refusal):
                return plan
            joined = _Joined(self.accounts, s)
            for h in plan.holds:
                joined.place_hold(h.account, Money(h.amount), idempotency_key=h.idempotency_key,
                                  call_id=request.call_id, hold_id=h.hold_id,
                                  ttl=timedelta(seconds=h.ttl_seconds))
            facts = plan.facts
            s.add(CallStart(
                call_id=facts.call_id, node_id=facts.node_id, plan=facts.plan,
                facility_id=facts.facility_id, service=facts.service, caller=facts.caller,
                callee=facts.callee, setup_at=facts.setup_at, increment=facts.increment,
                increment_seconds=facts.increment_seconds, payers=_payers_json(facts),
                holds=[[a, h] for a, h in facts.holds], created_at=self.clock(),
                free_account=facts.free_account, free_seconds=facts.free_seconds,
            ))
            s.flush()
            return Reserved(plan, _funds(s, facts))

    # ------------------------------------------------------------ during the call

    def apply_tick(self, facts: CallFacts, tick: Tick) -> TickResult:
        """Extend holds, then post the increments in order; stop at the first refusal.

        Extensions come first so that a hold is topped up while still open.  The
        result counts only increments the ledger confirmed; one whose answer was
        lost is posted again later under the same key, which writes nothing.
        """
        error: str | None = None
        for ext in tick.extensions:
            try:
                self._extend(ext.hold_id, ext.account, ext.amount, ext.idempotency_key,
                             ext.ttl_seconds)
            except LedgerError as exc:  # expired, closed: charges use available funds
                log.info("call %s: hold %s not extended: %s", facts.call_id, ext.hold_id, exc)
        debited = 0
        settled = False
        for charge in tick.charges:
            try:
                with self.db.write() as s:
                    # Under the ledger lock, as settlement is: once a call has its CDR
                    # (another node took this one for lost), no increment may follow.
                    lock_head(s)
                    if s.get(CallRecord, facts.call_id) is not None:
                        settled = True
                        error = (f"increment {charge.index}: the call was already settled "
                                 "(by another node)")
                        break
                    _Joined(self.accounts, s).charge(
                        facility_id=facts.facility_id, call_id=facts.call_id,
                        lines=charge.lines, idempotency_key=charge.idempotency_key,
                        holds=facts.hold_map, memo=charge.memo)
            except LedgerError as exc:
                error = f"increment {charge.index}: {exc}"
                break
            debited += 1
        with self.db.read() as s:
            funds = _funds(s, facts)
        return TickResult(debited, funds, error, settled)

    def _extend(self, hold_id: str, account: str, amount: int, key: str, ttl: int) -> None:
        try:
            self.accounts.extend_hold(hold_id, Money(amount), idempotency_key=key,
                                      ttl=timedelta(seconds=ttl))
        except InsufficientFunds:
            # Spent elsewhere meanwhile: reserve what is there (nothing was written
            # under the key, so it may carry the smaller request).
            available = self.accounts.balance(account).available.micros
            rest = max(0, available) // MICROS_PER_CENT * MICROS_PER_CENT
            self.accounts.extend_hold(hold_id, Money(min(rest, amount)), idempotency_key=key,
                                      ttl=timedelta(seconds=ttl))
        except IdempotencyConflict:
            pass  # posted before with another amount: it is done

    # ------------------------------------------------------------ settlement

    def settle(self, request: SettleRequest) -> tuple[Cdr, bool]:
        """Settle the call and write its CDR, once: (CDR, True if this call wrote it).

        Under the ledger lock: an existing CDR is returned as it is; otherwise
        the increments already posted are counted from the ledger (not from the
        caller's memory, which may have missed an answer), the funds are read,
        and the settlement, its credits and the CDR are written together.
        """
        facts = request.facts
        facility = self.facility(facts.facility_id)
        with self.db.write() as s:
            lock_head(s)
            existing = s.get(CallRecord, facts.call_id)
            if existing is not None:
                return Cdr.from_row(existing), False
            if s.get(CallStart, facts.call_id) is None:
                raise CallLedgerError(f"call {facts.call_id!r} was never reserved")
            debited = _increments_posted(s, facts.call_id)
            funds = _funds(s, facts)
            pricer = Pricer(facts, facility, self.caps)
            plan = plan_settlement(request, pricer, debited, funds)
            joined = _Joined(self.accounts, s)
            entry = joined.charge(
                facility_id=facts.facility_id, call_id=facts.call_id, lines=plan.lines,
                idempotency_key=settle_key(facts.call_id), holds=facts.hold_map,
                close_holds=True,
                memo=f"call {facts.call_id}: settled, {plan.billed_seconds} media seconds "
                     f"({plan.rating.billed_units} {plan.rating.billed_unit}s billed)",
            )
            for payer, amount in plan.credits:
                joined.credit_call(facts.call_id, payer.account, amount,
                                   idempotency_key=credit_key(facts.call_id, payer.account),
                                   memo=f"dropped call: {plan.credit_reason}"[:500])
            row = _cdr_row(request, plan, entry.id, self.clock())
            s.add(row)
            s.flush()
            return Cdr.from_row(row), True

    # ------------------------------------------------------------ recovery

    def open_calls(self, node_id: str, *, others: bool = False) -> list[OpenCall]:
        """Calls reserved and never settled: ``node_id``'s, or (``others``) every other node's."""
        node = CallStart.node_id != node_id if others else CallStart.node_id == node_id
        with self.db.read() as s:
            rows = list(s.scalars(
                select(CallStart)
                .where(node, ~select(CallRecord.call_id)
                       .where(CallRecord.call_id == CallStart.call_id).exists())
                .order_by(CallStart.setup_at)
            ))
            return [_open_call(s, row) for row in rows]

    def open_call(self, call_id: str) -> OpenCall | None:
        """One call if it is reserved and not yet settled, else None."""
        with self.db.read() as s:
            row = s.get(CallStart, call_id)
            if row is None or s.get(CallRecord, call_id) is not None:
                return None
            return _open_call(s, row)

    def recover(self, call: OpenCall, policy: SessionPolicy,
                heartbeat: Mapping[str, str | int] | None) -> tuple[Cdr, bool]:
        """Settle a call a crashed gateway left open, from its last heartbeat if any."""
        media_ms = _int(heartbeat, "media_ms")
        beat_ms = _int(heartbeat, "heartbeat_ms")
        answered_ms = _int(heartbeat, "answered_ms")
        warned = _int(heartbeat, "warned_left", -1)
        end_at = beat_ms / 1000 if beat_ms > 0 else call.last_activity.timestamp()
        request = SettleRequest(
            facts=call.facts, policy=policy, media_seconds=max(0, media_ms) // 1000,
            end=EndInfo(at=end_at, reason=RECOVERED_CAUSE, ended_by="gateway"),
            answered_at=answered_ms / 1000 if answered_ms > 0 else None,
            warned_seconds_left=warned if warned >= 0 else None, recovered=True,
        )
        return self.settle(request)

    # ------------------------------------------------------------ housekeeping

    def release_expired_holds(self) -> int:
        return len(self.accounts.release_expired_holds())


def _open_call(s: Session, row: CallStart) -> OpenCall:
    last = s.scalar(select(func.max(Entry.created_at)).where(Entry.call_id == row.call_id))
    return OpenCall(facts_from_row(row), last or row.setup_at)


def _int(record: Mapping[str, str | int] | None, key: str, default: int = 0) -> int:
    if record is None:
        return default
    value = record.get(key, default)
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        return default


def _increments_posted(s: Session, call_id: str) -> int:
    """How many increments the ledger holds for the call; they must be 1..n."""
    keys = s.scalars(
        select(Entry.idempotency_key).where(Entry.call_id == call_id, Entry.kind == "charge")
    )
    numbers = sorted(n for k in keys if (n := parse_increment_key(call_id, k)) is not None)
    if numbers != list(range(1, len(numbers) + 1)):
        raise CallLedgerError(f"call {call_id!r}: increments {numbers} are not 1..n")
    return len(numbers)


def local_day_bounds(facility: Facility, at: datetime) -> tuple[datetime, datetime]:
    """The facility's local day of ``at``, as [start, end) instants in UTC."""
    tz = ZoneInfo(facility.timezone)
    day = facility.local_date(at)
    start = datetime.combine(day, time.min, tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time.min, tz).astimezone(UTC)
    return start, end


def _free_seconds_used(s: Session, account: str, facility: Facility, at: datetime) -> int:
    """Free seconds ``account`` used on the facility's local day of ``at``.

    Settled calls count what their CDR says they used; calls still open count
    all they were granted (they may use it yet), so concurrent calls never share
    out more than the allowance.  Read under the ledger lock, like the funds.
    """
    start, end = local_day_bounds(facility, at)
    rows = s.execute(
        select(CallStart.free_seconds, CallRecord.free_seconds_used)
        .outerjoin(CallRecord, CallRecord.call_id == CallStart.call_id)
        .where(CallStart.free_account == account, CallStart.setup_at >= start,
               CallStart.setup_at < end, CallStart.free_seconds > 0)
    )
    return sum(granted if used is None else used for granted, used in rows)


def _funds(s: Session, facts: CallFacts) -> dict[str, Funds]:
    """The prepaid payers' available balances and what their holds for this call keep."""
    holds = facts.hold_map
    out = {}
    for payer in facts.prepaid():
        row = s.get(Balance, payer.account)
        available = row.available if row is not None else 0
        hid = holds.get(payer.account)
        info = load_hold(s, hid) if hid is not None else None
        if info is None:
            out[payer.account] = Funds(available)
        else:
            out[payer.account] = Funds(available, info.amount, info.expires_at)
    return out


def _dt(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _cdr_row(request: SettleRequest, plan: Settlement, entry_id: int,
             now: datetime) -> CallRecord:
    """The CDR, with its CSV export row rendered now: a CDR never changes after this."""
    facts = request.facts
    rating = plan.rating
    end_at = _dt(request.end.at) or now
    row = CallRecord(
        call_id=facts.call_id, visit_id=None, node_id=facts.node_id,
        facility_id=facts.facility_id, tier=rating.tier, cap_period=rating.cap_period,
        service=facts.service, caller=facts.caller, callee=facts.callee,
        payers=_payers_json(facts), setup_at=facts.setup_at,
        answer_at=_dt(request.answered_at), end_at=max(end_at, facts.setup_at),
        media_seconds=plan.billed_seconds, metered_seconds=plan.metered_seconds,
        uncharged_seconds=plan.uncharged_seconds, increment=facts.increment,
        billed_units=rating.billed_units, billed_unit=rating.billed_unit,
        rate_per_minute=rating.rate_per_minute.micros,
        cap_per_minute=rating.cap_per_minute.micros,
        additive_per_minute=rating.additive_per_minute.micros,
        total=rating.total.micros,
        amounts={p.account: rating.amount_for(p).micros for p, _ in facts.payers},
        credit_total=plan.credit_total.micros,
        credits={p.account: m.micros for p, m in plan.credits},
        credit_reason=plan.credit_reason[:500],
        lines=[{"kind": li.kind.value, "label": li.label, "amount": str(li.amount),
                "explanation": li.explanation} for li in rating.lines],
        explanation=rating.explanation,
        disconnect_cause=request.end.reason[:200], ended_by=request.end.ended_by[:16],
        sip_status=request.end.status, low_balance_warning=request.warned_seconds_left,
        quality=None, recovered=request.recovered, settle_entry_id=entry_id, created_at=now,
        free_seconds_used=rating.free_seconds_covered,
    )
    # From the row's own values (truncated texts included), as the export reads them.
    row.export_csv = csv_line(row)
    row.export_version = EXPORT_VERSION
    return row


def describe(cdr: Cdr) -> str:
    """One log line for a settled call."""
    paid = ", ".join(f"{a} {cdr.paid(a)}" for _, a, _ in cdr.payers)
    credit = f", credited {cdr.credit_total}" if cdr.credit_total.micros else ""
    return (f"{cdr.media_seconds} s billed ({cdr.billed_units} {cdr.billed_unit}s), "
            f"{cdr.total}{credit}; paid: {paid}")
