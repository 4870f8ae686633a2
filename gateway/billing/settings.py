"""The ``[billing]`` configuration: facilities, payment plans, charging knobs.

Read by :func:`read_billing` with the configuration reader of
:mod:`gateway.config`, so mistakes are reported like every other key, with the
file, line and dotted key.  A facility's rates are checked against the FCC caps
when the file is loaded (:func:`gateway.billing.rates.load_facility`): a rate
above the cap stops start-up, it is never billed.

Billing is off unless ``enabled = true``, so existing setups keep working.
Until visits exist, *plans* say who pays for a call: the first
``[[billing.plans]]`` whose ``caller`` (kiosk account or trunk name) and
``callee`` (the dialled user) regular expressions both match the whole value.
This module imports no database code: ``gateway check-config`` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from gateway.billing.rates import SERVICES, Facility, Service, load_facility

if TYPE_CHECKING:
    from gateway.billing.session import PayerRef, SessionPolicy
    from gateway.config import _Reader

INCREMENT_MODES = ("per_minute_round_up", "per_second")
UNMATCHED = ("free", "refuse")
_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_FACILITY_KEYS = ("id", "type", "adp", "timezone", "apply_additive", "rate", "tax")
_PLAN_KEYS = ("name", "caller", "callee", "facility", "service", "payers",
              "free_minutes_per_day")
_KEYS = (
    "enabled", "increment", "increment_seconds", "first_block_minutes", "heartbeat_seconds",
    "low_balance_warning_minutes", "hold_ttl_seconds", "expired_hold_sweep_seconds",
    "unmatched_calls", "dropped_calls", "facilities", "plans",
)


@dataclass(frozen=True)
class PlanPayer:
    account: str
    share: Decimal


@dataclass(frozen=True)
class Plan:
    """Who pays for the calls this plan matches, at which facility's rates."""

    name: str
    caller: re.Pattern[str]
    callee: re.Pattern[str]
    facility: str
    service: Service
    payers: tuple[PlanPayer, ...]
    free_minutes_per_day: int = 0  # for the first payer, per facility-local day

    def matches(self, caller: str, callee: str) -> bool:
        return bool(self.caller.fullmatch(caller) and self.callee.fullmatch(callee))

    def payer_refs(self) -> tuple[PayerRef, ...]:
        from gateway.billing.session import PayerRef

        return tuple(PayerRef(p.account, p.share) for p in self.payers)


@dataclass(frozen=True)
class BillingConfig:
    enabled: bool = False
    increment: str = "per_minute_round_up"
    increment_seconds: int = 60
    first_block_minutes: int = 5
    heartbeat_seconds: int = 10
    low_balance_warning_minutes: int = 2
    hold_ttl_seconds: int = 900
    expired_hold_sweep_seconds: int = 60
    unmatched_calls: str = "free"
    credit_last_minute: bool = True
    credit_whole_call_under_seconds: int = 60
    facilities: tuple[Facility, ...] = ()
    plans: tuple[Plan, ...] = ()

    def facility(self, facility_id: str) -> Facility | None:
        return next((f for f in self.facilities if f.id == facility_id), None)

    def plan_for(self, caller: str, callee: str) -> Plan | None:
        return next((p for p in self.plans if p.matches(caller, callee)), None)

    def policy(self) -> SessionPolicy:
        from gateway.billing.session import CreditPolicy, SessionPolicy

        return SessionPolicy(
            increment="per_second" if self.increment == "per_second" else "per_minute_round_up",
            increment_seconds=self.increment_seconds,
            first_block_seconds=self.first_block_minutes * 60,
            warning_seconds=self.low_balance_warning_minutes * 60,
            hold_ttl_seconds=self.hold_ttl_seconds,
            credit=CreditPolicy(self.credit_last_minute, self.credit_whole_call_under_seconds),
        )


def read_billing(reader: _Reader, data: Mapping[str, Any]) -> BillingConfig:
    """``[billing]``, with every problem reported through ``reader``."""
    d = BillingConfig()
    p: tuple[str, ...] = ("billing",)
    t = reader.table(data, (), "billing", _KEYS)
    if not t:
        return d
    dropped = reader.table(t, p, "dropped_calls",
                           ("credit_last_minute", "credit_whole_call_under_seconds"))
    dp = (*p, "dropped_calls")
    s = "seconds"
    increment_seconds = reader.integer(t, p, "increment_seconds", d.increment_seconds,
                                       maximum=3600, unit=s)
    first_block = reader.integer(t, p, "first_block_minutes", d.first_block_minutes,
                                 maximum=240, unit="minutes")
    if first_block * 60 < increment_seconds:
        reader.fail((*p, "first_block_minutes"),
                    f"expected at least one increment ({increment_seconds} s)")
    facilities = _read_facilities(reader, t, p)
    return BillingConfig(
        enabled=reader.boolean(t, p, "enabled", d.enabled),
        increment=reader.choice(t, p, "increment", d.increment, INCREMENT_MODES),
        increment_seconds=increment_seconds,
        first_block_minutes=first_block,
        heartbeat_seconds=reader.integer(t, p, "heartbeat_seconds", d.heartbeat_seconds,
                                         maximum=300, unit=s),
        low_balance_warning_minutes=reader.integer(
            t, p, "low_balance_warning_minutes", d.low_balance_warning_minutes, minimum=0,
            maximum=60, unit="minutes, 0 = warn only at the cut-off"),
        hold_ttl_seconds=reader.integer(t, p, "hold_ttl_seconds", d.hold_ttl_seconds,
                                        minimum=60, maximum=86400, unit=s),
        expired_hold_sweep_seconds=reader.integer(
            t, p, "expired_hold_sweep_seconds", d.expired_hold_sweep_seconds, maximum=3600,
            unit=s),
        unmatched_calls=reader.choice(t, p, "unmatched_calls", d.unmatched_calls, UNMATCHED),
        credit_last_minute=reader.boolean(dropped, dp, "credit_last_minute",
                                          d.credit_last_minute),
        credit_whole_call_under_seconds=reader.integer(
            dropped, dp, "credit_whole_call_under_seconds", d.credit_whole_call_under_seconds,
            minimum=0, maximum=3600, unit="seconds, 0 = never"),
        facilities=facilities,
        plans=_read_plans(reader, t, p, facilities),
    )


def _read_facilities(reader: _Reader, t: Mapping[str, Any],
                     p: tuple[str, ...]) -> tuple[Facility, ...]:
    out: list[Facility] = []
    for path, ft in reader.table_list(t, p, "facilities", _FACILITY_KEYS):
        for sub, known in (("rate", ("service", "effective_from", "per_minute")),
                           ("tax", ("name", "percent"))):
            reader.table_list(ft, path, sub, known)  # unknown keys, with their lines
        if "id" not in ft or "type" not in ft or "adp" not in ft:
            reader.fail(path, "id, type and adp are required in every [[billing.facilities]]")
            continue
        try:
            facility = load_facility({k: v for k, v in ft.items() if k in _FACILITY_KEYS})
        except ValueError as exc:
            reader.fail(path, str(exc))
            continue
        if any(f.id == facility.id for f in out):
            reader.fail((*path, "id"), f'"{facility.id}" is already used by another facility')
            continue
        out.append(facility)
    return tuple(out)


def _read_plans(reader: _Reader, t: Mapping[str, Any], p: tuple[str, ...],
                facilities: tuple[Facility, ...]) -> tuple[Plan, ...]:
    out: list[Plan] = []
    by_id = {f.id: f for f in facilities}
    for path, pt in reader.table_list(t, p, "plans", _PLAN_KEYS):
        index = path[-1]
        name = reader.string(pt, path, "name", f"plan-{index}", pattern=_NAME_RE,
                             what="a name of letters, digits, '.', '_' and '-'") or ""
        patterns = []
        for key in ("caller", "callee"):
            text = reader.string(pt, path, key, ".*") or ".*"
            try:
                patterns.append(re.compile(text))
            except re.error as exc:
                reader.fail((*path, key), f"expected a Python regular expression ({exc})")
                patterns.append(re.compile(".*"))
        facility_id = reader.string(pt, path, "facility", None)
        service = reader.choice(pt, path, "service", "video", SERVICES)
        free = reader.integer(pt, path, "free_minutes_per_day", 0, minimum=0, maximum=1440,
                              unit="minutes, 0 = none")
        payers = _read_payers(reader, pt, path)
        if facility_id is None:
            reader.fail(path, "facility is required in every [[billing.plans]]")
            continue
        facility = by_id.get(facility_id)
        if facility is None:
            known = ", ".join(sorted(by_id)) or "none defined"
            reader.fail((*path, "facility"), f'"{facility_id}" names no [[billing.facilities]] '
                        f"entry (facilities: {known})")
            continue
        if not any(r.service == service for r in facility.rates):
            reader.fail((*path, "service"), f'facility "{facility_id}" has no {service} rate')
            continue
        if payers is None:
            continue
        svc: Service = "audio" if service == "audio" else "video"
        out.append(Plan(name, patterns[0], patterns[1], facility_id, svc, payers, free))
    return tuple(out)


def _read_payers(reader: _Reader, pt: Mapping[str, Any],
                 path: tuple[str | int, ...]) -> tuple[PlanPayer, ...] | None:
    here = (*path, "payers")
    raw = pt.get("payers")
    if not isinstance(raw, list) or not raw:
        reader.expected(here, 'a non-empty array of account ids or tables such as '
                        '{ account = "A-1", share = "65" }', raw)
        return None
    out: list[PlanPayer] = []
    ok = True
    for i, item in enumerate(raw):
        ipath = (*here, i)
        account: object = item
        share: object = None
        if isinstance(item, dict):
            extra = sorted(set(item) - {"account", "share"})
            if extra:
                reader.fail(ipath, f"unknown keys {', '.join(extra)} (known: account, share)")
                ok = False
            account, share = item.get("account"), item.get("share")
        if not isinstance(account, str) or not _ACCOUNT_RE.match(account):
            reader.expected(ipath, "a billing account id", account)
            ok = False
            continue
        pct = Decimal(100)
        if share is None:
            if len(raw) > 1:
                reader.fail(ipath, "share is required when a plan has more than one payer")
                ok = False
        else:
            try:
                pct = Decimal(str(share)) if isinstance(share, int | str) and not isinstance(
                    share, bool) else Decimal("NaN")
            except InvalidOperation:
                pct = Decimal("NaN")
            if not pct.is_finite() or not Decimal(0) < pct <= 100:
                reader.expected((*ipath, "share"), 'a percentage above 0 and at most 100, '
                                'e.g. "65"', share)
                ok = False
                continue
        if any(pp.account == account for pp in out):
            reader.fail(ipath, f'"{account}" is listed twice')
            ok = False
            continue
        out.append(PlanPayer(account, pct))
    if ok and sum((pp.share for pp in out), Decimal(0)) != 100:
        reader.fail(here, "the payers' shares must add up to exactly 100")
        ok = False
    return tuple(out) if ok else None
