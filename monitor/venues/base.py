"""The one small interface every venue adapter implements, and the registry of them.

An adapter knows one venue: its URLs, auth, error bodies and field names. It returns a
Snapshot or raises a named error from `monitor.errors`. It knows nothing about rules,
schedules or other venues. A new venue is one module that registers a
`monitor.venues.registry.VenueKind` naming its adapter.
"""

from __future__ import annotations

import abc
import asyncio
from types import TracebackType
from typing import ClassVar, TypeVar

from monitor.config import AccountConfig, VenueConfig
from monitor.errors import VenueError
from monitor.snapshot import FieldSchema, Snapshot
from monitor.venues import registry
from monitor.venues.http import HttpClient
from monitor.venues.limits import VenueLimits


class VenueAdapter(abc.ABC):
    """Polls one configured venue. `deadline` values are `loop.time()` instants."""

    kind: ClassVar[str]
    schema: ClassVar[FieldSchema]

    def __init__(self, config: VenueConfig, http: HttpClient) -> None:
        self.config = config
        self.http = http
        # Every request to the venue (polls, discovery, tokens) goes through these; the
        # poller reads their budget to plan its schedule.
        self.limits = VenueLimits(config.max_concurrency, config.max_requests_per_second)

    @abc.abstractmethod
    async def fetch(self, account: AccountConfig, deadline: float) -> Snapshot:
        """One account's balances now, or a VenueError."""

    @abc.abstractmethod
    async def list_accounts(self, deadline: float) -> list[str]:
        """The ids of every account these credentials can see (discovery)."""

    def errors_about(self, account: str | None) -> _ErrorsAbout:
        """`with adapter.errors_about(account):` names this venue (and account) on every
        VenueError raised inside."""
        return _ErrorsAbout(self.config.name, account)

    def attempt_deadline(self, deadline: float) -> float:
        """One HTTP attempt may take `timeout`, and never past the poll's deadline."""
        return min(deadline, asyncio.get_running_loop().time() + self.config.timeout)

    def credential_digest(self) -> str | None:
        """A digest of the credentials as they are on disk now, or None when they come from
        no file (and so cannot change while riskmon runs). While the venue is in auth
        back-off the poller asks once a second, and polls again when it changes."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the adapter holds besides the shared HTTP client."""


class _ErrorsAbout:
    """A class, not a @contextmanager generator: it is entered once per poll, and the
    generator machinery costs several times as much."""

    __slots__ = ("account", "venue")

    def __init__(self, venue: str, account: str | None) -> None:
        self.venue = venue
        self.account = account

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, VenueError):
            exc.venue = exc.venue or self.venue
            exc.account = exc.account or self.account


_Settings = TypeVar("_Settings")


def settings_of(config: VenueConfig, cls: type[_Settings]) -> _Settings:
    """The venue's kind-specific settings, as the `cls` its kind's parser builds."""
    if not isinstance(config.settings, cls):
        raise TypeError(f"venue {config.name}: {config.kind} settings are missing")
    return config.settings


def adapter_class(kind: str) -> type[VenueAdapter]:
    """The adapter of venue kind `kind` (KeyError naming the known kinds)."""
    return registry.get(kind).adapter()


def known_kinds() -> list[str]:
    return sorted(registry.kind_names())


def create_adapter(config: VenueConfig, http: HttpClient) -> VenueAdapter:
    return adapter_class(config.kind)(config, http)
