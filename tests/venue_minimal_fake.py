"""The simulator fake of the `minimal` venue kind (tests/venue_minimal.py): GET
/accounts/{id} -> {"cash": "...", "currency": "USD"}, with a bearer key."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from aiohttp import web

from monitor.simulator.fakes import Route, VenueFake

KEY = "minimal-test-key"


class MinimalFake(VenueFake):
    kind: ClassVar[str] = "minimal"

    def __init__(self, accounts: Mapping[str, str] | None = None) -> None:
        start = accounts if accounts is not None else {"acct-1": "50000.00", "acct-2": "8000.00"}
        self.accounts: dict[str, dict[str, Any]] = {
            name: {"cash": cash, "currency": "USD"} for name, cash in start.items()
        }

    def routes(self) -> Iterable[Route]:
        return [Route("GET", "/accounts/{account_id}", self._balance, "balance")]

    def set_fields(
        self, account: str, values: Mapping[str, Any], remove: Iterable[str] = ()
    ) -> None:
        fields = self.accounts[account]
        fields.update(values)
        for name in remove:
            fields.pop(name, None)

    def account_ids(self) -> list[str]:
        return list(self.accounts)

    async def _balance(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return web.json_response({"error": "unauthorized"}, status=401)
        fields = self.accounts.get(request.match_info["account_id"])
        if fields is None:
            return web.json_response({"error": "no such account"}, status=404)
        return web.Response(text=json.dumps(fields), content_type="application/json")
