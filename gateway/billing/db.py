"""Database plumbing for billing: engines, transactions and schema migrations.

The ledger must behave identically on the embedded SQLite default and on
PostgreSQL, so every dialect difference lives here:

* URLs: ``postgres://`` and ``postgresql://`` (as written in the config) use the
  psycopg 3 driver; ``sqlite:///path`` creates the data directory if needed.
* Write transactions are serialized per database.  On SQLite every write
  transaction starts with ``BEGIN IMMEDIATE`` (the database write lock is taken
  up front, so two writers never interleave read-then-write); on PostgreSQL the
  ledger takes a row lock on the chain head (see :mod:`gateway.billing.ledger`).
* SQLite runs in WAL mode with ``synchronous=FULL``: a committed entry survives
  a power cut, and readers do not block the writer.
* Read-only work (balances, ``verify``) uses a consistent snapshot: a deferred
  ``BEGIN`` on SQLite, ``REPEATABLE READ`` on PostgreSQL.

Migrations ship inside the package (``gateway/billing/migrations``) and run
programmatically with :func:`upgrade`; no ``alembic.ini`` is needed.  Billing
keeps its own version table so other components can have their own migrations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, inspect, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "billing_alembic_version"
SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseError(Exception):
    """The billing database cannot be used (bad URL, unreachable, schema out of date)."""


def utcnow() -> datetime:
    """The default clock: an aware UTC instant."""
    return datetime.now(UTC)


def normalize_url(url: str | URL) -> URL:
    """The URL with the driver the gateway ships (psycopg 3 for PostgreSQL)."""
    try:
        u = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"database.url: not a database URL ({exc})") from None
    if u.drivername in ("postgres", "postgresql"):
        u = u.set(drivername="postgresql+psycopg")
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(
            f"database.url: expected a sqlite:/// or postgresql:// URL, got {backend}://"
        )
    if backend == "sqlite" and (not u.database or u.database == ":memory:"):
        # Each pooled connection would see its own empty database.
        raise DatabaseError("database.url: SQLite needs a file path (sqlite:////path/to/file)")
    return u


def redacted(url: str | URL) -> str:
    """The URL for messages: never print a database password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of a SQLite URL, None for PostgreSQL."""
    u = normalize_url(url)
    if u.get_backend_name() != "sqlite" or u.database is None:
        return None
    return Path(u.database)


def make_engine(url: str | URL, *, create: bool = True) -> Engine:
    """An engine with the billing transaction rules for its dialect.

    ``create=False`` refuses to conjure an empty SQLite file (used by ``verify``
    so that a typo in a path is reported instead of "verified").
    """
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite":
        path = sqlite_path(u)
        assert path is not None
        if not create and not path.exists():
            raise DatabaseError(f"no billing database at {path} (run `gateway billing migrate`)")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(u, pool_pre_ping=True)


def _sqlite_connect(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    """Take transaction control from the driver; durable, WAL, foreign keys on."""
    conn: Any = dbapi_conn
    conn.isolation_level = None  # we emit BEGIN ourselves (see _sqlite_begin)
    cur = conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = FULL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the write lock at BEGIN; readers get a plain snapshot."""
    if conn.get_execution_options().get("billing_readonly"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@dataclass
class Database:
    """An engine plus the two kinds of transaction the ledger uses."""

    engine: Engine
    _write: sessionmaker[Session] = field(init=False, repr=False)
    _read: sessionmaker[Session] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        opts: dict[str, Any] = {"billing_readonly": True}
        if self.dialect == "postgresql":
            opts["isolation_level"] = "REPEATABLE READ"
        self._read = sessionmaker(self.engine.execution_options(**opts), expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def url(self) -> str:
        return redacted(self.engine.url)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any error."""
        with self._write.begin() as session:
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only consistent snapshot; never commits anything."""
        with self._read() as session:
            try:
                yield session
            finally:
                session.rollback()

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str | URL, *, create: bool = True) -> Database:
    return Database(make_engine(url, create=create))


# ---------------------------------------------------------------------- migrations


def alembic_config(url: str | URL | None = None) -> Any:
    """An Alembic Config pointing at the packaged migrations (for tools and tests)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # '%' is ConfigParser interpolation syntax; passwords may contain it.
        rendered = normalize_url(url).render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    """The schema revision the database is at; None if billing was never installed."""
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def require_current(db: Database) -> None:
    """Refuse to run against a database whose schema is missing or out of date."""
    try:
        rev = current_revision(db)
    except OperationalError as exc:
        raise DatabaseError(f"cannot reach the billing database {db.url}: {exc.orig}") from None
    head = head_revision()
    if rev is None:
        raise DatabaseError(
            f"the billing tables are not installed in {db.url}: run `gateway billing migrate`"
        )
    if rev != head:
        raise DatabaseError(
            f"the billing schema in {db.url} is at revision {rev}, this gateway needs {head}: "
            "run `gateway billing migrate`"
        )


def upgrade(target: str | URL | Database, revision: str = "head") -> None:
    """Bring the billing schema to ``revision`` (idempotent; safe to run on every start)."""
    from alembic import command

    db = target if isinstance(target, Database) else open_database(target)
    try:
        with db.engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except OperationalError as exc:
        raise DatabaseError(f"cannot migrate the billing database {db.url}: {exc.orig}") from None
    finally:
        if db is not target:
            db.dispose()


def table_names(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names())
