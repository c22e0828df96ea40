"""The runbook link of every alert, set in one place: `builtin_alerts.runbook_url`.

The config's template (default `DEFAULT_RUNBOOK_URL`, a placeholder on
runbooks.example.com) is rendered for each alert with `alertname` and the alert's own
context; the built-in alerts use it as their `runbook_url` annotation, and any rule's
annotations may read it as `{{ runbook_url }}` (the shipped rules do), so that pointing
riskmon at a desk's runbooks is one line of config and no edit of a rule file.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from monitor.config.model import DEFAULT_RUNBOOK_URL
from monitor.engine.model import Template
from monitor.engine.templates import compile_template
from monitor.yamlsource import Location

__all__ = ["ALERT_CONTEXT", "DEFAULT_RUNBOOK_URL", "add_alert_context", "runbook_template"]

#: What annotation templates read beyond the snapshot's fields: the alert's name and
#: its runbook link.
ALERT_CONTEXT: Final = frozenset({"alertname", "runbook_url"})
_WHERE: Final = Location("builtin_alerts.runbook_url", 1, 1)


@lru_cache(maxsize=8)
def runbook_template(text: str = DEFAULT_RUNBOOK_URL) -> Template:
    """The compiled runbook URL template (checked already when the config loaded)."""
    return compile_template(text, where=_WHERE)


def add_alert_context(
    context: dict[str, Any], alertname: str, runbook_url: Template, *, needed: bool
) -> None:
    """`alertname` into a render context, and `runbook_url` rendered in it when `needed`
    (some annotation reads it)."""
    context["alertname"] = alertname
    if needed:
        context["runbook_url"] = runbook_url.render(context)
