"""A test PKI for every TLS test: a CA, a server certificate, a client certificate, and a
client certificate from another CA (one the server must refuse).

The files are PEM, keys unencrypted PKCS#8, in `folder`: ca.crt, server.crt, server.key,
client.crt, client.key, stranger.crt, stranger.key.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki", "make_pki"]

_Issuer = tuple[x509.Name, ec.EllipticCurvePrivateKey]


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from another CA
    stranger_key: Path


def make_pki(
    folder: Path, *, server_names: Sequence[str] = ("localhost",), server_ip: bool = True
) -> Pki:
    """The certificates, signed by a fresh CA; the server's for `server_names` (and for
    127.0.0.1 when `server_ip`)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = _issue(folder, "ca", "riskmon test CA", None, usage=None)
    san: list[x509.GeneralName] = [x509.DNSName(name) for name in server_names]
    if server_ip:
        san.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    _issue(folder, "server", "riskmon", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH, san=san)
    _issue(folder, "client", "prometheus", ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    other = _issue(folder, "other-ca", "another CA", None, usage=None)
    _issue(folder, "stranger", "stranger", other, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(
        ca=folder / "ca.crt",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        client_cert=folder / "client.crt",
        client_key=folder / "client.key",
        stranger_cert=folder / "stranger.crt",
        stranger_key=folder / "stranger.key",
    )


def _issue(
    folder: Path,
    stem: str,
    subject: str,
    issuer: _Issuer | None,
    *,
    usage: x509.ObjectIdentifier | None,
    san: Sequence[x509.GeneralName] = (),
) -> _Issuer:
    """`stem`.crt and `stem`.key: a CA when `issuer` is None (self-signed), else a leaf
    for `usage` signed by `issuer`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer is not None else (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    for path, data in (
        (folder / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM)),
        (
            folder / f"{stem}.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
    ):
        path.write_bytes(data)
        path.chmod(0o600)
    return name, key
