"""The interface a venue's simulator fake implements: one module per venue
(`clearstreet_fake.py`, `polymarket_fake.py`, or a plug-in's).

A fake serves its venue's API under `/<kind>` on the simulator's port: the simulator
logs each request (`Simulator.requests(venue=kind)`), and its Python control API
(`set_fields`, `account_ids`) reaches the fake by kind. The built-in fakes are
`AccountsFake`s, whose accounts follow the scenario's timeline and whose answers go
through the simulator's faults. A fake is plugged in by passing
it to `Simulator(..., fakes=[...])`, or by `register_fake` in a module named by
RISKMON_VENUE_PLUGINS (so `riskmon simulate` serves it too).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar, Final

from aiohttp import web

from monitor.simulator.templates import MISSING, FieldKinds, split_path, wire_value
from monitor.simulator.values import Account

if TYPE_CHECKING:
    from monitor.simulator.server import Simulator

JSON_TYPE: Final = "application/json"

__all__ = [
    "AccountsFake",
    "Handler",
    "Route",
    "VenueFake",
    "error_message",
    "register_fake",
    "registered_fakes",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Route:
    """One endpoint of a fake: `method path` below `/<kind>`, named `endpoint` in the
    request log."""

    __slots__ = ("endpoint", "handler", "logged", "method", "path")

    def __init__(
        self, method: str, path: str, handler: Handler, endpoint: str, *, logged: bool = False
    ) -> None:
        self.method = method
        self.path = path
        self.handler = handler
        self.endpoint = endpoint
        #: the handler answers through `Simulator.serve` (faults, request log) itself
        self.logged = logged


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

    def error_body(self, status: int, message: str | None, request_id: str, endpoint: str) -> bytes:
        """The body of an error the venue answers (a `status` fault without a body)."""
        text = message or error_message(status, {})
        return ('{"error":' + json.dumps(text) + "}").encode()


class AccountsFake(VenueFake):
    """A fake whose accounts are scenario `Account`s on the simulator's timeline (the
    built-in venues)."""

    field_kinds: ClassVar[FieldKinds]

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    @abc.abstractmethod
    def build(self) -> None:
        """Create the scenario's accounts."""

    @abc.abstractmethod
    def find(self, account_id: str) -> Account | None:
        """The account called `account_id`, or None."""

    @abc.abstractmethod
    def add_account(
        self,
        account_id: str | int,
        *,
        template: str | None = None,
        status: str | None = None,
        values: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        display_name: str | None = None,
    ) -> None:
        """Add (or replace) an account; it shows in listings at once."""

    @abc.abstractmethod
    def remove_account(self, account_id: str | int) -> bool:
        """Remove an account; False when there was none."""

    @abc.abstractmethod
    def balance(self, account: Account) -> dict[str, Any]:
        """The body an account's balance request gets now."""

    def account(self, account_id: str | int) -> Account:
        found = self.find(str(account_id))
        if found is None:
            raise KeyError(f"no {self.kind} account {account_id!r}")
        return found

    def set_fields(
        self, account: str, values: Mapping[str, Any], remove: Iterable[str] = ()
    ) -> None:
        target = self.account(account)
        now = self.sim.timeline_time()
        changes = [(split_path(name), value) for name, value in values.items()]
        changes += [(split_path(name), MISSING) for name in remove]
        for path, value in changes:
            kind = self.field_kinds.kind(path)
            target.set_now(path, now, self.sim.next_seq(), kind, wire_value(value, kind))


def error_message(status: int, table: Mapping[int, str]) -> str:
    """The venue's message for `status`, else the HTTP reason phrase."""
    if status in table:
        return table[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


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
