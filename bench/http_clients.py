"""CPU per venue request: raw aiohttp, plain httpx, and riskmon's HttpClient (both of its
backends), each against the same simulator running in its own process.

    .venv/bin/python -m bench.http_clients [--requests 3000] [--concurrency 50]

Only this process's CPU time is counted (the simulator's is not), so the figure is the
client's cost per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from monitor import eventloop
from monitor.simulator.process import running_simulator
from monitor.venues.http import HttpClient
from monitor.venues.http_aiohttp import AiohttpClient
from monitor.venues.http_httpx import HttpxClient

API_KEY = "bench-key"


async def _drive(
    send: Callable[[int], Awaitable[None]], total: int, concurrency: int
) -> tuple[float, float]:
    """Run `total` requests, `concurrency` at a time; return (cpu seconds, wall seconds)."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await send(i)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - cpu, time.perf_counter() - wall


def _balances_url(base: str, accounts: list[str]) -> Callable[[int], str]:
    def url(i: int) -> str:
        return f"{base}/clearstreet/v1/accounts/{accounts[i % len(accounts)]}/balances"

    return url


async def raw_aiohttp_rates(
    base: str, accounts: list[str], total: int, concurrency: int, windows: int
) -> list[float]:
    """Requests per CPU-second of a raw aiohttp GET loop (one pooled session, `concurrency`
    in flight, the same balances a poller fetches), in `windows` windows of `total`."""
    headers = {"authorization": f"Bearer {API_KEY}"}
    url = _balances_url(base, accounts)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), headers=headers
    ) as session:

        async def raw(i: int) -> None:
            async with session.get(url(i)) as response:
                await response.read()
                assert response.status == 200

        await _drive(raw, concurrency * 4, concurrency)  # warm the pool
        rates = []
        for _ in range(windows):
            cpu, _wall = await _drive(raw, total, concurrency)
            rates.append(total / cpu)
    return rates


async def measure(
    base: str, accounts: list[str], total: int, concurrency: int
) -> list[dict[str, Any]]:
    headers = {"authorization": f"Bearer {API_KEY}"}
    url = _balances_url(base, accounts)
    results = []

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), headers=headers
    ) as session:

        async def raw(i: int) -> None:
            async with session.get(url(i)) as response:
                await response.read()
                assert response.status == 200

        await _drive(raw, concurrency * 4, concurrency)  # warm the pool
        results.append(("raw aiohttp session", *await _drive(raw, total, concurrency)))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits) as client:

        async def plain(i: int) -> None:
            response = await client.get(url(i))
            assert response.status_code == 200

        await _drive(plain, concurrency * 4, concurrency)
        results.append(
            ("httpx.AsyncClient (default transport)", *await _drive(plain, total, concurrency))
        )

    loop = asyncio.get_running_loop()
    clients: list[tuple[str, type[HttpClient]]] = [
        ("aiohttp", AiohttpClient),
        ("httpx", HttpxClient),
    ]
    for backend, client_class in clients:
        ours = client_class(max_connections=concurrency)

        async def riskmon(i: int, ours: HttpClient = ours) -> None:
            response = await ours.request("GET", url(i), headers=headers, deadline=loop.time() + 10)
            assert response.status == 200

        await _drive(riskmon, concurrency * 4, concurrency)
        cpu_wall = await _drive(riskmon, total, concurrency)
        results.append((f"riskmon HttpClient, {backend} backend", *cpu_wall))
        await ours.aclose()

    return [
        {
            "client": name,
            "requests": total,
            "cpu_ms_per_request": round(cpu / total * 1000, 4),
            "requests_per_cpu_second": round(total / cpu),
            "requests_per_second_wall": round(total / wall),
        }
        for name, cpu, wall in results
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    scenario = {
        "clearstreet": {
            "api_keys": [API_KEY],
            "accounts": [{"generate": {"count": 100, "first_id": 100000, "template": "margin"}}],
        }
    }
    accounts = [str(100000 + i) for i in range(100)]
    with running_simulator(scenario) as base:
        rows = eventloop.run(measure(base, accounts, args.requests, args.concurrency))
    print(f"HTTP client cost, {args.requests} GET balances at concurrency {args.concurrency}:")
    print(f"  {'client':50} {'CPU ms/req':>10} {'req/CPU-s':>10} {'req/s wall':>10}")
    for row in rows:
        print(
            f"  {row['client']:50} {row['cpu_ms_per_request']:>10.3f} "
            f"{row['requests_per_cpu_second']:>10} {row['requests_per_second_wall']:>10}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return {"requests": args.requests, "concurrency": args.concurrency, "clients": rows}


if __name__ == "__main__":
    main()
