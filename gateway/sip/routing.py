"""The routing seam: where an authenticated call goes.

For now the rules come from configuration (``[[routes]]``); visits and scheduling will
later decide through the same ``route`` call.  A decision is either a target (URI and,
for registered kiosks, the flow their registration came over) or a rejection status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sipmessage import URI

from ..config import Route, SipConfig
from .dialog import peer_for_uri
from .transaction import Peer


@dataclass(frozen=True)
class Target:
    uri: str
    peer: Peer
    description: str


@dataclass(frozen=True)
class Rejection:
    status: int
    reason: str


class BindingLookup(Protocol):
    """What the router needs from the registrar."""

    def contacts(self, username: str, now: float) -> list[tuple[str, Peer]]: ...


class ConfigRouter:
    """First matching ``[[routes]]`` rule wins; no rule means 404."""

    def __init__(self, routes: tuple[Route, ...], sip: SipConfig, bindings: BindingLookup) -> None:
        self.routes = routes
        self.sip = sip
        self.bindings = bindings

    def route(self, user: str, now: float) -> Target | Rejection:
        for rule in self.routes:
            if not rule.matches(user):
                continue
            target_user = rule.rewrite(user)
            kind = rule.kind
            if kind == "registered":
                contacts = self.bindings.contacts(target_user, now)
                if not contacts:
                    return Rejection(480, "Temporarily Unavailable")
                uri, peer = contacts[0]
                return Target(uri, peer, f"kiosk {target_user}")
            if kind == "trunk":
                name = rule.trunk_name or ""
                trunk = self.sip.trunk(name)
                if trunk is None:
                    return Rejection(500, "Server Internal Error")
                uri = with_user(trunk.uri, target_user)
                return Target(uri, peer_for_uri(uri), f"trunk {name}")
            uri = rule.uri_for(user) or ""
            try:
                return Target(uri, peer_for_uri(uri), uri)
            except ValueError:
                return Rejection(500, "Server Internal Error")
        return Rejection(404, "Not Found")


def with_user(uri: str, user: str) -> str:
    """The trunk URI with the dialled user part put in."""
    parsed = URI.parse(uri)
    host = parsed.host
    out = f"{parsed.scheme}:{user}@{host}"
    if parsed.port:
        out += f":{parsed.port}"
    return out + str(parsed.parameters)
