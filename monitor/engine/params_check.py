"""A config's account params against the rules of their venues (SPEC "Snapshot fields").

Three mistakes would otherwise pass silently, and each is an error at its place:

- an account param that no rule of its venue reads (`buying_power_flor`): the rule's
  default stays in force; with the closest param those rules do read;
- a param value that is not a number (`"50k"`) where a rule compares it with a number
  or computes with it: the rule would fail at every evaluation;
- a rule param without a default that an account of a matching venue does not set: the
  rule would be missing for that account, for ever.

A discover entry's params are every discovered account's, and are checked the same way.
`riskmon check` runs this, and so does the daemon at start and at every reload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monitor import schema
from monitor.config.model import Config, VenueConfig
from monitor.engine.model import Rule, RuleSet
from monitor.engine.param_usage import ParamRead, closest, params_read, rule_params
from monitor.yamlsource import (
    KeyPath,
    Location,
    Problem,
    SourceError,
    YamlDocument,
    parse_yaml,
    read_source,
)

__all__ = ["ParamPlaces", "check_account_params"]

#: An accounts entry: an account's id, or None for the venue's discover entry.
EntryId = str | None
_SHOWN = 5  # accounts named in one message


class ParamPlaces:
    """Where a config's accounts and their params stand in its file.

    From the config's YAML document; a daemon, which drops the document once loaded,
    passes None and the file is read again only when a problem needs a place.
    """

    def __init__(self, config: Config, document: YamlDocument | None) -> None:
        self._source = config.source
        self._document = document
        self._read = document is not None

    def document(self) -> YamlDocument | None:
        if not self._read:
            self._read = True
            try:
                self._document = parse_yaml(read_source(self._source), str(self._source))
            except SourceError:  # a place is a courtesy: the start of the file will do
                self._document = None
        return self._document

    def _fallback(self) -> Location:
        return Location(str(self._source), 1, 1)

    def _entry_path(self, venue: str, entry: EntryId) -> KeyPath | None:
        document = self.document()
        if document is None or not isinstance(document.value, dict):
            return None
        venues = document.value.get("venues")
        if not isinstance(venues, list):
            return None
        for v, item in enumerate(venues):
            if not isinstance(item, dict) or item.get("name") != venue:
                continue
            accounts = item.get("accounts")
            if not isinstance(accounts, list):
                return None
            for a, account in enumerate(accounts):
                if not isinstance(account, dict):
                    continue
                if entry is None and "discover" in account:
                    return ("venues", v, "accounts", a)
                if entry is not None and "id" in account and str(account["id"]) == entry:
                    return ("venues", v, "accounts", a)
        return None

    def entry(self, venue: str, entry: EntryId) -> Location:
        """Where an account's id (or the discover key) stands."""
        path = self._entry_path(venue, entry)
        document = self._document
        if path is None or document is None:
            return self._fallback()
        return (
            document.at((*path, "id"))
            if entry is not None
            else document.key_at((*path, "discover"))
        )

    def param_key(self, venue: str, entry: EntryId, name: str) -> Location:
        path = self._entry_path(venue, entry)
        if path is None or self._document is None:
            return self._fallback()
        return self._document.key_at((*path, "params", name))

    def param_value(self, venue: str, entry: EntryId, name: str) -> tuple[Location, Any]:
        """Where a param's value stands, and the value as written (before `${VAR}`s)."""
        path = self._entry_path(venue, entry)
        if path is None or self._document is None:
            return self._fallback(), None
        document = self._document
        raw: Any = document.value
        for key in (*path, "params", name):
            raw = raw.get(key) if isinstance(raw, dict) else raw[key]
        return document.at((*path, "params", name)), raw


def check_account_params(
    config: Config, rules: RuleSet, places: ParamPlaces, *, unread: bool = True
) -> list[Problem]:
    """The errors of the config's account params against the rules (module docstring).

    `unread=False` leaves out "no rule reads it": when the rules checked are not all of
    the config's (some failed to load, or the command named other files).
    """
    problems: list[Problem] = []
    for venue in config.venues:
        reads = params_read(rules.rules_for(venue.name, venue.kind))
        entries: list[tuple[EntryId, Mapping[str, Any]]] = [
            (account.id, account.params) for account in venue.accounts
        ]
        if venue.discovery is not None:
            entries.append((None, venue.discovery.params))
        for entry, params in entries:
            for name, value in params.items():
                if name not in reads:
                    if unread:
                        problems.append(_unread(venue, entry, name, reads, rules, places))
                    continue
                numeric = [read for read in reads[name] if read.numeric]
                if numeric and not schema.is_number(value):
                    problems.append(_not_a_number(venue, entry, name, numeric[0], places))
        for name, name_reads in reads.items():
            readers = [read.rule for read in name_reads if not read.has_default]
            if not readers:
                continue
            lacking = [(entry, params) for entry, params in entries if name not in params]
            if lacking:
                problems.append(_lacking(venue, name, readers, lacking, places))
    return problems


def _rule(rule: Rule) -> str:
    return f"{rule.alert} ({rule.location})"


def _unread(
    venue: VenueConfig,
    entry: EntryId,
    name: str,
    reads: Mapping[str, list[ParamRead]],
    rules: RuleSet,
    places: ParamPlaces,
) -> Problem:
    message = f"params.{name}: no rule of venue {venue.name!r} reads it"
    meant = closest(name, reads)
    elsewhere = [r for r in rules.rules if name in rule_params(r)]
    if meant is not None:
        message += f"; did you mean {meant}?"
    elif elsewhere:
        rule = elsewhere[0]
        message += (
            f" ({rule.alert} reads it, but its group {rule.group!r} is for venues "
            f"[{', '.join(rule.venues)}])"
        )
    else:
        message += ", so it changes nothing"
    return Problem(places.param_key(venue.name, entry, name), message)


def _not_a_number(
    venue: VenueConfig, entry: EntryId, name: str, read: ParamRead, places: ParamPlaces
) -> Problem:
    where, raw = places.param_value(venue.name, entry, name)
    shown = ""
    if isinstance(raw, str):
        shown = f" {raw!r}"
    elif isinstance(raw, bool):
        shown = f" {str(raw).lower()}"
    return Problem(
        where,
        f"params.{name}:{shown} is not a number, but {_rule(read.rule)} compares it with a "
        "number or computes with it",
    )


def _lacking(
    venue: VenueConfig,
    name: str,
    rules: Sequence[Rule],
    lacking: Sequence[tuple[EntryId, Mapping[str, Any]]],
    places: ParamPlaces,
) -> Problem:
    """One error for every account of the venue that lacks the param, at the first."""
    ids = [entry for entry, _ in lacking if entry is not None]
    shown = ", ".join(repr(i) for i in ids[:_SHOWN])
    if len(ids) > _SHOWN:
        shown += f" and {len(ids) - _SHOWN} more"
    who = [f"account{'s' if len(ids) > 1 else ''} {shown}"] if ids else []
    if len(ids) < len(lacking):
        who.append("the discover entry")
    subject = f"{' and '.join(who)} of venue {venue.name!r}"
    verb = "does" if len(lacking) == 1 else "do"
    readers = ", ".join(_rule(rule) for rule in rules)
    reads = "reads" if len(rules) == 1 else "read"
    message = f"{subject} {verb} not set params.{name}, which {readers} {reads} without a default"
    defaults = {default for rule in rules for default in rule.params}
    set_instead = {other for _, params in lacking for other in params}
    meant = closest(name, defaults | set_instead)
    if meant in defaults:
        message += f"; did the rule mean params.{meant}, its default?"
    elif meant is not None:
        message += f"; did you mean params.{meant}, which is set?"
    return Problem(places.entry(venue.name, lacking[0][0]), message)
