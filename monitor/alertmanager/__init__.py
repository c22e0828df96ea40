"""Alertmanager as a destination of riskmon's alerts (`alertmanagers` in the config).

- `monitor.alertmanager.payload`: an event payload as an Alertmanager API v2 alert.
- `monitor.alertmanager.sender`: `AlertmanagerSender`, which delivers one Alertmanager's
  queue of events (durable, beside the outbox) and resends the alerts still firing.
- `monitor.alertmanager.metrics`: their metrics.
"""
