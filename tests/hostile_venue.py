"""A fake venue on a real socket that serves hostile answers, and the Hypothesis
strategies that make them (for tests/test_fuzz_pipeline.py).

`HostileVenue` speaks just enough HTTP/1.1 to be polled by riskmon's adapters: Clear
Street balances (`GET {cs}/v1/accounts/{id}/balances`), Polymarket's token endpoint and
balance (`POST {pmx}/oauth/token`, `POST {pmx}/v1/positions/balance`) and both account
listings (discovery). Every account gets a fixed good answer unless an `Answer` is set
for it, which is written byte for byte: any status line, headers and body, so also lies
about Content-Length, truncated bodies and broken chunking.

Answers are built from a small JSON model in which everything hostile can be written:
`Obj` keeps duplicate keys, `Raw` is a token written as is (`1E+999999999`, `NaN`, a
900-level nesting), strings may hold lone surrogates (escaped, or raw as invalid UTF-8).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Union
from urllib.parse import unquote

from hypothesis import strategies as st

# -- a JSON model that can say anything -----------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON token written as is (it need not be valid JSON)."""

    text: str


@dataclass(frozen=True)
class Obj:
    """A JSON object as written, in order, duplicate keys and all."""

    pairs: tuple[tuple[str, Json], ...]


Json = Union[None, bool, int, Decimal, str, Raw, Obj, list["Json"]]  # noqa: UP007


def dump(value: Json, *, ascii_only: bool = True) -> str:
    """JSON text of `value`; `ascii_only=False` leaves lone surrogates raw."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Obj):
        return (
            "{"
            + ",".join(
                f"{json.dumps(k, ensure_ascii=ascii_only)}:{dump(v, ascii_only=ascii_only)}"
                for k, v in value.pairs
            )
            + "}"
        )
    return "[" + ",".join(dump(v, ascii_only=ascii_only) for v in value) + "]"


def obj(**fields: Json) -> Obj:
    return Obj(tuple(fields.items()))


# -- the good answers -----------------------------------------------------------------------


def cs_balances(account_id: str, *, daily_pnl: str, margin_excess: str) -> Obj:
    """A Clear Street `AccountBalances` envelope, as the venue sends it."""
    return obj(
        data=obj(
            account_id=int(account_id),
            currency="USD",
            margin_type="REG_T",
            buying_power="90000.00",
            equity="120000.50",
            daily_pnl=daily_pnl,
            long_market_value="80000.00",
            short_market_value="0",
            settled_cash="40000.50",
            sod=obj(asof="2026-12-04", equity="118000.00", buying_power="88000.00"),
            margin_details=obj(
                initial_margin_excess="5000.00",
                initial_margin_requirement="40000.00",
                maintenance_margin_excess=margin_excess,
                maintenance_margin_requirement="30000.00",
                usage=obj(total="100000.00", used="30000.00"),
                intraday_details=obj(buying_power="50000.00", multiplier="4"),
                top_contributors=[
                    obj(
                        underlying_instrument_id="AAPL",
                        maintenance_margin_requirement="9000.00",
                        market_value="30000.00",
                    )
                ],
            ),
        ),
        error=None,
        metadata=obj(request_id="req-cs-1"),
    )


def pmx_balance(*, excess_capital: str) -> Obj:
    """A Polymarket Exchange balance, as the venue sends it."""
    return obj(
        balance="25000.00",
        capitalRequirement="5000.00",
        excessCapital=excess_capital,
        buyingPower="20000.00",
        totalSecurityNotionalValue="1000.00",
        totalSecurityAvailableValue="900.00",
        openOrders="100.00",
        updateTime="2026-12-05T03:00:00Z",
        securities=obj(
            **{"PRES-2028-DEM": obj(balance="100", marketValue="55.00", haircut=0)},
        ),
    )


# -- answers on the wire --------------------------------------------------------------------

REASONS = {200: "OK", 401: "Unauthorized", 429: "Too Many Requests", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, byte for byte; `close`: close the connection after it."""

    wire: bytes
    close: bool = False

    def __repr__(self) -> str:  # Hypothesis prints failing examples: keep them readable
        shown = repr(self.wire[:800])
        more = f" + {len(self.wire) - 800} bytes more" if len(self.wire) > 800 else ""
        return f"Answer(wire={shown}{more}, close={self.close})"

    @staticmethod
    def json(status: int, body: Json) -> Answer:
        payload = dump(body).encode()
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'X')}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n"
        )
        return Answer(head.encode() + payload)


def without_account_id(envelope: Obj) -> Obj:
    (_, data), *rest = envelope.pairs
    assert isinstance(data, Obj)
    return Obj((("data", Obj(tuple(p for p in data.pairs if p[0] != "account_id"))), *rest))


# What an account the test does not know (a discovered one) answers.
DISCOVERED_CS = Answer.json(
    200, without_account_id(cs_balances("1", daily_pnl="-60000.00", margin_excess="-5.00"))
)
DISCOVERED_PMX = Answer.json(200, pmx_balance(excess_capital="-1.00"))
TOKEN = Answer.json(200, obj(access_token="fuzz-token", token_type="Bearer", expires_in=3600))
NOT_FOUND = Answer.json(404, obj(message="no such route"))


@dataclass
class HostileVenue:
    """Both venues' endpoints on one socket; `answers[account]` overrides the good one."""

    good: dict[str, Answer]
    answers: dict[str, Answer] = field(default_factory=dict)
    #: the answer to an account listing (discovery); an empty one when None
    listing: Answer | None = None
    requests: int = 0
    _server: asyncio.Server | None = None
    _connections: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> str:
        """Listen on a free port of 127.0.0.1; the base URL (`/cs`, `/pmx` below it)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, headers = _parse_head(head)
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                self.requests += 1
                answer = self._answer(method, target, body)
                writer.write(answer.wire)
                await writer.drain()
                if answer.close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, method: str, target: str, body: bytes) -> Answer:
        path = target.split("?", 1)[0]
        if method == "POST" and path == "/pmx/oauth/token":
            return TOKEN
        if method == "GET" and path in ("/cs/v1/accounts", "/pmx/v1/accounts"):
            return self.listing or Answer.json(200, obj(data=[], accounts=[]))
        if method == "GET" and path.startswith("/cs/v1/accounts/") and path.endswith("/balances"):
            account = unquote(path[len("/cs/v1/accounts/") : -len("/balances")])
            other = DISCOVERED_CS
        elif method == "POST" and path == "/pmx/v1/positions/balance":
            account = str(json.loads(body).get("name"))
            other = DISCOVERED_PMX
        else:
            return NOT_FOUND
        return self.answers.get(account) or self.good.get(account) or other


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


# -- strategies: hostile values, documents and framing -----------------------------------

HOSTILE_NUMBERS = (
    "1E+999999999",
    "-1E+999999999",
    "1E-999999999",
    "1e400",
    "-1e-400",
    "9" * 400,
    "0." + "0" * 400 + "1",
    "1.0e+99999999999999999999",
    "-0",
    "NaN",
    "Infinity",
    "-Infinity",
    "01",
    "1.",
    ".5",
    "0x10",
    "1e",
    "--1",
)
HOSTILE_TEXTS = (
    "\ud800",
    "\udfff",
    "USD\ud83d",
    "\x00",
    "..",
    "../..",
    "USD\r\nX-Injected: 1",
    'a"b\\c\nd',
    "\u2028\u2029",
    "\ufeff",
    "NaN",
    "Infinity",
    "1_000",
    " 5 ",
    "1E+999999999",
    "-1E-999999999",
    "{{ 7 * 7 }}",
    "{% for i in range(9) %}x{% endfor %}",
    "</script><script>",
    "# HELP x\nriskmon_fake 1",
    "\\",
    "X" * 5000,
)
KNOWN_KEYS = (
    "data",
    "metadata",
    "error",
    "account_id",
    "currency",
    "buying_power",
    "buyingPower",
    "equity",
    "daily_pnl",
    "daily_total_pnl",
    "margin_details",
    "maintenance_margin_excess",
    "usage",
    "used",
    "total",
    "top_contributors",
    "sod",
    "excessCapital",
    "excess_capital",
    "capitalRequirement",
    "securities",
    "marketValue",
    "haircut",
    "request_id",
    "",
    "a.b",
    "*",
    "__class__",
    "BuyingPower",
    "buying power",
)

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
# Plain decimals, and long ones at the edges of what money may be (up to 40 digits,
# exponents up to 40 either way): near where parsing should start refusing them.
decimal_numbers = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    st.builds(
        lambda digits, exponent: Decimal(f"{digits}E{exponent}"),
        st.integers(-(10**40), 10**40),
        st.integers(-40, 40),
    ),
)

scalars: st.SearchStrategy[Json] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**80), max_value=10**80),
    decimal_numbers,
    decimal_numbers.map(str),  # a decimal in a string, as the venues send money
    st.sampled_from(HOSTILE_NUMBERS).map(Raw),
    st.sampled_from(HOSTILE_NUMBERS),
    any_text,
    st.sampled_from(HOSTILE_TEXTS),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), any_text)
names = st.one_of(any_text, st.sampled_from(HOSTILE_TEXTS))  # account ids a venue sends
numbers: st.SearchStrategy[Json] = st.one_of(
    decimal_numbers,
    decimal_numbers.map(str),
    st.integers(),
    st.sampled_from(HOSTILE_NUMBERS).map(Raw),
    st.sampled_from(HOSTILE_NUMBERS),
)


def _deep(depth: int, kind: str) -> Raw:
    if kind == "list":
        return Raw("[" * depth + "1" + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


deep_values = st.builds(_deep, st.integers(2, 3000), st.sampled_from(["list", "object"]))

values: st.SearchStrategy[Json] = st.one_of(
    st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.lists(st.tuples(keys, children), max_size=4).map(lambda p: Obj(tuple(p))),
        ),
        max_leaves=8,
    ),
    deep_values,
)


def _paths(node: Json, here: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every place in a document, as indexes into Obj pairs and lists."""
    found = [here]
    children: list[Json] = []
    if isinstance(node, Obj):
        children = [v for _, v in node.pairs]
    elif isinstance(node, list):
        children = node
    for i, child in enumerate(children):
        found.extend(_paths(child, (*here, i)))
    return found


def _edit(node: Json, path: tuple[int, ...], change: Any) -> Json:
    """`node` with `change(parent, index)` applied where `path` leads (a copy)."""
    if len(path) == 1:
        return change(node, path[0])  # type: ignore[no-any-return]
    i = path[0]
    if isinstance(node, Obj):
        pairs = list(node.pairs)
        pairs[i] = (pairs[i][0], _edit(pairs[i][1], path[1:], change))
        return Obj(tuple(pairs))
    assert isinstance(node, list)
    items = list(node)
    items[i] = _edit(items[i], path[1:], change)
    return items


def _set(value: Json) -> Any:
    def change(parent: Json, i: int) -> Json:
        if isinstance(parent, Obj):
            pairs = list(parent.pairs)
            pairs[i] = (pairs[i][0], value)
            return Obj(tuple(pairs))
        assert isinstance(parent, list)
        return [*parent[:i], value, *parent[i + 1 :]]

    return change


def _delete(parent: Json, i: int) -> Json:
    if isinstance(parent, Obj):
        return Obj(parent.pairs[:i] + parent.pairs[i + 1 :])
    assert isinstance(parent, list)
    return parent[:i] + parent[i + 1 :]


def _duplicate(value: Json) -> Any:
    """The key at `i` once more, after it, with another value (a duplicate key)."""

    def change(parent: Json, i: int) -> Json:
        if isinstance(parent, Obj):
            key = parent.pairs[i][0]
            return Obj((*parent.pairs[: i + 1], (key, value), *parent.pairs[i + 1 :]))
        assert isinstance(parent, list)
        return [*parent, value]

    return change


def _insert(key: str, value: Json) -> Any:
    def change(parent: Json, i: int) -> Json:
        if isinstance(parent, Obj):
            return Obj((*parent.pairs[:i], (key, value), *parent.pairs[i:]))
        assert isinstance(parent, list)
        return [*parent[:i], value, *parent[i:]]

    return change


@st.composite
def documents(draw: st.DrawFn, good: Json) -> Json:
    """The good document with a few hostile edits, or (rarely) any JSON value at all."""
    if draw(rarely(16)):
        return draw(values)
    doc = good
    for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):
        places = [p for p in _paths(doc) if p]  # not the root: it has no parent
        if not places:
            break
        place = draw(st.sampled_from(places))
        op = draw(st.sampled_from(["set", "set", "delete", "duplicate", "insert"]))
        if op == "set":  # numbers half the time: most fields hold money
            doc = _edit(doc, place, _set(draw(st.one_of(numbers, values))))
        elif op == "delete":
            doc = _edit(doc, place, _delete)
        elif op == "duplicate":
            doc = _edit(doc, place, _duplicate(draw(values)))
        else:
            doc = _edit(doc, place, _insert(draw(keys), draw(values)))
    return doc


OTHER_STATUSES = (
    100,
    201,
    204,
    301,
    304,
    400,
    401,
    403,
    404,
    408,
    409,
    422,
    429,
    500,
    502,
    503,
    504,
    599,
    999,
)
RETRY_AFTER = (
    "0",
    "0",
    "0.001",
    "-1",
    "abc",
    "99999999999999999999",
    "1e309",
    "NaN",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "",
)
ODD_LENGTHS = ("", "-1", "abc", "1" * 5000, "0x10", "+5", " 7 ", "1, 2", "99999999999999999999")


def rarely(one_in: int) -> st.SearchStrategy[bool]:
    """True one time in `one_in` (`st.integers(...) == 0` would be far more often: Hypothesis
    favours the ends of ranges)."""
    return st.sampled_from([False] * (one_in - 1) + [True])  # shrinks to False


def mostly(usual: Any, *unusual: Any) -> st.SearchStrategy[Any]:
    """`usual` three times in four, else one of `unusual`: most hostile answers should
    get past the framing, to reach the parsing and the rules."""
    return rarely(4).flatmap(lambda odd: st.sampled_from(unusual) if odd else st.just(usual))


@st.composite
def answers(draw: st.DrawFn, good: Json) -> Answer:
    """A hostile HTTP answer: a hostile document, encoded, framed in odd ways."""
    status = draw(mostly(200, *OTHER_STATUSES))
    doc = draw(documents(good))
    encoding = draw(mostly("ascii", "utf-8", "utf-16", "latin-1"))
    text = dump(doc, ascii_only=encoding == "ascii")
    if encoding == "latin-1":
        body = text.encode("latin-1", "replace")
    else:
        body = text.encode("utf-8" if encoding == "ascii" else encoding, "surrogatepass")
    headers = [("content-type", draw(st.sampled_from(["application/json", "text/html", ""])))]
    if draw(st.booleans()) and status in (408, 429, 500, 502, 503, 504):
        name = draw(st.sampled_from(["retry-after", "retry-after-ms"]))
        headers.append((name, draw(st.sampled_from(RETRY_AFTER))))
    elif status in (408, 429, 500, 502, 503, 504):
        headers.append(("retry-after", "0"))  # a wait here costs the run, not riskmon
    if draw(rarely(6)):
        headers.append(
            (
                "x-request-id",
                draw(st.sampled_from(HOSTILE_TEXTS))
                .encode("ascii", "backslashreplace")
                .decode()
                .replace("\r", "")
                .replace("\n", ""),
            )
        )
    if draw(rarely(16)):
        if draw(st.booleans()):
            body = gzip.compress(body)
        headers.append(("content-encoding", "gzip"))
    framing = draw(mostly("length", "short", "long", "close", "odd", "chunked"))
    close = framing != "length" or draw(st.booleans())
    sent = body
    if framing == "length":
        headers.append(("content-length", str(len(body))))
    elif framing == "short":  # more bytes than announced
        cut = draw(st.integers(0, max(0, len(body) - 1)))
        headers.append(("content-length", str(cut)))
    elif framing == "long":  # the connection closes before the announced end: truncated
        headers.append(("content-length", str(len(body) + draw(st.integers(1, 1000)))))
    elif framing == "odd":
        headers.append(("content-length", draw(st.sampled_from(ODD_LENGTHS))))
    elif framing == "chunked":
        headers.append(("transfer-encoding", "chunked"))
        size = draw(st.sampled_from([len(body), len(body) + 5, max(0, len(body) - 1)]))
        last = draw(st.sampled_from([b"0\r\n\r\n", b"", b"zz\r\n\r\n"]))
        sent = f"{size:x}\r\n".encode() + body + b"\r\n" + last
    else:  # "close": no length, the body ends where the connection does
        sent = body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body
    status_line = draw(
        mostly(f"HTTP/1.1 {status} X", f"HTTP/1.0 {status}", "HTTP/1.1 2OO OK", "HTTP/1.1")
    )
    head = status_line + "\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    return Answer(head.encode("latin-1", "replace") + sent, close=close)
