"""CDR exports (CSV and JSON Lines) on SQLite and PostgreSQL: every field re-read and
checked against the CDRs the ledger wrote; pagination, filters, bad input, the CLI."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from billing.billing_scenario import Scenario, build

from gateway.billing.cdr import Cdr
from gateway.billing.db import Database
from gateway.billing.export import (
    COLUMNS,
    CSV_HEADER,
    JSON_KEYS,
    CdrExport,
    ExportError,
    _pg_dollars,
    check_facility,
    dollars,
    export_range,
)
from gateway.billing.money import Money
from gateway.cli import main

MAY = export_range("2026-05-01", "2026-06-01")


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
    for name in ("media_seconds", "metered_seconds", "uncharged_seconds", "billed_units",
                 "settle_entry_id"):
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
        for name in ("media_seconds", "billed_units", "settle_entry_id"):
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


def test_postgresql_copy_and_python_formatting_agree(db: Database, scenario: Scenario) -> None:
    """On PostgreSQL the CSV is written by the server; it must equal the Python writer's."""
    everything = export_range("2020-01-01", "2030-01-01")
    server = run(CdrExport(db, everything, "csv", page_rows=3))
    python = run(CdrExport(db, everything, "csv", server_csv=False))
    assert server == python
    assert len(list(csv.reader(io.StringIO(server.decode())))) == len(scenario.cdrs) + 1
    assert b'"' in server  # multi-line explanations and commas are quoted alike


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


def test_dollars_are_exact_in_python_and_in_sql(db: Database) -> None:
    cases = {0: "0.00", 190_000: "0.19", 2_280_000: "2.28", 65_000: "0.065", 1: "0.000001",
             -190_000: "-0.19", -1: "-0.000001", 123_456_789_012: "123456.789012",
             100_000_000: "100.00", 10_000: "0.01", 5_000: "0.005"}
    for micros, text in cases.items():
        assert dollars(micros) == text
        assert Money.parse(text) == Money(micros)
    if db.dialect != "postgresql":
        return
    values = ", ".join(f"({m})" for m in cases)
    with db.read() as s:
        got = s.connection().exec_driver_sql(
            f"SELECT v, {_pg_dollars('v')} FROM (VALUES {values}) AS t(v)").all()
    assert {int(v): str(d) for v, d in got} == cases


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
