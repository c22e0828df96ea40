"""`python -m monitor.simulator [--scenario FILE] [--listen HOST:PORT]`."""

from monitor.simulator.cli import main

raise SystemExit(main())
