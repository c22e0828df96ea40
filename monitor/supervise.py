"""Moved to `monitor/infra/supervise.py` (the PagerDuty bridge shares it); the daemon
and the poller import it from here."""

from monitor.infra.supervise import CrashHandler as CrashHandler
from monitor.infra.supervise import Supervisor as Supervisor

__all__ = ["CrashHandler", "Supervisor"]
