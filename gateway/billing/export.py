"""CDR exports for billing staff and auditors: CSV or JSON Lines, streamed.

``gateway billing export`` and ``GET /api/billing/export`` use :class:`CdrExport`,
a blocking iterator of byte chunks (run it in a thread from async code).  Every
column is documented in ``docs/billing.md``; :data:`COLUMNS` is the list the
documentation is checked against.

Which calls: those whose CDR ``end_at`` is in ``[from, to)`` (UTC, ``to``
exclusive), optionally of one facility, in (``end_at``, ``call_id``) order.

Each CDR carries its CSV row, rendered once when the CDR is written (a CDR
never changes after that), as a telephone switch writes its CDR line at call
end: :func:`csv_line` at settlement (:mod:`gateway.billing.calls`) stores it as
``export_csv`` with :data:`EXPORT_VERSION` (migration 0005).  A CSV export is
then mostly the database streaming stored text:

* **One statement, one snapshot.**  ``call_id`` (only when needed) and the
  stored line, if rendered under the current version, are read in (``end_at``,
  ``call_id``) order by one statement over the range (a range scan of the index
  ``ix_billing_cdrs_end_at_call_id``, migration 0003) inside one read-only
  transaction (SQLite's deferred ``BEGIN``, PostgreSQL's ``REPEATABLE READ``),
  so a call settled during the export is not half in it.  SQLite steps the
  statement with ``fetchmany``; PostgreSQL uses a server-side cursor whose next
  page is requested (pipeline mode) before the current one is handed on.
* **Pages as chunks.**  Each page of :data:`PAGE_ROWS` lines is joined into one
  chunk: no per-row Python work when the lines are stored.  A thread reads pages
  ahead of the consumer (at most :data:`READ_AHEAD`), so the database and the
  writing of the output overlap; memory stays a few pages whatever the size.
* **Fallback.**  Rows without a line of the current version (written before
  0005, or rendered under an older :data:`EXPORT_VERSION`) are read again by
  call id, one batch per page, and rendered from their columns by the same
  :func:`csv_values`: the output is the same bytes either way.  Changing the
  columns or their formatting means bumping :data:`EXPORT_VERSION`, nothing
  else; ``gateway billing verify`` checks that every stored line of the current
  version equals the rendering of its columns (:func:`check_stored_lines`).

JSON Lines are formatted in Python from the columns, on both databases.

Money is never a float: every amount is an exact decimal number of US dollars
written from the integer micro-dollars of the ledger (``2.28``, ``0.065``): at
least two decimals, more only when the amount has a fraction of a cent.  Times
are UTC, ISO 8601 with microseconds (``2026-05-02T15:00:00.000000Z``).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import operator
import queue
import re
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gateway.billing.db import Database
from gateway.billing.models import CallRecord
from gateway.billing.money import MICROS_PER_DOLLAR

FORMATS = ("csv", "json")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/x-ndjson"}
PAGE_ROWS = 2_000  # ~0.8 MB of lines: the next page fits in the socket buffers meanwhile
READ_AHEAD = 2  # chunks (pages) read ahead of the consumer, so memory stays bounded
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
    Column("free_seconds_used", "integer", "seconds",
           "free seconds of the daily allowance the call used, not charged"),
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
# The version of the CSV row format stored with each CDR (``export_csv``).  Any
# change to COLUMNS or to how a value is written (csv_values, dollars, _time,
# quoting) must bump it: lines stored under an older version are then rendered
# again from their columns by every export, and never checked by verify.
EXPORT_VERSION = 1
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
    "uncharged_seconds", "free_seconds_used", "increment", "billed_units", "billed_unit",
    "rate_per_minute", "cap_per_minute", "additive_per_minute", "tier", "cap_period", "total",
    "credit_total", "credit_reason", "payers", "amounts", "credits", "disconnect_cause", "ended_by",
    "sip_status", "low_balance_warning", "recovered", "settle_entry_id", "created_at",
    "explanation", "lines", "quality",
)
_CSV_RAW = _RAW[:-2]  # CSV leaves out the charge lines and quality
_JSON_COLUMNS = frozenset({"payers", "amounts", "credits", "lines", "quality"})
_CALL_ID = _RAW.index("call_id")
_FIRST = operator.itemgetter(0)
_PAYERS, _AMOUNTS, _CREDITS = (_RAW.index(n) for n in ("payers", "amounts", "credits"))
_RECOVERED = _RAW.index("recovered")
_LINES, _QUALITY = _RAW.index("lines"), _RAW.index("quality")
# The export's read of a row: its stored line if rendered under this version, else
# NULL and the call id to render it by (NULL otherwise: less to send and to load).
_CURRENT = f"c.export_version = {EXPORT_VERSION} AND c.export_csv IS NOT NULL"
_LINE_SELECT = (f"CASE WHEN {_CURRENT} THEN c.export_csv END, "
                f"CASE WHEN {_CURRENT} THEN NULL ELSE c.call_id END")
_SQLITE_IN_MAX = 500  # ids per IN (...) (old SQLite builds allow 999 parameters)


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


def _columns(names: Sequence[str], dialect: str) -> str:
    """The select list for raw columns: PostgreSQL sends JSON as text, as SQLite does.

    The formatters parse it themselves (the three payer columns in one go), which
    costs a fraction of the driver's parsing of each value.
    """
    if dialect == "postgresql":
        return ", ".join(f"c.{n}::text" if n in _JSON_COLUMNS else f"c.{n}" for n in names)
    return ", ".join(f"c.{n}" for n in names)


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
    """``2026-05-02T15:00:00.000000Z`` (``isoformat``: a third of ``strftime``'s cost)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:26] + "Z"


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
     end_at, media, metered, uncharged, free_used, increment, billed_units, billed_unit,
     rate, cap, additive, tier, cap_period, total, credit_total, credit_reason, payers,
     amounts, credits, cause, ended_by, sip_status, warning, recovered, settle_entry_id,
     created_at, explanation) = raw[:len(_CSV_RAW)]
    if isinstance(payers, str):
        lists = _payer_lists(payers, amounts, credits)
    else:
        lists = _payer_lists_of(payers, amounts, credits)
    return [
        call_id, visit_id, facility_id, node_id, service, caller, callee, _time(setup_at),
        _time(answer_at), _time(end_at), media, metered, uncharged, free_used, increment,
        billed_units,
        billed_unit, dollars(rate), dollars(cap), dollars(additive), tier, cap_period,
        dollars(total), dollars(credit_total), dollars(total - credit_total), credit_reason,
        *lists, cause, ended_by, sip_status, warning, "true" if recovered else "false",
        settle_entry_id, _time(created_at), explanation,
    ]


def json_record(raw: Sequence[Any]) -> dict[str, Any]:
    """One JSON Lines object (:data:`JSON_KEYS`) from a raw row."""
    values = dict(zip(CSV_HEADER, csv_values(raw), strict=True))
    payers = _json(raw[_PAYERS])
    amounts = _json(raw[_AMOUNTS])
    credits = _json(raw[_CREDITS])
    for name in _PAYER_COLUMNS:
        del values[name]
    values["recovered"] = bool(raw[_RECOVERED])
    values["payers"] = [
        {"kind": str(kind), "account": str(account), "share_percent": str(share),
         "charged_usd": dollars(int(amounts.get(account, 0))),
         "credited_usd": dollars(int(credits.get(account, 0)))}
        for kind, account, share in payers
    ]
    values["lines"] = _json(raw[_LINES])
    values["quality"] = _json(raw[_QUALITY])
    return values


class _Rows:
    """The file a ``csv.writer`` writes to: keeps each row it is given, as text."""

    __slots__ = ("rows", "writerow")

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.writerow = csv.writer(self, lineterminator="\n").writerow

    def write(self, text: str) -> int:
        self.rows.append(text)
        return len(text)


def _render(values: Sequence[Any]) -> str:
    """One CSV row without its line end, quoted exactly as the csv module quotes it."""
    out = _Rows()
    out.writerow(values)
    return out.rows[0][:-1]


def csv_line(row: CallRecord | Mapping[str, Any]) -> str:
    """A CDR's CSV export row, without the line end, from its column values.

    Rendered once when the CDR is written (stored as ``export_csv`` with
    :data:`EXPORT_VERSION`), and again from the stored columns for rows that have
    no line of the current version; both go through :func:`csv_values`, so they
    are the same bytes.  ``row`` is a :class:`CallRecord` or a mapping of its
    column names (JSON columns as Python values or as JSON text).
    """
    if isinstance(row, Mapping):
        raw = [row[name] for name in _CSV_RAW]
    else:
        raw = [getattr(row, name) for name in _CSV_RAW]
    return _render(csv_values(raw))


# ---------------------------------------------------------------------- the export


class CdrExport:
    """Iterate to get the export as UTF-8 byte chunks; ``rows`` counts what was written.

    Blocking (database I/O): call it from a thread in async code.  The header (CSV)
    is the first chunk, so an empty export is a header alone (CSV) or nothing (JSON).
    """

    def __init__(self, db: Database, where: ExportRange, fmt: str = "csv", *,
                 page_rows: int = PAGE_ROWS) -> None:
        if fmt not in FORMATS:
            raise ExportError("format", f"expected csv or json, got {fmt!r}")
        if page_rows < 1:
            raise ValueError("page_rows must be positive")
        self.db = db
        self.where = where
        self.format = fmt
        self.page_rows = page_rows
        self.rows = 0

    def __iter__(self) -> Iterator[bytes]:
        if self.format == "csv":
            yield (",".join(CSV_HEADER) + "\n").encode()
        yield from _read_ahead(self._chunks())

    def _chunks(self) -> Generator[bytes, None, None]:
        """The pages as chunks, all in one read transaction (the snapshot)."""
        with self.db.read() as s:
            dbapi: Any = s.connection().connection.dbapi_connection
            if self.format == "csv":
                yield from self._csv(dbapi)
            else:
                yield from self._json(dbapi)

    def _csv(self, dbapi: Any) -> Iterator[bytes]:
        """The stored lines, one page per chunk; rows without one rendered from columns."""
        with contextlib.closing(self._pages(dbapi, _LINE_SELECT)) as pages:
            for page in pages:
                self.rows += len(page)
                lines: list[Any] = list(map(_FIRST, page))
                lines.append("")  # so that the last line ends too
                try:  # no per-row Python work when every line is stored
                    text = "\n".join(lines)
                except TypeError:  # a None: rows with no line of this version
                    self._render_missing(dbapi, page, lines)
                    text = "\n".join(lines)
                yield text.encode()

    def _json(self, dbapi: Any) -> Iterator[bytes]:
        cols = _columns(_RAW, self.db.dialect)
        with contextlib.closing(self._pages(dbapi, cols)) as pages:
            for page in pages:
                self.rows += len(page)
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

    def _pages(self, dbapi: Any, cols: str) -> Generator[list[Sequence[Any]], None, None]:
        """Rows of ``cols`` in (end_at, call_id) order, ``page_rows`` at a time.

        One statement on the driver's cursor, inside the session's snapshot: no
        SQLAlchemy row objects (the per-row cost is what matters), and a range
        scan of ``ix_billing_cdrs_end_at_call_id`` (0003), already in order.
        """
        dialect = self.db.dialect
        cond, params = self._filter(dialect)
        sql = f"SELECT {cols} FROM billing_cdrs c WHERE {cond} ORDER BY c.end_at, c.call_id"
        if dialect == "postgresql":
            yield from _pg_pages(dbapi, _params(sql, dialect), params, self.page_rows)
            return
        # "+" keeps SQLite from choosing the facility index and sorting the whole
        # facility's rows before the first one; the end_at range scan streams.
        sql = sql.replace("c.facility_id =", "+c.facility_id =")
        cur = dbapi.cursor()
        try:
            cur.execute(sql, params)
            while rows := cur.fetchmany(self.page_rows):
                yield rows
        finally:
            cur.close()

    def _render_missing(self, dbapi: Any, page: Sequence[Sequence[Any]],
                        lines: list[str | None]) -> None:
        """Fill in the lines of rows that have none of this version, from their columns.

        Older rows (written before revision 0005) and rows rendered under an older
        :data:`EXPORT_VERSION` are read again by call id, one batch per page.
        """
        where = {page[i][1]: i for i, line in enumerate(lines) if line is None}
        out = _Rows()
        for raw in _raw_rows(dbapi, self.db.dialect, list(where)):
            out.writerow(csv_values(raw))
            lines[where[raw[_CALL_ID]]] = out.rows.pop()[:-1]  # without the "\n"


def _pg_pages(conn: Any, sql: str, params: Sequence[Any],
              page_rows: int) -> Iterator[list[Sequence[Any]]]:
    """PostgreSQL: a server-side cursor, each page asked for before the last is read.

    A named cursor keeps the client's memory to a page (a plain one would load
    every row first).  In pipeline mode the ``FETCH`` of the next page is sent
    before this one is handed on, so the server reads and sends it meanwhile,
    instead of waiting for the client to ask.
    """
    name = "billing_cdr_export"  # closed with the read transaction
    conn.execute("SET LOCAL jit = off")  # compiling a plan this simple costs more than it saves
    conn.execute(f"DECLARE {name} NO SCROLL CURSOR FOR {sql}", params)
    fetch = f"FETCH FORWARD {page_rows} FROM {name}"
    with conn.cursor() as one, conn.cursor() as two, conn.pipeline():
        current, ahead = one, two
        ahead.execute(fetch)
        while True:
            current, ahead = ahead, current
            ahead.execute(fetch)
            rows: list[Sequence[Any]] = current.fetchall()
            if not rows:
                return
            yield rows


def _read_ahead(chunks: Generator[bytes, None, None],
                depth: int = READ_AHEAD) -> Iterator[bytes]:
    """``chunks``, produced by a thread of their own up to ``depth`` chunks ahead.

    So the database reading the next page (PostgreSQL's server process; SQLite's
    B-tree steps, which release the GIL) overlaps with the consumer writing this
    one, instead of the two taking turns.  ``chunks`` is advanced and closed in
    that thread only, so its session and cursors never change threads; closing
    this generator stops the thread at its next chunk and waits for it, so the
    read transaction is over when it returns.
    """
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: bytes | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with contextlib.closing(chunks):
                for chunk in chunks:
                    if not put(chunk):
                        return
            put(None)
        except BaseException as exc:  # re-raised by the consumer
            put(exc)

    worker = threading.Thread(target=produce, name="cdr-export", daemon=True)
    worker.start()
    try:
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _raw_rows(dbapi: Any, dialect: str, call_ids: list[str]) -> Iterator[Sequence[Any]]:
    """The CSV raw columns (:data:`_CSV_RAW`) of these CDRs, in no particular order."""
    cols = _columns(_CSV_RAW, dialect)
    cur = dbapi.cursor()
    try:
        if dialect == "postgresql":
            cur.execute(f"SELECT {cols} FROM billing_cdrs c WHERE c.call_id = ANY(%s)",
                        (call_ids,))
            yield from cur.fetchall()
            return
        for i in range(0, len(call_ids), _SQLITE_IN_MAX):
            batch = call_ids[i:i + _SQLITE_IN_MAX]
            cur.execute(f"SELECT {cols} FROM billing_cdrs c WHERE c.call_id IN "
                        f"({', '.join('?' * len(batch))})", batch)
            yield from cur.fetchall()
    finally:
        cur.close()


# ---------------------------------------------------------------------- verifying


@dataclass
class LineCheck:
    """What :func:`check_stored_lines` found: lines compared, and the CDRs that differ."""

    checked: int = 0
    differ: list[str] = field(default_factory=list)


def check_stored_lines(s: Session, batch: int = 1000) -> LineCheck:
    """Compare every stored export line of the current version with its columns.

    The export writes the stored line as it is, so an auditor must be able to
    trust that it says what the record's columns say.  Pages through the table
    by call id (the primary key), so memory does not grow with it.
    """
    result = LineCheck()
    cols = _columns(_CSV_RAW, s.get_bind().dialect.name)
    query = text(f"SELECT {cols}, c.export_csv FROM billing_cdrs c "
                 "WHERE c.export_version = :v AND c.export_csv IS NOT NULL "
                 "AND c.call_id > :after ORDER BY c.call_id LIMIT :n")
    after = ""
    while True:
        rows = s.execute(query, {"v": EXPORT_VERSION, "after": after, "n": batch}).all()
        for row in rows:
            result.checked += 1
            if row[-1] != _render(csv_values(row)):
                result.differ.append(str(row[_CALL_ID]))
        if len(rows) < batch:
            return result
        after = rows[-1][_CALL_ID]


def write_export(export: CdrExport, out: Any) -> int:
    """Write every chunk to a binary file object; the number of rows written."""
    for chunk in export:
        out.write(chunk)
    return export.rows
