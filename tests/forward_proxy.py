"""A small forward HTTP proxy for the tests, run as its own process:

    python tests/forward_proxy.py [--auth USER:PASSWORD]

It prints `port N` once listening, then one line per request it carries: `CONNECT
host:port` for a tunnel (https://), or `GET http://host:port/path` for a plain request
in absolute form (http://). With --auth, a request without that Proxy-Authorization
gets `407` (and a line `refused ...`). Each client connection carries one request,
then its bytes are relayed both ways until either side closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import sys
from urllib.parse import urlsplit


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def report(line: str) -> None:
    print(line, flush=True)


async def serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auth: str | None
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if auth is not None:
        expected = "Basic " + base64.b64encode(auth.encode()).decode()
        if headers.get("proxy-authorization") != expected:
            report(f"refused {method} {target}")
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n'
                b"Connection: close\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
    else:
        parts = urlsplit(target)
        upstream_reader, upstream_writer = await asyncio.open_connection(
            parts.hostname, parts.port or 80
        )
        # the request as the origin server wants it: origin-form, one request, then close
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        kept = [
            line
            for line in lines[1:]
            if line and not line.lower().startswith(("proxy-", "connection:", "keep-alive:"))
        ]
        request = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""])
        upstream_writer.write(request.encode("latin-1"))
        body = int(headers.get("content-length", "0"))
        if body:
            upstream_writer.write(await reader.readexactly(body))
        await upstream_writer.drain()
    report(f"{method} {target}")
    await asyncio.gather(
        relay(reader, upstream_writer), relay(upstream_reader, writer), return_exceptions=True
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--auth", help="USER:PASSWORD the proxy requires")
    args = parser.parse_args()
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, args.auth), "127.0.0.1", 0, limit=1 << 16
    )
    report(f"port {server.sockets[0].getsockname()[1]}")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    sys.exit(0)
