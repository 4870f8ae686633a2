"""Two gateway nodes sharing PostgreSQL and Redis: a node that dies or hangs mid-call.

Node A carries the calls; node B only watches.  When A is killed, B takes A's open
calls over once A has been silent for ``[store] node_timeout_seconds`` (3 s here)
and settles each from its last heartbeat, without waiting for A to come back.  When A
only hangs (SIGSTOP) long enough to be taken for dead, B settles its call the same
way, and A, thawed, finds the call settled at its next increment and ends it: one
CDR, never more than what was metered.  Real processes, sipp peers, 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from billing.test_billing_gateway import (  # the same gateway set-up, and fixtures
    HEARTBEAT,
    INTEROP,
    Billing,
    config_text,
    count,
    gw_uri_of,
    rated,
    redis_prefix,
    setup_ledger,
    wait_until,
)
from conftest import GatewayProcess, free_port
from interop.test_sipp import SippRunner, run_pair, sipp

from gateway.billing.money import Money

HERE = Path(__file__).resolve().parent
NODE_TIMEOUT = 3  # [store] node_timeout_seconds
__all__ = ["redis_prefix", "sipp"]  # fixtures


def node_config(node: str, port: int, uas_port: int, db_url: str, prefix: str) -> str:
    text = config_text(port, uas_port, db_url, redis_prefix=prefix)
    text = text.replace('node_id = "billing-test"', f'node_id = "{node}"')
    return text.replace("[store]\n", f"[store]\nnode_timeout_seconds = {NODE_TIMEOUT}\n")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[[str, str], GatewayProcess]]:
    procs: list[GatewayProcess] = []

    def start(name: str, text: str) -> GatewayProcess:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        gw = GatewayProcess(text, workdir)
        procs.append(gw)
        gw.wait_for("billing ready", timeout=30)
        return gw

    yield start
    for gw in procs:
        if gw.alive():
            os.kill(gw.proc.pid, signal.SIGCONT)
        gw.stop()


@dataclass
class Cluster:
    """Nodes A and B on one PostgreSQL database and one Redis prefix; fam-a holds $20."""

    billing: Billing
    a: GatewayProcess
    b: GatewayProcess
    text_a: str
    port_a: int
    uas_port: int


@pytest.fixture
def cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str], databases: Any,
            redis_prefix: str, nodes: Callable[[str, str], GatewayProcess]) -> Cluster:
    db_url = databases.url("postgresql")
    port_a, port_b, uas_port = free_port(), free_port(), free_port()
    text_a = node_config("billing-a", port_a, uas_port, db_url, redis_prefix)
    text_b = node_config("billing-b", port_b, uas_port, db_url, redis_prefix)
    (tmp_path / "gateway.toml").write_text(text_a)
    billing = Billing(tmp_path / "gateway.toml", capsys)
    setup_ledger(billing, {"fam-a": "20.00"})
    return Cluster(billing, nodes("a", text_a), nodes("b", text_b), text_a, port_a, uas_port)


def check_books(billing: Billing, cdrs: list[dict[str, Any]], deposit: str) -> None:
    spent = Money(0)
    for c in cdrs:
        assert c["total_micros"] == rated(c, "fam-a").micros, c
        spent += Money(c["total_micros"])
    expected = Money.parse(deposit) - spent
    assert f"balance {expected}, held $0.00, available {expected}" in billing.balance("fam-a")
    assert "OK: hash chain intact" in billing("verify")


def test_a_killed_node_s_calls_are_settled_by_another_node_without_waiting_for_it(
    sipp: SippRunner, cluster: Cluster, nodes: Callable[[str, str], GatewayProcess],
) -> None:
    billing, a, b = cluster.billing, cluster.a, cluster.b
    port_a, uas_port = cluster.port_a, cluster.uas_port

    uas = sipp.uas(str(INTEROP / "uas_call.xml"), uas_port, 2)
    t0 = time.monotonic()
    calls = sipp.start("calls", str(INTEROP / "uac_call.xml"), port=free_port(),
                       remote=gw_uri_of(port_a), calls=2,
                       extra=("-s", "55511", "-d", "60000", "-r", "20"))
    wait_until(lambda: count(a, ": connected") == 2, 10, "2 calls connected on node A", a)
    time.sleep(max(0.0, t0 + 6.5 - time.monotonic()))
    a.proc.kill()  # SIGKILL: no settlement, no goodbye to the cluster
    a.proc.wait(timeout=10)
    killed = time.monotonic()
    elapsed = killed - t0  # an upper bound on either call's media time

    # B does not wait for A to return: A silent for NODE_TIMEOUT s and its calls'
    # heartbeats as old, then B's next sweep.
    wait_until(lambda: count(b, "billing: took over call") == 2,
               NODE_TIMEOUT + 2 * HEARTBEAT + 10, "node B took over both calls", b)
    took = time.monotonic() - killed
    assert took < NODE_TIMEOUT + 2 * HEARTBEAT + 6, (took, b.output()[-3000:])
    assert count(b, "of node billing-a (gone), settled from its last heartbeat") == 2, \
        b.output()[-3000:]
    calls.stop(grace=0.5)
    uas.stop(grace=0.5)

    cdrs = billing.cdrs()
    assert len(cdrs) == 2 and len({c["call_id"] for c in cdrs}) == 2, cdrs
    for c in cdrs:
        assert c["recovered"] and c["node_id"] == "billing-a", c
        assert c["ended_by"] == "gateway", c
        assert c["media_seconds"] <= elapsed, (c, elapsed)  # never more than metered
        assert c["media_seconds"] >= elapsed - 2 * HEARTBEAT - 2.5, (c, elapsed)
    check_books(billing, cdrs, "20.00")

    # A, back, finds nothing of its own left open; nothing is settled twice.
    a2 = nodes("a", cluster.text_a)
    a2.wait_for("billing: recovered 0 open call(s)", timeout=15)
    assert len(billing.cdrs()) == 2
    for gw in (a2, b):
        assert "Traceback" not in gw.output(), gw.output()[-5000:]


def test_a_node_that_hung_finds_its_call_settled_elsewhere_and_ends_it(
    sipp: SippRunner, cluster: Cluster, nodes: Callable[[str, str], GatewayProcess],
) -> None:
    billing, a, b = cluster.billing, cluster.a, cluster.b
    port_a, uas_port = cluster.port_a, cluster.uas_port

    uas = sipp.uas(str(INTEROP / "uas_call.xml"), uas_port, 1)
    t0 = time.monotonic()
    uac = sipp.start("uac", str(HERE / "sipp" / "uac_cut_off.xml"), port=free_port(),
                     remote=gw_uri_of(port_a), calls=1, extra=("-s", "55512",))
    wait_until(lambda: count(a, ": connected") == 1, 10, "the call connected on node A", a)
    time.sleep(max(0.0, t0 + 6.5 - time.monotonic()))
    os.kill(a.proc.pid, signal.SIGSTOP)  # hung: no heartbeats, no increments
    frozen = time.monotonic()
    wait_until(lambda: count(b, "billing: took over call") == 1,
               NODE_TIMEOUT + 2 * HEARTBEAT + 10, "node B took over the call", b)
    [settled_by_b] = billing.cdrs()
    assert settled_by_b["recovered"] and settled_by_b["node_id"] == "billing-a"
    assert settled_by_b["media_seconds"] <= frozen - t0, settled_by_b
    os.kill(a.proc.pid, signal.SIGCONT)

    # A's next increment is refused (the call has its CDR): A ends the call with a BYE
    # to both sides, and its own settlement writes nothing.
    ua, ub, ctx = run_pair(uac, uas, a)
    assert ua.rc == 0 and ua.successful == 1, ctx
    assert ub.rc == 0 and ub.successful == 1, ctx
    [bye] = ua.find("received", "BYE")
    assert "billing settled by another node" in (bye.header("Reason") or ""), ctx
    a.wait_for("was settled by another node; ending it", timeout=5)
    a.wait_for("billing: call", timeout=5)
    wait_until(lambda: count(a, "settled (") >= 1, 10, "node A's settlement returned", a)
    assert billing.cdrs() == [settled_by_b]  # one CDR, B's, unchanged
    check_books(billing, [settled_by_b], "20.00")
    for gw in (a, b):
        assert "Traceback" not in gw.output(), gw.output()[-5000:]
