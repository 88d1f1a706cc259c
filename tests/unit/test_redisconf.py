"""Connection settings, secret masking and eviction advice: pure, no Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli.app import cli
from scheduler.connection import mask_secrets, mask_url
from scheduler.errors import ConfigError
from scheduler.eviction import eviction_warning
from scheduler.redisconf import RedisSettings, parse_sentinels


def test_parse_sentinels() -> None:
    assert parse_sentinels("a:26379, b:1,[::1]:26380") == (("a", 26379), ("b", 1), ("::1", 26380))
    for bad in ("a", "a:", ":1", "a:0", "a:65536", "a:x", ","):
        with pytest.raises(ConfigError, match="--sentinel"):
            parse_sentinels(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "http://h/0"}, "--redis-url: must start with redis://"),
        ({"url": "redis://h:99999/0"}, "--redis-url: Port out of range"),
        ({"url": "redis://h/x"}, "--redis-url: database 'x' is not a number"),
        ({"url": "redis:///0"}, "--redis-url: has no host"),
        ({"sentinels": (("s", 1),)}, "--sentinel-master: --sentinel and --sentinel-master go together"),
        ({"sentinel_master": "m"}, "--sentinel: --sentinel and --sentinel-master go together"),
        (
            {"url": "unix:///tmp/r.sock", "sentinels": (("s", 1),), "sentinel_master": "m"},
            "--redis-url: Sentinel needs",
        ),
        ({"tls_ca_cert": "/etc/hostname"}, "--tls-ca-cert: TLS files need a rediss:// URL"),
        ({"url": "rediss://h/0", "tls_cert": "/nonexistent"}, "--tls-cert: no such readable file"),
    ],
)
def test_invalid_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RedisSettings(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message), caught.value


def test_key_needs_cert(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("x")
    with pytest.raises(ConfigError, match="--tls-key: needs --tls-cert"):
        RedisSettings(url="rediss://h/0", tls_key=str(key))


def test_sentinel_url_needs_no_host() -> None:
    settings = RedisSettings(url="redis://:pw@/2", sentinels=(("s", 1),), sentinel_master="m")
    assert settings.describe() == "sentinel m@s:1 (redis://:***@/2)"


def test_passwords_masked_everywhere() -> None:
    settings = RedisSettings(url="redis://u:p%40ss@h:1/0", sentinel_password="sentinel-pw")
    assert "p%40ss" not in repr(settings) and "sentinel-pw" not in repr(settings)
    assert settings.describe() == "redis://u:***@h:1/0"
    assert set(settings.secrets()) == {"p%40ss", "p@ss", "sentinel-pw"}
    line = "AUTH p@ss failed for redis://u:p%40ss@h and sentinel-pw"
    assert mask_secrets(line, settings.secrets()) == "AUTH *** failed for redis://u:***@h and ***"
    assert mask_url("rediss://:only-pw@h/0") == "rediss://:***@h/0"
    assert mask_url("redis://h/0") == "redis://h/0"


def test_bad_connection_flags_exit_2_with_one_line() -> None:
    result = CliRunner().invoke(cli, ["--sentinel", "nohost", "--sentinel-master", "m", "ls"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: --sentinel: 'nohost' is not host:port (got 'nohost')"
    ]
    env = {"RQBEAT_REDIS_URL": "rediss://h/0", "RQBEAT_TLS_CA_CERT": "/nonexistent"}
    result = CliRunner().invoke(cli, ["ls"], env=env)
    assert result.exit_code == 2
    assert result.output.strip() == "Error: --tls-ca-cert: no such readable file (got '/nonexistent')"


def test_eviction_warning() -> None:
    assert eviction_warning("noeviction") is None
    assert "schedules" in (eviction_warning("allkeys-lru") or "")
    assert "schedules" in (eviction_warning("allkeys-random") or "")
    volatile = eviction_warning("volatile-ttl") or ""
    assert "leader lease" in volatile and "schedules" not in volatile
