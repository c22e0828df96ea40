"""The interface a venue's simulator fake implements, for venue kinds beyond the built-in
Clear Street and Polymarket ones (`server.py`).

A fake serves its venue's API under `/<kind>` on the simulator's port: the simulator
logs each request (`Simulator.requests(venue=kind)`), and its Python control API
(`set_fields`, `account_ids`) reaches the fake by kind. A fake is plugged in by passing
it to `Simulator(..., fakes=[...])`, or by `register_fake` in a module named by
RISKMON_VENUE_PLUGINS (so `riskmon simulate` serves it too).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar

from aiohttp import web

__all__ = ["Handler", "Route", "VenueFake", "register_fake", "registered_fakes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Route:
    """One endpoint of a fake: `method path` below `/<kind>`, named `endpoint` in the
    request log."""

    __slots__ = ("endpoint", "handler", "method", "path")

    def __init__(self, method: str, path: str, handler: Handler, endpoint: str) -> None:
        self.method = method
        self.path = path
        self.handler = handler
        self.endpoint = endpoint


class VenueFake(abc.ABC):
    """One venue kind's API, answered from accounts the fake keeps."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def routes(self) -> Iterable[Route]:
        """The endpoints, with paths below `/<kind>` (`{account_id}` names the account)."""

    @abc.abstractmethod
    def set_fields(
        self, account: str, values: Mapping[str, Any], remove: Iterable[str] = ()
    ) -> None:
        """Change fields of one account now; KeyError for an unknown account."""

    @abc.abstractmethod
    def account_ids(self) -> list[str]:
        """The accounts the fake serves."""


_FACTORIES: dict[str, Callable[[], VenueFake]] = {}


def register_fake(kind: str, factory: Callable[[], VenueFake]) -> None:
    """Every Simulator created from now on serves a `factory()` fake under `/<kind>`."""
    _FACTORIES[kind] = factory


def registered_fakes() -> list[VenueFake]:
    """A new fake of each registered kind (plug-ins named by RISKMON_VENUE_PLUGINS are
    imported first)."""
    from monitor.venues import registry

    registry.kind_names()  # imports the plug-ins, which may register fakes
    return [factory() for factory in _FACTORIES.values()]
