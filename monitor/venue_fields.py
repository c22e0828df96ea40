"""What each registered venue kind sends, in the form the rule engine takes it.

The engine (`monitor.engine`) knows no venue: `riskmon check`, the daemon and the rule
evaluators get these maps from here, built from `monitor.venues.registry`.
"""

from __future__ import annotations

from monitor.engine.check import KindFields
from monitor.snapshot import NORMALIZED_FIELDS
from monitor.venues import registry

__all__ = ["decimal_fields_map", "kind_fields", "kind_fields_map", "often_absent_map"]

_cache: dict[str, KindFields] = {}


def kind_fields(kind: str) -> KindFields:
    """What venue kind `kind` sends (KeyError for an unknown kind)."""
    found = _cache.get(kind)
    if found is None:
        venue = registry.get(kind)
        normalized = [n.name for n in venue.normalized if n.name in NORMALIZED_FIELDS]
        deprecated = {
            name: source
            for name, source in venue.deprecated_normalized().items()
            if name in NORMALIZED_FIELDS
        }
        found = KindFields.of(
            kind,
            venue.schema,
            normalized,
            deprecated,
            deprecation_note=venue.deprecation_note or None,
            successor=venue.deprecation_successor,
        )
        _cache[kind] = found
    return found


def kind_fields_map() -> dict[str, KindFields]:
    """Every known kind's fields, by kind, in the order of `check`'s messages."""
    return {kind: kind_fields(kind) for kind in sorted(registry.kind_names())}


def often_absent_map() -> dict[str, frozenset[str]]:
    """Per kind, the fields its rules' fast path treats as optional (deprecated ones)."""
    return {kind: fields.often_absent() for kind, fields in kind_fields_map().items()}


def decimal_fields_map() -> dict[str, frozenset[str]]:
    """Per kind, the fields its parser guarantees are Decimals wherever present: the very
    set its adapter's snapshots carry as `Snapshot.decimal_fields`."""
    return {kind.name: kind.schema.decimal_paths for kind in registry.all_kinds()}
