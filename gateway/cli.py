"""The ``gateway`` command: run the gateway, check a configuration, print the version.

Subcommands are registered in :func:`build_parser`; later ones (``billing ...``)
add a parser there and a ``cmd_*`` function.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.billing.cli import add_billing_commands
from gateway.config import ConfigError, default_config, load_config, package_version
from gateway.web.cli import add_token_commands

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def cmd_run(args: argparse.Namespace) -> int:
    """Run the gateway in the foreground until SIGINT or SIGTERM."""
    # The asyncio reactor must be in place before anything imports the reactor,
    # including gateway.app's service modules, which are imported below.
    from gateway.reactor import ReactorError, install_reactor

    try:
        reactor: Any = install_reactor()
    except ReactorError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        config = load_config(args.config) if args.config else default_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG

    from twisted.internet.error import CannotListenError
    from twisted.logger import Logger
    from twisted.python.failure import Failure

    from gateway.app import configure_logging, make_service

    configure_logging(config.gateway.log_level)
    log = Logger(namespace="gateway.cli")
    service: Any = make_service(config)
    status = {"code": EXIT_OK}

    def start() -> None:
        try:
            service.startService()
        except (CannotListenError, ConfigError, OSError) as exc:
            # The operator's to fix (port taken, data_dir not writable): no traceback.
            log.critical("start-up failed: {error}", error=str(exc))
            status["code"] = EXIT_FAILED
            reactor.stop()
        except Exception:
            log.failure("start-up failed")
            status["code"] = EXIT_FAILED
            reactor.stop()

    def stop() -> Any:
        if not service.running:
            return None
        d = service.stopService()

        def failed(failure: Failure) -> None:
            log.failure("shutdown failed", failure)
            status["code"] = EXIT_FAILED

        if d is not None:
            d.addErrback(failed)
        return d

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()  # Twisted's SIGINT/SIGTERM handlers stop it cleanly
    return status["code"]


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a configuration file without starting anything."""
    try:
        load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.file}: ok")
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    print(version_line())
    return EXIT_OK


def version_line() -> str:
    from twisted import __version__ as twisted_version

    return (
        f"gateway {package_version()} "
        f"(Python {platform.python_version()}, Twisted {twisted_version})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Video-visitation gateway: SIP kiosks and PBXs <-> family browsers (WebRTC).",
    )
    parser.add_argument("--version", action="version", version=f"gateway {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway in the foreground",
                         description="Run the gateway until SIGINT or SIGTERM. Logs go to stdout.")
    run.add_argument("--config", "-c", type=Path, metavar="FILE",
                     help="TOML configuration (default: embedded defaults on 127.0.0.1:5060)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file",
                           description="Exit 0 if FILE is valid, else print the problems "
                           "(file:line: key: what is expected) and exit 2.")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=cmd_check_config)

    ver = sub.add_parser("version", help="print the version")
    ver.set_defaults(func=cmd_version)

    add_billing_commands(sub)  # billing migrate|verify|open-account|deposit|balance
    add_token_commands(sub)  # token issue
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    result: int = func(args)
    return result
