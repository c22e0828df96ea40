"""A venue's transport settings, common to every venue kind: `http_client`, `proxy_url`,
`tls: {ca_file, cert_file, key_file}` and `allow_insecure_http`.

The TLS files are loaded into an SSL context here, at config load, so a wrong file (not
PEM, a key that does not match its certificate) is a `path:line:col` problem in
`riskmon check` rather than a failing poll later. A `base_url` of `http://` to a host
other than this machine would send the venue's bearer key in clear: refused unless the
venue says `allow_insecure_http: true`.
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Any, Final, get_args
from urllib.parse import urlsplit

from monitor.config.checking import Checker, Section, key_name
from monitor.config.model import HttpClientName, TlsConfig, VenueTransport
from monitor.schema import valid_host
from monitor.yamlsource import KeyPath

TRANSPORT_KEYS: Final = ("http_client", "proxy_url", "tls", "allow_insecure_http")
HTTP_CLIENTS: Final[tuple[str, ...]] = get_args(HttpClientName)
_TLS_KEYS: Final = ("ca_file", "cert_file", "key_file")
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


def check_venue_transport(checker: Checker, s: Section, base_url: str) -> VenueTransport:
    """The transport settings of venue section `s`, whose checked base_url is `base_url`
    ("" when it was missing or wrong)."""
    default: HttpClientName = "aiohttp"
    client = checker.field(s, "http_client", default, lambda p, v: _http_client(checker, p, v))
    proxy_url = checker.field(s, "proxy_url", None, lambda p, v: _proxy_url(checker, p, v))
    tls = _tls(checker, s) if s.has("tls") else None
    allow_insecure = checker.field(s, "allow_insecure_http", False, checker.boolean)
    if base_url and not allow_insecure and insecure_base_url(base_url):
        checker.error(
            s.at("base_url"),
            f"base_url {checker.show(s.at('base_url'), base_url)} is plain http:// to a host "
            "other than this machine: the venue's credentials would cross the network in "
            "clear; use https://, or set allow_insecure_http: true if the network is "
            "trusted",
        )
    if tls is not None and base_url.startswith("http://"):
        checker.error(s.at("tls"), "tls is set but base_url starts with http://", key=True)
    return VenueTransport(
        http_client=client,
        proxy_url=proxy_url,
        tls=tls,
        allow_insecure_http=allow_insecure,
    )


def insecure_base_url(url: str) -> bool:
    """Plain http:// to a host that is not this machine's loopback."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def client_ssl_context(tls: TlsConfig | None) -> ssl.SSLContext:
    """Verifying the venue against the system CAs and `ca_file`'s (added, not instead:
    a Polymarket venue's token_url may be public while its API is behind a private CA);
    presenting `cert_file` (with `key_file`, or the key inside cert_file) when set.
    Raises ssl.SSLError or OSError for a file that cannot be used."""
    context = ssl.create_default_context()
    if tls is not None and tls.ca_file is not None:
        context.load_verify_locations(cafile=str(tls.ca_file))
    if tls is not None and tls.cert_file is not None:
        key = str(tls.key_file) if tls.key_file is not None else None
        # a passphrase-protected key fails here instead of prompting on the terminal
        context.load_cert_chain(str(tls.cert_file), key, password=_no_passphrase)
    return context


def _no_passphrase() -> bytes:
    raise ValueError("the key is protected by a passphrase; riskmon needs it unencrypted")


def _http_client(checker: Checker, path: KeyPath, value: Any) -> HttpClientName | None:
    text = checker.string(path, value)
    if text is None:
        return None
    if text not in HTTP_CLIENTS:
        checker.error(
            path,
            f"http_client: expected one of {', '.join(HTTP_CLIENTS)}, "
            f"got {checker.show(path, text)}",
        )
        return None
    return "httpx" if text == "httpx" else "aiohttp"


def _proxy_url(checker: Checker, path: KeyPath, value: Any) -> str | None:
    text = checker.string(path, value)
    if text is None:
        return None
    shown = checker.show_url(path, text)
    expected = "expected an http:// proxy URL such as http://proxy.internal:3128"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or any(c.isspace() for c in text):
        checker.error(path, f"proxy_url: {expected}, got {shown}")
        return None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.hostname or not valid_host(parts.hostname) or port == 0:
        checker.error(path, f"proxy_url: no valid host and port in {shown}; {expected}")
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        checker.error(path, f"proxy_url: a proxy URL has no path or query, got {shown}")
        return None
    return text.rstrip("/")


def _tls(checker: Checker, venue: Section) -> TlsConfig | None:
    s = checker.section(venue.at("tls"), venue.data["tls"], f"{venue.where} tls", _TLS_KEYS)
    before = len(checker.problems)
    ca_file = checker.field(s, "ca_file", None, checker.readable_file)
    cert_file = checker.field(s, "cert_file", None, checker.readable_file)
    key_file = checker.field(s, "key_file", None, checker.readable_file)
    if s.has("key_file") and not s.has("cert_file"):
        checker.error(s.at("key_file"), "key_file needs a cert_file too", key=True)
    if len(checker.problems) > before:
        return None
    tls = TlsConfig(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    try:
        client_ssl_context(tls)
    except (ssl.SSLError, OSError, ValueError) as exc:
        key = "cert_file" if s.has("cert_file") else "ca_file"
        if ca_file is not None and not _loads_as_ca(ca_file):
            key = "ca_file"
        at = s.at(key) if s.has(key) else venue.at("tls")
        checker.error(at, f"{key_name(at)}: cannot be used for TLS: {_reason(exc)}")
        return None
    return tls


def _loads_as_ca(path: Any) -> bool:
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError):
        return False
    return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.reason} (not PEM, or a key that does not match its certificate?)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


__all__ = [
    "HTTP_CLIENTS",
    "TRANSPORT_KEYS",
    "check_venue_transport",
    "client_ssl_context",
    "insecure_base_url",
]
