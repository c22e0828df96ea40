"""The infrastructure the daemon and the PagerDuty bridge share, one copy of each.

- `backoff`: `Backoff`, exponential back-off (doubling from `initial`, capped at `max`)
  with jitter, for reconnects and retries.
- `reconnect`: `reconnect_forever`, the loop that keeps an MQTT session (or any
  connection) up, backing off between failed attempts.
- `mqtt_link`: one MQTT connection (`Link`, `Endpoint`, `open_link` with its MQTT 3.1.1
  fallback, `ssl_context`, `describe_error`, `call_on_change`).
- `statefiles`: a state folder (0700) and its SQLite file (0600, never a symlink).
- `locked_sqlite`: `StateLock` (one process per state folder, `StoreLocked` otherwise),
  `connect_wal`, and the `StoreError` both stores raise.
- `retry_after`: `retry_after_seconds`, a server's hint from `retry-after-ms` or
  `Retry-After` (seconds or an HTTP date), and `retry_wait`, the back-off's wait or
  that hint when longer (capped).
- `ratelimit`: `RateLimiter`, a token bucket (GCRA) with fair, in-order waiting.
- `http_post`: `JsonPoster`, one pooled HTTP client that POSTs JSON and reads a capped
  answer, its failures as `PostFailed`.
- `supervise`: `Supervisor`, background tasks that never die silently (a crash is
  logged, reported and the task started again with back-off).
- `event_wire`: the event payload's contract between the daemon that writes it and the
  bridge that reads it (schema name, PagerDuty's limits, the JSON encoding).

It imports nothing of the daemon (publisher, store, venues, engine) or of the bridge:
`tests/test_infra.py` holds both sides to importing only this package from each other.
"""
