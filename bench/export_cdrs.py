#!/usr/bin/env python3
"""CDR export benchmark: a million synthetic CDRs, then ``gateway billing export``.

1. Creates a scratch billing database (a SQLite file in a temporary directory, or a
   PostgreSQL database ``bench_export_<random>`` on 127.0.0.1:5432) and migrates it.
2. Inserts ``--rows`` synthetic call detail records (and their ``billing_calls`` rows),
   spread over 31 days of May 2026 and 5 facilities: ``COPY`` on PostgreSQL,
   ``executemany`` in one transaction on SQLite.  Each carries its export line
   (``export_csv``), rendered by :func:`gateway.billing.export.csv_line` as settlement
   does; ``--no-lines`` leaves it NULL, as on rows written before revision 0005.
3. Runs ``python -m gateway billing export --from 2026-05-01 --to 2026-06-01 --format
   csv --output FILE`` as a child process, ``--repeat`` times, then ``--format json``
   ``--json-repeat`` times, and reports for each run the wall time, rows per second
   and the child's peak resident memory (its own ``VmHWM``, which it prints as it
   exits), then checks the file has one line per CDR (plus the CSV header).
4. Drops the scratch database (PostgreSQL) or removes the directory (SQLite).

    .venv/bin/python bench/export_cdrs.py --backend sqlite
    .venv/bin/python bench/export_cdrs.py --backend postgresql --rows 1000000
    .venv/bin/python bench/export_cdrs.py --backend both --json results.json

The database work of the insert is timed too (rows per second) but is not the point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MONTH_START = datetime(2026, 5, 1, tzinfo=UTC)
FACILITIES = ("county-jail", "north-prison", "south-prison", "city-jail", "work-release")
RATES = {"video": 190_000, "audio": 120_000}  # µ$ per minute
CDR_COLUMNS = (
    "call_id", "visit_id", "node_id", "facility_id", "tier", "cap_period", "service",
    "caller", "callee", "payers", "setup_at", "answer_at", "end_at", "media_seconds",
    "metered_seconds", "uncharged_seconds", "free_seconds_used", "increment", "billed_units",
    "billed_unit", "rate_per_minute", "cap_per_minute", "additive_per_minute", "total",
    "amounts", "credit_total", "credits", "credit_reason", "lines", "explanation",
    "disconnect_cause", "ended_by", "sip_status", "low_balance_warning", "quality",
    "recovered", "settle_entry_id", "created_at", "export_csv", "export_version",
)
CALL_COLUMNS = (
    "call_id", "node_id", "plan", "facility_id", "service", "caller", "callee", "setup_at",
    "increment", "increment_seconds", "payers", "holds", "created_at",
)


def _money(micros: int) -> str:
    whole, frac = divmod(micros, 1_000_000)
    return f"${whole}.{f'{frac:06d}'.rstrip('0').ljust(2, '0')}"


def synthetic(n: int, seed: int = 7) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``n`` (billing_calls row, billing_cdrs row) pairs as column dicts, in end order."""
    rnd = random.Random(seed)
    span = 31 * 86400 - 3600  # every call ends within May (the longest lasts ~31 min)
    for i in range(n):
        call_id = f"call-{i:08d}-{rnd.getrandbits(32):08x}"
        facility = FACILITIES[i % len(FACILITIES)]
        service = "video" if rnd.random() < 0.8 else "audio"
        rate = RATES[service]
        setup = MONTH_START + timedelta(seconds=span * i / n, microseconds=rnd.randrange(10**6))
        answered = rnd.random() > 0.05
        media = rnd.randrange(1, 1800) if answered else 0
        free = min(media, 120) if rnd.random() < 0.2 else 0  # the daily free minutes
        minutes = -(-(media - free) // 60)
        total = minutes * rate
        end = setup + timedelta(seconds=media + rnd.randrange(1, 20))
        family = f"acct-{rnd.randrange(50_000):05d}"
        if rnd.random() < 0.1:
            payers = [["family", family, "65"], ["agency", "state-doc", "35"]]
            fam = total * 65 // 100 // 10_000 * 10_000
            amounts = {family: fam, "state-doc": total - fam}
        else:
            payers = [["family", family, "100"]]
            amounts = {family: total}
        dropped = answered and rnd.random() < 0.03
        credit = min(rate, total) if dropped else 0
        credits = {family: credit} if credit else {}
        text = f"{minutes} minute{'s' if minutes != 1 else ''} at {_money(rate)}/min = " \
               f"{_money(total)}"
        lines = [{"kind": "usage", "label": "usage", "amount": _money(total),
                  "explanation": text}]
        kiosk = f"kiosk-{rnd.randrange(200)}"
        callee = f"555{rnd.randrange(10**7):07d}"
        created = end + timedelta(milliseconds=5)
        call = {
            "call_id": call_id, "node_id": "node-1", "plan": "bench", "facility_id": facility,
            "service": service, "caller": kiosk, "callee": callee, "setup_at": setup,
            "increment": "per_minute_round_up", "increment_seconds": 60,
            "payers": json.dumps(payers), "holds": json.dumps([[family, f"hold_{i}"]]),
            "created_at": setup,
        }
        cdr = {
            "call_id": call_id, "visit_id": None, "node_id": "node-1",
            "facility_id": facility, "tier": "jail, ADP 350 to 999",
            "cap_period": "FCC 24-75 interim", "service": service, "caller": kiosk,
            "callee": callee, "payers": json.dumps(payers), "setup_at": setup,
            "answer_at": setup + timedelta(seconds=3) if answered else None, "end_at": end,
            "media_seconds": media, "metered_seconds": media, "uncharged_seconds": 0,
            "free_seconds_used": free, "increment": "per_minute_round_up", "billed_units": minutes,
            "billed_unit": "minute", "rate_per_minute": rate, "cap_per_minute": rate,
            "additive_per_minute": 0, "total": total, "amounts": json.dumps(amounts),
            "credit_total": credit, "credits": json.dumps(credits),
            "credit_reason": "the call dropped (media timeout)" if credit else "",
            "lines": json.dumps(lines), "explanation": text,
            "disconnect_cause": "media timeout" if dropped else "BYE",
            "ended_by": "gateway" if dropped else rnd.choice(("caller", "callee")),
            "sip_status": None, "low_balance_warning": None, "quality": None,
            "recovered": False, "settle_entry_id": i + 1, "created_at": created,
            "export_csv": None, "export_version": None,
        }
        yield call, cdr


# -- scratch databases ----------------------------------------------------------------


def create_database(backend: str, workdir: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'bench.sqlite3'}"
    import psycopg

    name = f"bench_export_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_database(url: str) -> None:
    if not url.startswith("postgresql"):
        return
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_line(cdr: dict[str, Any]) -> dict[str, Any]:
    """The CDR with its export line, as settlement stores it (times still datetimes)."""
    from gateway.billing.export import EXPORT_VERSION, csv_line

    cdr["export_csv"] = csv_line(cdr)
    cdr["export_version"] = EXPORT_VERSION
    return cdr


def insert(url: str, n: int, lines: bool = True) -> float:
    """Insert ``n`` synthetic CDRs; returns the seconds it took."""
    from gateway.billing.db import upgrade

    upgrade(url)
    t0 = time.perf_counter()
    if url.startswith("sqlite"):
        _insert_sqlite(url.removeprefix("sqlite:///"), n, lines)
    else:
        _insert_postgresql(url, n, lines)
    return time.perf_counter() - t0


def _sqlite_time(value: datetime | None) -> str | None:
    # What SQLAlchemy's SQLite DateTime stores (naive UTC, microseconds always).
    return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _insert_sqlite(path: str, n: int, lines: bool) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    call_sql = (f"INSERT INTO billing_calls ({', '.join(CALL_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(CALL_COLUMNS))})")
    cdr_sql = (f"INSERT INTO billing_cdrs ({', '.join(CDR_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(CDR_COLUMNS))})")
    times = ("setup_at", "answer_at", "end_at", "created_at")
    batch_calls: list[tuple[Any, ...]] = []
    batch_cdrs: list[tuple[Any, ...]] = []
    for call, cdr in synthetic(n):
        if lines:
            with_line(cdr)
        for key in times:
            if key in call:
                call[key] = _sqlite_time(call[key])
            cdr[key] = _sqlite_time(cdr[key])
        batch_calls.append(tuple(call[c] for c in CALL_COLUMNS))
        batch_cdrs.append(tuple(cdr[c] for c in CDR_COLUMNS))
        if len(batch_cdrs) >= 20_000:
            conn.executemany(call_sql, batch_calls)
            conn.executemany(cdr_sql, batch_cdrs)
            batch_calls.clear()
            batch_cdrs.clear()
    conn.executemany(call_sql, batch_calls)
    conn.executemany(cdr_sql, batch_cdrs)
    conn.execute("COMMIT")
    conn.close()


def _insert_postgresql(url: str, n: int, lines: bool) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("SET synchronous_commit = off")
        with conn.cursor() as cur:
            with cur.copy(f"COPY billing_calls ({', '.join(CALL_COLUMNS)}) FROM STDIN") as cp:
                for call, _ in synthetic(n):
                    cp.write_row(tuple(call[c] for c in CALL_COLUMNS))
            with cur.copy(f"COPY billing_cdrs ({', '.join(CDR_COLUMNS)}) FROM STDIN") as cp:
                for _, cdr in synthetic(n):
                    if lines:
                        with_line(cdr)
                    cp.write_row(tuple(cdr[c] for c in CDR_COLUMNS))
        conn.commit()
        # As autovacuum does to an insert-only table: without it the first export
        # after this bulk load also sets every row's hint bits (writes the table).
        conn.autocommit = True
        conn.execute("VACUUM (ANALYZE) billing_cdrs")


# -- the export ---------------------------------------------------------------------


# ``python -m gateway ARGS``, then the process's own peak RSS (VmHWM) on stderr.  Not
# ru_maxrss from wait4: Linux carries the parent's peak over into the child at exec,
# so that would report this script's memory (the million rows it inserted).
CHILD = """
import runpy, sys
sys.argv[0] = "gateway"
try:
    runpy.run_module("gateway", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:"))
    sys.stderr.write("bench " + peak)
"""


def run_export(url: str, workdir: Path, fmt: str = "csv") -> dict[str, Any]:
    """One ``gateway billing export`` child process: seconds, rows, peak RSS."""
    config = workdir / "gateway.toml"
    config.write_text(f'[gateway]\ndata_dir = "{workdir / "data"}"\n\n'
                      f'[database]\nurl = "{url}"\n')
    out = workdir / f"export.{fmt}"
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-c", CHILD, "billing", "export", "--config", str(config),
            "--from", "2026-05-01", "--to", "2026-06-01", "--format", fmt,
            "--output", str(out)]
    err = workdir / "export.stderr"
    t0 = time.perf_counter()
    with err.open("wb") as errf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=errf, cwd=workdir)
        code = proc.wait()
    seconds = time.perf_counter() - t0
    stderr = err.read_text()
    if code != 0:
        raise SystemExit(f"export failed ({code}): {stderr}")
    stderr, _, peak = stderr.rpartition("bench VmHWM:")  # peak: e.g. " 98304 kB"
    with out.open("rb") as f:
        lines = sum(1 for _ in f)
    rows = lines - 1 if fmt == "csv" else lines
    return {
        "format": fmt, "seconds": round(seconds, 3), "rows": rows,
        "rows_per_second": round(rows / seconds),
        "peak_rss_mib": round(int(peak.split()[0]) / 1024, 1),
        "bytes": out.stat().st_size, "stderr": stderr.strip(),
    }


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}")


def bench(backend: str, rows: int, repeats: dict[str, int], lines: bool) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-export-{backend}-"))
    url = create_database(backend, workdir)
    try:
        seconds = insert(url, rows, lines)
        print(f"{backend}: inserted {rows} CDRs {'with' if lines else 'without'} export "
              f"lines in {seconds:.1f} s ({rows / seconds:,.0f} rows/s)", flush=True)
        runs = []
        for fmt, repeat in repeats.items():
            for _ in range(repeat):
                r = run_export(url, workdir, fmt)
                if r["rows"] != rows:
                    raise SystemExit(f"exported {r['rows']} rows, expected {rows}")
                print(f"{backend}: export {fmt}: {r['rows']} rows in {r['seconds']} s = "
                      f"{r['rows_per_second']:,} rows/s, peak RSS {r['peak_rss_mib']} MiB, "
                      f"{r['bytes'] / 2**20:.0f} MiB written", flush=True)
                runs.append(r)
        return {"backend": backend, "rows": rows, "export_lines": lines,
                "insert_seconds": round(seconds, 1), "runs": runs}
    finally:
        drop_database(url)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="CSV exports (default 3)")
    ap.add_argument("--json-repeat", type=int, default=1,
                    help="JSON Lines exports after the CSV ones (default 1)")
    ap.add_argument("--no-lines", action="store_true",
                    help="insert CDRs without export lines (as written before 0005)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    args = ap.parse_args()
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    repeats = {"csv": args.repeat, "json": args.json_repeat}
    results = {"machine": machine(), "command": " ".join(sys.argv),
               "results": [bench(b, args.rows, repeats, not args.no_lines) for b in backends]}
    print(f"machine: {results['machine']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
