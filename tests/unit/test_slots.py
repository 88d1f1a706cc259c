"""Redis Cluster: the slot check (scheduler.slots) and the owner lookup's pure parts
(scheduler.slotowner), without a server."""

from __future__ import annotations

import pytest
from redis.exceptions import AskError, MovedError, ReadOnlyError, ResponseError, TryAgainError

from scheduler.errors import ConfigError
from scheduler.keys import Keys
from scheduler.redisconf import RedisSettings
from scheduler.slotowner import SlotRouter, _migrating, _redirect_reason, primary_of
from scheduler.slots import ClusterUrl, check, hash_tag, parse_cluster_url, slot_of

RQ3 = "3.0.0"


@pytest.mark.parametrize(
    ("name", "tag"),
    [
        ("{rqbeat}", "rqbeat"),
        ("app:{beat}:x", "beat"),
        ("{a}{b}", "a"),
        ("rqbeat", None),
        ("{}rqbeat", None),  # an empty tag: Redis hashes the whole key
        ("{rqbeat", None),
        ("rqbeat}", None),
    ],
)
def test_hash_tag_is_what_redis_hashes(name: str, tag: str | None) -> None:
    assert hash_tag(name) == tag


def test_every_key_of_a_tagged_namespace_has_the_tags_slot() -> None:
    keys = Keys("{rqbeat}")
    names = [keys.due, keys.running, keys.leader, keys.events, keys.schedule("nightly-report")]
    names += [keys.history("nightly-report"), keys.node("r1"), keys.clock("w1")]
    assert {slot_of(n) for n in names} == {slot_of("rqbeat")}
    # the figure Redis itself gave: a MOVED reply for {rqbeat}:x named slot 15138
    assert slot_of("rqbeat") == 15138


def test_a_prefix_under_the_namespaces_tag_passes() -> None:
    plan = check("{rqbeat}", "{rqbeat}:rq", RQ3)
    assert (plan.slot, plan.namespace, plan.rq_prefix) == (15138, "{rqbeat}", "{rqbeat}:rq")


def test_rq_2_is_refused_with_the_version_and_the_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        check("{rqbeat}", "rq", "2.12.0")
    assert caught.value.setting == "RQ_KEY_PREFIX"
    assert "needs RQ 3 (installed: RQ 2.12.0" in str(caught.value)
    assert "RQ_KEY_PREFIX={rqbeat}:rq" in str(caught.value)


def test_a_namespace_without_a_tag_is_refused_with_a_tagged_one_to_use() -> None:
    with pytest.raises(ConfigError) as caught:
        check("rqbeat", "{rqbeat}:rq", RQ3)
    assert caught.value.setting == "--namespace"
    assert "e.g. --namespace '{rqbeat}'" in str(caught.value)


@pytest.mark.parametrize("prefix", ["rq", "{rq}", "{rqbeat", "{other}:rq"])
def test_rqs_keys_in_another_slot_are_refused(prefix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check("{rqbeat}", prefix, RQ3)
    assert caught.value.setting == "RQ_KEY_PREFIX"
    assert "instead of slot 15138 of namespace '{rqbeat}'" in str(caught.value)
    spread = hash_tag(prefix) is None
    assert ("spread over many slots (no hash tag)" in str(caught.value)) is spread
    assert "set RQ_KEY_PREFIX={rqbeat}:rq for every replica and worker" in str(caught.value)


def test_cluster_url_names_seeds_credentials_and_tls() -> None:
    parsed = parse_cluster_url("rediss+cluster://beat:s%40cret@10.0.0.1:7000,[::1]:7001/0")
    assert parsed.seeds == (("10.0.0.1", 7000), ("::1", 7001))
    assert (parsed.username, parsed.password, parsed.tls) == ("beat", "s@cret", True)
    plain = parse_cluster_url("redis+cluster://node-a:6379")
    assert (plain.seeds, plain.username, plain.password, plain.tls) == (
        (("node-a", 6379),),
        None,
        None,
        False,
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+cluster://node-a:6379/1", "a Redis Cluster has only database 0"),
        ("redis+cluster://", "names no seed node (host:port)"),
        ("redis+cluster://node-a", "'node-a' is not host:port"),
        ("redis+cluster://node-a:99999", "'node-a:99999' is not host:port"),
    ],
)
def test_bad_cluster_urls_are_refused_by_the_settings(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RedisSettings(url=url)
    assert (caught.value.setting, caught.value.reason) == ("--redis-url", reason)


def test_cluster_settings_mask_the_password_and_take_no_sentinel() -> None:
    settings = RedisSettings(url="redis+cluster://beat:hunter2@node-a:7000,node-b:7000")
    assert settings.cluster and not settings.tls
    assert "hunter2" not in settings.describe() and "hunter2" in settings.secrets()
    with pytest.raises(ConfigError, match="takes no Sentinel"):
        RedisSettings(url="redis+cluster://node-a:7000", sentinels=(("s", 26379),), sentinel_master="m")


def test_connect_checks_the_slots_before_any_connection() -> None:
    settings = RedisSettings(url="redis+cluster://127.0.0.1:1")  # nothing listens there
    with pytest.raises(ConfigError) as caught:
        settings.connect(namespace="rqbeat")
    # RQ 2 or an untagged namespace: either way refused before a connection is tried
    assert caught.value.setting in ("RQ_KEY_PREFIX", "--namespace")


def test_primary_of_reads_cluster_slots() -> None:
    reply = [
        [0, 5460, [b"10.0.0.1", 7000, b"id1"], [b"10.0.0.4", 7003, b"id4"]],
        [5461, 10922, [b"", 7001, b"id2"]],
        [10923, 16383, [b"10.0.0.3", 7002, b"id3"]],
    ]
    assert primary_of(reply, 15138, "seed") == ("10.0.0.3", 7002)
    assert primary_of(reply, 5461, "seed") == ("seed", 7001)  # announced without an IP
    assert primary_of(reply[:2], 15138, "seed") is None  # the slot is unassigned


@pytest.mark.parametrize(
    ("error", "moved"),
    [
        (MovedError("15138 10.0.0.2:7001"), True),
        (AskError("15138 10.0.0.2:7001"), True),
        (MovedError("866 10.0.0.2:7001"), False),  # job code's own key in another slot
        (TryAgainError("Multiple keys request during rehashing of slot"), True),
        (ReadOnlyError("You can't write against a read only replica."), True),
        (ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"), True),
        (ResponseError("ERR Script attempted to access a non local key in a cluster node script"), True),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
    ],
)
def test_which_replies_mean_the_slot_moved(error: ResponseError, moved: bool) -> None:
    assert (_redirect_reason(error, 15138) is not None) is moved


@pytest.mark.parametrize(
    ("error", "migrating"),
    [
        (AskError("15138 10.0.0.2:7001"), True),  # every key of the command already left
        (TryAgainError("Multiple keys request during rehashing of slot"), True),  # keys on both sides
        (MovedError("15138 10.0.0.2:7001"), False),  # the move is over: look again
        (ReadOnlyError("You can't write against a read only replica."), False),
    ],
)
def test_a_slot_in_migration_keeps_its_owner(error: ResponseError, migrating: bool) -> None:
    """While the slot migrates the source still owns it (CLUSTER SLOTS names it): an
    ASK or TRYAGAIN is retried there, not a reason to look for another owner."""
    assert _migrating(error) is migrating


class _KnownRouter(SlotRouter):
    """A router whose discovery names the next address of a list, without a server."""

    def __init__(self, *found: tuple[str, int]) -> None:
        super().__init__(ClusterUrl((found[0],), tls=False, username=None, password=None), 15138, {})
        self.found = list(found)

    def _discover(self) -> tuple[str, int]:
        return self.found.pop(0)


def test_a_stale_connections_redirect_does_not_forget_the_owner_found_since() -> None:
    router = _KnownRouter(("10.0.0.1", 7000), ("10.0.0.2", 7001))
    router.owner()
    stale = router.generation  # an idle pooled connection, routed to 7000
    router.forget("MOVED", stale)  # a first connection meets the move
    assert router.owner() == ("10.0.0.2", 7001)
    router.forget("MOVED", stale)  # the idle one meets it too, later
    assert router.owner() == ("10.0.0.2", 7001)
    assert router.generation == stale + 1
    router.forget("READONLY", router.generation)  # a connection routed to 7001 complains
    assert router.generation == stale + 2
