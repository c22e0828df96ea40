"""The located checker behind the YAML configs: the daemon's and the PagerDuty bridge's.

`Checker` walks a parsed document and collects every problem as a `Problem` at the key
or value it is about, never raising on the first. It expands `${VAR}`,
`${VAR:-default}` and `$$` in text values (and never shows what came from the
environment), checks mappings for unknown keys with a "did you mean", reads scalars
(text, numbers, durations, paths, files, secrets, URLs) and the `mqtt` section both
configs share. `Section` is a mapping already checked for unknown keys.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult

from monitor import schema
from monitor.config.model import MqttConfig, TlsConfig
from monitor.config.secret import Secret, header_value_problem
from monitor.schema import describe_value, redact_userinfo, valid_host
from monitor.yamlsource import KeyPath, Location, Problem, YamlDocument

__all__ = ["Checker", "Section", "describe_value", "key_name", "redact_userinfo", "valid_host"]

T = TypeVar("T")

_MQTT_KEYS = (
    "url",
    "topic_prefix",
    "username",
    "password",
    "password_file",
    "client_id",
    "tls",
)
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "insecure")
_MQTT = MqttConfig()  # the defaults (a slotted dataclass keeps none on the class)


@dataclass(slots=True)
class Section:
    """A mapping in the document, already checked for unknown keys."""

    path: KeyPath
    data: dict[str, Any]
    where: str  # "venue 'cs-prod'", for messages

    def has(self, key: str) -> bool:
        return key in self.data

    def at(self, key: str) -> KeyPath:
        return (*self.path, key)


class Checker:
    def __init__(
        self,
        doc: YamlDocument,
        text: str,
        base_dir: Path,
        environ: Mapping[str, str],
        *,
        expand_env: bool = True,
    ) -> None:
        """`expand_env`: read `${VAR}` in text values (not in a rule test file)."""
        self.doc = doc
        self.lines = schema.split_lines(text)
        self.base_dir = base_dir
        self.environ = environ
        self.problems: list[Problem] = []
        self.from_env: dict[KeyPath, str] = {}  # value paths that took text from ${VAR}
        self.failed: set[KeyPath] = set()  # value paths already reported (unset variable)
        self.value = self._expand(doc.value, ()) if expand_env else doc.value

    # -- reporting -------------------------------------------------------------------

    def error(self, path: KeyPath, message: str, *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, key=key))

    def show(self, path: KeyPath, value: Any) -> str:
        """A value for a message; never text that came from the environment."""
        if path in self.from_env:
            template = re.sub(r"(\$\{[^}:]*):-[^}]*\}", r"\1:-...}", self.from_env[path])
            return f"{describe_value(template)} (from the environment)"
        return describe_value(value)

    def show_url(self, path: KeyPath, text: str) -> str:
        """A URL for a message, its password never shown (see `redact_userinfo`)."""
        return self.show(path, redact_userinfo(text))

    # -- ${VAR} ----------------------------------------------------------------------

    def _expand(self, value: Any, path: KeyPath) -> Any:
        if isinstance(value, dict):
            return {k: self._expand(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._expand(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "$" not in value:
            return value
        out: list[str] = []
        substituted = False
        i = 0
        while True:
            j = value.find("$", i)
            if j < 0:
                out.append(value[i:])
                break
            out.append(value[i:j])
            following = value[j + 1 : j + 2]
            if following == "$":
                out.append("$")
                i = j + 2
                continue
            if following != "{":
                out.append("$")
                i = j + 1
                continue
            end = value.find("}", j + 2)
            if end < 0:
                self.error(path, "unterminated ${...}: add the closing } (or write $$ for a $)")
                self.failed.add(path)
                return value
            name, has_default, default = value[j + 2 : end].partition(":-")
            i = end + 1
            substituted = True
            if not schema.ENV_NAME.fullmatch(name):
                self.error(
                    path,
                    f"invalid environment variable name {name[:40]!r} in ${{...}}: "
                    "use letters, digits and _ (write $$ for a $)",
                )
                self.failed.add(path)
                continue
            found = self.environ.get(name)
            if found is not None and not (has_default and found == ""):
                out.append(found)
            elif has_default:
                out.append(default)
            else:
                self.error(path, f"environment variable {name} is not set")
                self.failed.add(path)
        if substituted:
            self.from_env[path] = value
        return "".join(out)

    # -- structure ---------------------------------------------------------------------

    def section(
        self,
        path: KeyPath,
        value: Any,
        where: str,
        known: Collection[str],
        *,
        foreign: Mapping[str, str] | None = None,
    ) -> Section:
        """Check a mapping's keys; anything else is reported and read as empty."""
        if value is None and path:
            return Section(path, {}, where)
        if not isinstance(value, dict):
            self.error(
                path,
                f"expected a mapping of {where} settings, got {self.show(path, value)}",
            )
            return Section(path, {}, where)
        for key in value:
            if key in known:
                continue
            if foreign and key in foreign:
                self.error((*path, key), foreign[key], key=True)
                continue
            hint = schema.did_you_mean(key, known) or f" (known keys: {', '.join(known)})"
            self.error((*path, key), f"unknown key {key!r} in {where}{hint}", key=True)
        return Section(path, {k: v for k, v in value.items() if k in known}, where)

    def require(self, s: Section, *keys: str) -> bool:
        missing = [k for k in keys if k not in s.data]
        for key in missing:
            self.error(s.path, f"missing required key {key!r} in {s.where}")
        return not missing

    def field(
        self,
        s: Section,
        key: str,
        default: T,
        check: Callable[[KeyPath, Any], T | None],
        *,
        required: bool = False,
    ) -> T:
        """The checked value of `key`, or `default` when absent or wrong (and reported)."""
        if key not in s.data:
            if required:
                self.require(s, key)
            return default
        path = s.at(key)
        if path in self.failed:
            return default
        result = check(path, s.data[key])
        return default if result is None else result

    # -- scalars -----------------------------------------------------------------------

    def _env_text(self, path: KeyPath, value: Any) -> str | None:
        return value if path in self.from_env and isinstance(value, str) else None

    def string(self, path: KeyPath, value: Any, *, secret: bool = False) -> str | None:
        name = key_name(path)
        if not isinstance(value, str):
            got = _kind_of(value) if secret else self.show(path, value)
            self.error(path, f"{name}: expected text, got {got}")
            return None
        if not value.strip():
            self.error(path, f"{name} is empty")
            return None
        return value

    def secret_text(self, path: KeyPath, value: Any) -> str | None:
        return self.string(path, value, secret=True)

    def header_secret_text(self, path: KeyPath, value: Any) -> str | None:
        """A secret sent in an HTTP header (an API key): visible ASCII only."""
        text = self.secret_text(path, value)
        problem = None if text is None else header_value_problem(text)
        if problem is not None:
            self.error(path, f"{key_name(path)} {problem}: an API key is visible ASCII only")
            return None
        return text

    def integer(self, path: KeyPath, value: Any, *, minimum: int) -> int | None:
        text = self._env_text(path, value)
        if text is not None and re.fullmatch(r"\s*[-+]?[0-9]+\s*", text):
            value = int(text)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(
                path, f"{key_name(path)}: expected a whole number, got {self.show(path, value)}"
            )
            return None
        if value < minimum:
            self.error(path, f"{key_name(path)} must be at least {minimum}, got {value}")
            return None
        return value

    def positive_number(self, path: KeyPath, value: Any) -> float | None:
        text = self._env_text(path, value)
        if text is not None:
            with contextlib.suppress(ValueError):
                value = float(text)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            self.error(path, f"{key_name(path)}: expected a number, got {self.show(path, value)}")
            return None
        if not 0 < value < math.inf:
            self.error(path, f"{key_name(path)} must be a number greater than 0, got {value}")
            return None
        return float(value)

    def boolean(self, path: KeyPath, value: Any) -> bool | None:
        text = self._env_text(path, value)
        if text is not None and text.strip().lower() in ("true", "false"):
            value = text.strip().lower() == "true"
        if not isinstance(value, bool):
            self.error(
                path, f"{key_name(path)}: expected true or false, got {self.show(path, value)}"
            )
            return None
        return value

    def duration(self, path: KeyPath, value: Any, *, allow_zero: bool = False) -> float | None:
        """A Prometheus-style duration greater than zero (or zero too, if `allow_zero`)."""
        try:
            return schema.duration(value, allow_zero=allow_zero, show=lambda v: self.show(path, v))
        except schema.Invalid as exc:
            sep = " " if exc.message.startswith("must") else ": "
            self.error(path, f"{key_name(path)}{sep}{exc}")
            return None

    def path(self, path: KeyPath, value: Any) -> Path | None:
        text = self.string(path, value)
        if text is None:
            return None
        return _resolve(self.base_dir, text)

    def readable_file(self, path: KeyPath, value: Any) -> Path | None:
        resolved = self.path(path, value)
        if resolved is None:
            return None
        if not resolved.is_file():
            reason = "is not a file" if resolved.exists() else "does not exist"
            self.error(path, f"{key_name(path)} {resolved} {reason}")
            return None
        if not os.access(resolved, os.R_OK):
            self.error(path, f"{key_name(path)} {resolved} is not readable")
            return None
        return resolved

    def secret_file(
        self, path: KeyPath, value: Any, name: str, *, header: bool = False
    ) -> Secret | None:
        """A secret kept in a file, which must be readable now (and is re-read later);
        `header`: sent in an HTTP header, so visible ASCII only (blanks around it aside)."""
        resolved = self.readable_file(path, value)
        if resolved is None:
            return None
        try:
            content = resolved.read_text(encoding="utf-8")
        except OSError as exc:
            self.error(path, f"{key_name(path)} {resolved}: cannot read: {exc.strerror}")
            return None
        except UnicodeDecodeError:
            self.error(path, f"{key_name(path)} {resolved} is not UTF-8 text")
            return None
        if not content.strip():
            self.error(path, f"{key_name(path)} {resolved} is empty")
            return None
        problem = header_value_problem(content.strip()) if header else None
        if problem is not None:
            self.error(
                path, f"{key_name(path)} {resolved} {problem}: an API key is visible ASCII only"
            )
            return None
        return Secret.file(name, resolved)

    def http_url(self, path: KeyPath, value: Any) -> str | None:
        """An http(s) URL, possibly with a path prefix; without a trailing slash."""
        text = self.exact_url(path, value)
        return None if text is None else text.rstrip("/")

    def exact_url(self, path: KeyPath, value: Any) -> str | None:
        """An http(s) URL, kept exactly as written."""
        text = self.string(path, value)
        if text is None:
            return None
        try:
            return schema.http_url(text, name=key_name(path), show=lambda v: self.show(path, v))
        except schema.Invalid as exc:
            self.error(path, str(exc))
            return None

    def matcher(self, path: KeyPath, value: Any) -> schema.Matcher | None:
        """An Alertmanager-style label matcher (`team=~"risk|ops"`); a problem is placed
        at the character it is about when the value is written on its line as read."""
        text = self.string(path, value)
        if text is None:
            return None
        try:
            return schema.parse_matcher(text)
        except schema.Invalid as exc:
            if path in self.from_env:  # the message would repeat parts of the value
                self.error(path, f"{key_name(path)}: invalid label matcher {self.show(path, text)}")
            else:
                where = self._inside(path, text, exc.offset)
                self.problems.append(Problem(where, f"{key_name(path)}: {exc}"))
            return None

    def _inside(self, path: KeyPath, text: str, offset: int) -> Location:
        """Where character `offset` of the one-line scalar `text` at `path` stands."""
        loc = self.doc.at(path)
        if path not in self.doc._value_locs or not 0 < loc.line <= len(self.lines):
            return loc
        line = self.lines[loc.line - 1]
        props = schema.PROPERTIES.match(line, loc.col - 1)
        start = props.end() if props else loc.col - 1
        if line[start : start + 1] in ("'", '"'):
            start += 1
        if line[start : start + offset] != text[:offset]:  # escapes, folding: the value
            return loc
        return Location(loc.file, loc.line, start + offset + 1)

    def _url_parts(
        self,
        path: KeyPath,
        text: str,
        schemes: tuple[str, ...],
        *,
        expected: str,
        credentials: str,
        hint: str,
    ) -> SplitResult | None:
        """`schema.url_parts`, its problem reported at `path`; None after the error."""
        try:
            return schema.url_parts(
                text,
                schemes,
                name=key_name(path),
                expected=expected,
                credentials=credentials,
                hint=hint,
                show=lambda v: self.show(path, v),
            )
        except schema.Invalid as exc:
            self.error(path, str(exc))
            return None

    # -- the mqtt section (the same in both configs) ---------------------------------

    def mqtt(self, top: Section) -> MqttConfig:
        s = self.section(top.at("mqtt"), top.data.get("mqtt"), "mqtt", _MQTT_KEYS)
        url = self.field(s, "url", _MQTT.url, self.mqtt_url)
        prefix = self.field(s, "topic_prefix", _MQTT.topic_prefix, self.topic_prefix)
        username = self.field(s, "username", None, self.string)
        client_id = self.field(s, "client_id", None, self.string)
        password: Secret | None = None
        if s.has("password") and s.has("password_file"):
            self.error(
                s.at("password_file"),
                "mqtt takes password or password_file, not both",
                key=True,
            )
        elif s.has("password"):
            text = self.field(s, "password", "", self.secret_text)
            password = Secret.literal("mqtt password", text) if text else None
        elif s.has("password_file"):
            password = self.field(
                s,
                "password_file",
                None,
                lambda p, v: self.secret_file(p, v, "mqtt password_file"),
            )
        if password is not None and username is None and not s.has("username"):
            key = "password" if s.has("password") else "password_file"
            self.error(s.at(key), "an MQTT password needs a username too", key=True)
        tls: TlsConfig | None = None
        if s.has("tls"):
            tls = self.tls(s)
            if url.startswith("mqtt://"):
                self.error(
                    s.at("tls"),
                    "tls is set but url starts with mqtt://; use mqtts:// for TLS",
                    key=True,
                )
        elif url.startswith("mqtts://"):
            tls = TlsConfig()  # system CAs: tls is set whenever the connection uses TLS
        return MqttConfig(
            url=url,
            topic_prefix=prefix,
            username=username,
            password=password,
            tls=tls,
            client_id=client_id,
        )

    def mqtt_url(self, path: KeyPath, value: Any) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        if text == "embedded":
            return text
        expected = "expected mqtt://HOST:PORT, mqtts://HOST:PORT or embedded"
        parts = self._url_parts(
            path,
            text,
            ("mqtt", "mqtts"),
            expected=expected,
            credentials="url must not hold credentials: use username and password_file",
            hint=f"; {expected}",
        )
        if parts is None:
            return None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            self.error(path, f"url: an MQTT url has no path or query; {expected}")
            return None
        return text.rstrip("/")

    def topic_prefix(self, path: KeyPath, value: Any) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        if "+" in text or "#" in text or "\0" in text:
            self.error(path, "topic_prefix must not contain the MQTT wildcards + or #")
            return None
        if text.startswith("/") or text.endswith("/") or "//" in text:
            self.error(
                path,
                f"topic_prefix {self.show(path, text)} must not start or end with / "
                "or have empty levels (//)",
            )
            return None
        return text

    def tls(self, parent: Section, where: str = "mqtt tls") -> TlsConfig:
        s = self.section(parent.at("tls"), parent.data["tls"], where, _TLS_KEYS)
        ca_file = self.field(s, "ca_file", None, self.readable_file)
        cert_file = self.field(s, "cert_file", None, self.readable_file)
        key_file = self.field(s, "key_file", None, self.readable_file)
        if s.has("key_file") and not s.has("cert_file"):
            self.error(s.at("key_file"), "key_file needs a cert_file too", key=True)
        insecure = self.field(s, "insecure", False, self.boolean)
        return TlsConfig(ca_file=ca_file, cert_file=cert_file, key_file=key_file, insecure=insecure)


def _resolve(base_dir: Path, text: str) -> Path:
    """A path from the file, absolute, relative ones against the config's folder."""
    return Path(os.path.normpath(base_dir / Path(text).expanduser()))


def key_name(path: KeyPath) -> str:
    """The key a value stands under, for messages: `poll_interval`, `rules[2]`."""
    if not path:
        return "value"
    last = path[-1]
    if isinstance(last, int):
        return f"{key_name(path[:-1])}[{last}]"
    return last


def _kind_of(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
