"""Scenario files: which accounts exist, who may call, and what happens when.

The format is documented in monitor/simulator/README.md. Loading validates every key
and reports problems as `file:line:col: message` (a SourceError), all at once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from monitor.durations import format_duration, parse_duration
from monitor.simulator.faults import Fault, FaultSpecError, parse_fault
from monitor.simulator.templates import CS_TEMPLATES, PM_TEMPLATES, split_path
from monitor.yamlsource import (
    KeyPath,
    Problem,
    SourceError,
    YamlDocument,
    load_yaml,
    parse_yaml,
)

CS_STATUSES: Final = ("ACTIVE", "INACTIVE", "CLOSED")
CS_SUBTYPES: Final = ("CASH", "MARGIN", "OTHER")
LAST_PAGE_TOKEN: Final = ("omit", "empty")


@dataclass
class CsAccountSpec:
    """One Clear Street account, or `count` of them with consecutive ids from `id`."""

    id: int
    template: str = "margin"
    status: str = "ACTIVE"
    count: int = 1
    info: dict[str, str] = field(default_factory=dict)  # full_name, short_name, subtype, type
    set: dict[str, Any] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)


@dataclass
class PmAccountSpec:
    """One Polymarket account, or `count` of them named prefix + start..start+count-1."""

    id: str
    display_name: str | None = None
    template: str = "default"
    count: int = 0  # 0: a single named account; otherwise id is the prefix
    start: int = 1
    set: dict[str, Any] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        if not self.count:
            return [self.id]
        return [f"{self.id}{i}" for i in range(self.start, self.start + self.count)]


@dataclass
class PmClient:
    client_id: str
    public_key: RSAPublicKey
    participant_id: str
    user: str  # whoami
    firm: str


@dataclass
class Ramp:
    field: str
    end: Decimal
    over: float
    start: Decimal | None = None


@dataclass
class Walk:
    field: str
    step: Decimal
    every: float
    low: Decimal | None = None
    high: Decimal | None = None


@dataclass
class TimelineChange:
    """A change to one account's fields from `at` seconds after the simulator starts."""

    at: float
    venue: str
    account: str
    set: dict[str, Any] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    ramp: Ramp | None = None
    walk: Walk | None = None


@dataclass
class TimelineFault:
    at: float
    fault: Fault

    def instance(self) -> Fault:
        """A fresh copy with its own runtime state (count, id)."""
        return copy.deepcopy(self.fault)


@dataclass
class ClearStreetScenario:
    api_keys: list[str] = field(default_factory=list)
    api_key_files: list[Path] = field(default_factory=list)
    accounts: list[CsAccountSpec] = field(default_factory=list)
    last_page_token: str = "omit"  # omit | empty: how the last listing page says so


@dataclass
class PolymarketScenario:
    token_ttl: float = 180.0
    token_audience: str | None = None  # default: the token endpoint's own URL
    api_audience: str | None = None  # default: http://HOST:PORT/polymarket
    clients: list[PmClient] = field(default_factory=list)
    accounts: list[PmAccountSpec] = field(default_factory=list)


@dataclass
class Scenario:
    seed: int = 0
    source: str = "<scenario>"
    #: The timeline repeats every `loop` seconds (None: it plays once).
    loop: float | None = None
    clearstreet: ClearStreetScenario = field(default_factory=ClearStreetScenario)
    polymarket: PolymarketScenario = field(default_factory=PolymarketScenario)
    timeline: list[TimelineChange] = field(default_factory=list)
    faults: list[TimelineFault] = field(default_factory=list)

    def timeline_time(self, elapsed: float) -> float:
        """Where in its timeline the scenario is, `elapsed` seconds after the start."""
        return elapsed % self.loop if self.loop else elapsed

    @classmethod
    def from_dict(
        cls, data: Any, base_dir: Path | str | None = None, *, source: str = "<scenario>"
    ) -> Scenario:
        """A scenario from plain data (tests); errors point at `source:1:1`."""
        return cls.from_document(YamlDocument(source, data), base_dir)

    @classmethod
    def from_document(cls, doc: YamlDocument, base_dir: Path | str | None = None) -> Scenario:
        return _Loader(doc, Path(base_dir) if base_dir is not None else Path.cwd()).load()


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file; relative file names in it are relative to its folder."""
    doc = load_yaml(path)
    return Scenario.from_document(doc, Path(path).resolve().parent)


def default_scenario(base_dir: Path | str | None = None) -> Scenario:
    """The built-in demo scenario; its `secrets/` files are relative to `base_dir`.

    Create them first with `monitor.simulator.keys.ensure_demo_credentials`.
    """
    ref = resources.files("monitor.simulator").joinpath("default_scenario.yaml")
    doc = parse_yaml(ref.read_text(encoding="utf-8"), "monitor/simulator/default_scenario.yaml")
    return Scenario.from_document(doc, base_dir)


_TOP: Final = {"seed", "loop", "clearstreet", "polymarket", "timeline"}
_CS: Final = {"api_keys", "api_key_files", "accounts", "last_page_token"}
_CS_ACCOUNT: Final = {"id", "template", "status", "subtype", "full_name", "short_name", "type"}
_CS_ACCOUNT_ALL: Final = _CS_ACCOUNT | {"set", "remove"}
_CS_GENERATE: Final = {"count", "first_id", "template", "status", "subtype", "set", "remove"}
_PM: Final = {"token_ttl", "token_audience", "api_audience", "clients", "accounts"}
_PM_CLIENT: Final = {"client_id", "public_key_file", "public_key", "participant_id", "user"}
_PM_ACCOUNT: Final = {"id", "display_name", "template", "set", "remove"}
_PM_GENERATE: Final = {"count", "prefix", "start", "template", "set", "remove"}
_CHANGE: Final = {"at", "venue", "account", "set", "remove", "ramp", "walk"}
_RAMP: Final = {"field", "from", "to", "over"}
_WALK: Final = {"field", "step", "every", "min", "max"}


class _Invalid(Exception):
    """Raised after a problem was recorded, to abandon the current entry."""


class _Loader:
    def __init__(self, doc: YamlDocument, base_dir: Path) -> None:
        self.doc = doc
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        self._cs: ClearStreetScenario | None = None
        self._pm: PolymarketScenario | None = None

    # --- helpers -----------------------------------------------------------------------

    def fail(self, path: KeyPath, message: str, *, key: bool = False) -> _Invalid:
        self.problems.append(self.doc.problem(path, message, key=key))
        return _Invalid()

    def mapping(
        self, path: KeyPath, value: Any, allowed: set[str], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "expected a mapping")
        bad = False
        for key in value:
            if key not in allowed:
                self.fail(
                    (*path, key),
                    f"unknown key {key!r}; expected one of: {', '.join(sorted(allowed))}",
                    key=True,
                )
        for key in required:
            if key not in value:
                self.fail(path, f"missing key {key!r}")
                bad = True
        if bad:
            raise _Invalid()
        return value

    def items(self, path: KeyPath, value: Any) -> list[tuple[KeyPath, Any]]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, "expected a list")
        return [((*path, i), item) for i, item in enumerate(value)]

    def string(self, path: KeyPath, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, "expected a non-empty string")
        return value

    def choice(self, path: KeyPath, value: Any, choices: Any) -> str:
        if value not in choices:
            what = f"{path[-1]} must be" if path and isinstance(path[-1], str) else "expected"
            raise self.fail(path, f"{what} one of {', '.join(choices)}; got {value!r}")
        return str(value)

    def integer(self, path: KeyPath, value: Any, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(path, f"expected an integer of at least {low}")
        return value

    def duration(self, path: KeyPath, value: Any) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None

    def loop_length(self, path: KeyPath, value: Any) -> float:
        seconds = self.duration(path, value)
        if seconds <= 0:
            raise self.fail(path, "loop must be more than 0s")
        return seconds

    def decimal(self, path: KeyPath, value: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.fail(path, 'expected a number (a decimal string such as "50.00")')
        try:
            result = Decimal(str(value))
        except InvalidOperation:
            raise self.fail(path, f"expected a number, got {value!r}") from None
        if not result.is_finite():
            raise self.fail(path, f"expected a finite number, got {value!r}")
        return result

    def field_path(self, path: KeyPath, value: Any) -> str:
        text = self.string(path, value)
        try:
            split_path(text)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None
        return text

    def set_map(self, path: KeyPath, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, "expected a mapping of field paths to values")
        for name in value:
            try:
                split_path(name)
            except ValueError as exc:
                raise self.fail((*path, name), str(exc), key=True) from None
        return dict(value)

    def path_list(self, path: KeyPath, value: Any) -> list[str]:
        if isinstance(value, str):
            return [self.field_path(path, value)]
        return [self.field_path(p, item) for p, item in self.items(path, value)]

    def read_file(self, path: KeyPath, value: Any) -> tuple[Path, str]:
        name = Path(self.string(path, value))
        full = name if name.is_absolute() else self.base_dir / name
        try:
            return full, full.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise self.fail(path, f"cannot read {full}: {reason}") from None

    def entry(self, fn: Any, path: KeyPath, value: Any, *args: Any) -> Any:
        try:
            return fn(path, value, *args)
        except _Invalid:
            return None

    # --- sections ----------------------------------------------------------------------

    def load(self) -> Scenario:
        root = self.doc.value
        scenario = Scenario(source=self.doc.file)
        if root is None:
            root = {}
        try:
            self.mapping((), root, _TOP)
        except _Invalid:
            raise SourceError(self.problems) from None
        if "seed" in root:
            seed = self.entry(self.integer, ("seed",), root["seed"])
            scenario.seed = seed if seed is not None else 0
        if "loop" in root:
            scenario.loop = self.entry(self.loop_length, ("loop",), root["loop"])
        if root.get("clearstreet") is not None:
            self.entry(self.clearstreet, ("clearstreet",), root["clearstreet"])
            scenario.clearstreet = self._cs or scenario.clearstreet
        if root.get("polymarket") is not None:
            self.entry(self.polymarket, ("polymarket",), root["polymarket"])
            scenario.polymarket = self._pm or scenario.polymarket
        try:
            timeline = self.items(("timeline",), root.get("timeline"))
        except _Invalid:
            timeline = []
        for path, item in timeline:
            result = self.entry(self.timeline_entry, path, item)
            if result is not None and scenario.loop and result.at >= scenario.loop:
                self.fail(
                    (*path, "at"),
                    f"at {format_duration(result.at)} is not within the loop of"
                    f" {format_duration(scenario.loop)}: it would never happen",
                )
            if isinstance(result, TimelineChange):
                self.check_account(path, result)
                scenario.timeline.append(result)
            elif isinstance(result, TimelineFault):
                scenario.faults.append(result)
        if self.problems:
            raise SourceError(
                sorted(self.problems, key=lambda p: (p.location.line, p.location.col))
            )
        return scenario

    def clearstreet(self, path: KeyPath, value: Any) -> None:
        section = self.mapping(path, value, _CS)
        cs = ClearStreetScenario()
        for p, item in self.items((*path, "api_keys"), section.get("api_keys")):
            key = self.entry(self.string, p, item)
            if key:
                cs.api_keys.append(key)
        for p, item in self.items((*path, "api_key_files"), section.get("api_key_files")):
            result = self.entry(self.read_file, p, item)
            if result:
                if not result[1].strip():
                    self.fail(p, f"{result[0]} is empty")
                cs.api_key_files.append(result[0])
        if "last_page_token" in section:
            cs.last_page_token = (
                self.entry(
                    self.choice,
                    (*path, "last_page_token"),
                    section["last_page_token"],
                    LAST_PAGE_TOKEN,
                )
                or "omit"
            )
        seen: dict[int, KeyPath] = {}
        for p, item in self.items((*path, "accounts"), section.get("accounts")):
            spec = self.entry(self.cs_account, p, item)
            if spec is None:
                continue
            if spec.count == 1:
                if spec.id in seen:
                    self.fail((*p, "id"), f"duplicate account id {spec.id}")
                seen[spec.id] = p
            cs.accounts.append(spec)
        self._cs = cs

    def cs_id(self, path: KeyPath, value: Any) -> int:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not text.isdigit():
            raise self.fail(path, f"a Clear Street account id is an integer, got {value!r}")
        return int(text)

    def cs_account(self, path: KeyPath, value: Any) -> CsAccountSpec:
        if isinstance(value, dict) and "generate" in value:
            self.mapping(path, value, {"generate"})
            gpath = (*path, "generate")
            gen = self.mapping(gpath, value["generate"], _CS_GENERATE, ("count", "first_id"))
            spec = CsAccountSpec(
                id=self.cs_id((*gpath, "first_id"), gen["first_id"]),
                count=self.integer((*gpath, "count"), gen["count"], 1),
            )
            self.cs_common(gpath, gen, spec)
            return spec
        item = self.mapping(path, value, _CS_ACCOUNT_ALL, ("id",))
        spec = CsAccountSpec(id=self.cs_id((*path, "id"), item["id"]))
        self.cs_common(path, item, spec)
        for key in ("full_name", "short_name", "type"):
            if key in item:
                spec.info[key] = self.string((*path, key), item[key])
        return spec

    def cs_common(self, path: KeyPath, item: dict[str, Any], spec: CsAccountSpec) -> None:
        if "template" in item:
            spec.template = self.choice((*path, "template"), item["template"], tuple(CS_TEMPLATES))
        if "status" in item:
            spec.status = self.choice((*path, "status"), item["status"], CS_STATUSES)
        if "subtype" in item:
            spec.info["subtype"] = self.choice((*path, "subtype"), item["subtype"], CS_SUBTYPES)
        spec.set = self.set_map((*path, "set"), item.get("set"))
        spec.remove = self.path_list((*path, "remove"), item.get("remove"))

    def polymarket(self, path: KeyPath, value: Any) -> None:
        section = self.mapping(path, value, _PM)
        pm = PolymarketScenario()
        if "token_ttl" in section:
            ttl = self.entry(self.duration, (*path, "token_ttl"), section["token_ttl"])
            pm.token_ttl = ttl if ttl is not None else pm.token_ttl
        for key in ("token_audience", "api_audience"):
            if key in section:
                setattr(pm, key, self.entry(self.string, (*path, key), section[key]))
        for p, item in self.items((*path, "clients"), section.get("clients")):
            client = self.entry(self.pm_client, p, item)
            if client is not None:
                if any(c.client_id == client.client_id for c in pm.clients):
                    self.fail((*p, "client_id"), f"duplicate client_id {client.client_id!r}")
                pm.clients.append(client)
        names: set[str] = set()
        for p, item in self.items((*path, "accounts"), section.get("accounts")):
            spec = self.entry(self.pm_account, p, item)
            if spec is None:
                continue
            if not spec.count:
                if spec.id in names:
                    self.fail((*p, "id"), f"duplicate account {spec.id!r}")
                names.add(spec.id)
            pm.accounts.append(spec)
        self._pm = pm

    def pm_client(self, path: KeyPath, value: Any) -> PmClient:
        item = self.mapping(path, value, _PM_CLIENT, ("client_id", "participant_id"))
        client_id = self.string((*path, "client_id"), item["client_id"])
        participant = self.string((*path, "participant_id"), item["participant_id"])
        if ("public_key" in item) == ("public_key_file" in item):
            raise self.fail(path, "give exactly one of public_key or public_key_file")
        if "public_key" in item:
            kpath: KeyPath = (*path, "public_key")
            pem = self.string(kpath, item["public_key"])
        else:
            kpath = (*path, "public_key_file")
            pem = self.read_file(kpath, item["public_key_file"])[1]
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except (ValueError, TypeError):
            raise self.fail(kpath, "not a PEM public key") from None
        if not isinstance(key, RSAPublicKey):
            raise self.fail(kpath, "the public key must be an RSA key (RS256)")
        parts = participant.split("/")
        firm = "/".join(parts[:2]) if len(parts) >= 2 and parts[0] == "firms" else ""
        user = self.string((*path, "user"), item["user"]) if "user" in item else participant
        return PmClient(client_id, key, participant, user, firm)

    def pm_account(self, path: KeyPath, value: Any) -> PmAccountSpec:
        if isinstance(value, dict) and "generate" in value:
            self.mapping(path, value, {"generate"})
            gpath = (*path, "generate")
            gen = self.mapping(gpath, value["generate"], _PM_GENERATE, ("count", "prefix"))
            spec = PmAccountSpec(
                id=self.string((*gpath, "prefix"), gen["prefix"]),
                count=self.integer((*gpath, "count"), gen["count"], 1),
            )
            if "start" in gen:
                spec.start = self.integer((*gpath, "start"), gen["start"])
            self.pm_common(gpath, gen, spec)
            return spec
        item = self.mapping(path, value, _PM_ACCOUNT, ("id",))
        spec = PmAccountSpec(id=self.string((*path, "id"), item["id"]))
        if "display_name" in item:
            spec.display_name = self.string((*path, "display_name"), item["display_name"])
        self.pm_common(path, item, spec)
        return spec

    def pm_common(self, path: KeyPath, item: dict[str, Any], spec: PmAccountSpec) -> None:
        if "template" in item:
            spec.template = self.choice((*path, "template"), item["template"], tuple(PM_TEMPLATES))
        spec.set = self.set_map((*path, "set"), item.get("set"))
        spec.remove = self.path_list((*path, "remove"), item.get("remove"))

    def timeline_entry(self, path: KeyPath, value: Any) -> TimelineChange | TimelineFault:
        if isinstance(value, dict) and "fault" in value:
            self.mapping(path, value, {"at", "fault"}, ("at",))
            at = self.duration((*path, "at"), value["at"])
            fpath = (*path, "fault")
            try:
                fault = parse_fault(value["fault"])
            except FaultSpecError as exc:
                where = (*fpath, exc.key) if exc.key else fpath
                raise self.fail(where, str(exc)) from None
            return TimelineFault(at, fault)
        item = self.mapping(path, value, _CHANGE, ("at", "venue", "account"))
        venue = self.choice((*path, "venue"), item["venue"], ("clearstreet", "polymarket"))
        account = item["account"]
        if venue == "clearstreet":
            account = str(self.cs_id((*path, "account"), account))
        else:
            account = self.string((*path, "account"), account)
        change = TimelineChange(self.duration((*path, "at"), item["at"]), venue, account)
        change.set = self.set_map((*path, "set"), item.get("set"))
        change.remove = self.path_list((*path, "remove"), item.get("remove"))
        if "ramp" in item:
            rpath = (*path, "ramp")
            ramp = self.mapping(rpath, item["ramp"], _RAMP, ("field", "to", "over"))
            change.ramp = Ramp(
                field=self.field_path((*rpath, "field"), ramp["field"]),
                end=self.decimal((*rpath, "to"), ramp["to"]),
                over=self.duration((*rpath, "over"), ramp["over"]),
                start=self.decimal((*rpath, "from"), ramp["from"]) if "from" in ramp else None,
            )
        if "walk" in item:
            wpath = (*path, "walk")
            walk = self.mapping(wpath, item["walk"], _WALK, ("field", "step", "every"))
            change.walk = Walk(
                field=self.field_path((*wpath, "field"), walk["field"]),
                step=self.decimal((*wpath, "step"), walk["step"]),
                every=self.duration((*wpath, "every"), walk["every"]),
                low=self.decimal((*wpath, "min"), walk["min"]) if "min" in walk else None,
                high=self.decimal((*wpath, "max"), walk["max"]) if "max" in walk else None,
            )
            if change.walk.every <= 0:
                raise self.fail((*wpath, "every"), "every must be more than 0s")
        if not (change.set or change.remove or change.ramp or change.walk):
            raise self.fail(path, "a timeline entry needs one of set, remove, ramp, walk or fault")
        return change

    def check_account(self, path: KeyPath, change: TimelineChange) -> None:
        if change.venue == "clearstreet":
            wanted = int(change.account)
            specs = self._cs.accounts if self._cs else []
            if not any(s.id <= wanted < s.id + s.count for s in specs):
                self.fail((*path, "account"), f"no Clear Street account {change.account}")
        else:
            for spec in self._pm.accounts if self._pm else []:
                if spec.count:
                    rest = change.account.removeprefix(spec.id)
                    if (
                        rest != change.account
                        and rest.isdigit()
                        and spec.start <= int(rest) < spec.start + spec.count
                    ):
                        return
                elif spec.id == change.account:
                    return
            self.fail((*path, "account"), f"no Polymarket account {change.account!r}")
