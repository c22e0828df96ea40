"""The TLS contexts of riskmon's HTTPS API: the server's (`http.tls`), and the one a
client of it (`monitor.api_client`, the tests) trusts it with."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config's checks use this module: no import cycle at run time
    from monitor.config.model import HttpTlsConfig

__all__ = ["client_ssl_context", "server_ssl_context"]


def server_ssl_context(tls: HttpTlsConfig) -> ssl.SSLContext:
    """TLS 1.2 or later with `cert_file` and `key_file`; with `client_ca_file`, the
    handshake fails unless the client shows a certificate that CA signed.

    ssl.SSLError when a file is not PEM or the key does not match the certificate. An
    encrypted key is refused (an empty passphrase), never prompted for on a terminal.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file, password=b"")
    if tls.client_ca_file is not None:
        context.load_verify_locations(cafile=tls.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> ssl.SSLContext:
    """A client's context: the system CAs (or `ca_file`), and its own certificate when
    the server asks for one."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file, password=b"")
    return context
