"""``gateway billing ...`` run as a staff member would: a subprocess with a config file.

The main path runs in subprocesses (``python -m gateway billing ...``); the
error messages are checked in-process through :func:`gateway.cli.main`, which
is the same code without the interpreter start-up.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main


def gateway(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "billing", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=config.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code = main(["billing", *args, "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def write_config(tmp_path: Path, url: str = "") -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n\n'
                      f'[database]\nurl = "{url}"\n')
    return config


def test_staff_commands_on_the_embedded_sqlite_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    database = tmp_path / "data" / "gateway.sqlite3"

    code, _, err = cli(capsys, config, "verify")
    assert code == 1 and "run `gateway billing migrate`" in err
    assert not database.exists()  # verify never creates a database

    r = gateway(config, "migrate")
    assert r.returncode == 0 and "empty -> 0005" in r.stdout, r.stderr
    code, out, _ = cli(capsys, config, "migrate")
    assert code == 0 and "up to date (revision 0005)" in out
    code, out, _ = cli(capsys, config, "open-account", "--owner", "visitor:jane-doe", "--id", "A-1")
    assert code == 0 and "opened account A-1 (visitor jane-doe" in out

    r = gateway(config, "deposit", "--account", "A-1", "--amount", "25.00", "--key", "rcpt-7")
    assert r.returncode == 0, r.stderr
    assert "entry 1: deposited $25.00 to A-1 (key rcpt-7)" in r.stdout
    code, out, _ = cli(capsys, config, "deposit", "--account", "A-1", "--amount", "25.00",
                       "--key", "rcpt-7")
    assert code == 0 and "already posted as entry 1" in out

    code, _, err = cli(capsys, config, "deposit", "--account", "A-1", "--amount", "5000.00")
    assert code == 1
    assert err.strip() == ("gateway billing deposit: deposit amount: at most $1,000.00 per "
                           "deposit, got $5,000.00")
    code, _, err = cli(capsys, config, "deposit", "--account", "A-1", "--amount", "-5")
    assert code == 1 and "must be more than $0.00" in err
    code, _, err = cli(capsys, config, "deposit", "--account", "B-2", "--amount", "5.00")
    assert code == 1 and "'B-2': no such account" in err
    code, _, err = cli(capsys, config, "deposit", "--account", "A-1", "--amount", "five")
    assert code == 2 and "--amount" in err
    code, _, err = cli(capsys, config, "open-account", "--owner", "jane")
    assert code == 2 and "expected KIND:REF" in err

    code, out, _ = cli(capsys, config, "balance", "--account", "A-1")
    assert code == 0 and "balance $25.00, held $0.00, available $25.00" in out

    r = gateway(config, "verify")
    assert r.returncode == 0 and "OK: hash chain intact" in r.stdout, r.stdout + r.stderr
    head = next(line for line in r.stdout.splitlines() if line.startswith("chain head"))
    anchor = f"1:{head.split()[-1]}"

    with sqlite3.connect(database) as conn:  # an insider edits the deposit
        conn.execute("DROP TRIGGER ledger_postings_no_update")
        conn.execute("UPDATE ledger_postings SET amount = 2500000 WHERE amount = 25000000")
        conn.execute("DROP TRIGGER billing_cdrs_no_delete")  # and opens the CDRs to deletion
    r = gateway(config, "verify", "--anchor", anchor)
    assert r.returncode == 1
    assert "entry 1 (deposit): hash mismatch" in r.stdout
    assert "append-only trigger ledger_postings_no_update is missing" in r.stdout
    assert "append-only trigger billing_cdrs_no_delete is missing" in r.stdout
    code, _, err = cli(capsys, config, "verify", "--anchor", "1:abc")
    assert code == 2 and "expected ID:HASH" in err


def test_migrate_and_verify_on_postgresql(databases: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path, databases.url("postgresql"))
    r = gateway(config, "migrate")
    assert r.returncode == 0 and "empty -> 0005" in r.stdout, r.stderr
    r = gateway(config, "verify")
    assert r.returncode == 0 and "entries: 0" in r.stdout and "triggers checked: 11" in r.stdout


def test_an_unreachable_database_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "postgresql://nobody@127.0.0.1:1/none")
    code, _, err = cli(capsys, config, "verify")
    assert code == 1 and err.startswith("gateway billing verify: cannot reach")
    assert "Traceback" not in err
