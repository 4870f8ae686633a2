"""Monthly account statements: what came in, what each call cost, what is left.

A statement covers one calendar month in UTC (``2026-05`` is from 2026-05-01
00:00 to 2026-06-01 00:00 UTC) and is worked out from the ledger alone, in one
read-only snapshot:

* **opening balance**: the sum of the account's postings in entries written
  before the month (the posted balance: available plus held);
* **lines**, in ledger order: deposits, refunds and adjustments one per entry,
  and one line per call, which groups that call's increments, settlement and
  credits within the month (charged, credited, and the call's date, other
  party and billed duration from its CDR; "in progress" if it has none yet).
  Holds and their releases move no money out of the account and are not listed;
* **closing balance**: opening balance plus every line, which is also the sum of
  the postings before the month's end (checked);
* the **ledger chain head** at the time of generation (entry id and hash): an
  auditor can later run ``gateway billing verify --anchor ID:HASH`` to prove that
  nothing the statement was computed from has changed since.

Rendered as CSV (:func:`statement_csv`) or PDF (:func:`statement_pdf`, reportlab).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from gateway.billing.accounts import AccountInfo
from gateway.billing.cdr import Cdr
from gateway.billing.db import Database, utcnow
from gateway.billing.ledger import GENESIS
from gateway.billing.models import Account, CallRecord, ChainHead, Entry, Posting
from gateway.billing.money import ZERO, Money

FORMATS = ("csv", "pdf")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}
_MONTH_RE = re.compile(r"^([0-9]{4})-([0-9]{2})\Z")
_KIND_ORDER = ("deposit", "call", "refund", "adjustment", "other")


class StatementError(ValueError):
    """Bad statement parameters: ``field`` ("account", "month", "format") and why."""

    def __init__(self, field: str, message: str, *, not_found: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.not_found = not_found


def parse_month(text: str) -> tuple[datetime, datetime]:
    """``YYYY-MM`` -> (first instant of the month, first instant of the next), UTC."""
    m = _MONTH_RE.match(text.strip()) if isinstance(text, str) else None
    if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1970:
        raise StatementError("month", f"expected a month as YYYY-MM (e.g. 2026-05), got {text!r}")
    year, month = int(m.group(1)), int(m.group(2))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


@dataclass(frozen=True)
class StatementLine:
    at: datetime  # the call's start for a call, the entry's time otherwise
    kind: str  # deposit, call, refund, adjustment, other
    description: str
    amount: Money  # signed change of the balance
    balance: Money  # running balance after this line
    entry_ids: tuple[int, ...]
    call_id: str | None = None
    other_party: str | None = None
    duration_seconds: int | None = None
    charged: Money = ZERO  # calls: taken for the call in this month
    credited: Money = ZERO  # calls: given back in this month


@dataclass(frozen=True)
class Statement:
    account: AccountInfo
    month: str
    start: datetime
    end: datetime
    opening: Money
    closing: Money
    lines: tuple[StatementLine, ...]
    head_entry_id: int
    head_hash: str
    generated_at: datetime
    totals: dict[str, Money] = field(default_factory=dict)  # by kind, signed

    @property
    def month_name(self) -> str:
        return self.start.strftime("%B %Y")

    @property
    def charged(self) -> Money:
        return sum((li.charged for li in self.lines), ZERO)

    @property
    def credited(self) -> Money:
        return sum((li.credited for li in self.lines), ZERO)

    @property
    def anchor(self) -> str:
        return f"{self.head_entry_id}:{self.head_hash}"


def _duration(seconds: int) -> str:
    m, s = divmod(seconds, 60)
    return f"{m}:{s:02d}"


def _other_party(account: AccountInfo, caller: str, callee: str) -> str:
    """The other end of the call from the account holder's side, when we can tell."""
    if account.owner_ref == caller:
        return callee
    if account.owner_ref == callee:
        return caller
    return f"{caller} to {callee}"


def build_statement(db: Database, account_id: str, month: str, *,
                    clock: Callable[[], datetime] = utcnow) -> Statement:
    """The statement of ``account_id`` for ``month`` (YYYY-MM), from one snapshot."""
    start, end = parse_month(month)
    if not isinstance(account_id, str) or not account_id or len(account_id) > 200:
        raise StatementError("account", f"expected an account id, got {account_id!r}")
    with db.read() as s:
        acct = s.get(Account, account_id)
        if acct is None:
            raise StatementError("account", f"no account {account_id!r}", not_found=True)
        info = AccountInfo(acct.id, acct.owner_kind, acct.owner_ref, acct.display_name,
                           acct.currency, acct.status, acct.created_at)
        head = s.get(ChainHead, 1)
        head_id, head_hash = (head.last_entry_id, head.head_hash) if head else (0, GENESIS)
        generated = clock()

        def posted_before(when: datetime) -> int:
            return int(s.scalar(
                select(func.coalesce(func.sum(Posting.amount), 0))
                .join(Entry, Entry.id == Posting.entry_id)
                .where(Posting.account_id == account_id, Entry.created_at < when)) or 0)

        opening = posted_before(start)
        rows = s.execute(
            select(Entry.id, Entry.kind, Entry.created_at, Entry.call_id, Entry.memo,
                   func.sum(Posting.amount))
            .join(Posting, Posting.entry_id == Entry.id)
            .where(Posting.account_id == account_id, Entry.created_at >= start,
                   Entry.created_at < end)
            .group_by(Entry.id, Entry.kind, Entry.created_at, Entry.call_id, Entry.memo)
            .order_by(Entry.id)
        ).all()
        call_ids = sorted({r[3] for r in rows if r[3] is not None and r[1] in ("charge",
                                                                                "credit")})
        cdrs: dict[str, Cdr] = {}
        for i in range(0, len(call_ids), 500):
            for row in s.scalars(select(CallRecord).where(
                    CallRecord.call_id.in_(call_ids[i:i + 500]))):
                cdrs[row.call_id] = Cdr.from_row(row)
        closing_check = posted_before(end)

    lines = _lines(info, rows, cdrs, opening)
    closing = Money(opening + sum(li.amount.micros for li in lines))
    if closing.micros != closing_check:  # the lines must add up to the ledger's balance
        raise RuntimeError(f"statement of {account_id} for {month}: lines give {closing}, "
                           f"the ledger {Money(closing_check)}")
    totals: dict[str, Money] = {k: ZERO for k in _KIND_ORDER}
    for li in lines:
        totals[li.kind] = totals[li.kind] + li.amount
    return Statement(
        account=info, month=f"{start:%Y-%m}", start=start, end=end, opening=Money(opening),
        closing=closing, lines=tuple(lines),
        head_entry_id=head_id, head_hash=head_hash,
        generated_at=generated, totals=totals,
    )


def _lines(info: AccountInfo, rows: Sequence[Any], cdrs: dict[str, Cdr],
           opening: int) -> list[StatementLine]:
    """Group the month's entries into lines, in ledger order, with a running balance."""
    groups: dict[str, dict[str, Any]] = {}
    order: list[dict[str, Any]] = []
    for entry_id, kind, created_at, call_id, memo, amount in rows:
        amount = int(amount)
        if kind in ("charge", "credit") and call_id is not None:
            g = groups.get(call_id)
            if g is None:
                g = {"kind": "call", "call_id": call_id, "at": created_at, "ids": [],
                     "charged": 0, "credited": 0}
                groups[call_id] = g
                order.append(g)
            g["ids"].append(entry_id)
            if kind == "charge":
                g["charged"] -= amount
            else:
                g["credited"] += amount
            continue
        if amount == 0:  # holds and releases: money set aside, not spent
            continue
        line_kind = kind if kind in ("deposit", "refund", "adjustment") else "other"
        label = {"deposit": "Deposit", "refund": "Refund", "adjustment": "Adjustment"}.get(
            kind, kind.capitalize())
        order.append({"kind": line_kind, "at": created_at, "ids": [entry_id], "amount": amount,
                      "description": f"{label}: {memo}" if memo else label})
    out: list[StatementLine] = []
    balance = opening
    for g in order:
        if g["kind"] != "call":
            balance += g["amount"]
            out.append(StatementLine(g["at"], g["kind"], g["description"], Money(g["amount"]),
                                     Money(balance), tuple(g["ids"])))
            continue
        amount = g["credited"] - g["charged"]
        balance += amount
        cdr = cdrs.get(g["call_id"])
        if cdr is None:
            out.append(StatementLine(
                g["at"], "call", "Call in progress (not settled yet)", Money(amount),
                Money(balance), tuple(g["ids"]), call_id=g["call_id"],
                charged=Money(g["charged"]), credited=Money(g["credited"])))
            continue
        desc = f"{cdr.service.capitalize()} call, {_duration(cdr.media_seconds)}"
        if g["credited"]:
            desc += f"; credited: {cdr.credit_reason or 'credit'}"
        out.append(StatementLine(
            cdr.setup_at, "call", desc, Money(amount), Money(balance), tuple(g["ids"]),
            call_id=cdr.call_id, other_party=_other_party(info, cdr.caller, cdr.callee),
            duration_seconds=cdr.media_seconds, charged=Money(g["charged"]),
            credited=Money(g["credited"])))
    return out


# ---------------------------------------------------------------------- CSV


STATEMENT_COLUMNS = ("date", "kind", "description", "call_id", "other_party",
                     "duration_seconds", "charged_usd", "credited_usd", "amount_usd",
                     "balance_usd", "entry_ids")


def _usd(m: Money) -> str:
    from gateway.billing.export import dollars

    return dollars(m.micros)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def statement_csv(st: Statement) -> bytes:
    """The statement as CSV: an account row, the opening balance, the lines, the
    closing balance, one total per kind and the ledger anchor (see docs/billing.md)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(STATEMENT_COLUMNS)
    a = st.account
    w.writerow([_ts(st.start), "account",
                f"Statement for {st.month_name} (UTC), account {a.id} ({a.owner_kind} "
                f"{a.owner_ref}, {a.display_name}), generated {_ts(st.generated_at)}",
                "", "", "", "", "", "", "", ""])
    w.writerow([_ts(st.start), "opening_balance", "Opening balance", "", "", "", "", "", "",
                _usd(st.opening), ""])
    for li in st.lines:
        w.writerow([
            _ts(li.at), li.kind, li.description, li.call_id or "", li.other_party or "",
            "" if li.duration_seconds is None else li.duration_seconds,
            _usd(li.charged) if li.kind == "call" else "",
            _usd(li.credited) if li.kind == "call" else "",
            _usd(li.amount), _usd(li.balance), " ".join(str(i) for i in li.entry_ids),
        ])
    w.writerow([_ts(st.end), "closing_balance", "Closing balance", "", "", "", "", "", "",
                _usd(st.closing), ""])
    for kind in _KIND_ORDER:
        charged = _usd(st.charged) if kind == "call" else ""
        credited = _usd(st.credited) if kind == "call" else ""
        w.writerow([_ts(st.end), "total", f"Total {kind}s", "", "", "", charged, credited,
                    _usd(st.totals.get(kind, ZERO)), "", ""])
    w.writerow([_ts(st.generated_at), "ledger_head",
                f"Ledger chain head when generated; check with: gateway billing verify "
                f"--anchor {st.anchor}", "", "", "", "", "", "", "", str(st.head_entry_id)])
    return buf.getvalue().encode()


# ---------------------------------------------------------------------- PDF


def statement_pdf(st: Statement) -> bytes:
    """The statement as a PDF a family can read: a summary, one table, the anchor."""
    from xml.sax.saxutils import escape

    from reportlab.lib import colors  # type: ignore[import-untyped,unused-ignore]
    from reportlab.lib.pagesizes import LETTER  # type: ignore[import-untyped,unused-ignore]
    from reportlab.lib.styles import getSampleStyleSheet  # type: ignore[import-untyped,unused-ignore]
    from reportlab.lib.units import inch  # type: ignore[import-untyped,unused-ignore]
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle  # type: ignore[import-untyped,unused-ignore]

    styles = getSampleStyleSheet()
    body = styles["BodyText"]
    small = styles["BodyText"].clone("small", fontSize=8, leading=10)
    cell = styles["BodyText"].clone("cell", fontSize=8.5, leading=10.5)
    a = st.account
    story: list[Any] = [
        Paragraph(escape(f"Account statement: {st.month_name}"), styles["Title"]),
        Paragraph(escape(f"Account {a.id}: {a.display_name} ({a.owner_kind} {a.owner_ref})"),
                  body),
        Paragraph(escape(f"Period: {st.start:%B} {st.start.day}, {st.start.year} to {st.end:%B} "
                         f"{st.end.day}, {st.end.year} (UTC; the "
                         "end is not included)"), body),
        Paragraph(escape(
            f"Opening balance {st.opening}. Deposits {st.totals['deposit']}. Calls charged "
            f"{st.charged}, credited {st.credited}. Refunds {st.totals['refund']}. "
            f"Adjustments {st.totals['adjustment']}. Closing balance {st.closing}."), body),
        Spacer(1, 0.15 * inch),
    ]

    def p(text: str) -> Paragraph:
        return Paragraph(escape(text), cell)

    data: list[list[Any]] = [["Date", "Description", "Other party", "Time", "Charged",
                              "Credited", "Amount", "Balance"]]
    data.append([f"{st.start:%Y-%m-%d}", p("Opening balance"), "", "", "", "", "",
                 str(st.opening)])
    for li in st.lines:
        data.append([
            f"{li.at.astimezone(UTC):%Y-%m-%d}", p(li.description), p(li.other_party or ""),
            _duration(li.duration_seconds) if li.duration_seconds is not None else "",
            str(li.charged) if li.kind == "call" else "",
            str(li.credited) if li.kind == "call" and li.credited.micros else "",
            str(li.amount), str(li.balance),
        ])
    data.append(["", p("Totals (amount: change of the balance)"), "", "", str(st.charged),
                 str(st.credited),
                 str(st.closing - st.opening), ""])
    data.append([f"{st.end:%Y-%m-%d}", p("Closing balance"), "", "", "", "", "",
                 str(st.closing)])
    widths = [0.8 * inch, 2.2 * inch, 1.2 * inch, 0.5 * inch, 0.7 * inch, 0.7 * inch,
              0.7 * inch, 0.8 * inch]
    table = Table(data, colWidths=widths, repeatRows=1)
    last = len(data) - 1
    table.setStyle(TableStyle([
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8.5),
        ("FONT", (0, 1), (-1, -1), "Helvetica", 8.5),
        ("FONT", (0, last - 1), (-1, last), "Helvetica-Bold", 8.5),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde4ee")),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
        ("LINEABOVE", (0, last - 1), (-1, last - 1), 0.8, colors.black),
        ("ROWBACKGROUNDS", (0, 1), (-1, last - 2), [colors.white, colors.HexColor("#f4f6f9")]),
        ("ALIGN", (3, 0), (-1, -1), "RIGHT"),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]))
    story += [table, Spacer(1, 0.2 * inch), Paragraph(escape(
        f"Generated {_ts(st.generated_at)}. Ledger chain head at generation: entry "
        f"{st.head_entry_id}, SHA-256 {st.head_hash}. Auditors can confirm that the ledger "
        f"behind this statement is unchanged with: gateway billing verify --anchor "
        f"{st.anchor}"), small)]
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=LETTER, title=f"Statement {a.id} {st.month}",
                            author="gateway", leftMargin=0.6 * inch, rightMargin=0.6 * inch,
                            topMargin=0.6 * inch, bottomMargin=0.6 * inch)
    doc.build(story)
    return out.getvalue()


def render(st: Statement, fmt: str) -> bytes:
    if fmt == "csv":
        return statement_csv(st)
    if fmt == "pdf":
        return statement_pdf(st)
    raise StatementError("format", f"expected csv or pdf, got {fmt!r}")
