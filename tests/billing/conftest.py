"""Ledger fixtures: the same tests on SQLite (a temp file) and PostgreSQL (127.0.0.1:5432).

PostgreSQL databases are created per test module (or per test, for tests that
tamper with the journal) with unique names and dropped afterwards.  A missing
PostgreSQL fails the tests (it is started by `make test`), it never skips them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from gateway.billing.accounts import Accounts
from gateway.billing.db import Database, open_database, upgrade

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgresql")


class Clock:
    """A settable UTC clock, so hold expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not running on 127.0.0.1:5432 ({exc}): run `make test`, "
                    "which starts it")


class Databases:
    """Creates migrated billing databases and removes them at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pg_names: list[str] = []
        self.opened: list[Database] = []

    def url(self, backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self.tmp / f'ledger-{uuid.uuid4().hex[:8]}.sqlite3'}"
        name = f"billing_test_{uuid.uuid4().hex[:12]}"
        with _admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            # Commit durability of the test server is not what is under test.
            conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        self.pg_names.append(name)
        return f"postgresql://postgres@127.0.0.1:5432/{name}"

    def migrated(self, backend: str) -> Database:
        url = self.url(backend)
        upgrade(url)
        db = open_database(url)
        self.opened.append(db)
        return db

    def close(self) -> None:
        for db in self.opened:
            db.dispose()
        if self.pg_names:
            with _admin() as conn:
                for name in self.pg_names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("ledger"))
    yield dbs
    dbs.close()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def db(databases: Databases, backend: str) -> Database:
    """One migrated database per module and backend, shared by its tests."""
    return databases.migrated(backend)


@pytest.fixture
def fresh_db(databases: Databases, backend: str) -> Database:
    """A migrated database of this test's own (for tests that damage it)."""
    return databases.migrated(backend)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def accounts(db: Database, clock: Clock) -> Accounts:
    return Accounts(db, clock=clock, actor="test")


@pytest.fixture
def new_account(accounts: Accounts) -> Callable[..., str]:
    """Open an account with a unique id (tests share the module's database)."""

    def make(kind: str = "visitor") -> str:
        ref = uuid.uuid4().hex[:10]
        return accounts.open_account(kind, ref, f"{kind} {ref}").id

    return make
