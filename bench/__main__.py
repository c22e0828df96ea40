"""`make bench`: every benchmark in one run; results also as JSON in bench/results/."""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

# Each module has `main(argv) -> result` that prints its own table.
BENCHMARKS = ["bench.http_clients", "bench.rule_eval", "bench.lifecycle", "bench.scrape"]


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    summary: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": {},
    }
    failed = []
    for name in BENCHMARKS:
        print(f"\n== {name} ==", flush=True)
        try:
            result = importlib.import_module(name).main([])
        except Exception as exc:  # one broken benchmark must not hide the others
            print(f"{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        summary["results"][name] = result
    path = RESULTS / f"bench-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nresults written to {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
