"""`python -m monitor` is `riskmon`."""

import sys

from monitor.cli import main

sys.exit(main())
