"""``gateway billing ...``: staff commands for the ledger.

``migrate`` installs or upgrades the billing tables; ``verify`` recomputes the
hash chain and every balance and exits 0 (intact) or 1 (problems found);
``open-account``, ``deposit`` and ``balance`` are for staff and tests;
``receipt --call ID`` prints a call's receipt as JSON, in words a family reads,
and ``cdrs`` lists call detail records (JSON, one per line).  The
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
        "the append-only triggers are in place. Exit 0 if all holds, 1 otherwise.",
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
