"""``gateway billing ...``: staff commands for the ledger.

``migrate`` installs or upgrades the billing tables; ``verify`` recomputes the
hash chain and every balance, checks every CDR's stored export line against its
columns and exits 0 (intact) or 1 (problems found);
``open-account``, ``deposit`` and ``balance`` are for staff and tests;
``receipt --call ID`` prints a call's receipt as JSON, in words a family reads,
and ``cdrs`` lists call detail records (JSON, one per line); ``export``
streams CDRs of a period as CSV or JSON Lines, ``statement`` renders an account's
monthly statement (CSV or PDF) and ``staff-key`` makes a ``[[web.staff]]`` key
for the billing API (see docs/billing.md).  The
database is ``[database] url`` of the configuration (SQLite in ``data_dir``
by default).  Database and ORM modules are imported only when a billing
command runs, so other ``gateway`` commands stay fast.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import ConfigError, default_config, load_config

if TYPE_CHECKING:
    from gateway.billing.db import Database

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


class _Fail(Exception):
    """A message for the operator and an exit status, no traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def add_billing_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``billing`` and its subcommands on the top-level parser."""
    billing = sub.add_parser(
        "billing", help="billing ledger: migrate, verify, accounts, deposits",
        description="Staff commands for the billing ledger (the database in [database] url).",
    )
    bsub = billing.add_subparsers(dest="billing_command", metavar="COMMAND")
    billing.set_defaults(func=lambda args: _usage(billing))

    def command(name: str, help_text: str, func: Any, description: str = "") -> Any:
        p = bsub.add_parser(name, help=help_text, description=description or help_text)
        p.add_argument("--config", "-c", type=Path, metavar="FILE",
                       help="TOML configuration (default: embedded defaults, data in ./data)")
        p.set_defaults(func=lambda args: _run(name, func, args))
        return p

    command("migrate", "create or upgrade the billing tables", _cmd_migrate)
    verify = command(
        "verify", "check the hash chain, double entry and balances", _cmd_verify,
        "Recompute every entry's hash, check every entry sums to zero, every stored "
        "balance equals the sum of its postings, no prepaid account is below zero and "
        "the append-only triggers are in place, and every CDR's stored export line "
        "equals the rendering of its columns. Exit 0 if all holds, 1 otherwise.",
    )
    verify.add_argument("--anchor", action="append", default=[], metavar="ID:HASH",
                        help="also require entry ID to have HASH (a head recorded earlier)")
    opening = command("open-account", "open a visitor, incarcerated or agency account",
                      _cmd_open_account)
    opening.add_argument("--owner", required=True, metavar="KIND:REF",
                         help="visitor:REF, incarcerated:REF or agency:REF")
    opening.add_argument("--name", default="", help="display name (default: REF)")
    opening.add_argument("--id", dest="account_id", metavar="ID",
                         help="account id (default: generated)")
    deposit = command("deposit", "add funds to an account", _cmd_deposit)
    deposit.add_argument("--account", required=True, metavar="ID")
    deposit.add_argument("--amount", required=True, metavar="DOLLARS", help="e.g. 25.00")
    deposit.add_argument("--key", metavar="KEY",
                         help="idempotency key, e.g. the receipt number (default: generated; "
                         "repeat a deposit with the same --key and it is posted once)")
    deposit.add_argument("--memo", default="")
    balance = command("balance", "show an account's balance", _cmd_balance)
    balance.add_argument("--account", required=True, metavar="ID")
    receipt = command("receipt", "a call's receipt (JSON): what it cost and why", _cmd_receipt)
    receipt.add_argument("--call", required=True, metavar="ID", help="the call id")
    cdrs = command("cdrs", "call detail records, one JSON object per line", _cmd_cdrs)
    cdrs.add_argument("--account", metavar="ID", help="only calls this account paid for")
    export = command(
        "export", "export the CDRs of a period as CSV or JSON Lines", _cmd_export,
        "Stream the call detail records of calls that ended from --from (inclusive) to --to "
        "(exclusive), UTC, in end-time order. Columns: docs/billing.md.",
    )
    export.add_argument("--from", dest="start", required=True, metavar="DATE",
                        help="YYYY-MM-DD (midnight UTC) or an ISO 8601 time")
    export.add_argument("--to", dest="end", required=True, metavar="DATE",
                        help="exclusive end: YYYY-MM-DD or an ISO 8601 time")
    export.add_argument("--facility", metavar="ID", help="only this facility's calls")
    export.add_argument("--format", dest="fmt", default="csv", metavar="csv|json",
                        help="csv (default) or json (JSON Lines: one object per line)")
    export.add_argument("--output", "-o", type=Path, metavar="FILE",
                        help="write here (replaced only once complete; default: stdout)")
    statement = command("statement", "an account's monthly statement (CSV or PDF)",
                        _cmd_statement)
    statement.add_argument("--account", required=True, metavar="ID")
    statement.add_argument("--month", required=True, metavar="YYYY-MM",
                           help="the calendar month, UTC")
    statement.add_argument("--format", dest="fmt", default="csv", metavar="csv|pdf",
                           help="csv (default) or pdf")
    statement.add_argument("--output", "-o", type=Path, metavar="FILE",
                           help="write here (default: stdout)")
    staff = bsub.add_parser(
        "staff-key", help="make a bearer key for the billing API ([[web.staff]])",
        description="Print a new random bearer key and the [[web.staff]] table (with the "
        "key's argon2 hash) to add to the [web] section of the configuration. The key "
        "itself is not stored anywhere: hand it to the person or tool named.",
    )
    staff.add_argument("--name", required=True, metavar="NAME",
                       help="who holds the key, e.g. jane-billing")
    staff.add_argument("--role", action="append", dest="roles", metavar="ROLE",
                       help="a role (default and only one so far: billing)")
    staff.set_defaults(func=_cmd_staff_key)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_CONFIG


def _run(name: str, func: Any, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.billing.db import DatabaseError
    from gateway.billing.ledger import LedgerError

    try:
        config = load_config(args.config) if args.config else default_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    try:
        code: int = func(args, config.database.url)
        return code
    except _Fail as exc:
        print(f"gateway billing {name}: {exc}", file=sys.stderr)
        return exc.code
    except (DatabaseError, LedgerError) as exc:
        print(f"gateway billing {name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except SQLAlchemyError as exc:
        detail = getattr(exc, "orig", None) or exc
        print(f"gateway billing {name}: database error: {detail}", file=sys.stderr)
        return EXIT_FAILED


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:100]
    except (KeyError, OSError):
        return "cli"


def _open(url: str, *, create: bool = False) -> Database:
    from gateway.billing.db import open_database, require_current

    db = open_database(url, create=create)
    try:
        require_current(db)
    except BaseException:
        db.dispose()
        raise
    return db


def _cmd_migrate(args: argparse.Namespace, url: str) -> int:
    from gateway.billing.db import current_revision, open_database, upgrade

    db = open_database(url)
    try:
        before = current_revision(db)
        upgrade(db)
        after = current_revision(db)
    finally:
        db.dispose()
    if before == after:
        print(f"billing schema in {db.url} is up to date (revision {after})")
    else:
        print(f"billing schema in {db.url}: {before or 'empty'} -> {after}")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace, url: str) -> int:
    from gateway.billing.ledger import verify

    anchors = []
    for text in args.anchor:
        entry_id, sep, digest = text.partition(":")
        if not sep or not entry_id.isdigit() or len(digest) != 64:
            raise _Fail(f"--anchor: expected ID:HASH (64 hex digits), got {text!r}", EXIT_CONFIG)
        anchors.append((int(entry_id), digest.lower()))
    db = _open(url)
    try:
        report = verify(db, anchors=anchors)
    finally:
        db.dispose()
    print(report.format())
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_open_account(args: argparse.Namespace, url: str) -> int:
    from gateway.billing.accounts import Accounts

    kind, sep, ref = args.owner.partition(":")
    if not sep or not ref:
        raise _Fail(f"--owner: expected KIND:REF such as visitor:jane-doe, got {args.owner!r}",
                    EXIT_CONFIG)
    db = _open(url)
    try:
        info = Accounts(db, actor=_actor()).open_account(
            kind, ref, args.name, account_id=args.account_id)
    finally:
        db.dispose()
    print(f"opened account {info.id} ({info.owner_kind} {info.owner_ref}, "
          f"\"{info.display_name}\")")
    return EXIT_OK


def _cmd_deposit(args: argparse.Namespace, url: str) -> int:
    from gateway.billing.accounts import Accounts
    from gateway.billing.money import Money

    try:
        amount = Money.parse(args.amount)
    except ValueError as exc:
        raise _Fail(f"--amount: {exc}", EXIT_CONFIG) from None
    key = args.key or f"cli-deposit:{uuid.uuid4()}"
    db = _open(url)
    try:
        accounts = Accounts(db, actor=_actor())
        entry = accounts.deposit(args.account, amount, idempotency_key=key, memo=args.memo)
        bal = accounts.balance(args.account)
    finally:
        db.dispose()
    if entry.replayed:
        print(f"already posted as entry {entry.id} (key {key}); nothing written")
    else:
        print(f"entry {entry.id}: deposited {amount} to {args.account} (key {key})")
    print(f"balance {bal.balance}, held {bal.held}, available {bal.available}")
    return EXIT_OK


def _cmd_balance(args: argparse.Namespace, url: str) -> int:
    from gateway.billing.accounts import Accounts

    db = _open(url)
    try:
        accounts = Accounts(db, actor=_actor())
        info = accounts.account(args.account)
        bal = accounts.balance(args.account)
    finally:
        db.dispose()
    print(f"account {info.id} ({info.owner_kind} {info.owner_ref}, {info.status}): "
          f"balance {bal.balance}, held {bal.held}, available {bal.available}")
    return EXIT_OK


def _cmd_receipt(args: argparse.Namespace, url: str) -> int:
    import json

    from gateway.billing.cdr import get_cdr, receipt

    db = _open(url)
    try:
        cdr = get_cdr(db, args.call)
    finally:
        db.dispose()
    if cdr is None:
        raise _Fail(f"no call record for call {args.call!r} (not billed, or still in progress)")
    print(json.dumps(receipt(cdr), indent=2, ensure_ascii=False))
    return EXIT_OK


def _cmd_cdrs(args: argparse.Namespace, url: str) -> int:
    import json

    from gateway.billing.cdr import list_cdrs

    db = _open(url)
    try:
        cdrs = list_cdrs(db, account=args.account)
    finally:
        db.dispose()
    for cdr in cdrs:
        print(json.dumps(cdr.as_dict(), sort_keys=True))
    return EXIT_OK


def _write_atomically(path: Path, chunks: Any) -> None:
    """Write to a temporary file beside ``path``, renamed over it only when complete."""
    import os
    import tempfile

    path = path.expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part",
                               dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_output(path: Path | None) -> None:
    if path is not None and not path.expanduser().parent.is_dir():
        raise _Fail(f"--output: no directory {str(path.expanduser().parent)!r}", EXIT_CONFIG)


def _cmd_export(args: argparse.Namespace, url: str) -> int:
    from gateway.billing.export import FORMATS, CdrExport, ExportError, check_facility, export_range

    try:
        if args.fmt not in FORMATS:
            raise ExportError("format", f"expected csv or json, got {args.fmt!r}")
        where = export_range(args.start, args.end, args.facility)
    except ExportError as exc:
        raise _Fail(f"--{exc.field}: {exc.message}; nothing was written", EXIT_CONFIG) from None
    _check_output(args.output)
    config = load_config(args.config) if args.config else default_config()
    db = _open(url)
    try:
        try:
            check_facility(db, where.facility, (f.id for f in config.billing.facilities))
        except ExportError as exc:
            raise _Fail(f"--{exc.field}: {exc.message}; nothing was written",
                        EXIT_CONFIG) from None
        export = CdrExport(db, where, args.fmt)
        if args.output is None:
            out = sys.stdout.buffer
            for chunk in export:
                out.write(chunk)
            out.flush()
        else:
            _write_atomically(args.output, export)
    finally:
        db.dispose()
    if args.output is not None:
        print(f"exported {export.rows} call records ({where.describe()}) to {args.output}",
              file=sys.stderr)
    return EXIT_OK


def _cmd_statement(args: argparse.Namespace, url: str) -> int:
    from gateway.billing.statements import (
        FORMATS,
        StatementError,
        build_statement,
        parse_month,
        render,
    )

    try:
        if args.fmt not in FORMATS:
            raise StatementError("format", f"expected csv or pdf, got {args.fmt!r}")
        parse_month(args.month)
    except StatementError as exc:
        raise _Fail(f"--{exc.field}: {exc.message}; nothing was written", EXIT_CONFIG) from None
    _check_output(args.output)
    db = _open(url)
    try:
        try:
            st = build_statement(db, args.account, args.month)
        except StatementError as exc:
            raise _Fail(f"--{exc.field}: {exc.message}; nothing was written") from None
    finally:
        db.dispose()
    data = render(st, args.fmt)
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        _write_atomically(args.output, [data])
        print(f"statement of {st.account.id} for {st.month}: opening {st.opening}, closing "
              f"{st.closing}, {len(st.lines)} lines; ledger anchor {st.anchor}",
              file=sys.stderr)
    return EXIT_OK


def _cmd_staff_key(args: argparse.Namespace) -> int:
    import re
    import secrets

    from argon2 import PasswordHasher

    from gateway.config import STAFF_ROLES

    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z", args.name):
        print(f"gateway billing staff-key: --name: expected letters, digits, '.', '_' and '-', "
              f"got {args.name!r}", file=sys.stderr)
        return EXIT_CONFIG
    roles = args.roles or ["billing"]
    unknown = [r for r in roles if r not in STAFF_ROLES]
    if unknown:
        print(f"gateway billing staff-key: --role: unknown role {unknown[0]!r} (known: "
              f"{', '.join(STAFF_ROLES)})", file=sys.stderr)
        return EXIT_CONFIG
    key = secrets.token_urlsafe(32)
    digest = PasswordHasher().hash(key)
    role_list = ", ".join(f'"{r}"' for r in dict.fromkeys(roles))
    print(f"# Bearer key for {args.name} (shown once; only its hash goes in the config):\n"
          f"# {key}\n"
          f"[[web.staff]]\nname = \"{args.name}\"\nkey_hash = \"{digest}\"\n"
          f"roles = [{role_list}]")
    return EXIT_OK
