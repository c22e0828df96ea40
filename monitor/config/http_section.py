"""`http` in riskmon.yaml: where the API listens, HTTPS and the bearer token.

```yaml
http:
  listen: "0.0.0.0:9817"
  tls: {cert_file: tls/server.crt, key_file: tls/server.key, client_ca_file: tls/clients-ca.crt}
  bearer_token_file: /run/secrets/riskmon-api
```

Every file must be readable now; the certificate and key are loaded as the server will
load them, so a key that does not match its certificate, or a file that is not PEM, is
reported at its place and not at start-up. The token file is re-read when it changes
(`Secret`), and is never shown.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from monitor.api_tls import server_ssl_context
from monitor.config.checking import Checker, Section
from monitor.config.model import HttpConfig, HttpTlsConfig
from monitor.config.secret import Secret
from monitor.yamlsource import KeyPath

__all__ = ["HTTP_KEYS", "check_http", "token_file_exposure"]

HTTP_KEYS = ("listen", "tls", "bearer_token_file")
_TLS_KEYS = ("cert_file", "key_file", "client_ca_file")
_DEFAULT = HttpConfig()


def check_http(
    checker: Checker, top: Section, listen: Callable[[KeyPath, Any], str | None]
) -> HttpConfig:
    """The `http` section of `top`, every problem reported at its place."""
    s = checker.section(top.at("http"), top.data.get("http"), "http", HTTP_KEYS)
    address = checker.field(s, "listen", _DEFAULT.listen, listen)
    tls = _tls(checker, s) if s.has("tls") else None
    token = checker.field(
        s,
        "bearer_token_file",
        None,
        lambda p, v: checker.secret_file(p, v, "http bearer_token_file", header=True),
    )
    return HttpConfig(listen=address, tls=tls, bearer_token=token)


def _tls(checker: Checker, http: Section) -> HttpTlsConfig | None:
    path = http.at("tls")
    s = checker.section(path, http.data["tls"], "http tls", _TLS_KEYS)
    before = len(checker.problems)
    checker.require(s, "cert_file", "key_file")
    cert = checker.field(s, "cert_file", None, checker.readable_file)
    key = checker.field(s, "key_file", None, checker.readable_file)
    client_ca = checker.field(s, "client_ca_file", None, checker.readable_file)
    if cert is None or key is None or len(checker.problems) > before:
        return None
    tls = HttpTlsConfig(cert_file=cert, key_file=key, client_ca_file=client_ca)
    try:
        server_ssl_context(tls)
    except ssl.SSLError as exc:
        # which file: the CA fails on its own; the pair fails together
        if client_ca is not None and _loads_pair(cert, key):
            checker.error(
                s.at("client_ca_file"),
                f"client_ca_file {client_ca} is not a PEM CA certificate ({exc.reason})",
            )
        else:
            checker.error(
                s.at("cert_file"),
                f"cert_file {cert} and key_file {key} are not a matching PEM certificate and "
                f"private key ({exc.reason})",
            )
        return None
    return tls


def _loads_pair(cert: Any, key: Any) -> bool:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=b"")
    except ssl.SSLError:
        return False
    return True


def token_file_exposure(token: Secret | None) -> str | None:
    """Why the token file is readable by more than its owner and group, or None."""
    if token is None or token.path is None:
        return None
    try:
        mode = token.path.stat().st_mode
    except OSError:
        return None
    if mode & 0o004:
        return f"http.bearer_token_file {token.path} is readable by every user (chmod 600 it)"
    return None
