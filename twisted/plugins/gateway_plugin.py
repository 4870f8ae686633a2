"""twistd plugin: ``twistd -n gateway --config FILE`` runs the same service as ``gateway run``.

The plugin installs the asyncio reactor itself, when twistd parses the plugin's
options (before anything imports the reactor), so ``--reactor`` is not needed;
``twistd --reactor=asyncio ...`` is accepted too.  Any other ``--reactor`` is
refused with a usage error, because the gateway's asyncio code cannot run on it.

This directory has no ``__init__.py`` on purpose: ``twisted.plugins`` collects
plugin modules from every ``twisted/plugins`` directory on ``sys.path``.
Logging goes wherever twistd sends it (stdout with ``-n``; ``--logfile``).  On
SIGTERM twistd stops the service cleanly, then re-raises the signal on itself, so
its exit status is "killed by SIGTERM" (143 in a shell) rather than 0.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer  # type: ignore[import-untyped]


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "TOML configuration file (default: embedded defaults)"],
    ]

    def postOptions(self) -> None:  # noqa: N802 (Twisted's name)
        from gateway.config import ConfigError, default_config, load_config
        from gateway.reactor import ReactorError, install_reactor

        try:
            install_reactor()
        except ReactorError as exc:
            raise usage.UsageError(str(exc)) from None
        try:
            self["gateway_config"] = (
                load_config(self["config"]) if self["config"] else default_config()
            )
        except ConfigError as exc:
            raise usage.UsageError(f"invalid configuration:\n{exc}") from None


@implementer(IServiceMaker, IPlugin)
class GatewayServiceMaker:
    tapname = "gateway"
    description = "Video-visitation gateway (SIP kiosks/PBXs <-> WebRTC browsers)."
    options = Options

    def makeService(self, options: Options) -> Any:  # noqa: N802
        from gateway.app import bridge_stdlib_logging, make_service

        config = options["gateway_config"]
        bridge_stdlib_logging(config.gateway.log_level)
        return make_service(config)


serviceMaker = GatewayServiceMaker()
