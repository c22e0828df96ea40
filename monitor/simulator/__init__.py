"""A simulator of the venues' APIs (Clear Street, Polymarket) for demos, tests and benchmarks.

See README.md in this folder for the scenario format and the control API.

Its parts are imported when first used: `riskmon` builds every command's arguments,
`simulate`'s among them, and `riskmon run` must not pay for importing the simulator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.simulator.faults import Fault, FaultSpecError, parse_fault
    from monitor.simulator.scenario import Scenario, default_scenario, load_scenario
    from monitor.simulator.server import Simulator

__all__ = [
    "Fault",
    "FaultSpecError",
    "Scenario",
    "Simulator",
    "default_scenario",
    "load_scenario",
    "parse_fault",
]

_MODULE_OF = {
    "Fault": "faults",
    "FaultSpecError": "faults",
    "parse_fault": "faults",
    "Scenario": "scenario",
    "default_scenario": "scenario",
    "load_scenario": "scenario",
    "Simulator": "server",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
