"""The schedule store against a real redis-server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from scheduler import cron, scripts, stored
from scheduler.clock import parse_iso_ms, redis_now_ms
from scheduler.errors import RqbeatError, ScheduleNotFound
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.store import UPSERT_CHUNK, Client
from scheduler.stored import DEFINITION_FIELDS, SETTING_FIELDS
from tests.cli import invoker, ok

pytestmark = pytest.mark.integration

K = Keys()


def schedule(schedule_id: str = "s1", **changes: Any) -> Schedule:
    raw: dict[str, Any] = {"id": schedule_id, "target": "app.jobs.run", "every": "1h", **changes}
    return Schedule.from_dict({k: v for k, v in raw.items() if v is not None})


def decoded(value: Any) -> str:
    """A reply of the bytes client as text."""
    assert isinstance(value, bytes)
    return value.decode()


def hash_of(conn: Redis, schedule_id: str, keys: Keys = K) -> dict[str, str]:
    raw = conn.hgetall(keys.schedule(schedule_id))
    return {decoded(k): decoded(v) for k, v in raw.items()}


def revision(conn: Redis, keys: Keys = K) -> int:
    return int(conn.get(keys.revision) or 0)


def due_ms(conn: Redis, schedule_id: str, keys: Keys = K) -> int | None:
    score = conn.zscore(keys.due, schedule_id)
    return None if score is None else round(score * 1000)


# -- upsert -------------------------------------------------------------------------


def test_create_update_unchanged(client: Client, conn: Redis) -> None:
    created = client.upsert(schedule())
    assert (created.id, created.action, created.version) == ("s1", "created", 1)
    assert revision(conn) == 1

    same = client.upsert(schedule())
    assert (same.action, same.version) == ("unchanged", 1)
    assert revision(conn) == 1  # a no-op is not an edit

    updated = client.upsert(schedule(args=[1]))
    assert (updated.action, updated.version) == ("updated", 2)
    assert revision(conn) == 2

    assert client.upsert(schedule(args=[1])).action == "unchanged"
    assert client.upsert(schedule(args=[2])).version == 3
    assert client.get("s1").version == 3
    assert revision(conn) == 3


def test_new_schedule_is_due_at_its_next_fire(client: Client, conn: Redis) -> None:
    before = redis_now_ms(conn)
    client.upsert(schedule(description="hello"))
    after = redis_now_ms(conn)
    stored = hash_of(conn, "s1")
    fire = parse_iso_ms(stored["fire_at"])
    assert stored["fire_at"].endswith("Z")
    assert (
        cron.next_fire_ms(schedule().trigger, before) <= fire <= cron.next_fire_ms(schedule().trigger, after)
    )
    assert before < fire <= after + 3_600_000
    assert due_ms(conn, "s1") == fire
    assert stored["state"] == "due"
    assert stored["version"] == "1"
    assert "attempt" not in stored  # absent while it is 1: the stored form omits defaults
    # human-readable: one field per setting, as a person wrote it (scheduler.stored)
    assert stored["every"] == "1h"
    assert stored["description"] == "hello"
    assert stored["target"] == schedule().target
    assert "id" not in stored and "definition" not in stored  # the key names it
    definition = {k: v for k, v in stored.items() if k in SETTING_FIELDS}
    assert Schedule.from_dict({**definition, "id": "s1"}) == schedule(description="hello")
    assert conn.sismember(K.ids, "s1")
    assert conn.zscore(K.running, "s1") is None


def test_cron_schedule_fire_matches_the_expression(client: Client, conn: Redis) -> None:
    berlin = schedule(every=None, cron="30 2 * * *", timezone="Europe/Berlin")
    before = redis_now_ms(conn)
    client.upsert(berlin)
    record = client.get("s1")
    assert record.fire_ms == cron.next_fire_ms(berlin.trigger, before)
    assert record.due_ms == record.fire_ms


def test_jitter_score_is_not_before_the_fire(client: Client, conn: Redis) -> None:
    client.upsert(schedule(every="1m", jitter="30s"))
    record = client.get("s1")
    assert record.fire_ms is not None
    assert record.due_ms is not None
    assert record.fire_ms <= record.due_ms <= record.fire_ms + 30_000


def test_changed_trigger_recomputes_the_fire(client: Client, conn: Redis) -> None:
    client.upsert(schedule(every="1d"))
    conn.zadd(K.due, {"s1": 123.0})  # as if the leader had moved it
    conn.hset(K.schedule("s1"), "fire_at", "1970-01-01T00:02:03.000Z")
    client.upsert(schedule(every="1h"))
    now = redis_now_ms(conn)
    fire = parse_iso_ms(hash_of(conn, "s1")["fire_at"])
    assert now - 60_000 < fire <= now + 3_600_000
    assert due_ms(conn, "s1") == fire


@pytest.mark.parametrize(
    "changes",
    [{"args": [1, 2]}, {"kwargs": {"a": 1}}, {"queue": "other"}, {"description": "x"}, {"misfire": "all"}],
)
def test_other_changes_keep_the_pending_fire(client: Client, conn: Redis, changes: dict[str, Any]) -> None:
    client.upsert(schedule())
    conn.zadd(K.due, {"s1": 123.0})
    conn.hset(K.schedule("s1"), "fire_at", "1970-01-01T00:02:03.000Z")
    result = client.upsert(schedule(**changes))
    assert result.action == "updated"
    assert hash_of(conn, "s1")["fire_at"] == "1970-01-01T00:02:03.000Z"
    assert due_ms(conn, "s1") == 123_000


def test_upsert_many(client: Client, conn: Redis) -> None:
    client.upsert(schedule("b"))
    results = client.upsert_many([schedule("a"), schedule("b"), schedule("c", every="2h")])
    assert [(r.id, r.action) for r in results] == [("a", "created"), ("b", "unchanged"), ("c", "created")]
    assert sorted(decoded(m) for m in conn.zrange(K.due, 0, -1)) == ["a", "b", "c"]


def script_calls(conn: Redis) -> int:
    stats: dict[str, Any] = conn.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


def test_upsert_many_writes_against_rows_read_before(client: Client, conn: Redis) -> None:
    """``read`` (what apply planned from) spares the write pass its own read: one
    script call, the write, for a chunk."""
    client.upsert(schedule("b"))
    wanted = [schedule("a"), schedule("b", every="2h"), schedule("c")]
    rows = client.read_rows([s.id for s in wanted])
    assert set(rows) == {"b"}  # only what exists
    before = script_calls(conn)
    results = client.upsert_many(wanted, read=rows)
    assert [(r.id, r.action, r.version) for r in results] == [
        ("a", "created", 1),
        ("b", "updated", 2),
        ("c", "created", 1),
    ]
    assert script_calls(conn) - before == 1
    assert client.get("b").schedule == wanted[1]


def test_upsert_many_with_rows_read_before_an_edit_reads_again(client: Client, conn: Redis) -> None:
    """Edits made between apply's read and its write are never overwritten with what
    was read before them: the write's compare-and-set refuses those schedules, the
    next pass reads them again, and the result is the file's definition exactly (a
    setting added meanwhile is deleted, not left behind)."""
    client.upsert(schedule("b"))
    wanted = [schedule("a"), schedule("b", every="2h"), schedule("c")]
    rows = client.read_rows([s.id for s in wanted])
    other = Client(conn)
    other.upsert(schedule("b", description="edited meanwhile"))  # version 2
    other.upsert(schedule("c", description="made meanwhile"))  # version 1, absent when read
    results = client.upsert_many(wanted, read=rows)
    assert [(r.id, r.action, r.version) for r in results] == [
        ("a", "created", 1),
        ("b", "updated", 3),
        ("c", "updated", 2),
    ]
    for expected in wanted:
        assert client.get(expected.id).schedule == expected
        assert "description" not in hash_of(conn, expected.id)


def test_upsert_many_writes_chunk_after_chunk(client: Client, conn: Redis) -> None:
    """More schedules than one script call takes: every chunk is written, one revision
    bump per chunk that changed something, and a second pass finds them unchanged."""
    count = UPSERT_CHUNK * 2 + UPSERT_CHUNK // 2
    many = [schedule(f"m{i}", every=None, cron=f"{i % 60} * * * *") for i in range(count)]
    before = revision(conn)
    assert {r.action for r in client.upsert_many(many)} == {"created"}
    assert conn.zcard(K.due) == conn.scard(K.ids) == count
    assert revision(conn) == before + 3
    many[UPSERT_CHUNK + 7] = schedule(f"m{UPSERT_CHUNK + 7}", every=None, cron="1 2 * * *")
    actions = [r.action for r in client.upsert_many(many)]
    assert actions.count("updated") == 1
    assert actions[UPSERT_CHUNK + 7] == "updated"
    assert revision(conn) == before + 4  # the unchanged chunks wrote nothing
    assert hash_of(conn, f"m{UPSERT_CHUNK + 7}")["version"] == "2"


def test_upsert_many_sends_each_field_name_once_per_chunk(
    client: Client, conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk names each definition field once (its layouts), not beside every value,
    and a chunk mixing layouts, creations and updates that delete a setting writes each
    hash exactly as its definition is stored."""
    sent: list[list[Any]] = []
    real = scripts.pipelined

    def recording(conn_: Redis, script: Any, keys: Any, batches: Any, settle: Any, **kw: Any) -> None:
        def record() -> Any:
            for context, args in batches:
                sent.append(list(args or []))
                yield context, args

        real(conn_, script, keys, record(), settle, **kw)

    client.upsert(schedule("u0", description="to be deleted"))
    monkeypatch.setattr(scripts, "pipelined", recording)
    wanted = [schedule(f"n{i}", description="same words" if i % 2 else None) for i in range(20)]
    wanted.append(schedule("u0"))  # an update that deletes its description
    results = client.upsert_many(wanted)
    assert [r.action for r in results] == ["created"] * 20 + ["updated"]
    (args,) = sent
    assert args.count("target") == 2  # in each of the two layouts; 21 if named per schedule
    assert args.count("description") == 2  # in one layout, and u0's deletion
    for expected in wanted:
        fields = {k: v for k, v in hash_of(conn, expected.id).items() if k in SETTING_FIELDS}
        assert fields == stored.encode(expected)
        assert client.get(expected.id).schedule == expected


def test_upsert_repairs_a_broken_schedule(client: Client, conn: Redis) -> None:
    client.upsert(schedule())
    conn.hset(K.schedule("s1"), mapping={"definition": "{garbage", "state": "broken", "error": "bad"})
    conn.zrem(K.due, "s1")
    result = client.upsert(schedule())
    assert result.action == "updated"
    record = client.get("s1")
    assert (record.state, record.error) == ("due", None)
    assert "error" not in hash_of(conn, "s1")
    assert due_ms(conn, "s1") == record.fire_ms


# -- remove -------------------------------------------------------------------------


def test_remove(client: Client, conn: Redis) -> None:
    client.upsert(schedule())
    client.upsert(schedule("keep"))
    client.pause("s1")
    client.resume("s1")
    conn.zadd(K.running, {"s1": 1.0})
    assert conn.exists(K.history("s1"))
    rev = revision(conn)

    assert client.remove("s1") is True
    assert not conn.exists(K.schedule("s1"))
    assert not conn.exists(K.history("s1"))
    assert conn.zscore(K.due, "s1") is None
    assert conn.zscore(K.running, "s1") is None
    assert not conn.sismember(K.ids, "s1")
    assert revision(conn) == rev + 1
    assert client.ids() == ["keep"]

    assert client.remove("s1") is False
    assert client.remove("never-was") is False
    with pytest.raises(ScheduleNotFound):
        client.get("s1")


# -- pause / resume / trigger -------------------------------------------------------


def test_pause_and_resume(client: Client, conn: Redis) -> None:
    client.upsert(schedule(every="1d"))
    conn.zadd(K.due, {"s1": 123.0})  # pending fire long ago
    rev = revision(conn)

    assert client.pause("s1") is True
    assert conn.zscore(K.due, "s1") is None
    assert client.get("s1").state == "paused"
    assert client.pause("s1") is False
    assert revision(conn) == rev + 1

    assert client.resume("s1") is True
    now = redis_now_ms(conn)
    record = client.get("s1")
    assert record.state == "due"
    assert record.fire_ms is not None
    assert now - 60_000 < record.fire_ms <= now + 86_400_000  # from now, not the old fire
    assert record.due_ms == record.fire_ms
    assert client.resume("s1") is False
    assert revision(conn) == rev + 2


def test_resume_keeps_a_run_in_flight(client: Client, conn: Redis) -> None:
    client.upsert(schedule())
    conn.zrem(K.due, "s1")
    conn.zadd(K.running, {"s1": 1.0})
    conn.hset(K.schedule("s1"), mapping={"state": "running", "job_id": "s1-1-1"})
    assert client.pause("s1") is True
    assert conn.zscore(K.running, "s1") == 1.0  # the run finishes
    assert client.resume("s1") is True
    assert client.get("s1").state == "running"
    assert conn.zscore(K.due, "s1") is None


def test_unknown_ids(client: Client) -> None:
    for call in (client.pause, client.resume, client.trigger, client.get):
        with pytest.raises(ScheduleNotFound) as info:
            call("nope")
        assert info.value.schedule_id == "nope"
        assert isinstance(info.value, RqbeatError)


def test_trigger(client: Client, conn: Redis) -> None:
    client.upsert(schedule(every="1d"))
    rev = revision(conn)
    before = redis_now_ms(conn)
    client.trigger("s1")
    after = redis_now_ms(conn)
    record = client.get("s1")
    assert record.state == "due"
    assert record.fire_ms is not None
    assert before <= record.fire_ms <= after
    assert due_ms(conn, "s1") == record.fire_ms
    assert revision(conn) == rev + 1

    client.pause("s1")
    with pytest.raises(RqbeatError, match="paused"):
        client.trigger("s1")
    assert conn.zscore(K.due, "s1") is None


# -- reads --------------------------------------------------------------------------


def test_list_is_sorted(client: Client) -> None:
    for schedule_id in ("b", "a", "C", "a-2"):
        client.upsert(schedule(schedule_id))
    assert [r.id for r in client.list()] == ["C", "a", "a-2", "b"]
    assert client.ids() == ["C", "a", "a-2", "b"]
    assert client.list()[0].schedule == schedule("C")


def test_list_empty(client: Client) -> None:
    assert client.list() == []
    assert client.ids() == []


def test_damaged_schedules_show_as_broken(client: Client, conn: Redis) -> None:
    for schedule_id in (
        "good",
        "garbage",
        "wrongtype",
        "nodef",
        "invalid",
        "notobject",
        "otherid",
        "badstate",
    ):
        client.upsert(schedule(schedule_id))
    conn.hset(K.schedule("garbage"), "definition", "{not json")
    conn.delete(K.schedule("wrongtype"))
    conn.set(K.schedule("wrongtype"), "foo")
    conn.hdel(K.schedule("nodef"), *DEFINITION_FIELDS)
    conn.hset(
        K.schedule("invalid"), "definition", json.dumps({"id": "invalid", "target": "x", "every": "1h"})
    )
    conn.hset(K.schedule("notobject"), "definition", "[1, 2]")
    conn.hset(K.schedule("otherid"), "definition", json.dumps({**schedule("good").to_dict(), "id": "good"}))
    conn.hset(K.schedule("badstate"), "state", "sleeping")
    conn.sadd(K.ids, "ghost")  # an id whose key is gone is skipped

    records = {r.id: r for r in client.list()}
    assert sorted(records) == sorted(
        ["good", "garbage", "wrongtype", "nodef", "invalid", "notobject", "otherid", "badstate"]
    )
    assert records["good"].state == "due"
    assert records["good"].error is None
    for schedule_id, needle in [
        ("garbage", "JSON"),
        ("wrongtype", "string"),
        ("nodef", "definition"),
        ("invalid", "target"),
        ("notobject", "object"),
        ("otherid", "match"),
        ("badstate", "sleeping"),
    ]:
        record = records[schedule_id]
        assert record.state == "broken", schedule_id
        assert record.error, schedule_id
        assert needle in record.error, (schedule_id, record.error)
        assert client.get(schedule_id).state == "broken"
    assert records["garbage"].schedule is None
    assert records["badstate"].schedule == schedule("badstate")


def test_wrong_type_key_can_be_removed(client: Client, conn: Redis) -> None:
    conn.sadd(K.ids, "x")
    conn.set(K.schedule("x"), "foo")
    assert [r.state for r in client.list()] == ["broken"]
    assert client.remove("x") is True
    assert client.list() == []


def test_wrong_type_key_is_replaced_by_an_upsert(client: Client, conn: Redis) -> None:
    conn.sadd(K.ids, "x")
    conn.set(K.schedule("x"), "foo")
    assert client.get("x").error == "key has type string, not hash"
    with pytest.raises(RqbeatError, match="broken"):
        client.resume("x")
    result = client.upsert(schedule("x"))
    assert (result.action, result.version) == ("created", 1)
    record = client.get("x")
    assert (record.state, record.error, record.schedule) == ("due", None, schedule("x"))
    assert due_ms(conn, "x") == record.fire_ms


def test_history_records_edits(client: Client, conn: Redis) -> None:
    client.upsert(schedule())
    before = redis_now_ms(conn)
    client.pause("s1")
    client.resume("s1")
    client.trigger("s1")
    entries = client.history("s1")
    assert [e.event for e in entries] == ["paused", "resumed", "triggered"]
    for entry in entries:
        assert entry.at_ms >= before - 1_000
        assert parse_iso_ms(entry.fields["at"]) >= before
        assert "event" not in entry.fields
    assert [e.event for e in client.history("s1", count=2)] == ["resumed", "triggered"]
    assert client.history("nope") == []


def test_history_is_capped(conn: Redis) -> None:
    client = Client(conn, history_maxlen=5)
    client.upsert(schedule())
    for _ in range(150):
        client.pause("s1")
        client.resume("s1")
    length = conn.xlen(K.history("s1"))
    # XADD MAXLEN ~ trims whole stream nodes (100 entries each by default)
    assert 5 <= length <= 5 + 100
    assert length < 300
    assert [e.event for e in client.history("s1", count=2)] == ["paused", "resumed"]


def test_namespaces_are_isolated(conn: Redis) -> None:
    one, two = Client(conn, "one"), Client(conn, "two")
    one.upsert(schedule("shared", args=[1]))
    two.upsert(schedule("shared", args=[2]))
    two.upsert(schedule("only-two"))
    assert [r.id for r in one.list()] == ["shared"]
    assert [r.id for r in two.list()] == ["only-two", "shared"]
    shared_one = one.get("shared").schedule
    assert shared_one is not None
    assert shared_one.args == (1,)

    one.pause("shared")
    assert two.get("shared").state == "due"
    assert one.remove("shared")
    assert two.get("shared").state == "due"
    with pytest.raises(ScheduleNotFound):
        one.get("only-two")
    keys = sorted(decoded(k) for k in conn.keys("*"))
    assert all(k.startswith(("one:", "two:")) for k in keys)
    assert "two:schedule:shared" in keys
    assert not any(k.startswith("rqbeat:") for k in keys)


# -- the stored form ----------------------------------------------------------------


def realistic(**changes: Any) -> Schedule:
    raw = {"id": "daily-summary", "target": "myapp.tasks.reports.daily_summary", "cron": "30 2 * * *",
           "timezone": "Europe/Berlin", "max_attempts": 3, **changes}  # fmt: skip
    return Schedule.from_dict(raw, owner="apply:reports")


def test_a_realistic_schedule_hash_stays_listpack_encoded(client: Client, conn: Redis) -> None:
    client.upsert_many([realistic()])
    key = K.schedule("daily-summary")
    assert conn.object("encoding", key) == b"listpack"
    fields = hash_of(conn, "daily-summary")
    assert fields["target"] == "myapp.tasks.reports.daily_summary"
    assert fields["max_attempts"] == "3"
    assert client.get("daily-summary").schedule == realistic()


#: The whole hash of an idle schedule made by ``rqbeat apply``: its settings, and of
#: its state only what has no default (attempt is absent while 1, updated_at until the
#: first edit): docs/keys.md and the README's key layout list the same.
APPLY_MADE_FIELDS = {"version", "state", "fire_at", "target", "cron", "timezone", "max_attempts", "owner"}
REALISTIC_TOML = """[defaults]
timezone = "Europe/Berlin"
max_attempts = 3

[schedules.daily-summary]
target = "myapp.tasks.reports.daily_summary"
cron = "30 2 * * *"
"""


def test_an_apply_made_schedule_stores_no_default_valued_field(
    client: Client, conn: Redis, redis_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "reports.toml"
    path.write_text(REALISTIC_TOML)
    ok(invoker(redis_url)("apply", "--quiet", str(path)))
    key = K.schedule("daily-summary")
    fields = hash_of(conn, "daily-summary")
    assert set(fields) == APPLY_MADE_FIELDS
    assert (fields["version"], fields["state"], fields["owner"]) == ("1", "due", "apply:reports")
    assert conn.object("encoding", key) == b"listpack"
    record = client.get("daily-summary")
    assert (record.attempt, record.version, record.schedule) == (1, 1, realistic())
    # the first edit records its time; the hash stays compact
    client.upsert(realistic(max_attempts=5))
    edited = hash_of(conn, "daily-summary")
    assert set(edited) == APPLY_MADE_FIELDS | {"updated_at"}
    assert parse_iso_ms(edited["updated_at"]) > 0
    assert conn.object("encoding", key) == b"listpack"


def test_a_hash_with_the_previous_default_fields_still_reads_and_runs_the_same(
    client: Client, conn: Redis
) -> None:
    """What rqbeat wrote before the defaults were omitted: attempt 1 and updated_at on
    every hash. It reads the same, and the next re-arm drops the default attempt."""
    client.upsert(realistic())
    key = K.schedule("daily-summary")
    conn.hset(key, mapping={"attempt": "1", "updated_at": "2026-11-23T01:00:00.000Z"})  # by hand: as before
    record = client.get("daily-summary")
    assert (record.attempt, record.version, record.state) == (1, 1, "due")
    assert client.upsert(realistic()).action == "unchanged"
    client.upsert(realistic(cron="45 3 * * *"))  # a new trigger re-arms it at attempt 1
    fields = hash_of(conn, "daily-summary")
    assert "attempt" not in fields
    assert parse_iso_ms(fields["updated_at"]) > parse_iso_ms("2026-11-23T01:00:00.000Z")
    assert client.get("daily-summary").attempt == 1


def test_a_schedule_of_the_previous_form_loads_and_its_next_write_migrates_it(
    client: Client, conn: Redis
) -> None:
    client.upsert(realistic())
    key = K.schedule("daily-summary")
    # what an older rqbeat wrote: the whole definition as one JSON field (by hand: the
    # current code cannot write it)
    conn.hdel(key, *SETTING_FIELDS)
    conn.hset(key, "definition", realistic().to_json())
    assert client.get("daily-summary").schedule == realistic()
    assert client.upsert(realistic()).action == "unchanged"  # the same definition
    assert client.stored(["daily-summary"]) == {"daily-summary": (realistic().to_json(), "due")}

    assert client.upsert(realistic(max_attempts=5)).action == "updated"
    fields = hash_of(conn, "daily-summary")
    assert "definition" not in fields
    assert fields["max_attempts"] == "5"
    assert conn.object("encoding", key) == b"listpack"
    assert client.get("daily-summary").schedule == realistic(max_attempts=5)


def test_a_setting_put_back_to_its_default_is_deleted(client: Client, conn: Redis) -> None:
    client.upsert(realistic(description="nightly totals", queue="reports"))
    assert hash_of(conn, "daily-summary")["queue"] == "reports"
    client.upsert(realistic())
    fields = hash_of(conn, "daily-summary")
    assert "queue" not in fields and "description" not in fields
    assert client.get("daily-summary").schedule == realistic()
