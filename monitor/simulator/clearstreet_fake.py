"""The Clear Street Trading API of the simulator: balances and the paginated account
listing, behind a bearer API key (`monitor/simulator/README.md`)."""

from __future__ import annotations

import base64
import bisect
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from aiohttp import web

from monitor.simulator.fakes import AccountsFake, Route, error_message
from monitor.simulator.scenario import CS_STATUSES
from monitor.simulator.templates import (
    CS_KINDS,
    CS_TEMPLATES,
    CS_TOP_CONTRIBUTORS,
    FieldKinds,
    dumps,
    patched,
)
from monitor.simulator.values import Account

if TYPE_CHECKING:
    from monitor.simulator.server import Simulator

CS: Final = "clearstreet"
MAX_PAGE_SIZE: Final = 1000
DEFAULT_PAGE_SIZE: Final = 100

# Clear Street's error messages are Google API style (see the seed's 403 and 404).
_CS_MESSAGES: Final = {
    400: "The request is invalid",
    401: "The request does not have valid authentication credentials for the operation",
    403: "The caller does not have permission to execute the specified operation",
    404: "Some requested entity was not found",
    409: "The operation was aborted",
    429: "Too many requests: rate limit exceeded",
    500: "Internal error",
    503: "The service is currently unavailable",
    504: "The deadline expired before the operation could complete",
}


def cs_error(status: int, message: str | None, request_id: str) -> bytes:
    body = {
        "error": {"code": status, "message": message or error_message(status, _CS_MESSAGES)},
        "metadata": {"request_id": request_id},
    }
    return dumps(body).encode()


def _page_token(after: int) -> str:
    return base64.urlsafe_b64encode(f"after:{after}".encode()).decode().rstrip("=")


def _page_after(token: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        return None
    prefix, _, number = text.partition(":")
    return int(number) if prefix == "after" and number.isdigit() else None


class _KeyFiles:
    """API key files, re-read (at most once a second) when they change on disk."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = list(paths)
        self._stamps: dict[Path, tuple[int, int, int]] = {}
        self._values: dict[Path, str] = {}
        self._checked = -1e18
        self.check()

    def check(self) -> bool:
        """Re-read changed files; True when a value changed."""
        changed = False
        for path in self.paths:
            try:
                st = os.stat(path)
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                if self._stamps.get(path) != stamp:
                    value = path.read_text(encoding="utf-8").strip()
                    self._stamps[path] = stamp
                    changed = changed or self._values.get(path) != value
                    self._values[path] = value
            except (OSError, UnicodeDecodeError):
                continue  # keep the last value read
        return changed

    def maybe_check(self) -> bool:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return False
        self._checked = now
        return self.check()

    def values(self) -> set[str]:
        return {v for v in self._values.values() if v}


class ClearStreetFake(AccountsFake):
    """The Clear Street accounts of the scenario, their API keys and listing."""

    kind: ClassVar[str] = CS
    field_kinds: ClassVar[FieldKinds] = CS_KINDS

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim)
        cs = sim.scenario.clearstreet
        self._literal_keys = list(cs.api_keys)
        self._key_files = _KeyFiles(cs.api_key_files)
        self._keys: frozenset[str] = frozenset()
        self.refresh_keys()
        self.last_page_token = cs.last_page_token
        self.accounts: dict[int, Account] = {}
        self.ids: list[int] = []

    def build(self) -> None:
        for spec in self.sim.scenario.clearstreet.accounts:
            template = CS_TEMPLATES[spec.template]
            patch = self.sim.patch(CS_KINDS, spec.set, spec.remove)
            for n in range(spec.id, spec.id + spec.count):
                info = {"subtype": template.subtype, **spec.info}
                self.put(Account(str(n), template, spec.status, info, patch))

    def routes(self) -> Iterable[Route]:
        return [
            Route("GET", "/v1/accounts", self._h_accounts, "accounts", logged=True),
            Route(
                "GET",
                "/v1/accounts/{account_id}/balances",
                self._h_balances,
                "balances",
                logged=True,
            ),
        ]

    def error_body(self, status: int, message: str | None, request_id: str, endpoint: str) -> bytes:
        return cs_error(status, message, request_id)

    def put(self, account: Account) -> None:
        n = int(account.id)
        if n not in self.accounts:
            bisect.insort(self.ids, n)
        self.accounts[n] = account
        self.sim.attach(CS, account)

    def find(self, account_id: str) -> Account | None:
        return self.accounts.get(int(account_id)) if account_id.isdigit() else None

    def account_ids(self) -> list[str]:
        return [str(n) for n in self.ids]

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
        text = str(account_id)
        if not text.isdigit():
            raise ValueError(f"a Clear Street account id is an integer, got {account_id!r}")
        name = template or "margin"
        if name not in CS_TEMPLATES:
            raise ValueError(f"template must be one of {', '.join(CS_TEMPLATES)}")
        if status is not None and status not in CS_STATUSES:
            raise ValueError(f"status must be one of {', '.join(CS_STATUSES)}")
        tmpl = CS_TEMPLATES[name]
        patch = self.sim.patch(CS_KINDS, values or {}, remove)
        info = {"subtype": tmpl.subtype}
        self.put(Account(str(int(text)), tmpl, status or "ACTIVE", info, patch))

    def remove_account(self, account_id: str | int) -> bool:
        text = str(account_id)
        if not text.isdigit() or int(text) not in self.accounts:
            return False
        n = int(text)
        del self.accounts[n]
        del self.ids[bisect.bisect_left(self.ids, n)]
        return True

    def balance(self, account: Account) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.data_json(account, None))
        return result

    def refresh_keys(self) -> None:
        self._keys = frozenset([*self._literal_keys, *self._key_files.values()])

    def set_literal_keys(self, keys: list[str]) -> None:
        self._literal_keys = keys
        self.refresh_keys()

    def _authorized(self, request: web.Request) -> bool:
        """A known API key? Key files are re-read once a second, and at once on a miss,
        so a rotated key works on its first request."""
        files = self._key_files
        if files.paths and files.maybe_check():
            self.refresh_keys()
        header = request.headers.get("Authorization", "")
        if header[:7] != "Bearer ":
            return False
        key = header[7:].strip()
        if key in self._keys:
            return True
        if files.paths and files.check():
            self.refresh_keys()
            return key in self._keys
        return False

    async def _h_balances(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        rid = str(uuid.uuid4())
        raw = request.match_info["account_id"]

        def produce() -> tuple[int, bytes]:
            if not self._authorized(request):
                return 401, cs_error(401, None, rid)
            if not raw.isdigit():
                return 400, cs_error(400, f"account_id must be an integer, got {raw!r}", rid)
            account = self.accounts.get(int(raw))
            if account is None:
                return 404, cs_error(404, None, rid)
            limit: int | None = None
            if request.query_string:
                given = request.query.get("top_margin_contributors_limit")
                if given is not None:
                    if not given.isdigit() or int(given) < 1:
                        message = "top_margin_contributors_limit must be an integer of at least 1"
                        return 400, cs_error(400, message, rid)
                    limit = int(given)
            data = self.data_json(account, limit)
            return 200, (
                '{"data":' + data + ',"error":null,"metadata":{"request_id":"' + rid + '"}}'
            ).encode()

        return await self.sim.serve(
            request, CS, "balances", raw, rid, received, produce, lambda o: [o.get("data")]
        )

    def data_json(self, account: Account, limit: int | None) -> str:
        if account.pristine and limit is None:
            return '{"account_id":' + account.id + "," + account.template.json_body[1:]
        return dumps(self._data(account, limit))

    def _data(self, account: Account, limit: int | None) -> dict[str, Any]:
        body = patched(account.template.body, account.patches_at(self.sim.timeline_time()))
        data = {"account_id": int(account.id), **body}
        details = data.get("margin_details")
        if isinstance(details, dict):
            details = dict(details)
            given = details.pop("top_contributors", None)
            if limit is not None:
                contributors = given if isinstance(given, list) else CS_TOP_CONTRIBUTORS
                details["top_contributors"] = [
                    dict(c) if isinstance(c, dict) else c for c in contributors[:limit]
                ]
                details = dict(sorted(details.items()))  # where the venue puts it
            data["margin_details"] = details
        return data

    async def _h_accounts(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        rid = str(uuid.uuid4())

        def produce() -> tuple[int, bytes]:
            if not self._authorized(request):
                return 401, cs_error(401, None, rid)
            query = request.query
            size = DEFAULT_PAGE_SIZE
            if query.get("page_size"):
                text = query["page_size"]
                if not text.isdigit() or int(text) < 1:
                    return 400, cs_error(400, "page_size must be a positive integer", rid)
                size = min(int(text), MAX_PAGE_SIZE)
            start = 0
            if query.get("page_token"):
                after = _page_after(query["page_token"])
                if after is None:
                    return 400, cs_error(400, "invalid page_token", rid)
                start = bisect.bisect_right(self.ids, after)
            ids = self.ids[start : start + size]
            data = [self._listing(self.accounts[n]) for n in ids]
            metadata: dict[str, Any] = {"request_id": rid}
            if start + size < len(self.ids) and ids:
                metadata["next_page_token"] = _page_token(ids[-1])
            elif self.last_page_token == "empty":
                metadata["next_page_token"] = ""
            body = {"data": data, "error": None, "metadata": metadata}
            return 200, dumps(body).encode()

        return await self.sim.serve(request, CS, "accounts", None, rid, received, produce)

    @staticmethod
    def _listing(account: Account) -> dict[str, Any]:
        info = account.info
        return {
            "id": int(account.id),
            "full_name": info.get("full_name") or f"Simulated account {account.id}",
            "short_name": info.get("short_name") or f"SIM{account.id}",
            "status": account.status,
            "subtype": info.get("subtype") or account.template.subtype,
            "type": info.get("type") or "CUSTOMER",
        }
