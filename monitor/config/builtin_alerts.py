"""`builtin_alerts` in riskmon.yaml: the runbook URL template and the built-ins' tuning.

```yaml
builtin_alerts:
  runbook_url: https://runbooks.acme.internal/riskmon/{{ alertname }}
  VenueDown: {for: 30s, severity: critical}
  AccountDataStale: {severity: error, labels: {team: risk}}
```

Every mistake is reported at its place, an unknown alert name or key with a "did you
mean". `runbook_url` is compiled as the template it is, so a syntax error is found here
and not at the first page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitor import schema
from monitor.config.checking import Checker, Section, key_name
from monitor.config.model import (
    BUILTIN_ALERTS,
    DEFAULT_RUNBOOK_URL,
    BuiltinAlertsConfig,
    BuiltinAlertSettings,
)
from monitor.engine.model import SEVERITIES
from monitor.engine.templates import compile_template
from monitor.yamlsource import KeyPath, Location, SourceError

__all__ = ["check_builtin_alerts"]

_KEYS = ("runbook_url", *BUILTIN_ALERTS)
_ALERT_KEYS = ("for", "severity", "labels")

LabelCheck = Callable[[KeyPath, Any], "dict[str, str] | None"]


def check_builtin_alerts(checker: Checker, top: Section, labels: LabelCheck) -> BuiltinAlertsConfig:
    """The `builtin_alerts` section of `top` (the defaults when it is absent); `labels`
    checks a labels mapping as the accounts' labels are checked."""
    s = checker.section(
        top.at("builtin_alerts"), top.data.get("builtin_alerts"), "builtin_alerts", _KEYS
    )
    runbook_url = checker.field(
        s, "runbook_url", DEFAULT_RUNBOOK_URL, lambda p, v: _runbook_url(checker, p, v)
    )
    alerts = {name: _alert(checker, s, name, labels) for name in BUILTIN_ALERTS if s.has(name)}
    return BuiltinAlertsConfig(runbook_url=runbook_url, alerts=alerts)


def _alert(
    checker: Checker, parent: Section, name: str, labels: LabelCheck
) -> BuiltinAlertSettings:
    s = checker.section(parent.at(name), parent.data[name], f"builtin_alerts {name}", _ALERT_KEYS)
    for_ = checker.field(s, "for", None, lambda p, v: _for(checker, p, v))
    severity = checker.field(s, "severity", None, lambda p, v: _severity(checker, p, v))
    kept: dict[str, str] = checker.field(s, "labels", {}, labels)  # reserved names refused
    return BuiltinAlertSettings(for_=for_, severity=severity, labels=kept)


def _for(checker: Checker, path: KeyPath, value: Any) -> float | None:
    """A duration, and unlike most durations 0s may be given: fire at once."""
    return checker.duration(path, value, allow_zero=True)


def _severity(checker: Checker, path: KeyPath, value: Any) -> str | None:
    text = checker.string(path, value)
    if text is None:
        return None
    if text not in SEVERITIES:
        hint = schema.did_you_mean(text, SEVERITIES)
        checker.error(
            path,
            f"{key_name(path)}: expected one of {', '.join(SEVERITIES)}, got "
            f"{checker.show(path, text)}{hint}",
        )
        return None
    return text


def _runbook_url(checker: Checker, path: KeyPath, value: Any) -> str | None:
    text = checker.string(path, value)
    if text is None:
        return None
    if not text.startswith(("http://", "https://")):
        checker.error(
            path,
            "runbook_url: expected an http:// or https:// URL template such as "
            "https://runbooks.example.com/riskmon/{{ alertname }}, got "
            f"{checker.show(path, text)}",
        )
        return None
    try:
        compile_template(text, where=_template_start(checker, path))
    except SourceError as exc:
        checker.problems.extend(exc.problems)
        return None
    return text


def _template_start(checker: Checker, path: KeyPath) -> Location:
    """Where the template's first character stands: after the quote of a quoted value."""
    loc = checker.doc.at(path)
    line = checker.lines[loc.line - 1] if 0 < loc.line <= len(checker.lines) else ""
    if line[loc.col - 1 : loc.col] in ("'", '"'):
        return Location(loc.file, loc.line, loc.col + 1)
    return loc
