"""One meaning for every typed value riskmon reads: the field validators.

The daemon's config, rule files, rule tests, `riskmon replay --set` and the PagerDuty
bridge's config all read their values through these functions, so a value means the
same wherever it is written. Each validator returns the typed value or raises `Invalid`
with a message (no location): the caller knows where the value came from and reports
`path:line:col: message`. Where a message shows the value, the caller may pass `show`
(the config hides text that came from the environment).

Params (SPEC "Snapshot fields"): a YAML number, or text holding a plain decimal
(`"25000"`, `"25000.00"`, `1e5`, blanks around it ignored), is an exact `Decimal`;
`true`/`false` are booleans; any other text stays text. A YAML float keeps the decimal
as written in the file (`0.1` is `Decimal("0.1")`), read back from the source line.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal
from urllib.parse import SplitResult, urlsplit

from monitor.durations import parse_duration
from monitor.yamlsource import Location

__all__ = [
    "DECIMAL_TEXT",
    "ENV_NAME",
    "LABEL_NAME",
    "LINE_BREAK",
    "MAX_DIGITS",
    "MAX_EXPONENT",
    "PROPERTIES",
    "Invalid",
    "ListenAddress",
    "Matcher",
    "ParamValue",
    "describe_value",
    "did_you_mean",
    "duration",
    "is_number",
    "label_name",
    "label_value",
    "listen_address",
    "number_problem",
    "param_from_text",
    "param_name",
    "param_value",
    "parse_matcher",
    "redact_userinfo",
    "split_lines",
    "url_parts",
    "valid_host",
    "written_number",
    "written_token",
]

ParamValue = Decimal | str | bool

#: A Prometheus label name; names starting with `__` are reserved and refused apart.
LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: An environment variable's name (`${VAR}`, `routing_key_env`).
ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Line breaks as PyYAML counts lines (so line numbers agree with its marks).
LINE_BREAK: Final = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
#: Plain decimal text: sign, digits, point, exponent; `_` between digits as in YAML.
DECIMAL_TEXT: Final = re.compile(
    r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
)
#: Bounds of a number literal in an expression; params are held to them too.
MAX_DIGITS: Final = 50
MAX_EXPONENT: Final = 1000

PROPERTIES: Final = re.compile(r"(?:[&!]\S*[ \t]+)+")  # an &anchor or !!tag before a value
_NUMBER_TOKEN: Final = re.compile(r"[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?")
_LISTEN: Final = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*):(?P<port>[0-9]{1,5})")
_HOST: Final = re.compile(
    r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?"
)
_USERINFO: Final = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?/*(?P<userinfo>.*)@")
_DURATION_HINT: Final = "a duration such as 500ms, 2s or 1m30s"
LISTEN_EXPECTED: Final = "expected HOST:PORT such as 127.0.0.1:9817, 0.0.0.0:9817 or [::1]:9817"

Show = Callable[[Any], str]


class Invalid(ValueError):
    """A value that does not validate; the message has no location (the caller's).

    `offset`: where in the value's text the problem is, when that is known."""

    def __init__(self, message: str, *, offset: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset

    def __str__(self) -> str:
        return self.message


def did_you_mean(word: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str:
    """`; did you mean 'x'?` with the choice closest to `word`, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def describe_value(value: Any) -> str:
    """A value as a person would recognise it from the YAML."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{value} (a {type(value).__name__})"


# -- the text behind a value ------------------------------------------------------------


def split_lines(text: str) -> list[str]:
    """A file's lines as YAML counts them."""
    return LINE_BREAK.split(text)


def written_token(lines: Sequence[str], loc: Location, pattern: re.Pattern[str]) -> str | None:
    """The plain scalar text written at `loc` (past an &anchor or !!tag), if any."""
    if not 0 < loc.line <= len(lines):
        return None
    line = lines[loc.line - 1]
    props = PROPERTIES.match(line, loc.col - 1)
    m = pattern.match(line, props.end() if props else loc.col - 1)
    return m.group(0) if m and m.group(0) else None


def written_number(lines: Sequence[str], loc: Location | None, value: float) -> Decimal:
    """A YAML float as the decimal written in the file (0.1 stays 0.1), else via repr."""
    token = None if loc is None else written_token(lines, loc, _NUMBER_TOKEN)
    if token:
        try:
            written = Decimal(token.replace("_", ""))
        except InvalidOperation:
            written = None
        if written is not None and float(written) == value:
            return written
    return Decimal(repr(value))


# -- params -----------------------------------------------------------------------------


def number_problem(value: Decimal) -> str | None:
    """Why `value` is past the bounds of the language's number literals, or None."""
    if not value.is_finite():
        return "not a finite number"
    _, digits, exponent = value.as_tuple()
    if len(digits) > MAX_DIGITS:
        return f"number longer than {MAX_DIGITS} digits"
    if isinstance(exponent, int) and abs(exponent) > MAX_EXPONENT:
        return f"number with an exponent beyond ±{MAX_EXPONENT}"
    return None


def param_from_text(text: str) -> ParamValue:
    """A param given as text (quoted in YAML, from `${VAR}`, on `--set`): decimal text
    is a Decimal, true/false a boolean (either case, blanks around ignored), else text."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if DECIMAL_TEXT.fullmatch(stripped):
        return Decimal(stripped.replace("_", ""))
    return text


def is_number(value: Any) -> bool:
    """Whether a param's value is a number as rules compare it: a finite Decimal or int,
    or text that `param_from_text` reads as one; true/false never is."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        value = param_from_text(value)
    if isinstance(value, Decimal):
        return value.is_finite()
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int)


def param_value(value: Any, *, written: Callable[[float], Decimal] | None = None) -> ParamValue:
    """A param's typed value from what YAML read; `written` turns a float into the
    decimal written in the file (see `written_number`). Invalid: the message without
    the param's name."""
    result: ParamValue
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        result = param_from_text(value)
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, Decimal):
        result = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Invalid(f"expected a finite number, got {value}")
        result = written(value) if written is not None else Decimal(repr(value))
    else:
        raise Invalid(f"expected a number, text or true/false, got {describe_value(value)}")
    if isinstance(result, Decimal):
        problem = number_problem(result)
        if problem is not None:
            raise Invalid(problem)
    return result


def param_name(name: str) -> str:
    if not LABEL_NAME.fullmatch(name):
        raise Invalid(
            f"invalid parameter name {name!r}: use letters, digits and _, not starting with a digit"
        )
    return name


# -- labels -----------------------------------------------------------------------------


def label_name(name: str, *, what: str = "label") -> str:
    """A label (or annotation) name: Prometheus's, and not reserved (`__`)."""
    if not LABEL_NAME.fullmatch(name) or name.startswith("__"):
        raise Invalid(
            f"invalid {what} name {name!r}: use letters, digits and _, not starting "
            "with a digit or __"
        )
    return name


def label_value(value: Any, *, written: Callable[[float], Decimal] | None = None) -> str:
    """A label's value: text; a YAML number is the text written (`desk: 7` is "7")."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        number = written(value) if written is not None else Decimal(repr(value))
        return format(number, "f")
    raise Invalid(f"expected text, got {describe_value(value)}")


# -- durations --------------------------------------------------------------------------


def duration(value: Any, *, allow_zero: bool = False, show: Show = describe_value) -> float:
    """A Prometheus-style duration (`500ms`, `2s`, `1m30s`) in seconds; longer than 0
    unless `allow_zero` (then a bare `0` is 0 too)."""
    if allow_zero and isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0.0
    if not isinstance(value, str):
        unit_hint = " (add a unit)" if isinstance(value, int | float) and value else ""
        raise Invalid(f"expected {_DURATION_HINT}, got {show(value)}{unit_hint}")
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise Invalid(
            f"invalid duration {show(value)}: expected a number and a unit "
            "(ms, s, m, h, d, w, y) such as 500ms, 2s or 1m30s"
        ) from None
    if seconds <= 0 and not allow_zero:
        raise Invalid("must be longer than 0, e.g. 2s")
    return seconds


# -- hosts, listen addresses and URLs ---------------------------------------------------


def valid_host(host: str) -> bool:
    """An IP address or a DNS name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOST.fullmatch(host)) and len(host) <= 253
    return True


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str  # an IPv6 address without its brackets
    port: int  # 0: any free port

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def listen_address(text: str, *, show: Show = describe_value) -> ListenAddress:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`; no host: 127.0.0.1) to listen on."""
    m = _LISTEN.fullmatch(text.strip())
    if m is None or int(m["port"]) > 65535:
        raise Invalid(f"{LISTEN_EXPECTED}, got {show(text)}")
    host = m["host"]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise Invalid(f"invalid IPv6 address {host}") from None
        host = host[1:-1]
    elif not host:
        host = "127.0.0.1"
    elif not valid_host(host):
        raise Invalid(f"invalid host {host!r}; {LISTEN_EXPECTED}")
    return ListenAddress(host, int(m["port"]))


def redact_userinfo(url: str) -> str:
    """The URL with everything between its scheme and its last @ masked
    (`mqtt:/***@127.0.0.1:1883`): what may be a user and password.

    Not only where urlsplit finds a user: a malformed URL (one slash, a # or ? in the
    password) puts the credentials in its path or fragment, and those are shown too.
    The user name goes as well: without a scheme, or with a colon in the password,
    where it ends and the password starts is a guess.
    """
    match = _USERINFO.match(url)
    if match is None:
        return url
    return url[: match.start("userinfo")] + "***" + url[match.end("userinfo") :]


def url_parts(
    text: str,
    schemes: tuple[str, ...],
    *,
    name: str,
    expected: str,
    credentials: str,
    hint: str = "",
    show: Show = describe_value,
) -> SplitResult:
    """A URL's parts once it holds no credentials (`credentials` is the message
    otherwise, never echoing them), has one of `schemes` and a valid host and port.
    `show` gets the URL with its user part masked; `hint` ends host and port messages."""
    parts = urlsplit(text)
    if "@" in parts.netloc:  # never echo what may be a password
        raise Invalid(credentials)
    shown = show(redact_userinfo(text))
    if parts.scheme not in schemes or any(c.isspace() for c in text):
        raise Invalid(f"{name}: {expected}, got {shown}")
    if not parts.hostname or not valid_host(parts.hostname):
        raise Invalid(f"{name}: no valid host in {shown}{hint}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise Invalid(f"{name}: invalid port in {shown}{hint}")
    return parts


def http_url(text: str, *, name: str, show: Show = describe_value) -> str:
    """An http(s) URL without query or fragment, kept exactly as written."""
    parts = url_parts(
        text,
        ("http", "https"),
        name=name,
        expected="expected an http:// or https:// URL such as https://api.example.com",
        credentials=f"{name} must not hold credentials (user:password@)",
        show=show,
    )
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise Invalid(f"{name} must not have a query (?) or fragment (#)")
    return text


# -- label matchers ---------------------------------------------------------------------

MatchOp = Literal["=", "!=", "=~", "!~"]
_MATCHER_HEAD: Final = re.compile(r"\s*(?P<name>[^\s=!~\"]*)\s*(?P<op>=~|!~|!=|=)\s*")
_UNQUOTED_VALUE: Final = re.compile(r"[^\s\"',{}=!~]*")  # else: quote it
_ESCAPES: Final = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_MATCHER_HINT: Final = 'such as severity="critical", team=~"risk|ops" or env!="test"'


@dataclass(frozen=True, slots=True)
class Matcher:
    """An Alertmanager-style label matcher: `name="value"`, `!=`, `=~"re"`, `!~`.

    A label the alert lacks reads as the empty text; a regular expression must match
    the whole value."""

    name: str
    op: MatchOp
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(got) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{escaped}"'


def parse_matcher(text: str) -> Matcher:
    """A matcher from its text; Invalid (with the offset of the problem) otherwise."""
    head = _MATCHER_HEAD.match(text)
    if head is None or not head["name"]:
        start = len(text) - len(text.lstrip())
        raise Invalid(f"expected a label matcher {_MATCHER_HINT}", offset=start)
    name = head["name"]
    if not LABEL_NAME.fullmatch(name):
        raise Invalid(
            f"invalid label name {name!r} in a matcher: use letters, digits and _, "
            "not starting with a digit",
            offset=head.start("name"),
        )
    op: MatchOp = head["op"]  # type: ignore[assignment]  # one of the four, by the pattern
    value, end = _matcher_value(text, head.end())
    rest = text[end:]
    if rest.strip():
        offset = end + len(rest) - len(rest.lstrip())
        raise Invalid(
            f"unexpected {rest.strip()[:20]!r} after the matcher's value; "
            'quote a value with blanks or commas ("...")',
            offset=offset,
        )
    pattern = None
    if op in ("=~", "!~"):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise Invalid(
                f"invalid regular expression {value!r}: {exc.msg}", offset=head.end()
            ) from None
    return Matcher(name, op, value, pattern)


def _matcher_value(text: str, start: int) -> tuple[str, int]:
    """The value at `start` (quoted with escapes, or plain) and where it ends."""
    if not text.startswith('"', start):
        m = _UNQUOTED_VALUE.match(text, start)
        assert m is not None  # the pattern matches the empty text
        return m.group(0), m.end()
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            escaped = _ESCAPES.get(text[i + 1 : i + 2])
            if escaped is None:
                raise Invalid(
                    'invalid escape in a matcher value: use \\" \\\\ \\n or \\t', offset=i
                )
            out.append(escaped)
            i += 2
            continue
        out.append(ch)
        i += 1
    raise Invalid('unterminated matcher value: add the closing "', offset=start)
