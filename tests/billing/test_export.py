"""CDR exports (CSV and JSON Lines) on SQLite and PostgreSQL: every field re-read and
checked against the CDRs the ledger wrote; the export lines stored with each CDR and
the rendering of rows without one; pagination, filters, bad input, the CLI; migration
0005 and the insert-only triggers."""

from __future__ import annotations

import csv
import io
import json
import sys
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from billing.billing_scenario import Scenario, build
from billing.conftest import Databases
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import DBAPIError

from gateway.billing.cdr import Cdr
from gateway.billing.db import Database, current_revision, open_database, upgrade
from gateway.billing.export import (
    COLUMNS,
    CSV_HEADER,
    EXPORT_VERSION,
    JSON_KEYS,
    CdrExport,
    ExportError,
    check_facility,
    csv_line,
    dollars,
    export_range,
)
from gateway.billing.ledger import verify
from gateway.billing.models import CallRecord, CallStart
from gateway.billing.money import Money
from gateway.cli import main

MAY = export_range("2026-05-01", "2026-06-01")
EVERYTHING = export_range("2020-01-01", "2030-01-01")
STATE_MAY = export_range("2026-05-01", "2026-06-01", "state-prison")


@pytest.fixture(scope="module")
def scenario(db: Database) -> Scenario:
    return build(db)


def run(export: CdrExport) -> bytes:
    return b"".join(export)


def in_may(sc: Scenario, facility: str | None = None) -> list[Cdr]:
    cdrs = [c for c in sc.cdrs.values() if MAY.start <= c.end_at < MAY.end
            and (facility is None or c.facility_id == facility)]
    return sorted(cdrs, key=lambda c: (c.end_at, c.call_id))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def check_common(row: dict[str, Any], cdr: Cdr) -> None:
    """The fields CSV and JSON share, checked against the CDR (values as text or typed)."""
    def text(v: Any) -> str:
        return "" if v is None else str(v)

    assert row["call_id"] == cdr.call_id
    assert text(row["visit_id"]) == text(cdr.visit_id)
    for name in ("facility_id", "node_id", "service", "caller", "callee", "increment",
                 "billed_unit", "tier", "cap_period", "credit_reason", "disconnect_cause",
                 "ended_by", "explanation"):
        assert row[name] == getattr(cdr, name), name
    assert utc(row["setup_at"]) == cdr.setup_at
    assert utc(row["end_at"]) == cdr.end_at
    assert utc(row["created_at"]) == cdr.created_at
    if cdr.answer_at is None:
        assert not row["answer_at"]
    else:
        assert utc(row["answer_at"]) == cdr.answer_at
    for name in ("setup_at", "end_at", "created_at"):
        assert row[name].endswith("Z") and len(row[name]) == 27
    for name in ("media_seconds", "metered_seconds", "uncharged_seconds",
                 "free_seconds_used", "billed_units", "settle_entry_id"):
        assert int(row[name]) == getattr(cdr, name), name
    assert text(row["sip_status"]) == text(cdr.sip_status)
    assert text(row["low_balance_warning_seconds"]) == text(cdr.low_balance_warning)
    # Money: exact decimal dollars, never a float, at least two decimals.
    for name, money in (("rate_per_minute_usd", cdr.rate_per_minute),
                        ("cap_per_minute_usd", cdr.cap_per_minute),
                        ("additive_per_minute_usd", cdr.additive_per_minute),
                        ("total_usd", cdr.total), ("credit_total_usd", cdr.credit_total),
                        ("net_usd", cdr.net)):
        assert isinstance(row[name], str)
        assert Money.parse(row[name]) == money, name
        assert row[name] == money.format().replace("$", "").replace(",", ""), name


def test_csv_export_has_every_cdr_field(db: Database, scenario: Scenario) -> None:
    data = run(CdrExport(db, MAY, "csv"))
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert data.decode().splitlines()[0] == ",".join(CSV_HEADER)
    expected = in_may(scenario)
    assert [r["call_id"] for r in rows] == [c.call_id for c in expected]
    assert len(rows) == 5  # April and June calls left out; both facilities in
    for row, cdr in zip(rows, expected, strict=True):
        check_common(row, cdr)
        assert row["recovered"] == ("true" if cdr.recovered else "false")
        assert row["payer_kinds"].split(";") == [k for k, _, _ in cdr.payers]
        accounts = row["payer_accounts"].split(";")
        assert accounts == [a for _, a, _ in cdr.payers]
        assert row["payer_shares_percent"].split(";") == [s for _, _, s in cdr.payers]
        assert [Money.parse(x) for x in row["payer_charged_usd"].split(";")] == [
            cdr.amounts.get(a, Money(0)) for a in accounts]
        assert [Money.parse(x) for x in row["payer_credited_usd"].split(";")] == [
            cdr.credits.get(a, Money(0)) for a in accounts]
    shared = next(r for r in rows if r["call_id"] == "call-may-3")
    assert (shared["payer_accounts"], shared["payer_charged_usd"]) == ("jane;state-doc",
                                                                        "0.62;0.33")
    dropped = next(r for r in rows if r["call_id"] == "call-may-2")
    assert (dropped["total_usd"], dropped["credit_total_usd"], dropped["net_usd"]) == (
        "0.38", "0.19", "0.19")


def test_json_lines_export_has_every_cdr_field(db: Database, scenario: Scenario) -> None:
    lines = run(CdrExport(db, MAY, "json")).decode().splitlines()
    expected = in_may(scenario)
    assert len(lines) == len(expected)
    for line, cdr in zip(lines, expected, strict=True):
        obj = json.loads(line)
        assert tuple(obj) == JSON_KEYS
        check_common(obj, cdr)
        for name in ("media_seconds", "free_seconds_used", "billed_units", "settle_entry_id"):
            assert type(obj[name]) is int
        assert obj["recovered"] is cdr.recovered
        assert obj["payers"] == [
            {"kind": k, "account": a, "share_percent": s,
             "charged_usd": str(cdr.amounts.get(a, Money(0))).lstrip("$"),
             "credited_usd": str(cdr.credits.get(a, Money(0))).lstrip("$")}
            for k, a, s in cdr.payers]
        assert [tuple(li.items()) for li in obj["lines"]] == [
            tuple(li.items()) for li in cdr.lines]
        assert obj["quality"] == cdr.quality


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_small_pages_give_the_same_export(db: Database, scenario: Scenario, fmt: str) -> None:
    whole = run(CdrExport(db, MAY, fmt))
    for page_rows in (1, 2, 5, 6, 7):
        export = CdrExport(db, MAY, fmt, page_rows=page_rows)
        assert run(export) == whole, page_rows
        assert export.rows == 5


def export_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "cdr-export"]


def test_an_export_stopped_or_failing_midway_ends_its_reader_and_transaction(
    db: Database, scenario: Scenario, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pages are read ahead by a thread; closing the export (a client gone) stops it."""
    export = cast(Generator[bytes, None, None], iter(CdrExport(db, EVERYTHING, page_rows=1)))
    assert next(export).startswith(b"call_id,")
    assert next(export).startswith(b"call-apr-1,")
    assert export_threads()
    export.close()
    assert not export_threads() and db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]

    def failing(self: CdrExport, dbapi: Any) -> Iterator[bytes]:
        yield b"one page\n"
        raise RuntimeError("the database went away")

    monkeypatch.setattr(CdrExport, "_csv", failing)
    chunks = []
    with pytest.raises(RuntimeError, match="went away"):
        for chunk in CdrExport(db, EVERYTHING, "csv"):
            chunks.append(chunk)
    assert chunks[1:] == [b"one page\n"]  # what came before the failure, then the error
    assert not export_threads() and db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def records(db: Database) -> list[CallRecord]:
    with db.read() as s:
        rows = list(s.scalars(select(CallRecord).order_by(CallRecord.end_at,
                                                          CallRecord.call_id)))
        s.expunge_all()  # loaded as they are, not expired by the read's rollback
        return rows


def test_each_cdr_stores_the_line_its_columns_render(db: Database, scenario: Scenario) -> None:
    """Written at settlement, read back from the database: the same bytes either way."""
    stored = records(db)
    assert len(stored) == len(scenario.cdrs)
    for r in stored:
        assert r.export_version == EXPORT_VERSION
        assert r.export_csv is not None and not r.export_csv.endswith("\n")
        assert r.export_csv == csv_line(r), r.call_id
    data = run(CdrExport(db, EVERYTHING, "csv", page_rows=3))
    assert data.decode() == ",".join(CSV_HEADER) + "\n" + "".join(
        f"{r.export_csv}\n" for r in stored)
    parsed = list(csv.reader(io.StringIO(data.decode())))
    assert len(parsed) == len(scenario.cdrs) + 1
    assert all(len(row) == len(COLUMNS) for row in parsed)
    assert b'"' in data  # multi-line explanations and commas are quoted


@contextmanager
def cdr_triggers_off(db: Database) -> Iterator[Connection]:
    """A transaction in which billing_cdrs may be updated (an insider, or a test)."""
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("ALTER TABLE billing_cdrs DISABLE TRIGGER USER"))
            yield conn
            conn.execute(text("ALTER TABLE billing_cdrs ENABLE TRIGGER USER"))
        else:
            saved = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = "
                                      "'trigger' AND tbl_name = 'billing_cdrs'")).all()
            for name, _ in saved:
                conn.execute(text(f"DROP TRIGGER {name}"))
            yield conn
            for _, sql in saved:
                conn.execute(text(sql))


def test_rows_without_a_current_line_export_the_same(fresh_db: Database) -> None:
    """Rows from before 0005 (NULL) or of an older version are rendered from their columns."""
    build(fresh_db)
    before = {n: run(CdrExport(fresh_db, EVERYTHING, "csv", page_rows=n)) for n in (1, 2, 3)}
    whole = run(CdrExport(fresh_db, EVERYTHING, "csv"))
    assert all(data == whole for data in before.values())
    state = run(CdrExport(fresh_db, STATE_MAY, "csv"))
    with cdr_triggers_off(fresh_db) as conn:
        conn.execute(text("UPDATE billing_cdrs SET export_csv = NULL, export_version = NULL "
                          "WHERE call_id IN ('call-apr-1', 'call-may-2', 'call-may-3')"))
        conn.execute(text("UPDATE billing_cdrs SET export_csv = 'stale,format', "
                          "export_version = :v WHERE call_id IN ('call-may-4', 'call-jun-1')"),
                     {"v": EXPORT_VERSION - 1})
    for page_rows in (1, 2, 3, 4, 10_000):
        export = CdrExport(fresh_db, EVERYTHING, "csv", page_rows=page_rows)
        assert run(export) == whole, page_rows
        assert export.rows == 7
    assert run(CdrExport(fresh_db, STATE_MAY, "csv", page_rows=1)) == state
    with cdr_triggers_off(fresh_db) as conn:
        conn.execute(text("UPDATE billing_cdrs SET export_csv = NULL"))
    assert run(CdrExport(fresh_db, EVERYTHING, "csv", page_rows=4)) == whole
    report = verify(fresh_db)  # lines that are not there, or not current, are not checked
    assert report.ok and report.cdr_lines_checked == 0, report.format()


def test_facility_filter_and_time_bounds(db: Database, scenario: Scenario) -> None:
    rows = list(csv.DictReader(io.StringIO(run(CdrExport(
        db, export_range("2026-05-01", "2026-06-01", "state-prison"), "csv")).decode())))
    assert [r["call_id"] for r in rows] == ["call-may-4"]
    # to is exclusive, from inclusive, at the microsecond; times with offsets are UTC.
    end = scenario.cdrs["call-may-1"].end_at
    iso = end.isoformat()
    assert run(CdrExport(db, export_range(iso, iso), "json")) == b""
    got = run(CdrExport(db, export_range(iso, end.replace(microsecond=1).isoformat()),
                        "json"))
    assert [json.loads(x)["call_id"] for x in got.splitlines()] == ["call-may-1"]
    shifted = export_range("2026-05-05T14:12:32-04:00", "2026-05-05T20:30:00+02:00")
    assert shifted.start == end and shifted.end.hour == 18 and shifted.end.minute == 30
    empty = run(CdrExport(db, export_range("2001-01-01", "2001-02-01"), "csv"))
    assert empty == (",".join(CSV_HEADER) + "\n").encode()


def test_bad_parameters_name_the_field(db: Database, scenario: Scenario) -> None:
    cases = [(("May 1", "2026-06-01"), "from"), (("2026-05-01", "2026-13-01"), "to"),
             (("2026-06-01", "2026-05-01"), "to"), (("", "2026-05-01"), "from")]
    for (start, end), field in cases:
        with pytest.raises(ExportError) as info:
            export_range(start, end)
        assert info.value.field == field
    with pytest.raises(ExportError, match="facility"):
        export_range("2026-05-01", "2026-06-01", "no such/facility")
    with pytest.raises(ExportError) as info:
        check_facility(db, "nowhere", ["county-jail"])
    assert info.value.field == "facility" and "not configured" in info.value.message
    check_facility(db, "state-prison", [])  # has CDRs, no longer configured: fine
    check_facility(db, "new-jail", ["new-jail"])  # configured, no CDRs yet: fine
    with pytest.raises(ExportError):
        CdrExport(db, MAY, "xml")


def test_dollars_are_exact() -> None:
    cases = {0: "0.00", 190_000: "0.19", 2_280_000: "2.28", 65_000: "0.065", 1: "0.000001",
             -190_000: "-0.19", -1: "-0.000001", 123_456_789_012: "123456.789012",
             100_000_000: "100.00", 10_000: "0.01", 5_000: "0.005"}
    for micros, value in cases.items():
        assert dollars(micros) == value
        assert Money.parse(value) == Money(micros)


def test_every_column_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "billing.md").read_text()
    for col in COLUMNS:
        assert f"| `{col.name}` |" in doc, col.name
    for key in JSON_KEYS:
        assert f"`{key}`" in doc, key


def cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str]:
    code = main(["billing", "export", "--config", str(config), *args])
    return code, capsys.readouterr().err


def test_cli_export_and_its_errors(db: Database, scenario: Scenario, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    url = db.engine.url.render_as_string(hide_password=False)
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n\n'
                      f'[database]\nurl = "{url}"\n')
    out = tmp_path / "may.csv"
    code, err = cli(capsys, config, "--from", "2026-05-01", "--to", "2026-06-01", "-o",
                    str(out))
    assert code == 0, err
    assert "exported 5 call records" in err
    assert out.read_bytes() == run(CdrExport(db, MAY, "csv"))
    assert not list(tmp_path.glob(".may.csv.*"))  # no temporary file left behind

    bad = [
        (["--from", "2026-5-1", "--to", "2026-06-01"], "--from: expected a date"),
        (["--from", "2026-06-01", "--to", "2026-05-01"], "--to: 2026-05-01 is before from"),
        (["--from", "2026-05-01", "--to", "2026-06-01", "--facility", "atlantis"],
         "--facility: no facility 'atlantis'"),
        (["--from", "2026-05-01", "--to", "2026-06-01", "--format", "xml"],
         "--format: expected csv or json"),
        (["--from", "2026-05-01", "--to", "2026-06-01", "-o", str(tmp_path / "no" / "x")],
         "--output: no directory"),
    ]
    for args, message in bad:
        target = tmp_path / "bad.csv"
        code, err = cli(capsys, config, *args, "-o", str(target)) if "-o" not in args else \
            cli(capsys, config, *args)
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err, err
        assert not target.exists()

    code = main(["billing", "export", "--config", str(config), "--from", "2026-05-01",
                 "--to", "2026-06-01", "--format", "json"])
    captured = capsys.readouterr()
    assert code == 0
    assert len(captured.out.splitlines()) == 5  # stdout: JSON Lines
    assert sys.stdout is not None


OLD_CALL: dict[str, Any] = {
    "call_id": "call-before-0005", "node_id": "node-1", "plan": "test",
    "facility_id": "county-jail", "service": "video", "caller": "kiosk-1",
    "callee": "5551234", "setup_at": datetime(2026, 5, 2, 15, 0, tzinfo=UTC),
    "increment": "per_minute_round_up", "increment_seconds": 60,
    "payers": [["visitor", "jane", "65"], ["agency", "state-doc", "35"]],
    "holds": [], "created_at": datetime(2026, 5, 2, 15, 0, tzinfo=UTC),
    "free_account": "jane", "free_seconds": 120,
}
OLD_CDR: dict[str, Any] = {
    "call_id": "call-before-0005", "visit_id": None, "node_id": "node-1",
    "facility_id": "county-jail", "tier": "jail, ADP 350 to 999",
    "cap_period": "FCC 24-75 interim", "service": "video", "caller": "kiosk-1",
    "callee": "5551234", "payers": OLD_CALL["payers"],
    "setup_at": datetime(2026, 5, 2, 15, 0, tzinfo=UTC), "answer_at": None,
    "end_at": datetime(2026, 5, 2, 15, 12, 30, 250_000, tzinfo=UTC),
    "media_seconds": 740, "metered_seconds": 745, "uncharged_seconds": 5,
    "free_seconds_used": 120, "increment": "per_minute_round_up", "billed_units": 11,
    "billed_unit": "minute", "rate_per_minute": 190_000, "cap_per_minute": 210_000,
    "additive_per_minute": 20_000, "total": 2_090_000,
    "amounts": {"jane": 1_358_500, "state-doc": 731_500}, "credit_total": 0,
    "credits": {}, "credit_reason": "", "lines": [],
    "explanation": 'First 2 minutes free today, "then" 11 minutes\nat $0.19/min = $2.09',
    "disconnect_cause": "487 Request Terminated", "ended_by": "callee", "sip_status": 487,
    "low_balance_warning": 120, "quality": None, "recovered": True, "settle_entry_id": 9,
    "created_at": datetime(2026, 5, 2, 15, 12, 30, 255_001, tzinfo=UTC),
}


def test_0005_keeps_the_triggers_and_older_rows_export_from_their_columns(
    databases: Databases, backend: str,
) -> None:
    url = databases.url(backend)
    upgrade(url, "0004")
    db = open_database(url)
    databases.opened.append(db)
    with db.engine.begin() as conn:  # a CDR written before 0005, without an export line
        conn.execute(insert(CallStart), [OLD_CALL])
        conn.execute(insert(CallRecord), [OLD_CDR])
    upgrade(db)
    assert current_revision(db) == "0005"
    for statement in ("UPDATE billing_cdrs SET export_csv = 'x'",
                      "UPDATE billing_cdrs SET total = 0", "DELETE FROM billing_cdrs"):
        with pytest.raises(DBAPIError, match="on billing_cdrs is not allowed"), \
                db.engine.begin() as conn:
            conn.execute(text(statement))
    (record,) = records(db)
    assert record.export_csv is None and record.export_version is None
    line = csv_line(OLD_CDR)
    assert csv_line(record) == line
    assert ',120,' in line and line.endswith('"First 2 minutes free today, ""then"" 11 '
                                             'minutes\nat $0.19/min = $2.09"')
    data = run(CdrExport(db, MAY, "csv"))
    assert data.decode() == ",".join(CSV_HEADER) + "\n" + line + "\n"
    (row,) = csv.DictReader(io.StringIO(data.decode()))
    assert (row["answer_at"], row["setup_at"], row["payer_charged_usd"]) == (
        "", "2026-05-02T15:00:00.000000Z", "1.3585;0.7315")
    obj = json.loads(run(CdrExport(db, MAY, "json")))
    assert obj["free_seconds_used"] == 120 and obj["recovered"] is True
    report = verify(db)
    assert report.ok and report.cdr_lines_checked == 0, report.format()
