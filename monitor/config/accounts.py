"""An account's fields (id, labels, params), read one way for riskmon.yaml and rule tests.

`riskmon test` builds the `account:` of a rule test with this same checker, so an
account param means exactly what it would mean in the config (see `monitor.schema`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import Any, Final

from monitor import schema
from monitor.config.checking import Checker, key_name
from monitor.config.model import AccountConfig, ParamValue
from monitor.venues.registry import account_id_problem
from monitor.yamlsource import KeyPath

__all__ = ["ACCOUNT_KEYS", "AccountChecker"]

# Account labels go on riskmon_account_info beside venue and account (the account
# gauges also carry currency) and into alerts beside alertname, venue, account and
# severity: the same name twice would be ambiguous or an invalid series.
RESERVED_ACCOUNT_LABELS: Final = frozenset(
    {"alertname", "venue", "account", "severity", "currency"}
)

ACCOUNT_KEYS: Final = ("id", "labels", "params")
_PLAIN_TOKEN: Final = re.compile(r"[^\s,\]}#]+")


class AccountChecker(Checker):
    """The shared checks plus an account's id, labels and params."""

    def account(
        self,
        path: KeyPath,
        item: dict[str, Any],
        venue_where: str,
        kind: str | None,
        *,
        extra_keys: Collection[str] = (),
    ) -> AccountConfig:
        """The account at `path` of a venue (`venue_where` names it in messages); an
        invalid or missing id is reported and left empty. `extra_keys` are known keys
        the caller reads itself."""
        raw_id = item.get("id")
        where = f"accounts[{path[-1]}] of {venue_where}"
        if (
            isinstance(raw_id, str | int)
            and not isinstance(raw_id, bool)
            and (*path, "id") not in self.from_env
        ):
            where = f"account {str(raw_id)!r} of {venue_where}"
        s = self.section(path, item, where, (*ACCOUNT_KEYS, *extra_keys))
        account_id = self.field(
            s, "id", "", lambda p, v: self.account_id(p, v, kind), required=True
        )
        labels: Mapping[str, str] = self.field(s, "labels", {}, self.labels)
        params: Mapping[str, ParamValue] = self.field(s, "params", {}, self.params)
        return AccountConfig(id=account_id, labels=labels, params=params)

    def account_id(self, path: KeyPath, value: Any, kind: str | None) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool):
            loc = self.doc.at(path) if path in self.doc._value_locs else None
            token = None if loc is None else schema.written_token(self.lines, loc, _PLAIN_TOKEN)
            if token is not None and token != str(value):
                self.error(
                    path,
                    f"id: YAML reads {token} as the number {value}; put the id in quotes",
                )
                return None
            value = str(value)
        text = self.string(path, value)
        if text is None:
            return None
        problem = account_id_problem(kind, text)
        if problem is not None:
            self.error(path, f"{problem}, got {self.show(path, text)}")
            return None
        return text

    def labels(self, path: KeyPath, value: Any) -> dict[str, str] | None:
        if not isinstance(value, dict):
            self.error(
                path,
                f"labels: expected a mapping of name: value such as {{desk: equities}}, "
                f"got {self.show(path, value)}",
            )
            return None
        result: dict[str, str] = {}
        for key, item in value.items():
            item_path = (*path, key)
            try:
                schema.label_name(key)
            except schema.Invalid as exc:
                self.error(item_path, str(exc), key=True)
                continue
            if key in RESERVED_ACCOUNT_LABELS:
                self.error(
                    item_path,
                    f"label {key!r} is reserved: riskmon sets alertname, venue, account, "
                    "severity and currency itself",
                    key=True,
                )
                continue
            if item_path in self.failed:
                continue
            try:
                result[key] = schema.label_value(item, written=self._written(item_path))
            except schema.Invalid:
                self.error(
                    item_path, f"label {key}: expected text, got {self.show(item_path, item)}"
                )
        return result

    def params(self, path: KeyPath, value: Any) -> dict[str, ParamValue] | None:
        if not isinstance(value, dict):
            self.error(
                path,
                "params: expected a mapping of name: value such as {buying_power_floor: 50000}, "
                f"got {self.show(path, value)}",
            )
            return None
        result: dict[str, ParamValue] = {}
        for key, item in value.items():
            item_path = (*path, key)
            try:
                schema.param_name(key)
            except schema.Invalid as exc:
                self.error(item_path, str(exc), key=True)
                continue
            if item_path in self.failed:
                continue
            param = self.param(item_path, item)
            if param is not None:
                result[key] = param
        return result

    def param(self, path: KeyPath, value: Any) -> ParamValue | None:
        try:
            return schema.param_value(value, written=self._written(path))
        except schema.Invalid as exc:  # (text from the environment is never repeated)
            self.error(path, f"{key_name(path)}: {exc}")
            return None

    def _written(self, path: KeyPath) -> Callable[[float], Decimal]:
        """A float at `path` as the decimal written in the file."""
        loc = self.doc.at(path) if path in self.doc._value_locs else None

        def written(value: float) -> Decimal:
            return schema.written_number(self.lines, loc, value)

        return written
