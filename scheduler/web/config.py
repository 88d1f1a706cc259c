"""What the dashboard is configured with: where Redis is, the namespace, who may act."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis import Redis

from scheduler.errors import RqbeatError
from scheduler.keys import DEFAULT_NAMESPACE
from scheduler.redisconf import RedisSettings
from scheduler.web.guard import ActionAuth

#: Seconds between the pages' background refreshes.
REFRESH_S = 5


@dataclass(frozen=True, kw_only=True)
class WebConfig:
    """Everything the blueprint needs; ``redis`` or ``connection`` says where Redis is."""

    redis: RedisSettings | None = None
    connection: Redis | None = None
    namespace: str = DEFAULT_NAMESPACE
    auth: ActionAuth = field(default_factory=ActionAuth)
    #: rq-dashboard's URL prefix for job links; found by itself when mounted in its app.
    rq_dashboard_url: str | None = None
    refresh_s: int = REFRESH_S

    def __post_init__(self) -> None:
        if (self.redis is None) == (self.connection is None):
            raise RqbeatError("give exactly one of redis settings and a connection")

    def where(self) -> str:
        if self.redis is not None:
            return self.redis.describe()
        kwargs = self.connection.connection_pool.connection_kwargs if self.connection else {}
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    def secrets(self) -> tuple[str, ...]:
        return (*(self.redis.secrets() if self.redis else ()), *self.auth.secrets())
