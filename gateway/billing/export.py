"""CDR exports for billing staff and auditors: CSV or JSON Lines, streamed.

``gateway billing export`` and ``GET /api/billing/export`` use :class:`CdrExport`,
a blocking iterator of byte chunks (run it in a thread from async code).  Every
column is documented in ``docs/billing.md``; :data:`COLUMNS` is the list the
documentation is checked against.

Which calls: those whose CDR ``end_at`` is in ``[from, to)`` (UTC, ``to``
exclusive), optionally of one facility, in (``end_at``, ``call_id``) order.

Constant memory, whatever the size of the export:

* **Keyset pagination.**  Rows are read a page (:data:`PAGE_ROWS`) at a time,
  each page starting after the (``end_at``, ``call_id``) key of the last row of
  the one before; the index ``ix_billing_cdrs_end_at_call_id`` (migration 0003)
  makes each page a range scan.  All pages are read in one read-only
  transaction (a consistent snapshot: SQLite's deferred ``BEGIN``, PostgreSQL's
  ``REPEATABLE READ``), so a call settled during the export is not half in it.
* **SQLite** pages are fetched with the driver (no ORM objects) and written
  by the ``csv`` module, one page per chunk.
* **PostgreSQL** CSV pages are produced by the server, ``COPY (SELECT ...) TO
  STDOUT WITH (FORMAT csv)``, with the same formatting done in SQL; the page's
  upper key is found first with an index-only query, so COPY streams exactly
  one page.  The client only forwards bytes.  JSON is formatted in Python on
  both databases.

Money is never a float: every amount is an exact decimal number of US dollars
written from the integer micro-dollars of the ledger (``2.28``, ``0.065``): at
least two decimals, more only when the amount has a fraction of a cent.  Times
are UTC, ISO 8601 with microseconds (``2026-05-02T15:00:00.000000Z``).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from gateway.billing.db import Database
from gateway.billing.money import MICROS_PER_DOLLAR

FORMATS = ("csv", "json")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/x-ndjson"}
PAGE_ROWS = 10_000
CHUNK_BYTES = 256 * 1024  # PostgreSQL COPY output is regrouped into chunks of about this
FACILITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\Z")


class ExportError(ValueError):
    """Bad export parameters: ``field`` ("from", "to", "facility", "format") and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Column:
    """One column of the CSV export (and key of the JSON export), for docs and tests."""

    name: str
    type: str
    unit: str
    meaning: str


COLUMNS: tuple[Column, ...] = (
    Column("call_id", "text", "", "the call's id (the SIP Call-ID on the caller's leg)"),
    Column("visit_id", "text", "", "the scheduled visit, empty until visits exist"),
    Column("facility_id", "text", "", "the facility whose rates applied"),
    Column("node_id", "text", "", "the gateway node that carried the call"),
    Column("service", "text", "", "audio or video"),
    Column("caller", "text", "", "who called: a kiosk account or trunk name"),
    Column("callee", "text", "", "who was called: the dialled user part"),
    Column("setup_at", "timestamp", "UTC", "when the call was set up (INVITE received)"),
    Column("answer_at", "timestamp", "UTC", "when it was answered; empty if never"),
    Column("end_at", "timestamp", "UTC", "when it ended (the export's date range is on this)"),
    Column("media_seconds", "integer", "seconds", "call time billed (media time, whole seconds)"),
    Column("metered_seconds", "integer", "seconds", "call time metered"),
    Column("uncharged_seconds", "integer", "seconds",
           "metered after the prepaid funds ran out: not charged"),
    Column("increment", "text", "", "per_minute_round_up or per_second"),
    Column("billed_units", "integer", "billed_unit", "minutes or seconds billed"),
    Column("billed_unit", "text", "", "minute or second"),
    Column("rate_per_minute_usd", "decimal", "USD per minute", "the facility's rate applied"),
    Column("cap_per_minute_usd", "decimal", "USD per minute", "the FCC rate cap in force"),
    Column("additive_per_minute_usd", "decimal", "USD per minute",
           "the FCC facility-cost additive charged (0.00 if the facility does not apply it)"),
    Column("tier", "text", "", "the FCC cap tier (facility type and size)"),
    Column("cap_period", "text", "", "the FCC order whose caps applied"),
    Column("total_usd", "decimal", "USD", "what the call cost, all lines, before credits"),
    Column("credit_total_usd", "decimal", "USD", "credited back (e.g. a dropped call)"),
    Column("net_usd", "decimal", "USD", "total_usd - credit_total_usd: what was paid in the end"),
    Column("credit_reason", "text", "", "why it was credited; empty if not"),
    Column("payer_kinds", "list of text", "", "family or agency, per payer, ';'-separated"),
    Column("payer_accounts", "list of text", "", "billing account ids, same order"),
    Column("payer_shares_percent", "list of decimal", "percent", "each payer's share, same order"),
    Column("payer_charged_usd", "list of decimal", "USD", "charged to each payer, same order"),
    Column("payer_credited_usd", "list of decimal", "USD", "credited to each payer, same order"),
    Column("disconnect_cause", "text", "", "why the call ended (SIP reason or gateway cause)"),
    Column("ended_by", "text", "", "caller, callee, gateway, timeout, ..."),
    Column("sip_status", "integer", "", "final SIP status if the call failed; empty otherwise"),
    Column("low_balance_warning_seconds", "integer", "seconds",
           "call time left when the low-balance warning was given; empty if none"),
    Column("recovered", "boolean", "", "true if settled after a gateway restart"),
    Column("settle_entry_id", "integer", "", "the ledger entry that settled the call"),
    Column("created_at", "timestamp", "UTC", "when the CDR was written (the settlement)"),
    Column("explanation", "text", "", "the charge worked out in words, as on the receipt"),
)
CSV_HEADER: tuple[str, ...] = tuple(c.name for c in COLUMNS)
_PAYER_COLUMNS = ("payer_kinds", "payer_accounts", "payer_shares_percent",
                  "payer_charged_usd", "payer_credited_usd")
# The JSON Lines export: the CSV columns with typed values, except that the five
# payer_* lists are one "payers" list of objects, plus the charge lines and quality.
JSON_KEYS: tuple[str, ...] = tuple(
    n for n in CSV_HEADER if n not in _PAYER_COLUMNS) + ("payers", "lines", "quality")

# The raw columns read for the Python formatters, in this order.
_RAW = (
    "call_id", "visit_id", "facility_id", "node_id", "service", "caller", "callee",
    "setup_at", "answer_at", "end_at", "media_seconds", "metered_seconds",
    "uncharged_seconds", "increment", "billed_units", "billed_unit", "rate_per_minute",
    "cap_per_minute", "additive_per_minute", "tier", "cap_period", "total", "credit_total",
    "credit_reason", "payers", "amounts", "credits", "disconnect_cause", "ended_by",
    "sip_status", "low_balance_warning", "recovered", "settle_entry_id", "created_at",
    "explanation", "lines", "quality",
)
_END_AT = _RAW.index("end_at")
_CALL_ID = _RAW.index("call_id")


# ---------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ExportRange:
    """Which CDRs: ``start <= end_at < end`` (aware UTC), optionally one facility."""

    start: datetime
    end: datetime
    facility: str | None = None

    def describe(self) -> str:
        where = f" at {self.facility}" if self.facility else ""
        return f"calls ended from {_iso(self.start)} to {_iso(self.end)} (exclusive){where}"


def parse_instant(text: str, field: str) -> datetime:
    """``2026-05-01`` (midnight UTC) or an ISO 8601 time; no offset means UTC."""
    if not isinstance(text, str) or not text.strip():
        raise ExportError(field, "expected a date (YYYY-MM-DD) or an ISO 8601 UTC time")
    value = text.strip()
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ExportError(
            field, f"expected a date (YYYY-MM-DD) or an ISO 8601 time such as "
            f"2026-05-01T00:00:00Z, got {text!r}") from None
    if parsed.utcoffset() is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def export_range(start: str, end: str, facility: str | None = None) -> ExportRange:
    """Check the parameters of an export; :class:`ExportError` names the one at fault."""
    lo = parse_instant(start, "from")
    hi = parse_instant(end, "to")
    if hi < lo:
        raise ExportError("to", f"{end} is before from ({start}); to is the exclusive end")
    if facility is not None and not FACILITY_RE.match(facility):
        raise ExportError("facility", f"expected a facility id (letters, digits, '_.-'), "
                          f"got {facility!r}")
    return ExportRange(lo, hi, facility or None)


def check_facility(db: Database, facility: str | None, configured: Iterable[str] = ()) -> None:
    """A facility filter must name a configured facility or one that has CDRs."""
    if facility is None or facility in set(configured):
        return
    with db.read() as s:
        found = s.connection().exec_driver_sql(
            _params("SELECT 1 FROM billing_cdrs WHERE facility_id = ? LIMIT 1", db.dialect),
            (facility,)).first()
    if found is None:
        raise ExportError("facility", f"no facility {facility!r}: it is not configured and "
                          "has no call records")


def _params(sql: str, dialect: str) -> str:
    """Our SQL uses ``?``; psycopg wants ``%s``."""
    return sql.replace("?", "%s") if dialect == "postgresql" else sql


# ---------------------------------------------------------------------- formatting


@functools.lru_cache(maxsize=8192)
def dollars(micros: int) -> str:
    """Exact decimal dollars: ``2.28``, ``-0.19``, ``0.065``; never rounded."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_DOLLAR)
    if frac % 10_000 == 0:
        return f"{sign}{whole}.{frac // 10_000:02d}"
    return f"{sign}{whole}.{f'{frac:06d}'.rstrip('0')}"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(value: Any) -> str | None:
    """A stored time as ISO 8601 UTC: SQLite gives 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) == 26:
            return f"{value[:10]}T{value[11:]}Z"
        value = datetime.fromisoformat(value)
        return _iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    assert isinstance(value, datetime)
    return _iso(value if value.tzinfo else value.replace(tzinfo=UTC))


def _db_time(value: datetime, dialect: str) -> datetime | str:
    """A bound time as the column stores it (SQLite: SQLAlchemy's naive UTC text)."""
    if dialect == "sqlite":
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _payer_lists(payers: str, amounts: str, credits: str) -> tuple[str, str, str, str, str]:
    """The five payer_* columns from the stored JSON texts (one parse, not three)."""
    parsed = json.loads(f"[{payers},{amounts},{credits}]")
    return _payer_lists_of(parsed[0], parsed[1], parsed[2])


def _payer_lists_of(payers: Sequence[Sequence[Any]], amounts: dict[str, Any],
                    credits: dict[str, Any]) -> tuple[str, str, str, str, str]:
    if len(payers) == 1:  # nearly every call
        kind, account, share = payers[0]
        return (str(kind), str(account), str(share), dollars(int(amounts.get(account, 0))),
                dollars(int(credits.get(account, 0))))
    return (";".join(str(p[0]) for p in payers), ";".join(str(p[1]) for p in payers),
            ";".join(str(p[2]) for p in payers),
            ";".join(dollars(int(amounts.get(p[1], 0))) for p in payers),
            ";".join(dollars(int(credits.get(p[1], 0))) for p in payers))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def csv_values(raw: Sequence[Any]) -> list[Any]:
    """One CSV row (:data:`CSV_HEADER` order) from a raw row (:data:`_RAW` order)."""
    (call_id, visit_id, facility_id, node_id, service, caller, callee, setup_at, answer_at,
     end_at, media, metered, uncharged, increment, billed_units, billed_unit, rate, cap,
     additive, tier, cap_period, total, credit_total, credit_reason, payers, amounts,
     credits, cause, ended_by, sip_status, warning, recovered, settle_entry_id, created_at,
     explanation) = raw[:35]
    if isinstance(payers, str):
        lists = _payer_lists(payers, amounts, credits)
    else:
        lists = _payer_lists_of(payers, amounts, credits)
    return [
        call_id, visit_id, facility_id, node_id, service, caller, callee, _time(setup_at),
        _time(answer_at), _time(end_at), media, metered, uncharged, increment, billed_units,
        billed_unit, dollars(rate), dollars(cap), dollars(additive), tier, cap_period,
        dollars(total), dollars(credit_total), dollars(total - credit_total), credit_reason,
        *lists, cause, ended_by, sip_status, warning, "true" if recovered else "false",
        settle_entry_id, _time(created_at), explanation,
    ]


def json_record(raw: Sequence[Any]) -> dict[str, Any]:
    """One JSON Lines object (:data:`JSON_KEYS`) from a raw row."""
    values = dict(zip(CSV_HEADER, csv_values(raw), strict=True))
    payers = _json(raw[24])
    amounts = _json(raw[25])
    credits = _json(raw[26])
    for name in _PAYER_COLUMNS:
        del values[name]
    values["recovered"] = bool(raw[31])
    values["payers"] = [
        {"kind": str(kind), "account": str(account), "share_percent": str(share),
         "charged_usd": dollars(int(amounts.get(account, 0))),
         "credited_usd": dollars(int(credits.get(account, 0)))}
        for kind, account, share in payers
    ]
    values["lines"] = _json(raw[35])
    values["quality"] = _json(raw[36])
    return values


# ---------------------------------------------------------------------- PostgreSQL SQL


def _pg_dollars(x: str) -> str:
    """SQL for :func:`dollars` of a bigint µ$ expression."""
    a = f"abs({x})"
    return (f"(CASE WHEN {x} < 0 THEN '-' ELSE '' END || ({a} / 1000000)::text || '.' || "
            f"CASE WHEN mod({a}, 10000) = 0 THEN lpad((mod({a}, 1000000) / 10000)::text, 2, '0')"
            f" ELSE rtrim(lpad(mod({a}, 1000000)::text, 6, '0'), '0') END)")


def _pg_time(x: str) -> str:
    return f"to_char({x} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def _pg_payer_list(element: str) -> str:
    """One payer_* list: ``element`` is SQL over ``P`` (a payer's JSON array).

    One and two payers (nearly every call) are formatted inline; more take a
    subquery over the array.
    """
    one = element.replace("P", "(c.payers->0)")
    two = element.replace("P", "(c.payers->1)")
    many = element.replace("P", "t.p")
    return (f"(CASE json_array_length(c.payers) WHEN 1 THEN {one} "
            f"WHEN 2 THEN {one} || ';' || {two} "
            f"ELSE (SELECT string_agg({many}, ';' ORDER BY t.i) "
            f"FROM json_array_elements(c.payers) WITH ORDINALITY AS t(p, i)) END)")


def _pg_csv_select() -> str:
    def amount(col: str) -> str:
        return _pg_dollars(f"coalesce((c.{col}->>(P->>1))::bigint, 0)")

    def text(col: str) -> str:
        # COPY writes '' as "" (NULL as nothing); Python's csv writes '' as nothing.
        return f"nullif(c.{col}, '')"

    cols = [
        text("call_id"), text("visit_id"), text("facility_id"), text("node_id"),
        text("service"), text("caller"), text("callee"), _pg_time("c.setup_at"),
        _pg_time("c.answer_at"), _pg_time("c.end_at"), "c.media_seconds",
        "c.metered_seconds", "c.uncharged_seconds", text("increment"), "c.billed_units",
        text("billed_unit"), _pg_dollars("c.rate_per_minute"),
        _pg_dollars("c.cap_per_minute"), _pg_dollars("c.additive_per_minute"), text("tier"),
        text("cap_period"), _pg_dollars("c.total"), _pg_dollars("c.credit_total"),
        _pg_dollars("(c.total - c.credit_total)"), text("credit_reason"),
        _pg_payer_list("(P->>0)"), _pg_payer_list("(P->>1)"), _pg_payer_list("(P->>2)"),
        _pg_payer_list(amount("amounts")), _pg_payer_list(amount("credits")),
        text("disconnect_cause"), text("ended_by"), "c.sip_status", "c.low_balance_warning",
        "CASE WHEN c.recovered THEN 'true' ELSE 'false' END", "c.settle_entry_id",
        _pg_time("c.created_at"), text("explanation"),
    ]
    assert len(cols) == len(COLUMNS)
    return "SELECT " + ", ".join(cols) + " FROM billing_cdrs c"


_PG_CSV_SELECT = _pg_csv_select()


# ---------------------------------------------------------------------- the export


class CdrExport:
    """Iterate to get the export as UTF-8 byte chunks; ``rows`` counts what was written.

    Blocking (database I/O): call it from a thread in async code.  The header (CSV)
    is the first chunk, so an empty export is a header alone (CSV) or nothing (JSON).
    """

    def __init__(self, db: Database, where: ExportRange, fmt: str = "csv", *,
                 page_rows: int = PAGE_ROWS, server_csv: bool = True) -> None:
        if fmt not in FORMATS:
            raise ExportError("format", f"expected csv or json, got {fmt!r}")
        if page_rows < 1:
            raise ValueError("page_rows must be positive")
        self.db = db
        self.where = where
        self.format = fmt
        self.page_rows = page_rows
        self.server_csv = server_csv  # PostgreSQL: False formats CSV in Python (for tests)
        self.rows = 0

    def __iter__(self) -> Iterator[bytes]:
        if self.format == "csv":
            yield (",".join(CSV_HEADER) + "\n").encode()
        with self.db.read() as s:
            conn = s.connection()
            if self.db.dialect == "postgresql" and self.format == "csv" and self.server_csv:
                yield from self._pg_copy(conn)
                return
            for page in self._pages(conn.connection.dbapi_connection):
                self.rows += len(page)
                if self.format == "csv":
                    buf = io.StringIO()
                    csv.writer(buf, lineterminator="\n").writerows(map(csv_values, page))
                    yield buf.getvalue().encode()
                else:
                    yield "".join(
                        json.dumps(json_record(r), ensure_ascii=False, separators=(",", ":"))
                        + "\n" for r in page).encode()

    # -- reading

    def _filter(self, dialect: str) -> tuple[str, list[Any]]:
        sql = "c.end_at >= ? AND c.end_at < ?"
        params: list[Any] = [_db_time(self.where.start, dialect),
                             _db_time(self.where.end, dialect)]
        if self.where.facility is not None:
            sql += " AND c.facility_id = ?"
            params.append(self.where.facility)
        return sql, params

    def _pages(self, dbapi: Any) -> Iterator[list[Sequence[Any]]]:
        """Raw rows (:data:`_RAW`), a page at a time, by keyset pagination.

        Straight from the driver's cursor (inside the session's transaction): no
        SQLAlchemy row objects, the per-row cost of an export is what matters.
        """
        dialect = self.db.dialect
        cond, params = self._filter(dialect)
        # CSV leaves out the charge lines and quality (the last two raw columns).
        names = _RAW if self.format == "json" else _RAW[:-2]
        cols = ", ".join(f"c.{name}" for name in names)
        first = (f"SELECT {cols} FROM billing_cdrs c WHERE {cond} "
                 f"ORDER BY c.end_at, c.call_id LIMIT {self.page_rows}")
        after = (f"SELECT {cols} FROM billing_cdrs c WHERE {cond} "
                 f"AND (c.end_at, c.call_id) > (?, ?) ORDER BY c.end_at, c.call_id "
                 f"LIMIT {self.page_rows}")
        first, after = _params(first, dialect), _params(after, dialect)
        key: tuple[Any, Any] | None = None
        cur = dbapi.cursor()
        try:
            while True:
                if key is None:
                    cur.execute(first, tuple(params))
                else:
                    cur.execute(after, (*params, *key))
                rows: list[Sequence[Any]] = cur.fetchall()
                if not rows:
                    return
                key = (rows[-1][_END_AT], rows[-1][_CALL_ID])
                yield rows
                if len(rows) < self.page_rows:
                    return
        finally:
            cur.close()

    def _pg_copy(self, conn: Any) -> Iterator[bytes]:
        """PostgreSQL: each page is found by its upper key, then COPYed by the server."""
        from psycopg import sql

        raw: Any = conn.connection.dbapi_connection
        cond, params = self._filter("postgresql")
        cond_pg = cond.replace("?", "%s")
        bound = (f"SELECT c.end_at, c.call_id FROM billing_cdrs c WHERE {cond_pg} "
                 "AND (c.end_at, c.call_id) > (%s, %s) ORDER BY c.end_at, c.call_id "
                 "OFFSET %s LIMIT 1")
        key: tuple[Any, str] = (datetime.min.replace(tzinfo=UTC), "")
        with raw.cursor() as cur:
            while True:
                cur.execute(bound, (*params, *key, self.page_rows - 1))
                upper = cur.fetchone()
                where = sql.SQL(cond.replace("?", "{}")).format(*map(sql.Literal, params))
                lo0, lo1 = sql.Literal(key[0]), sql.Literal(key[1])
                page = sql.SQL(
                    "{} WHERE {} AND c.end_at >= {} AND (c.end_at, c.call_id) > ({}, {})"
                ).format(sql.SQL(_PG_CSV_SELECT), where, lo0, lo0, lo1)
                if upper is not None:
                    # The plain end_at bound lets the planner stop the index scan there;
                    # with two row comparisons alone it scans from the start of the range.
                    hi0, hi1 = sql.Literal(upper[0]), sql.Literal(upper[1])
                    page = sql.SQL(
                        "{} AND c.end_at <= {} AND (c.end_at, c.call_id) <= ({}, {})"
                    ).format(page, hi0, hi0, hi1)
                copy = sql.SQL("COPY ({} ORDER BY c.end_at, c.call_id) TO STDOUT "
                               "WITH (FORMAT csv)").format(page)
                buf: list[bytes] = []
                size = 0
                with cur.copy(copy) as cp:
                    for data in cp:
                        buf.append(bytes(data))
                        size += len(data)
                        self.rows += 1  # COPY sends one message per row
                        if size >= CHUNK_BYTES:
                            yield b"".join(buf)
                            buf, size = [], 0
                if buf:
                    yield b"".join(buf)
                if upper is None:
                    return
                key = (upper[0], upper[1])


def write_export(export: CdrExport, out: Any) -> int:
    """Write every chunk to a binary file object; the number of rows written."""
    for chunk in export:
        out.write(chunk)
    return export.rows
