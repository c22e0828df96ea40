"""A simulator of the venues' APIs (Clear Street, Polymarket) for demos, tests and benchmarks.

See README.md in this folder for the scenario format and the control API.
"""

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
