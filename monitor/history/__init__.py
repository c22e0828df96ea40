"""The history: a journal of every event, silence change and (re)load, chained by
SHA-256 (SPEC "History"). `journal` writes it (inside the Store's transactions),
`chain` defines a record's digest, `reader` queries and verifies it, `command` is
`riskmon history`."""
