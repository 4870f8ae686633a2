"""Several writers at once (as several gateway nodes), and a writer killed mid-append.

Each writer thread has its own engine and connections, like a separate node;
a killed writer is a real process ended with ``os._exit`` inside its open
transaction.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable

from sqlalchemy import func, select

from gateway.billing.accounts import Accounts
from gateway.billing.db import Database, open_database
from gateway.billing.ledger import PostedEntry, verify
from gateway.billing.models import Entry
from gateway.billing.money import Money

USD = Money.parse
WRITERS = 4
EACH = 12
SHARED = 4  # keys every writer posts: each must be written exactly once


def full_url(db: Database) -> str:
    return db.engine.url.render_as_string(hide_password=False)


def entry_count(db: Database) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Entry)) or 0)


def test_concurrent_writers_queue_on_the_chain_instead_of_forking_it(
    db: Database, new_account: Callable[..., str]
) -> None:
    a = new_account()
    before = entry_count(db)
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []
    posted: list[list[PostedEntry]] = [[] for _ in range(WRITERS)]

    def writer(n: int) -> None:
        node = open_database(full_url(db))  # its own engine and connections
        try:
            acc = Accounts(node, actor=f"node-{n}")
            start.wait()
            for i in range(EACH):
                posted[n].append(acc.deposit(a, USD("1.00"), idempotency_key=f"{a}:{n}:{i}"))
                if i < SHARED:
                    posted[n].append(
                        acc.deposit(a, USD("2.00"), idempotency_key=f"{a}:shared:{i}"))
        except BaseException as exc:
            errors.append(exc)
        finally:
            node.dispose()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors

    written = {e.id: e for entries in posted for e in entries if not e.replayed}
    replays = [e for entries in posted for e in entries if e.replayed]
    assert len(written) == WRITERS * EACH + SHARED
    assert len(replays) == (WRITERS - 1) * SHARED
    assert {e.id for e in replays} <= set(written)
    assert entry_count(db) == before + len(written)
    ids = sorted(written)
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # gap-free: one chain, no fork
    for e in written.values():
        if e.id - 1 in written:
            assert e.prev_hash == written[e.id - 1].hash
    acc = Accounts(db)
    assert acc.balance(a).available == USD("1.00") * (WRITERS * EACH) + USD("2.00") * SHARED
    report = verify(db)
    assert report.ok, report.format()


CRASHING_WRITER = textwrap.dedent("""
    import os, sys
    from sqlalchemy import event
    from sqlalchemy.orm import Session
    from gateway.billing.accounts import Accounts
    from gateway.billing.db import open_database
    from gateway.billing.models import Posting
    from gateway.billing.money import Money

    url, account, key = sys.argv[1:4]

    def die(session, ctx):
        if any(isinstance(o, Posting) for o in session.new):
            os._exit(9)  # rows flushed, transaction open, no commit, no cleanup

    event.listen(Session, "after_flush", die)
    Accounts(open_database(url)).deposit(account, Money.parse("9.00"), idempotency_key=key)
    sys.exit("the deposit should not have finished")
""")


def test_a_writer_killed_mid_append_leaves_nothing_and_the_retry_posts_once(
    db: Database, new_account: Callable[..., str]
) -> None:
    a = new_account()
    acc = Accounts(db)
    acc.deposit(a, USD("1.00"), idempotency_key=f"{a}:first")
    before = entry_count(db)
    proc = subprocess.run([sys.executable, "-c", CRASHING_WRITER, full_url(db), a, f"{a}:k"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    assert entry_count(db) == before
    assert acc.balance(a).available == USD("1.00")
    assert verify(db).ok

    retried = acc.deposit(a, USD("9.00"), idempotency_key=f"{a}:k")  # the payment retried
    assert not retried.replayed
    assert acc.deposit(a, USD("9.00"), idempotency_key=f"{a}:k").replayed
    assert acc.balance(a).available == USD("10.00")
    assert verify(db).ok
