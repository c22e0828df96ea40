"""`riskmon simulate`: serve the simulated venues until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.yamlsource import SourceError

if TYPE_CHECKING:
    from monitor.simulator.scenario import Scenario

# The scenario, keys and server modules are imported by the functions that need them:
# `add_arguments` is called whenever `riskmon` builds its command line.

DEFAULT_LISTEN = "127.0.0.1:8090"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:PORT) -> (host, port): the daemon's `listen` rule."""
    from monitor.schema import Invalid, listen_address

    try:
        address = listen_address(text)
    except Invalid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return address.host, address.port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        metavar="FILE",
        type=Path,
        help="scenario file (YAML); default: the built-in demo scenario, with demo "
        "credentials created in ./secrets",
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=parse_listen,
        default=parse_listen(DEFAULT_LISTEN),
        help=f"where to listen (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )


def _load(args: argparse.Namespace) -> Scenario:
    from monitor.simulator.keys import ensure_demo_credentials
    from monitor.simulator.scenario import default_scenario, load_scenario

    if args.scenario is not None:
        return load_scenario(args.scenario)
    base = Path.cwd()
    ensure_demo_credentials(base / "secrets")
    print(f"using the built-in scenario; demo credentials in {base / 'secrets'}", file=sys.stderr)
    return default_scenario(base)


async def run(args: argparse.Namespace) -> int:
    from monitor.simulator.server import Simulator

    listen = args.listen
    host, port = parse_listen(listen) if isinstance(listen, str) else listen
    try:
        scenario = _load(args)
    except SourceError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    simulator = Simulator(scenario)
    try:
        await simulator.start(host, port)
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        base = simulator.base_url
        print(
            f"simulator listening on {base} "
            f"(clearstreet: {base}/clearstreet, polymarket: {base}/polymarket)",
            flush=True,
        )
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await simulator.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitor.simulator", description=__doc__)
    add_arguments(parser)
    return asyncio.run(run(parser.parse_args(argv)))
