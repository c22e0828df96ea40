"""`riskmon pagerduty -c FILE --check`: the bridge's config checked as the bridge loads it
at start, printed as `riskmon check` prints (`path:line:col: message` lines, then a
count); exit 0 when the bridge would start with it, 1 otherwise.

Like `riskmon check` on the daemon's config, the routing keys must be there (each
`routing_key_file` readable and not empty, each `routing_key_env` set): a missing key
stops the bridge at start, so it is the config error most worth finding first. Messages
name the file or the variable, never the key.

`pagerduty_config_hint` is for `riskmon check -c`: given a bridge config by mistake, it
says so (from the top-level keys) instead of listing every daemon key the file lacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final, TextIO

from monitor.pagerduty.config import load_pagerduty_config
from monitor.yamlsource import Problem, SourceError, parse_yaml, read_source

__all__ = ["pagerduty_config_hint", "run_pagerduty_check"]

#: Top-level keys only a bridge config has, and only the daemon's config has.
_BRIDGE_KEYS: Final = ("routes", "events_url", "rate_limit", "backoff", "session_expiry")
_DAEMON_KEYS: Final = frozenset(
    {"venues", "rules", "http", "stale_after", "instance", "record_snapshots"}
)


def run_pagerduty_check(
    path: str | Path, out: TextIO, *, environ: Mapping[str, str] | None = None
) -> int:
    """Check the bridge config at `path`; print its problems (or `ok: ...`) to `out`."""
    try:
        config = load_pagerduty_config(path, environ=environ)
    except SourceError as exc:
        for problem in exc.problems:
            print(problem, file=out)
        errors = len(exc.problems)
        print(f"{errors} error{'' if errors == 1 else 's'}, 0 warnings", file=out)
        return 1
    routes = config.routes
    names = ", ".join(route.name for route in routes)
    print(f"ok: {len(routes)} route{'' if len(routes) == 1 else 's'} ({names})", file=out)
    return 0


def pagerduty_config_hint(path: str) -> Problem | None:
    """A problem saying that `path` is a PagerDuty bridge config and how to check it, or
    None when it does not look like one (or cannot be read as YAML)."""
    try:
        doc = parse_yaml(read_source(path), path)
    except SourceError:
        return None
    value = doc.value
    if not isinstance(value, dict) or _DAEMON_KEYS & value.keys():
        return None
    key = next((key for key in _BRIDGE_KEYS if key in value), None)
    if key is None:
        return None
    return Problem(
        doc.key_at((key,)),
        f"this looks like a PagerDuty bridge config ({key}, no venues), not riskmon's: "
        f"check it with riskmon pagerduty -c {path} --check",
    )
