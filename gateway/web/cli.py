"""``gateway token issue``: print a join token for one call.

Until scheduled visits issue tokens themselves, staff (and tests) make them here or
with ``POST /api/admin/tokens``.  Only standard-library modules are imported, so the
command starts fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gateway.config import ConfigError, default_config, load_config

from .tokens import MAX_TTL, ROLES, JoinTokens

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_token_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``token`` and its subcommands on the top-level parser."""
    token = sub.add_parser("token", help="issue join tokens for family browsers",
                           description="Join tokens let one browser join one call.")
    tsub = token.add_subparsers(dest="token_command", metavar="COMMAND")
    token.set_defaults(func=lambda args: _usage(token))
    issue = tsub.add_parser(
        "issue", help="print a join token for a call",
        description="Print a signed join token for CALL_ID on stdout. It is signed with "
        "the gateway secret ([gateway] secret or data_dir/secret), so use the same "
        "--config as the running gateway.",
    )
    issue.add_argument("--call-id", required=True, metavar="CALL_ID",
                       help="the call the token admits to")
    issue.add_argument("--ttl", type=int, metavar="SECONDS",
                       help=f"validity, 1 to {MAX_TTL} (default: [web] token_ttl, 600)")
    issue.add_argument("--role", choices=ROLES, default="family", help="default: family")
    issue.add_argument("--config", "-c", type=Path, metavar="FILE",
                       help="TOML configuration (default: embedded defaults, data in ./data)")
    issue.set_defaults(func=cmd_token_issue)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def cmd_token_issue(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config) if args.config else default_config()
        secret = config.gateway.secret_key()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"gateway token issue: cannot read or create the secret: {exc}", file=sys.stderr)
        return EXIT_FAILED
    ttl = args.ttl if args.ttl is not None else config.web.token_ttl
    try:
        token = JoinTokens(secret).issue(args.call_id, now=time.time(), ttl=ttl,
                                         role=args.role)
    except ValueError as exc:
        print(f"gateway token issue: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(token)
    return EXIT_OK
