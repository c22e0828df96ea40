"""The history journal: chained records, `riskmon history` (filters, --verify against a
file edited with the sqlite3 command-line tool), retention, and a real daemon's breach,
resolution and SIGHUP reload in `riskmon history` and /api/v1/history."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import MqttCollector
from test_daemon import BREACH, events, riskmon_process, subscriber  # noqa: F401 (fixture)
from test_full_disk import entry, fill, state_dir  # noqa: F401 (state_dir: a fixture)

from monitor.config import load_config
from monitor.engine.lifecycle import AlertEvent
from monitor.health import HealthProblems
from monitor.history.chain import GENESIS, canonical, record_digest
from monitor.history.journal import SCHEMA, Journal, rfc3339_ms
from monitor.history.reader import Query, open_journal, parse_since, read_page, verify
from monitor.outbox_writer import OutboxWriter
from monitor.simulator import Simulator
from monitor.store import Store

NOW = time.time()
CONFIG = """\
state_dir: state
history_retention: 30d
venues:
  - name: cs
    kind: clearstreet
    base_url: http://127.0.0.1:9
    api_key_file: key
    accounts: [{id: "19816"}]
"""


def event(
    account: str = "19816",
    status: str = "firing",
    at: float = NOW,
    venue: str = "cs",
    alertname: str = "BuyingPowerBelowFloor",
) -> AlertEvent:
    return AlertEvent(
        status=status,  # type: ignore[arg-type]
        at=at,
        rule_key="capital/BuyingPowerBelowFloor",
        alertname=alertname,
        severity="critical",
        venue=venue,
        venue_kind="clearstreet",
        account=account,
        labels={"desk": "equities"},
        annotations={"summary": f"{account} buying power 20000.00 below 25000"},
        values={"buying_power": "20000.00"},
        starts_at=at,
        ends_at=at if status == "resolved" else None,
        fingerprint=f"fp-{account}",
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "key").write_text("k\n")
    path = tmp_path / "riskmon.yaml"
    path.write_text(CONFIG)
    return path


def write_journal(config: Path, *events_: AlertEvent, reload: bool = True) -> Path:
    """A Store as the daemon keeps one: events written with the outbox, one reload."""
    database = config.parent / "state" / "riskmon.db"
    with Store(database) as store:
        for item in events_:
            store.journal.record_event(item, event_id=f"id-{item.account}-{item.status}")
            store.append([], alerts=[])
        if reload:
            store.journal.record_reload(
                trigger="start",
                successful=True,
                config=(str(config), "ab" * 32),
                rule_files=[("rules/capital.yaml", "cd" * 32)],
            )
            store.write_journal()
    return database


def history(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "history", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def sqlite(database: Path, sql: str) -> None:
    """Edit the file as someone with the sqlite3 tool would."""
    subprocess.run(["sqlite3", str(database), sql], check=True, timeout=30)


FIVE = [event("19816"), event("19817"), event("19818"), event("19816", "resolved"), event("1")]


def test_a_journal_written_with_the_outbox_verifies_and_names_its_head(config: Path) -> None:
    database = write_journal(config, *FIVE)
    result = history(config, "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    db = open_journal(database)
    verified = verify(db)
    db.close()
    assert (verified.records, verified.first, verified.last) == (6, 1, 6)
    assert f"6 records (seq 1 to 6), head digest {verified.head}" in result.stdout


def test_the_digest_is_the_documented_canonical_serialization(config: Path) -> None:
    database = write_journal(config, event())
    db = open_journal(database)
    [first, second] = read_page(db, Query())
    db.close()
    text = json.dumps(
        [1, first.at, "event", json.loads(first.payload), GENESIS],
        sort_keys=True,
        separators=(",", ":"),
    )
    assert hashlib.sha256(text.encode()).hexdigest() == first.digest
    assert second.prev == first.digest
    assert first.payload == canonical(json.loads(first.payload))


TAMPERING = [
    pytest.param(
        "UPDATE journal SET payload = replace(payload, '20000.00', '30000.00') WHERE seq = 3",
        "record 3 (",
        "does not match its digest",
        id="payload edited",
    ),
    pytest.param(
        "UPDATE journal SET at = '2020-01-01T00:00:00.000Z' WHERE seq = 5",
        "record 5 (2020-01-01T00:00:00.000Z, event)",
        "does not match its digest",
        id="time edited",
    ),
    pytest.param(
        "UPDATE journal SET account = 'x' WHERE seq = 2",
        "record 2 (",
        "venue/account columns do not match its payload",
        id="filter column edited",
    ),
    pytest.param(
        "DELETE FROM journal WHERE seq = 3",
        "record 4 (",
        "record 3 missing between it and record 2",
        id="middle deleted",
    ),
    pytest.param(
        "DELETE FROM journal WHERE seq = 1",
        "record 2 (",
        "record 1 missing",
        id="first deleted",
    ),
    pytest.param(
        "DELETE FROM journal WHERE seq >= 5",
        "record 5: missing",
        "ends at record 4 but its head is record 6",
        id="last deleted",
    ),
    pytest.param(
        "UPDATE journal SET seq = -seq WHERE seq IN (2, 3);"
        " UPDATE journal SET seq = 3 WHERE seq = -2; UPDATE journal SET seq = 2 WHERE seq = -3",
        "record 2 (",
        "does not match its digest",
        id="reordered",
    ),
]


@pytest.mark.parametrize(("sql", "record", "reason"), TAMPERING)
def test_verify_names_the_first_record_that_does_not_chain(
    config: Path, sql: str, record: str, reason: str
) -> None:
    database = write_journal(config, *FIVE)
    assert history(config, "--verify").returncode == 0
    sqlite(database, sql)
    result = history(config, "--verify")
    assert result.returncode == 1, result.stdout
    line = result.stdout.strip()
    assert "the journal does not chain: " + record in line
    assert reason in line


def test_a_record_edited_and_rehashed_breaks_the_link_to_the_next(config: Path) -> None:
    database = write_journal(config, *FIVE)
    db = sqlite3.connect(database)
    seq, at, kind, payload, prev = db.execute(
        "SELECT seq, at, kind, payload, prev FROM journal WHERE seq = 3"
    ).fetchone()
    payload = payload.replace("20000.00", "30000.00")
    digest = record_digest(seq, at, kind, payload, prev)
    db.execute("UPDATE journal SET payload = ?, digest = ? WHERE seq = 3", (payload, digest))
    db.commit()
    db.close()
    result = history(config, "--verify")
    assert result.returncode == 1
    assert "record 4 (" in result.stdout
    assert "does not chain to record 3" in result.stdout


def test_pruning_keeps_the_rest_verifiable_and_numbering_goes_on(config: Path) -> None:
    old = NOW - 40 * 86400
    database = write_journal(
        config, event("1", at=old), event("2", at=old + 1), event("3"), event("4"), reload=False
    )
    with Store(database) as store:
        assert store.prune_journal(NOW - 30 * 86400) == 2
        assert store.prune_journal(NOW - 30 * 86400) == 0
    result = history(config, "--verify")
    assert result.returncode == 0, result.stdout
    assert "2 records (seq 3 to 4)" in result.stdout
    with Store(database) as store:  # everything pruned: the next record follows the anchor
        assert store.prune_journal(NOW + 1) == 2
    with Store(database) as store:
        store.journal.record_event(event("5"), event_id="e5")
        store.write_journal()
    result = history(config, "--verify")
    assert result.returncode == 0, result.stdout
    assert "1 records (seq 5 to 5)" in result.stdout
    sqlite(database, "DELETE FROM journal WHERE seq = 5")
    result = history(config, "--verify")
    assert result.returncode == 1
    assert "record 5: missing (deleted?): the journal ends at record 4" in result.stdout


def test_an_old_record_deleted_after_pruning_is_named(config: Path) -> None:
    old = NOW - 40 * 86400
    database = write_journal(config, event("1", at=old), event("2"), event("3"), reload=False)
    with Store(database) as store:
        assert store.prune_journal(NOW - 30 * 86400) == 1
    sqlite(database, "DELETE FROM journal WHERE seq = 2")
    result = history(config, "--verify")
    assert result.returncode == 1
    assert "record 3 (" in result.stdout
    assert "record 2 missing after the anchor record 1" in (result.stdout)


def test_a_rolled_back_transaction_leaves_the_records_queued() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);" + SCHEMA)
    journal = Journal.load(db)
    journal.record_event(event(), event_id="e1")
    db.execute("BEGIN")
    assert journal.write(db) is not None
    db.execute("ROLLBACK")  # the disk refused: the callback is never called
    assert (journal.pending, journal.head) == (1, (0, GENESIS))
    db.execute("BEGIN")
    committed = journal.write(db)
    db.execute("COMMIT")
    assert committed is not None
    committed()
    assert journal.pending == 0
    assert journal.head[0] == 1
    assert db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 1


def test_records_beyond_the_queue_bound_leave_a_gap_record() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);" + SCHEMA)
    journal = Journal.load(db, capacity=2)
    for account in ("1", "2", "3", "4"):
        journal.record_event(event(account), event_id=account)
    committed = journal.write(db)
    assert committed is not None
    committed()
    rows = db.execute("SELECT seq, kind, payload FROM journal ORDER BY seq").fetchall()
    assert [(seq, kind) for seq, kind, _ in rows] == [(1, "event"), (2, "event"), (3, "gap")]
    assert json.loads(rows[2][2])["lost"] == 2
    assert journal.lost == 0
    assert verify(db).problem is None


def test_history_prints_and_filters(config: Path) -> None:
    old = NOW - 3 * 3600
    write_journal(
        config,
        event("19816", at=old),
        event("19817"),
        event("19816", "resolved"),
        event("main", venue="pmx", alertname="ExcessCapitalLow"),
    )
    result = history(config)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    assert "#1" in lines[0]
    assert "firing" in lines[0]
    assert "cs/19816" in lines[0]
    assert "19816 buying power 20000.00 below 25000" in lines[0]
    assert "reload (start) ok" in lines[4]
    assert "capital.yaml" in lines[4]
    result = history(config, "--account", "19816")
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["#1", "#3"]
    result = history(config, "--venue", "pmx", "--json")
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    assert (record["seq"], record["kind"], record["payload"]["alertname"]) == (
        4,
        "event",
        "ExcessCapitalLow",
    )
    assert record["payload"]["published"] is True
    result = history(config, "--since", "2h")
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["#2", "#3", "#4", "#5"]
    since = rfc3339_ms(old + 1)
    assert (
        next(line.split()[1] for line in history(config, "--since", since).stdout.splitlines())
        == "#2"
    )
    result = history(config, "--since", "yesterday")
    assert result.returncode == 2
    assert "neither a time (RFC 3339" in result.stderr


def test_history_without_a_journal_names_the_file(config: Path) -> None:
    result = history(config)
    assert result.returncode == 1
    assert f"{config.parent / 'state' / 'riskmon.db'}: no such file" in result.stderr


def test_since_reads_rfc3339_and_durations() -> None:
    assert parse_since("2026-12-05T06:00:00Z") == "2026-12-05T06:00:00.000Z"
    assert parse_since("2026-12-05T08:00:00+02:00") == "2026-12-05T06:00:00.000Z"
    assert parse_since("2026-12-05T06:00:00") == "2026-12-05T06:00:00.000Z"
    assert parse_since("90m", now=7200.0) == rfc3339_ms(1800.0)


def test_history_retention_is_read_and_checked(config: Path) -> None:
    assert load_config(config).history_retention == 30 * 86400
    config.write_text(CONFIG.replace("history_retention: 30d", "history_retention: forever"))
    result = history(config)
    assert result.returncode == 1
    assert f"{config}:2:20: history_retention: invalid duration 'forever'" in result.stderr
    config.write_text(CONFIG.replace("history_retention: 30d\n", ""))
    assert load_config(config).history_retention == 90 * 86400


# -- the daemon ----------------------------------------------------------------------------


async def test_a_breach_its_resolution_and_a_reload_are_in_the_history(
    tmp_path: Path,
    riskmon_config: Callable[..., tuple[Path, int]],
    simulator: Simulator,
    subscriber: MqttCollector,  # noqa: F811 (the fixture of test_daemon)
) -> None:
    with riskmon_process(tmp_path, riskmon_config) as riskmon:
        riskmon.start()
        await riskmon.ready()
        simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})
        await subscriber.wait_for(lambda _: bool(subscriber.on(BREACH)))
        simulator.set_fields("clearstreet", "19816", {"buying_power": "90000.00"})
        await subscriber.wait_for(lambda _: len(subscriber.on(BREACH)) == 2)
        fired, resolved = events(subscriber, BREACH)
        assert riskmon.process is not None
        riskmon.process.send_signal(signal.SIGHUP)

        async def reloaded() -> list[dict[str, Any]]:
            status, body = await riskmon.get("/api/v1/history?kind=reload")
            assert status == 200, body
            records: list[dict[str, Any]] = json.loads(body)["records"]
            return [r for r in records if r["payload"]["trigger"] == "SIGHUP"]

        [sighup] = await riskmon.until(reloaded, "the SIGHUP reload in /api/v1/history")
        rules = tmp_path / "rules" / "capital.yaml"

        assert sighup["payload"]["successful"] is True
        assert sighup["payload"]["rule_files"] == [
            {"path": str(rules), "sha256": hashlib.sha256(rules.read_bytes()).hexdigest()}
        ]
        status, body = await riskmon.get("/api/v1/history?account=19816&venue=cs")
        assert status == 200
        records = json.loads(body)["records"]
        assert [(r["payload"]["event_id"], r["payload"]["status"]) for r in records] == [
            (fired["event_id"], "firing"),
            (resolved["event_id"], "resolved"),
        ]
        assert records[0]["payload"]["published"] is True

        status, body = await riskmon.get("/api/v1/history?limit=1")
        page = json.loads(body)
        assert len(page["records"]) == 1
        assert page["next_after"] == page["records"][0]["seq"]
        status, body = await riskmon.get(f"/api/v1/history?after={page['next_after']}&limit=1000")
        rest = json.loads(body)
        assert rest["next_after"] is None
        assert rest["records"][0]["seq"] == page["next_after"] + 1
        for bad in ("limit=0", "limit=1001", "after=x", "since=soon", "kind=other"):
            status, body = await riskmon.get(f"/api/v1/history?{bad}")
            assert status == 400, bad
            assert json.loads(body)["error"]

        result = history(riskmon.config)  # beside the running daemon
        assert result.returncode == 0, result.stderr
        text = result.stdout
        assert "reload (start) ok" in text
        assert "reload (SIGHUP) ok" in text
        assert "firing    critical  cs/19816  BuyingPowerBelowFloor" in text
        assert "resolved  critical  cs/19816  BuyingPowerBelowFloor" in text
        assert history(riskmon.config, "--verify").returncode == 0
        assert riskmon.signal(signal.SIGTERM) == 0
    result = history(riskmon.config, "--verify")
    assert result.returncode == 0, result.stdout


async def test_the_daemon_prunes_records_past_history_retention(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> None:
    with riskmon_process(tmp_path, riskmon_config) as riskmon:
        text = riskmon.config.read_text()
        riskmon.config.write_text(
            text.replace("stale_after:", "history_retention: 1h\nstale_after:")
        )
        old = NOW - 2 * 3600
        database = write_journal(
            riskmon.config, event("1", at=old), event("2", at=old), reload=False
        )
        riskmon.start()
        await riskmon.ready()

        async def pruned() -> list[dict[str, Any]]:
            _, body = await riskmon.get("/api/v1/history")
            records: list[dict[str, Any]] = json.loads(body)["records"]
            return records if records and records[0]["seq"] == 3 else []

        [start, *_] = await riskmon.until(pruned, "the records past history_retention pruned")
        assert (start["kind"], start["payload"]["trigger"]) == ("reload", "start")
        result = history(riskmon.config, "--verify")
        assert result.returncode == 0, result.stdout
        assert "(seq 3 to " in result.stdout
        assert database.exists()


def test_journal_records_wait_while_the_disk_is_full_and_chain_once_written(
    state_dir: Path,  # noqa: F811 (the tmpfs fixture of test_full_disk)
) -> None:
    problems = HealthProblems()
    with Store(state_dir / "riskmon.db") as store:
        writer = OutboxWriter(store, problems, notify=lambda: None)
        store.journal.record_event(event("1"), event_id="e1")
        writer.append([entry(1)], [], now=1.0)
        filler = fill(state_dir)
        store.journal.record_event(event("2"), event_id="e2")
        writer.append([entry(2)], [], now=2.0)
        store.journal.record_reload(trigger="SIGHUP", successful=True)
        writer.write_journal(now=3.0)
        assert store.journal.pending == 2
        assert "outbox" in problems.reasons()
        filler.unlink()
        writer.retry(now=4.0)
        writer.write_journal(now=5.0)
        assert store.journal.pending == 0
        assert not problems
    db = open_journal(state_dir / "riskmon.db")
    records = read_page(db, Query())
    assert [(r.seq, r.kind, r.account) for r in records] == [
        (1, "event", "1"),
        (2, "event", "2"),
        (3, "reload", None),
    ]
    assert verify(db).problem is None
    db.close()
