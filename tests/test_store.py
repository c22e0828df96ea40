"""The durable outbox and alert state (monitor/store.py) on a real SQLite file."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from monitor.engine.expr import compile_expression
from monitor.engine.lifecycle import AlertBook, Observation
from monitor.engine.model import Rule
from monitor.pagerduty.store import BridgeStore
from monitor.pagerduty.store import StoreError as PdStoreError
from monitor.pagerduty.store import StoreLocked as PdStoreLocked
from monitor.store import SCHEMA_VERSION, OutboxEntry, Store, StoreError, StoreLocked
from monitor.yamlsource import Location


def entry(n: int, *, resolved: bool = False) -> OutboxEntry:
    payload = f'{{"n":{n}}}'.encode()
    return OutboxEntry(
        event_id=f"event-{n}",
        alert_key=f"fp-{n % 3}",
        event_topic=f"riskmon/events/critical/cs/{n}/BuyingPowerBelowFloor",
        event_payload=payload,
        alert_topic=f"riskmon/alerts/cs/{n}/BuyingPowerBelowFloor",
        alert_payload=b"" if resolved else payload,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "nested" / "riskmon.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store(db_path) as s:
        yield s


def test_append_and_pending_round_trip_in_order(store: Store, db_path: Path) -> None:
    assert db_path.parent.is_dir()  # the folder is created
    store.append([entry(1), entry(2, resolved=True)])
    store.append([entry(3)])
    records = store.pending()
    assert [r.event_id for r in records] == ["event-1", "event-2", "event-3"]
    assert [r.seq for r in records] == sorted(r.seq for r in records)
    first, second = records[0], records[1]
    assert first.event_payload == b'{"n":1}' == first.alert_payload
    assert isinstance(first.event_payload, bytes)
    assert first.alert_key == "fp-1"
    assert first.event_topic == "riskmon/events/critical/cs/1/BuyingPowerBelowFloor"
    assert first.alert_topic == "riskmon/alerts/cs/1/BuyingPowerBelowFloor"
    assert second.alert_payload == b""  # resolve: clears the retained alert
    assert first.created_at > 0
    assert store.depth() == 3


def test_pending_limit_and_after(store: Store) -> None:
    store.append([entry(n) for n in range(10)])
    head = store.pending(limit=4)
    assert [r.event_id for r in head] == [f"event-{n}" for n in range(4)]
    rest = store.pending(limit=100, after=head[-1].seq)
    assert [r.event_id for r in rest] == [f"event-{n}" for n in range(4, 10)]
    assert store.pending(after=rest[-1].seq) == []


def test_acknowledge_deletes_and_counts(store: Store) -> None:
    store.append([entry(n) for n in range(5)])
    seqs = [r.seq for r in store.pending()]
    store.acknowledge(seqs[:2])
    assert store.depth() == 3
    assert [r.seq for r in store.pending()] == seqs[2:]
    store.acknowledge([seqs[2], 999_999])  # an unknown seq is ignored
    assert store.depth() == 2
    store.acknowledge([seqs[2]])  # twice: nothing more happens
    assert store.depth() == 2
    store.acknowledge([])
    store.acknowledge(seqs[3:])
    assert store.depth() == 0
    assert store.pending() == []
    # seqs only grow, even after the queue was emptied: a cursor never sees one twice
    store.append([entry(9)])
    assert store.pending()[0].seq > seqs[-1]


def test_survives_reopen_without_acknowledge(db_path: Path) -> None:
    first = Store(db_path)
    first.append([entry(1), entry(2)])
    first.acknowledge([first.pending()[0].seq])
    first.close()
    second = Store(db_path)
    try:
        assert second.depth() == 1  # counted at open
        assert [r.event_id for r in second.pending()] == ["event-2"]
    finally:
        second.close()


def test_survives_sigkill_after_append(db_path: Path) -> None:
    """A committed append is on disk even when the process dies right after it."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from monitor.store import OutboxEntry, Store
        store = Store(Path({str(db_path)!r}))
        store.append([OutboxEntry("e1", "fp", "t/e", b"{{}}", "t/a", b"{{}}")],
                     alerts=[{{"rule_key": "k"}}])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr.decode()
    with Store(db_path) as store:
        assert [r.event_id for r in store.pending()] == ["e1"]
        assert store.load_alerts() == [{"rule_key": "k"}]


def test_alert_state_round_trip(store: Store) -> None:
    assert store.load_alerts() == []
    book = AlertBook()
    rule = Rule(
        alert="BuyingPowerBelowFloor",
        expr=compile_expression("buying_power < 25000"),
        group="capital",
        file="rules/capital.yaml",
        location=Location("rules/capital.yaml", 5, 9),
        severity="critical",
        for_=30.0,
    )
    book.observe(
        rule,
        venue="cs",
        venue_kind="clearstreet",
        account="19816",
        labels={"desk": "equities"},
        obs=Observation(True, values={"buying_power": Decimal("24000.00")}),
        now=1000.0,
    )
    store.save_alerts(book.to_json())
    restored = AlertBook.from_json(store.load_alerts())
    alert = restored.get(rule.key, "cs", "19816")
    assert alert is not None
    assert alert.active_at == 1000.0
    assert alert.values == {"buying_power": "24000.00"}
    store.save_alerts([])  # replaced, not merged
    assert store.load_alerts() == []


def test_append_saves_events_and_alert_state_together(store: Store, db_path: Path) -> None:
    store.append([entry(1)], alerts=[{"n": 1}])
    assert store.load_alerts() == [{"n": 1}]
    store.append([entry(2)])  # no alerts given: the state is kept
    assert store.load_alerts() == [{"n": 1}]
    store.append([], alerts=[{"n": 2}])
    assert store.load_alerts() == [{"n": 2}]
    assert store.depth() == 2


def test_a_failed_append_writes_nothing(store: Store) -> None:
    store.append([entry(1)])
    bad = OutboxEntry("e", "fp", "t/e", None, "t/a", b"")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match=r"riskmon\.db: cannot append"):
        store.append([entry(2), bad], alerts=[{"n": 2}])
    assert [r.event_id for r in store.pending()] == ["event-1"]
    assert store.depth() == 1
    assert store.load_alerts() == []
    store.append([entry(3)])  # and the store still works
    assert store.depth() == 2


def test_wal_mode_and_synchronous(db_path: Path) -> None:
    with Store(db_path, synchronous="full") as store:
        store.append([entry(1)])
        mode = sqlite3.connect(db_path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    with pytest.raises(ValueError, match="synchronous"):
        Store(db_path, synchronous="sometimes")


def test_checkpoints_run_beside_the_writes_and_keep_the_wal_small(db_path: Path) -> None:
    """Commits never checkpoint (SQLite's own mark is 10,000 pages); the Store's thread
    does, so the WAL is reused round after round instead of growing with all that was
    ever written."""
    wal = db_path.with_name(db_path.name + "-wal")
    big = b"x" * 3000  # about a page per event
    sizes = []
    with Store(db_path, checkpoint_interval=3600) as store:  # checkpoints when asked here
        (autocheckpoint,) = store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()
        assert autocheckpoint == 10_000
        checkpointer = store._checkpointer
        assert checkpointer is not None
        for round_ in range(4):
            for n in range(200):
                store.append([replace(entry(round_ * 200 + n), event_payload=big)])
            store.acknowledge([r.seq for r in store.pending(limit=200)])
            sizes.append(wal.stat().st_size)
            checkpointer.request()
            assert checkpointer.done.wait(10)
            assert checkpointer.complete, checkpointer.error
        assert store.depth() == 0
    assert max(sizes) <= sizes[0] * 1.2  # started over after each checkpoint
    assert not checkpointer.is_alive()  # close() stops it


def test_checkpoints_come_on_their_own(db_path: Path) -> None:
    with Store(db_path, checkpoint_interval=0.01) as store:
        store.append([entry(1)])
        checkpointer = store._checkpointer
        assert checkpointer is not None
        checkpointer.done.clear()
        assert checkpointer.done.wait(10)
        assert checkpointer.error is None


def test_corrupt_file_is_a_clear_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not an SQLite database, just some bytes" * 100)
    with pytest.raises(StoreError) as caught:
        Store(db_path)
    assert str(db_path) in str(caught.value)
    assert "not a readable riskmon database" in str(caught.value)
    Store(db_path.with_name("other.db")).close()  # the lock was released


def test_an_entry_carries_when_its_venue_answer_arrived(store: Store) -> None:
    store.append([replace(entry(1), answered_at=1_790_000_000.25), entry(2)])
    first, second = store.pending()
    assert first.answered_at == 1_790_000_000.25
    assert second.answered_at is None  # no answer behind it (staleness, a reload)


# The outbox of a riskmon from before `answered_at`: the same schema version.
_OUTBOX_BEFORE_ANSWERED_AT = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL,
    alert_key TEXT NOT NULL, event_topic TEXT NOT NULL, event_payload BLOB NOT NULL,
    alert_topic TEXT NOT NULL, alert_payload BLOB NOT NULL, created_at REAL NOT NULL
);
INSERT INTO outbox (event_id, alert_key, event_topic, event_payload, alert_topic,
    alert_payload, created_at) VALUES ('old', 'fp', 'e', x'7b7d', 'a', x'7b7d', 1.5);
"""


def test_an_outbox_without_answered_at_gains_the_column_and_keeps_its_events(
    db_path: Path,
) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as db:
        db.executescript(_OUTBOX_BEFORE_ANSWERED_AT)
    with Store(db_path) as store:
        [old] = store.pending()
        assert (old.event_id, old.created_at, old.answered_at) == ("old", 1.5, None)
        store.append([replace(entry(1), answered_at=2.5)])
        assert [r.answered_at for r in store.pending()] == [None, 2.5]
    with sqlite3.connect(db_path) as db:  # what an older riskmon reads and writes still works
        db.execute(
            "INSERT INTO outbox (event_id, alert_key, event_topic, event_payload,"
            " alert_topic, alert_payload, created_at) VALUES ('x', 'fp', 'e', x'', 'a', x'', 3)"
        )
    with Store(db_path) as store:
        assert [r.event_id for r in store.pending()] == ["old", "event-1", "x"]


def test_newer_schema_is_refused(db_path: Path) -> None:
    Store(db_path).close()
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer riskmon"):
        Store(db_path)


def test_corrupt_alert_state_is_a_clear_error(store: Store, db_path: Path) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute("INSERT INTO alert_state (id, json, saved_at) VALUES (1, '{oops', 0)")
    with pytest.raises(StoreError, match=r"riskmon\.db: the saved alert state is not JSON"):
        store.load_alerts()


def test_one_store_per_file(db_path: Path) -> None:
    first = Store(db_path)
    with pytest.raises(StoreLocked, match="in use by another riskmon"):
        Store(db_path)
    first.close()
    Store(db_path).close()


def test_closed_store(db_path: Path) -> None:
    store = Store(db_path)
    store.append([entry(1)])
    store.close()
    store.close()  # twice is fine
    assert store.depth() == 1  # still answers (the daemon logs it after closing)
    with pytest.raises(StoreError, match="closed"):
        store.pending()


# -- private files, no symlinks (issue 11, item 7) ------------------------------------------


def test_the_state_folder_is_0700_and_the_database_0600(db_path: Path) -> None:
    with Store(db_path) as store:
        store.append([entry(1)])  # the WAL exists now, with the database's mode
        assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
        for path in (db_path, db_path.with_name("riskmon.db-wal")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_an_existing_world_readable_database_is_made_private(db_path: Path) -> None:
    Store(db_path).close()
    db_path.chmod(0o644)
    Store(db_path).close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


@pytest.mark.parametrize("dangling", [True, False], ids=["dangling", "to-a-file"])
def test_a_symlinked_database_is_refused(db_path: Path, tmp_path: Path, dangling: bool) -> None:
    target = tmp_path / "elsewhere.db"
    if not dangling:
        target.write_bytes(b"")
    db_path.parent.mkdir(parents=True)
    db_path.symlink_to(target)
    with pytest.raises(StoreError) as refused:
        Store(db_path)
    assert str(refused.value) == (
        f"{db_path}: is a symbolic link; riskmon does not follow one for its database"
    )
    assert target.exists() == (not dangling)  # not created through the link


def test_the_pagerduty_store_shares_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "pd" / "pagerduty.db"
    BridgeStore(path, retention=60).close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    link = tmp_path / "pd2" / "pagerduty.db"
    link.parent.mkdir()
    link.symlink_to(tmp_path / "nowhere.db")
    with pytest.raises(PdStoreError, match="is a symbolic link"):
        BridgeStore(link, retention=60)


def test_both_stores_share_one_lock_and_one_error_class(tmp_path: Path) -> None:
    """The daemon's Store and the bridge's BridgeStore take the same lock
    (monitor/infra/locked_sqlite.py), each with its own message."""
    assert PdStoreLocked is StoreLocked
    assert PdStoreError is StoreError
    path = tmp_path / "pagerduty.db"
    with (
        BridgeStore(path, retention=60),
        pytest.raises(StoreLocked, match=r"is in use by another riskmon pagerduty$"),
    ):
        BridgeStore(path, retention=60)
    BridgeStore(path, retention=60).close()  # released with the first


# -- dead letters (issue 11, item 1) --------------------------------------------------------


def test_a_dead_letter_leaves_the_queue_and_is_requeued_in_its_place(
    store: Store, db_path: Path
) -> None:
    store.append([entry(1), entry(2), entry(3)])
    first, second, third = (r.seq for r in store.pending())
    assert store.dead_letter(second, "broker refused riskmon/events/x: Not authorized (0x87)")
    assert not store.dead_letter(second, "again")  # no longer in the outbox
    assert [r.seq for r in store.pending()] == [first, third]
    assert (store.depth(), store.dead_letters()) == (2, 1)
    assert store.dead_letter_reasons() == [
        (
            second,
            "riskmon/events/critical/cs/2/BuyingPowerBelowFloor",
            "broker refused riskmon/events/x: Not authorized (0x87)",
        )
    ]
    store.close()
    with Store(db_path) as reopened:  # dead letters are kept, and counted at open
        assert (reopened.depth(), reopened.dead_letters()) == (2, 1)
        assert reopened.requeue_dead_letters() == 1
        assert [r.seq for r in reopened.pending()] == [first, second, third]
        assert [r.event_id for r in reopened.pending()] == ["event-1", "event-2", "event-3"]
        assert (reopened.depth(), reopened.dead_letters()) == (3, 0)


def test_a_dead_letter_whose_alert_moved_on_comes_back_without_its_retained_state(
    store: Store,
) -> None:
    """Its alert's later record was delivered meanwhile (the ACL fixed, no SIGHUP yet):
    re-sending the old retained state would overwrite the newer one."""
    store.append([entry(1), entry(2)])  # two alerts: fp-1, fp-2
    old, other = (r.seq for r in store.pending())
    store.dead_letter(old, "refused")
    store.dead_letter(other, "refused")
    store.append([entry(4, resolved=True)])  # fp-1 again (4 % 3), delivered
    [newer] = store.pending()
    store.acknowledge([newer.seq])
    store.requeue_dead_letters()
    topics = {r.event_id: r.alert_topic for r in store.pending()}
    assert topics == {"event-1": "", "event-2": "riskmon/alerts/cs/2/BuyingPowerBelowFloor"}
