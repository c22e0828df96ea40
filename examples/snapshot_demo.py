"""`make demo` until the daemon lands: the simulator plus one `riskmon snapshot` of it.

Creates throw-away demo credentials in examples/secrets/, starts `riskmon simulate` with
examples/scenario.yaml on 127.0.0.1:8090, polls every account of examples/riskmon.yaml
once, prints them, and stops the simulator.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from monitor.simulator.keys import ensure_demo_credentials
from monitor.simulator.process import running_simulator

EXAMPLES = Path(__file__).resolve().parent
LISTEN = "127.0.0.1:8090"


def main() -> int:
    ensure_demo_credentials(EXAMPLES / "secrets")
    try:
        with running_simulator(EXAMPLES / "scenario.yaml", listen=LISTEN) as base:
            print(f"simulator listening on {base}")
            print(f"$ riskmon snapshot -c {EXAMPLES.name}/riskmon.yaml\n", flush=True)
            config = str(EXAMPLES / "riskmon.yaml")
            return subprocess.call([sys.executable, "-m", "monitor", "snapshot", "-c", config])
    except RuntimeError as exc:
        print(f"{exc} (is {LISTEN} taken?)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
