"""The spool's SQLite store and its slot files, on a real file system (no broker needed)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafkaupstream.plugin.config import RouteConfigError, parse_route_config
from kafkaupstream.producers import KafkaRecord, canonical_config
from kafkaupstream.spool.slots import SlotLock, db_path, orphan_slots, remove_files
from kafkaupstream.spool.store import SpoolStore, decode_headers, encode_headers, record_size

CONFIG = canonical_config({"bootstrap.servers": "127.0.0.1:9092", "sasl.password": "s3cret"})
header_names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)


@given(st.lists(st.tuples(header_names, st.binary(max_size=50)), max_size=8))
def test_headers_come_back_as_they_were_stored(headers: list[tuple[str, bytes]]) -> None:
    assert decode_headers(encode_headers(headers)) == tuple(headers)


def append(store: SpoolStore, *records: KafkaRecord) -> None:
    store.commit([(CONFIG, r, 1000.0 + i, record_size(r)) for i, r in enumerate(records)])


def test_a_committed_record_is_read_back_whole_in_spool_order(tmp_path: Path) -> None:
    store = SpoolStore(str(tmp_path / "spool-0.db"))
    first = KafkaRecord("t", b"v1", b"k", 2, (("x-id", b"1"), ("x-id", b"2")))
    second = KafkaRecord("t", b"v2", None, -1, ())
    append(store, first, second)
    store.close()
    reopened = SpoolStore(str(tmp_path / "spool-0.db"))
    read = reopened.read(0, 10, 1 << 20)
    assert [r.record for r in read] == [first, second]
    assert read[0].config == CONFIG
    assert reopened.totals().records == 2
    assert reopened.totals().oldest_created == 1000.0


def test_files_are_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "spool-0.db"
    append(SpoolStore(str(path)), KafkaRecord("t", b"v"))
    for name in os.listdir(tmp_path):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name


def test_a_read_stops_at_its_byte_budget_but_returns_at_least_one(tmp_path: Path) -> None:
    store = SpoolStore(str(tmp_path / "s.db"))
    append(store, *(KafkaRecord("t", b"x" * 100) for _ in range(10)))
    assert len(store.read(0, 10, 350)) == 3
    assert len(store.read(0, 10, 10)) == 1
    assert len(store.read(0, 4, 1 << 20)) == 4


def test_removals_dead_letters_and_the_sent_mark_count_possible_duplicates(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = SpoolStore(path)
    append(store, *(KafkaRecord("t", b"%d" % i) for i in range(5)))
    first, second, third, *_rest = store.read(0, 5, 1 << 20)
    store.commit([], removals=[first.id], dead=[(second, "MSG_SIZE_TOO_LARGE", "too big")])
    store.commit([], sent_upto=third.id + 1)  # two more handed to a producer, then a crash
    store.close()
    reopened = SpoolStore(path)
    totals = reopened.totals()
    assert (totals.records, totals.dead_letters) == (3, 1)
    assert reopened.possible_duplicates() == 2
    assert reopened.dead_letter_causes() == {"MSG_SIZE_TOO_LARGE": 1}


def test_a_failed_commit_stores_nothing_and_the_store_goes_on(tmp_path: Path) -> None:
    store = SpoolStore(str(tmp_path / "s.db"))
    append(store, KafkaRecord("t", b"kept"))
    broken = KafkaRecord("t", b"never", headers=(("bad", "not bytes"),))  # type: ignore[arg-type]
    new_config = canonical_config({"bootstrap.servers": "other:9092"})
    with pytest.raises(TypeError):
        store.commit([(new_config, broken, 1.0, 5)])
    assert store.totals().records == 1
    append(store, KafkaRecord("t", b"next"))
    assert [r.record.value for r in store.read(0, 10, 1 << 20)] == [b"kept", b"next"]


def test_the_database_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    SpoolStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_slot_lock_is_exclusive_until_released(tmp_path: Path) -> None:
    first, second = SlotLock(str(tmp_path), 0), SlotLock(str(tmp_path), 0)
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release(remove=True)
    assert not os.path.exists(second.path)


def test_each_slot_takes_over_the_files_of_slots_past_the_worker_count(tmp_path: Path) -> None:
    for slot in range(7):
        Path(db_path(str(tmp_path), slot)).touch()
    (tmp_path / "spool-9.db-wal").touch()
    (tmp_path / "notes.txt").touch()
    assert orphan_slots(str(tmp_path), 0, 2) == [2, 4, 6]
    assert orphan_slots(str(tmp_path), 1, 2) == [3, 5]
    assert orphan_slots(str(tmp_path), 0, 7) == []
    assert orphan_slots(str(tmp_path / "missing"), 0, 1) == []
    remove_files(db_path(str(tmp_path), 6))
    assert orphan_slots(str(tmp_path), 0, 2) == [2, 4]


def test_spool_routes_accept_the_field_and_default_to_the_idempotent_producer() -> None:
    config = parse_route_config(
        '{"config": {"bootstrap.servers": "k:9092"}, "topic": "t", "delivery": "SPOOL"}'
    )
    assert config.spooled and not config.sync
    assert ("enable.idempotence", "true") in config.producer_config
    with pytest.raises(RouteConfigError, match="'sync', 'async' or 'spool'"):
        parse_route_config(
            '{"config": {"bootstrap.servers": "k:9092"}, "topic": "t", "delivery": "disk"}'
        )


@pytest.mark.parametrize(
    "config",
    [{"enable.idempotence": False}, {"acks": 1}, {"max.in.flight": 10}],
)
def test_spool_routes_refuse_a_producer_that_cannot_be_idempotent(
    config: dict[str, object],
) -> None:
    value = json.dumps(
        {"config": {"bootstrap.servers": "k:9092", **config}, "topic": "t", "delivery": "spool"}
    )
    with pytest.raises(RouteConfigError) as refused:
        parse_route_config(value)
    assert refused.value.field == "config.enable.idempotence"
    explicit = json.dumps(
        {
            "config": {"bootstrap.servers": "k:9092", "enable.idempotence": "TRUE"},
            "topic": "t",
            "delivery": "spool",
        }
    )
    assert parse_route_config(explicit).spooled
