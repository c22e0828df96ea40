"""The venue kinds riskmon knows: one `VenueKind` per venue module, looked up by name.

A venue module (`monitor/venues/clearstreet.py`, `monitor/venues/polymarket.py`, or a
plug-in outside `monitor/`) describes everything about its kind here: the settings its
venues take (parsed with the shared config validators, with locations), its account-id
format, whether its discovery knows account statuses, the fields it sends and how they
map onto the normalized set, the gauges it exports, and its adapter. The config loader,
`riskmon check`, `riskmon test`, the metrics and the poller loop over this registry; none
of them names a venue.

Plug-ins: `RISKMON_VENUE_PLUGINS=pkg.module[,other.module]` names modules imported the
first time the registry is asked; each calls `register(VenueKind(...))` at import.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from monitor.snapshot import FieldSchema

if TYPE_CHECKING:
    from monitor.config.checking import Checker, Section
    from monitor.venues.base import VenueAdapter

__all__ = [
    "PLUGINS_ENV",
    "Gauge",
    "NormalizedField",
    "PluginError",
    "VenueKind",
    "account_id_problem",
    "all_kinds",
    "get",
    "kind_names",
    "register",
]

#: Modules to import (comma-separated) that register venue kinds of their own.
PLUGINS_ENV = "RISKMON_VENUE_PLUGINS"

# The built-in kinds' modules, imported on first use (not at import: they import the
# config package, which imports this registry).
_BUILTIN_MODULES = ("monitor.venues.clearstreet", "monitor.venues.polymarket")


@dataclass(frozen=True, slots=True)
class NormalizedField:
    """A normalized snapshot field (SPEC "Snapshot fields") and the venue field behind it."""

    name: str  # the normalized field, e.g. margin_excess
    source: str  # the snapshot path it is copied from (margin_details.maintenance_margin_excess)
    fallback: str | None = None  # the path used when `source` is absent
    deprecated: bool = False  # `source` is deprecated by the venue
    wire: str | None = None  # the venue's own spelling, for docs (buyingPower); default `source`

    def describe(self) -> str:
        """`source`, `source (deprecated)` or `source, else fallback`, for docs and
        `riskmon snapshot`."""
        text = (self.wire or self.source) + (" (deprecated)" if self.deprecated else "")
        if self.fallback is not None:
            text += f", else {self.fallback} (deprecated)"
        return text


@dataclass(frozen=True, slots=True)
class Gauge:
    """One `riskmon_account_*` gauge of a snapshot field with a numeric (or boolean) value."""

    path: str
    metric: str
    help: str


#: Parses a venue's kind-specific settings from its config section; returns the typed
#: settings object, or None after reporting each problem on the checker.
SettingsParser = Callable[["Checker", "Section", str], Any]


@dataclass(frozen=True, slots=True)
class VenueKind:
    """What riskmon knows about one venue kind."""

    name: str
    #: the settings keys of this kind, besides the common venue keys
    settings_keys: tuple[str, ...]
    #: what to tell someone who used another kind's key: "<key> is for <other>; <hint>"
    settings_hint: str
    parse_settings: SettingsParser
    #: the fields this kind sends (snake_case paths, `*` for map keys and list items)
    schema: FieldSchema
    #: the adapter class, imported only when a venue of this kind is polled
    adapter: Callable[[], type[VenueAdapter]]
    normalized: tuple[NormalizedField, ...] = ()
    gauges: tuple[Gauge, ...] = ()
    #: why `id` cannot be an account of this kind, or None when it can
    id_problem: Callable[[str], str | None] | None = None
    #: discovery filters on account statuses (`statuses:` in the discover entry); when
    #: False, `statuses` there is an error with `statuses_hint`
    discovery_statuses: bool = False
    statuses_hint: str = ""
    #: why the venue deprecated fields (`riskmon check`'s warning about a rule reading one)
    deprecation_note: str = ""
    #: the field that replaces the deprecated ones, named in that warning
    deprecation_successor: str | None = None
    doc: str = field(default="", compare=False)

    def deprecated_normalized(self) -> dict[str, str]:
        """normalized field -> the deprecated venue field it comes from."""
        result = {}
        for item in self.normalized:
            if item.deprecated or item.source in self.schema.deprecated:
                result[item.name] = item.source
        return result


_KINDS: dict[str, VenueKind] = {}
_loaded = False


def register(kind: VenueKind) -> VenueKind:
    """Make `kind` known (a later registration of the same name replaces it)."""
    _KINDS[kind.name] = kind
    return kind


def get(name: str) -> VenueKind:
    """The kind called `name`; KeyError naming the known kinds when there is none."""
    _load()
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown venue kind {name!r}; known: {', '.join(kind_names())}") from None


def kind_names() -> tuple[str, ...]:
    """The known kinds, built-in ones first, in registration order."""
    _load()
    return tuple(_KINDS)


def all_kinds() -> Iterator[VenueKind]:
    _load()
    return iter(tuple(_KINDS.values()))


def account_id_problem(kind: str | None, account_id: str) -> str | None:
    """Why `account_id` cannot be an account of a `kind` venue, or None when it can: one
    rule for configured and discovered accounts alike (any kind: not blank)."""
    if kind is not None:
        _load()
        known = _KINDS.get(kind)
        if known is not None and known.id_problem is not None:
            problem = known.id_problem(account_id)
            if problem is not None:
                return problem
    if not account_id.strip():
        return "an account id is not blank"
    return None


class PluginError(Exception):
    """A module named by RISKMON_VENUE_PLUGINS could not be imported."""


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for name in os.environ.get(PLUGINS_ENV, "").split(","):
        if name.strip():
            try:
                importlib.import_module(name.strip())
            except ImportError as exc:
                raise PluginError(f"{PLUGINS_ENV}: cannot import {name.strip()!r}: {exc}") from None
