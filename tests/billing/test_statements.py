"""Monthly statements on SQLite and PostgreSQL: balances from the ledger, one line per
call, the anchor an auditor can verify, CSV and PDF (text extracted and checked)."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import pytest
from billing.billing_scenario import USD, Scenario, build
from pypdf import PdfReader

from gateway.billing.db import Database
from gateway.billing.ledger import verify
from gateway.billing.money import Money
from gateway.billing.statements import (
    STATEMENT_COLUMNS,
    StatementError,
    build_statement,
    parse_month,
    statement_csv,
    statement_pdf,
)
from gateway.cli import main


@pytest.fixture(scope="module")
def scenario(db: Database) -> Scenario:
    return build(db)


def test_may_statement_of_a_family_account(db: Database, scenario: Scenario) -> None:
    st = build_statement(db, "jane", "2026-05")
    assert st.opening == USD("19.24")  # $20.00 deposited, April call $0.76
    kinds = [(li.kind, li.call_id) for li in st.lines]
    assert kinds == [("deposit", None), ("call", "call-may-1"), ("call", "call-may-2"),
                     ("call", "call-may-3"), ("refund", None), ("adjustment", None)]
    may1, may2, may3 = st.lines[1:4]
    assert (may1.charged, may1.credited, may1.amount) == (USD("2.47"), Money(0), USD("-2.47"))
    assert may1.duration_seconds == 750 and may1.other_party == "kiosk-1 to 5551234"
    assert may1.at == scenario.cdrs["call-may-1"].setup_at
    assert (may2.charged, may2.credited, may2.amount) == (USD("0.38"), USD("0.19"),
                                                          USD("-0.19"))
    assert "credited" in may2.description and len(may2.entry_ids) == 2
    assert may3.charged == USD("0.62")  # jane's 65% of $0.95; the state pays the rest
    assert may3.other_party == "kiosk-1"  # she was the callee
    assert st.closing == USD("25.46")
    assert st.closing == scenario.accounts.balance("jane").balance + USD("0.19")  # June call
    running = st.opening
    for li in st.lines:
        running += li.amount
        assert li.balance == running
    assert (st.totals["deposit"], st.totals["refund"], st.totals["adjustment"]) == (
        USD("10.00"), USD("-1.00"), USD("0.50"))
    assert (st.charged, st.credited) == (USD("3.47"), USD("0.19"))
    # The anchor is the chain head when generated: verify accepts it.
    report = verify(db, anchors=[(st.head_entry_id, st.head_hash)])
    assert report.ok and report.anchors_checked == 1


def test_other_months_and_accounts(db: Database, scenario: Scenario) -> None:
    april = build_statement(db, "jane", "2026-04")
    assert (april.opening, april.closing) == (Money(0), USD("19.24"))
    june = build_statement(db, "jane", "2026-06")
    assert june.opening == USD("25.46") and [li.call_id for li in june.lines] == ["call-jun-1"]
    empty = build_statement(db, "jane", "2027-01")
    assert empty.opening == empty.closing and not empty.lines
    state = build_statement(db, "state-doc", "2026-05")  # postpaid: goes below zero
    assert state.closing == USD("-0.33") and state.lines[0].charged == USD("0.33")
    roe = build_statement(db, "roe", "2026-05")
    assert [li.amount for li in roe.lines] == [USD("-0.32"), Money(0)]  # unanswered: $0


def test_csv_statement(db: Database, scenario: Scenario) -> None:
    st = build_statement(db, "jane", "2026-05")
    rows = list(csv.DictReader(io.StringIO(statement_csv(st).decode())))
    assert tuple(rows[0]) == STATEMENT_COLUMNS
    kinds = [r["kind"] for r in rows]
    assert kinds[:2] == ["account", "opening_balance"]
    assert kinds[-7:] == ["closing_balance"] + ["total"] * 5 + ["ledger_head"]
    assert rows[1]["balance_usd"] == "19.24"
    body = [r for r in rows if r["kind"] in ("deposit", "call", "refund", "adjustment")]
    total = Money.parse(rows[1]["balance_usd"])
    for r in body:
        total += Money.parse(r["amount_usd"])
        assert Money.parse(r["balance_usd"]) == total
    closing = next(r for r in rows if r["kind"] == "closing_balance")
    assert Money.parse(closing["balance_usd"]) == total == USD("25.46")
    call = next(r for r in rows if r["call_id"] == "call-may-2")
    assert (call["charged_usd"], call["credited_usd"], call["amount_usd"],
            call["duration_seconds"]) == ("0.38", "0.19", "-0.19", "100")
    calls = next(r for r in rows if r["description"] == "Total calls")
    assert (calls["charged_usd"], calls["credited_usd"]) == ("3.47", "0.19")
    head = rows[-1]
    assert head["entry_ids"] == str(st.head_entry_id)
    assert f"--anchor {st.head_entry_id}:{st.head_hash}" in head["description"]


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_pdf_statement_reads_right(db: Database, scenario: Scenario, tmp_path: Path) -> None:
    st = build_statement(db, "jane", "2026-05")
    data = statement_pdf(st)
    assert data.startswith(b"%PDF")
    text = pdf_text(data)
    for expected in ("Account statement: May 2026", "Jane Doe", "Opening balance", "$19.24",
                     "Deposit: card payment", "$10.00", "Video call, 12:30", "-$2.47",
                     "kiosk-1 to 5551234", "$0.19", "Refund: duplicate payment", "-$1.00",
                     "Adjustment: goodwill", "Totals", "$3.47", "Closing balance", "$25.46",
                     st.head_hash[:40], f"entry {st.head_entry_id}"):
        assert expected in text, expected
    if shutil.which("pdftotext"):  # poppler, when installed, must read it the same way
        pdf = tmp_path / "st.pdf"
        pdf.write_bytes(data)
        out = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                             text=True, check=True).stdout
        assert "Closing balance" in out and "$25.46" in out


def test_bad_month_and_unknown_account(db: Database, scenario: Scenario) -> None:
    for bad in ("2026-13", "2026-5", "May 2026", "1969-12", ""):
        with pytest.raises(StatementError) as info:
            parse_month(bad)
        assert info.value.field == "month"
    with pytest.raises(StatementError) as info:
        build_statement(db, "nobody", "2026-05")
    assert info.value.field == "account" and info.value.not_found
    assert parse_month("2026-12")[1].year == 2027


def test_statement_cli(db: Database, scenario: Scenario, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    url = db.engine.url.render_as_string(hide_password=False)
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n\n'
                      f'[database]\nurl = "{url}"\n')

    def cli(*args: str) -> tuple[int, str]:
        code = main(["billing", "statement", "--config", str(config), *args])
        return code, capsys.readouterr().err

    out = tmp_path / "jane.pdf"
    code, err = cli("--account", "jane", "--month", "2026-05", "--format", "pdf", "-o", str(out))
    assert code == 0, err
    assert "closing $25.46" in err and "Closing balance" in pdf_text(out.read_bytes())
    code, _ = cli("--account", "jane", "--month", "2026-05")
    assert code == 0
    for args, exit_code, message in [
        (("--account", "nobody", "--month", "2026-05"), 1, "--account: no account 'nobody'"),
        (("--account", "jane", "--month", "2026-13"), 2, "--month: expected a month"),
        (("--account", "jane", "--month", "2026-05", "--format", "doc"), 2,
         "--format: expected csv or pdf"),
    ]:
        target = tmp_path / "bad.out"
        code, err = cli(*args, "-o", str(target))
        assert code == exit_code and message in err and "nothing was written" in err, err
        assert not target.exists()
