"""`riskmon pagerduty`: a bridge from riskmon's MQTT alert events to PagerDuty.

It subscribes to `{prefix}/events/#` (QoS 1, a persistent session under its
`client_id`), routes each event by severity and labels to a routing key, and POSTs the
event's ready `pagerduty` body plus `routing_key` to the Events API v2. Delivery is at
least once and never twice per `event_id`: an event is stored before the broker gets
its PUBACK, marked only once PagerDuty answered, and an `event_id` seen within
`dedup_retention` is not forwarded again. 429, 5xx and network errors are retried with
exponential backoff and jitter (`retry-after-ms` or `Retry-After` honoured, as the
venues do: `monitor/infra/retry_after.py`), without holding back other
routing keys; a 400 is dropped with an error naming the event_id, the alertname and
PagerDuty's message. Each routing key has a token bucket that keeps it under
PagerDuty's limit. Routing keys come from files (re-read when they change) or the
environment, and never appear in logs or errors. How: `bridge.py`.

The config (`examples/pagerduty.yaml`; `path:line:col` errors, `${VAR}`, durations
and relative paths as in the daemon's config; `riskmon pagerduty -c FILE --check`
validates it without starting, `check.py`):

    mqtt:                            # as the daemon's mqtt section
      url: mqtt://127.0.0.1:1883     # or mqtts:// with tls: {ca_file, cert_file, key_file}
      topic_prefix: riskmon
      username: pagerduty            # optional, with password_file (or password: ${VAR})
      password_file: /run/secrets/mqtt
      client_id: riskmon-pagerduty   # the default; the broker keeps the session under it
    events_url: https://events.pagerduty.com/v2/enqueue   # the default
    state_dir: ./state               # pagerduty.db: seen event ids and pending events
    timeout: 10s                     # per request
    session_expiry: 7d               # how long the broker queues events while we are away
    dedup_retention: 7d              # how long a seen event_id is remembered
    rate_limit: {events_per_minute: 100, burst: 20}   # per routing key (the defaults)
    backoff: {initial: 1s, max: 2m}  # retries of 429/5xx/network errors (the defaults)
    routes:                          # the first route that matches wins
      - name: risk-critical          # optional: for logs ([A-Za-z0-9_-]+)
        match:                       # every condition given must hold
          severity: [critical, error]   # one or a list
          labels: {team: risk}       # label: value or label: [values]
        routing_key_file: /run/secrets/pagerduty-risk
      - name: default                # no match: every other event (must be last)
        routing_key_env: PAGERDUTY_ROUTING_KEY

The broker. The bridge's persistent session holds what is published while the bridge
is down, up to the broker's limits: Mosquitto keeps at most `max_queued_messages`
(default 1000) per offline client and expires MQTT 3.1.1 sessions only if
`persistent_client_expiration` is set; raise the first for long outages. The session
exists once the bridge has connected: start it before the daemon publishes.

Rate limit. PagerDuty limits the Events API to 120 events per minute per integration
(routing) key and answers 429 beyond it. The default bucket refills at 100 per minute
with bursts of 20, so no 60-second window ever holds more than 120 requests, retries
included; routes that share a key file or variable share its bucket.
"""

from monitor.pagerduty.bridge import PagerDutyBridge, run_bridge
from monitor.pagerduty.config import (
    Backoff,
    Match,
    PagerDutyConfig,
    RateLimit,
    Route,
    load_pagerduty_config,
    parse_pagerduty_config,
)

__all__ = [
    "Backoff",
    "Match",
    "PagerDutyBridge",
    "PagerDutyConfig",
    "RateLimit",
    "Route",
    "load_pagerduty_config",
    "parse_pagerduty_config",
    "run_bridge",
]
