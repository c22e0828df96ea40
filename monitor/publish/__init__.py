"""How alert events leave riskmon.

- `monitor.publish.events`: MQTT topics and the JSON payloads of events (schema
  `riskmon.alert.v1`, with a ready PagerDuty Events API v2 body), and `to_entry`, which
  turns an `AlertEvent` into the outbox entry the daemon appends to the `Store`.
- `monitor.publish.mqtt`: `MqttPublisher`, which drains the outbox to an MQTT broker
  (QoS 1, deleting a record only after the broker's PUBACKs), keeps the instance's
  retained online/offline status and sends heartbeats.

The MQTT connection itself (`Link`, the reconnect loop) and the payload's wire contract
are in `monitor.infra`, which the PagerDuty bridge shares.

`alert-event.schema.json` (beside this file) is the JSON Schema of an event payload.
"""
