"""Billing in a real gateway process: sipp calls through a trunk, SIGKILL, restart, low balance.

The gateway bills an extremely small jail's video rate ($0.44/min, the FCC cap) per
second, debiting every 5 s of media with a 1 s heartbeat, so that a few seconds of
calling give amounts worth checking.  Accounts and deposits are made with the
``gateway billing`` commands (in-process: the same code without the interpreter
start-up), as staff would.  Everything runs on 127.0.0.1 with bounded waits.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import GatewayProcess, free_port
from interop.test_sipp import Sipp, SippRunner, run_pair, sipp

from gateway.billing.money import Money
from gateway.billing.rates import Facility, RateEntry
from gateway.billing.rating import Payer, PayerSplit, rate_call
from gateway.cli import main

HERE = Path(__file__).resolve().parent
INTEROP = HERE.parent / "interop" / "sipp"
FACILITY = Facility(id="tiny-jail", facility_type="jail", adp=20,
                    rates=(RateEntry("video", date(2026, 4, 6), Money.parse("0.44")),))
INCREMENT = 5  # seconds of media per debit
HEARTBEAT = 1
REDIS = "redis://127.0.0.1:6379/0"
__all__ = ["sipp"]  # the sipp fixture of the interop tests


def config_text(port: int, uas_port: int, db_url: str, *, redis_prefix: str = "",
                warning_minutes: int = 1) -> str:
    store = f'redis_url = "{REDIS}"\nkey_prefix = "{redis_prefix}"' if redis_prefix else ""
    return f"""
[gateway]
node_id = "billing-test"
data_dir = "data"
log_level = "info"

[sip]
listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]
public_host = "127.0.0.1"
options_keepalive_seconds = 0

[[sip.trunks]]
name = "pbx"
sources = ["127.0.0.1/32"]
uri = "sip:127.0.0.1:{uas_port};transport=udp"

[[routes]]
match = ".*"
to = "trunk:pbx"

[store]
{store}

[database]
url = "{db_url}"

[billing]
enabled = true
increment = "per_second"
increment_seconds = {INCREMENT}
first_block_minutes = 1
heartbeat_seconds = {HEARTBEAT}
low_balance_warning_minutes = {warning_minutes}
hold_ttl_seconds = 120

[billing.dropped_calls]
# Off here so that what a recovered call costs is checked, not given back.
credit_last_minute = false
credit_whole_call_under_seconds = 0

[[billing.facilities]]
id = "tiny-jail"
type = "jail"
adp = 20

[[billing.facilities.rate]]
service = "video"
effective_from = 2026-04-06
per_minute = "0.44"

[[billing.plans]]
name = "family-a"
callee = "5551[0-9]+"
facility = "tiny-jail"
service = "video"
payers = ["fam-a"]

[[billing.plans]]
name = "family-b"
callee = "5552[0-9]+"
facility = "tiny-jail"
payers = [{{ account = "fam-b" }}]
"""


class Billing:
    """``gateway billing ...`` against the test's configuration."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys

    def __call__(self, *args: str, ok: bool = True) -> str:
        self.capsys.readouterr()
        code = main(["billing", *args, "--config", str(self.config)])
        out, err = self.capsys.readouterr()
        if ok:
            assert code == 0, f"gateway billing {' '.join(args)}: exit {code}\n{out}{err}"
        return out

    def cdrs(self, account: str | None = None) -> list[dict[str, Any]]:
        out = self("cdrs", *(["--account", account] if account else []))
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def balance(self, account: str) -> str:
        return self("balance", "--account", account)


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Callable[[str], GatewayProcess]]:
    procs: list[GatewayProcess] = []

    def start(text: str) -> GatewayProcess:
        gw = GatewayProcess(text, tmp_path)
        procs.append(gw)
        gw.wait_for("billing ready", timeout=30)
        return gw

    yield start
    for gw in procs:
        gw.stop()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"billing-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


def setup_ledger(billing: Billing, deposits: dict[str, str]) -> None:
    billing("migrate")
    for account, amount in deposits.items():
        billing("open-account", "--owner", f"visitor:{account}", "--id", account)
        billing("deposit", "--account", account, "--amount", amount, "--key", f"dep-{account}")


def rated(cdr: dict[str, Any], account: str) -> Money:
    """What rate_call says the CDR's media time costs the account."""
    started = datetime.fromisoformat(cdr["setup_at"].replace("Z", "+00:00"))
    payer = Payer("family", account)
    rating = rate_call(FACILITY, "video", started, cdr["media_seconds"],
                       split=PayerSplit.single(payer), increment="per_second")
    return rating.amount_for(payer)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               gw: GatewayProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s; gateway log:\n{gw.output()[-5000:]}")


def count(gw: GatewayProcess, text: str) -> int:
    return sum(1 for line in gw.lines if text in line)


# ---------------------------------------------------------------------- crash and recovery


@pytest.mark.parametrize("backend", ["sqlite", "postgresql+redis"])
def test_killed_mid_call_the_gateway_recovers_and_bills_only_what_was_metered(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], sipp: SippRunner,
    gateways: Callable[[str], GatewayProcess], databases: Any, redis_prefix: str,
) -> None:
    """Three calls up, one finished: SIGKILL, restart.  Each call then has exactly one CDR;
    each charge is rate_call of the CDR's media time, which is at most what was metered
    (the call's time up to the kill) and, with a heartbeat store, at least what was
    metered up to the last heartbeat; balances add up; the ledger verifies."""
    if backend == "sqlite":
        db_url, prefix = f"sqlite:///{tmp_path / 'billing.sqlite3'}", ""
    else:
        db_url, prefix = databases.url("postgresql"), redis_prefix
    port, uas_port = free_port(), free_port()
    text = config_text(port, uas_port, db_url, redis_prefix=prefix)
    billing = Billing(tmp_path / "gateway.toml", capsys)
    (tmp_path / "gateway.toml").write_text(text)
    setup_ledger(billing, {"fam-a": "20.00"})

    gw = gateways(text)
    uas = sipp.uas(str(INTEROP / "uas_call.xml"), uas_port, 4)
    short = sipp.start("short", str(INTEROP / "uac_call.xml"), port=free_port(),
                       remote=gw_uri_of(port), calls=1, extra=("-s", "55510", "-d", "2500"))
    assert short.wait(timeout=15).rc == 0, gw.output()[-4000:]
    t0 = time.monotonic()
    long = sipp.start("long", str(INTEROP / "uac_call.xml"), port=free_port(),
                      remote=gw_uri_of(port), calls=3,
                      extra=("-s", "55511", "-d", "60000", "-r", "20"))
    wait_until(lambda: count(gw, ": connected") == 4, 10, "4 calls connected", gw)
    wait_until(lambda: count(gw, "settled") >= 1, 10, "the short call settled", gw)
    time.sleep(max(0.0, t0 + 7.5 - time.monotonic()))
    gw.proc.kill()  # SIGKILL: no shutdown, no settlement
    gw.proc.wait(timeout=10)
    elapsed = time.monotonic() - t0  # an upper bound on any long call's media time
    long.stop(grace=0.5)
    uas.stop(grace=0.5)

    gw2 = gateways(text)
    gw2.wait_for("billing: recovered 3 open call(s)", timeout=15)
    out = gw2.output()
    assert "Traceback" not in out, out[-5000:]
    source = "its last heartbeat" if prefix else "the ledger"
    assert count(gw2, f"from {source}") == 3, out[-5000:]

    cdrs = billing.cdrs()
    assert len(cdrs) == 4 and len({c["call_id"] for c in cdrs}) == 4, cdrs
    normal = [c for c in cdrs if not c["recovered"]]
    recovered = [c for c in cdrs if c["recovered"]]
    assert len(normal) == 1 and normal[0]["ended_by"] == "caller", cdrs
    assert 2 <= normal[0]["media_seconds"] <= 4 and normal[0]["total_micros"] > 0, normal
    for c in recovered:
        assert c["ended_by"] == "gateway" and c["credit_total_micros"] == 0, c
        assert c["media_seconds"] <= elapsed, (c, elapsed)  # never more than metered
        # Not much less either: the last heartbeat (Redis) or the last increment (ledger).
        slack = 2 * HEARTBEAT + 1.5 + (0 if prefix else INCREMENT)
        assert c["media_seconds"] >= elapsed - slack - 1, (c, elapsed)
        if not prefix:
            assert c["media_seconds"] % INCREMENT == 0, c
    spent = Money(0)
    for c in cdrs:
        assert c["total_micros"] == rated(c, "fam-a").micros, c
        assert c["amounts_micros"] == {"fam-a": c["total_micros"]}, c
        spent += Money(c["total_micros"])
    assert spent.micros > 0
    expected = Money.parse("20.00") - spent
    assert f"balance {expected}, held $0.00, available {expected}" in billing.balance("fam-a")
    assert "OK: hash chain intact" in billing("verify")
    # Restarting again finds nothing left to recover (each call is settled once).
    gw2.stop()
    gw3 = gateways(text)
    gw3.wait_for("billing: recovered 0 open call(s)", timeout=15)
    assert len(billing.cdrs()) == 4


def gw_uri_of(port: int) -> str:
    return f"127.0.0.1:{port}"


# ---------------------------------------------------------------------- low balance


def test_low_balance_warns_then_ends_the_call_at_zero_and_refuses_the_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sipp: SippRunner,
    gateways: Callable[[str], GatewayProcess],
) -> None:
    """$0.05 at $0.44/min buys 8 seconds: a warning at once, a BYE from the gateway at 8 s,
    a CDR and receipt saying why; then, with $0.00 left, the next call gets 402."""
    port, uas_port = free_port(), free_port()
    text = config_text(port, uas_port, f"sqlite:///{tmp_path / 'billing.sqlite3'}")
    (tmp_path / "gateway.toml").write_text(text)
    billing = Billing(tmp_path / "gateway.toml", capsys)
    setup_ledger(billing, {"fam-b": "0.05"})
    gw = gateways(text)

    uas = sipp.uas(str(INTEROP / "uas_call.xml"), uas_port, 1)
    started = time.monotonic()
    uac: Sipp = sipp.start("uac", str(HERE / "sipp" / "uac_cut_off.xml"), port=free_port(),
                           remote=gw_uri_of(port), calls=1, extra=("-s", "55521",))
    a, b, ctx = run_pair(uac, uas, gw)
    took = time.monotonic() - started
    assert a.rc == 0 and a.successful == 1, ctx
    assert b.rc == 0 and b.successful == 1, ctx
    assert 7.5 <= took <= 14, ctx
    [bye] = a.find("received", "BYE")
    assert "prepaid balance exhausted" in (bye.header("Reason") or ""), ctx
    warning = next(i for i, line in enumerate(gw.lines) if "low balance" in line)
    cut = next(i for i, line in enumerate(gw.lines) if "prepaid funds used up" in line)
    assert warning < cut, gw.output()
    gw.wait_for("settled", timeout=5)

    [cdr] = billing.cdrs("fam-b")
    assert (cdr["media_seconds"], cdr["total_micros"]) == (8, 50_000), cdr
    assert cdr["disconnect_cause"] == "prepaid balance exhausted", cdr
    assert cdr["ended_by"] == "gateway" and cdr["low_balance_warning_seconds"] is not None
    assert cdr["credit_total_micros"] == 0, cdr
    receipt = json.loads(billing("receipt", "--call", cdr["call_id"]))
    assert receipt["summary"].startswith("8 seconds at $0.44/min = $0.05"), receipt
    assert receipt["how_it_ended"].startswith(
        "The call was ended because the prepaid balance ran out. A low-balance warning"), receipt
    assert "balance $0.00, held $0.00, available $0.00" in billing.balance("fam-b")

    refused = sipp.start("refused", str(HERE / "sipp" / "uac_refused.xml"), port=free_port(),
                         remote=gw_uri_of(port), calls=1, extra=("-s", "55522",))
    r = refused.wait(timeout=15)
    assert r.rc == 0 and r.count("received", 402) == 1, r.report() + gw.output()[-3000:]
    assert r.find("received", 402)[0].start_line == "SIP/2.0 402 Insufficient funds"
    assert len(billing.cdrs("fam-b")) == 1  # a refused call reserves nothing
    assert "OK: hash chain intact" in billing("verify")
    assert "Traceback" not in gw.output()
