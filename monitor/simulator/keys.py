"""Demo credentials for the simulator and the monitor that polls it.

    python -m monitor.simulator.keys DIR

creates, only where missing (so it is safe to run every time):

    DIR/clearstreet-api-key   a random Clear Street API key (mode 0600)
    DIR/pmx-demo.pem          an RSA-2048 private key, PKCS#8 PEM (mode 0600)
    DIR/pmx-demo.pub.pem      its public key (given to the simulator's client riskmon-demo)
    DIR/riskmon-api-token     a random bearer token for riskmon's own API (mode 0600)
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

API_KEY_FILE = "clearstreet-api-key"
PRIVATE_KEY_FILE = "pmx-demo.pem"
PUBLIC_KEY_FILE = "pmx-demo.pub.pem"
API_TOKEN_FILE = "riskmon-api-token"


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write a file atomically (temporary file, then rename), created with `mode`."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _public_pem(private: rsa.RSAPrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ensure_demo_credentials(directory: Path) -> None:
    """Create the demo key files in `directory` where they are missing; keep existing ones.

    A public key that does not match the private key is rewritten from it.
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    api_key = directory / API_KEY_FILE
    if not api_key.exists():
        _write(api_key, secrets.token_urlsafe(32).encode(), 0o600)
    api_token = directory / API_TOKEN_FILE
    if not api_token.exists():
        _write(api_token, secrets.token_urlsafe(32).encode(), 0o600)
    private_path = directory / PRIVATE_KEY_FILE
    public_path = directory / PUBLIC_KEY_FILE
    private: rsa.RSAPrivateKey | None = None
    if private_path.exists():
        loaded = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{private_path} is not an RSA private key")
        private = loaded
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write(private_path, pem, 0o600)
    public = _public_pem(private)
    if not public_path.exists() or public_path.read_bytes() != public:
        _write(public_path, public, 0o644)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m monitor.simulator.keys DIR", file=sys.stderr)
        return 2
    directory = Path(args[0])
    try:
        ensure_demo_credentials(directory)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name in (API_KEY_FILE, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE):
        print(directory / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
