"""The schedules of a chaos run: a deterministic mix, as a pure function of (count, seed).

The mix: interval triggers from 1 s to 60 s and cron triggers with and without a
seconds field, in zones with odd offsets (Kolkata +5:30, Chatham +12:45, St John's
-3:30, Lord Howe's half-hour DST); every misfire policy, some with a catch-up window;
some jobs that fail at random (some of those with ``max_attempts``, a few with
``pause_on_failure``); a few slow ones, one of which always overruns its period.
Periods are chosen so a 2-core machine keeps up: :func:`runs_per_s` says how many
jobs per second a fleet asks for.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler import Schedule
from scheduler.cron import fires_between

QUEUE = "chaos"
SLOW_QUEUE = "chaos-slow"  # listened to after QUEUE, so slow runs never starve fast ones
TARGET = "devtools.chaos.jobs.work"
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/St_Johns",
    "Australia/Lord_Howe",
)

#: (label, cron expression or every_ms, weight). Fast ones are added separately.
_TRIGGERS: Sequence[tuple[str, str | int, int]] = (
    ("e5s", 5_000, 1),
    ("e10s", 10_000, 2),
    ("e15s", 15_000, 4),
    ("e20s", 20_000, 5),
    ("e30s", 30_000, 8),
    ("e60s", 60_000, 10),
    ("c5s", "*/5 * * * * *", 1),
    ("c10s", "*/10 * * * * *", 2),
    ("c30s", "0,30 * * * * *", 6),
    ("cH20s", "H/20 * * * * *", 5),
    ("c1m", "* * * * *", 10),
    ("c2m", "*/2 * * * *", 6),
)
#: Always present: the fastest triggers, few of them, so the job rate stays bounded.
_FAST: Sequence[tuple[str, str | int]] = (("e1s", 1_000), ("c2s", "*/2 * * * * *"), ("e3s", 3_000))


@dataclass(frozen=True, slots=True)
class Traits:
    """What one schedule's job does and how failures are handled."""

    fail_pct: int = 0
    sleep_ms: int = 0
    max_attempts: int | None = None
    pause_on_failure: bool = False


def fleet(count: int, seed: int = 1) -> list[Schedule]:
    """``count`` schedules (at least 8): the fast ones, one overrunning slow job, a few
    pause-on-failure ones, the rest drawn from the weighted mix."""
    if count < 8:
        raise ValueError(f"a chaos fleet needs at least 8 schedules, got {count}")
    rng = random.Random(seed)
    out: list[Schedule] = []
    for label, trig in _FAST:
        out.append(_make(len(out), label, trig, rng, Traits(fail_pct=rng.choice((0, 10)))))
    # Overruns its period every time: one-in-flight and the misfire policy decide.
    out.append(_make(len(out), "e3s", 3_000, rng, Traits(sleep_ms=4_000), misfire="coalesce"))
    for _ in range(max(1, count // 100)):
        out.append(_make(len(out), "e10s", 10_000, rng, Traits(fail_pct=30, pause_on_failure=True)))
    labels, triggers, weights = zip(*((label, t, w) for label, t, w in _TRIGGERS), strict=True)
    while len(out) < count:
        i = rng.choices(range(len(labels)), weights=weights)[0]
        out.append(_make(len(out), labels[i], triggers[i], rng, _draw_traits(rng, triggers[i])))
    return out


def _draw_traits(rng: random.Random, trigger: str | int) -> Traits:
    roll = rng.random()
    if roll < 0.15:
        return Traits(fail_pct=rng.choice((10, 25)), max_attempts=rng.choice((None, 2, 3)))
    slow_ok = (isinstance(trigger, int) and trigger >= 15_000) or trigger in ("0,30 * * * * *", "* * * * *")
    if roll < 0.20 and slow_ok:
        return Traits(sleep_ms=rng.randrange(1_000, 3_000, 250))
    return Traits()


def _make(
    index: int,
    label: str,
    trigger: str | int,
    rng: random.Random,
    traits: Traits,
    *,
    misfire: str | None = None,
) -> Schedule:
    policy = misfire or rng.choices(("coalesce", "all", "skip"), weights=(6, 2, 2))[0]
    window = rng.choice((None, None, None, 5_000, 30_000))
    parts = [f"c{index:03d}", label, policy]
    if window:
        parts.append(f"w{window // 1000}")
    if traits.fail_pct:
        parts.append(f"f{traits.fail_pct}")
    if traits.max_attempts:
        parts.append(f"m{traits.max_attempts}")
    if traits.pause_on_failure:
        parts.append("pof")
    if traits.sleep_ms:
        parts.append(f"s{traits.sleep_ms}")
    return Schedule(
        id="-".join(parts),
        target=TARGET,
        kwargs={"fail_pct": traits.fail_pct, "sleep_ms": traits.sleep_ms},
        cron=trigger if isinstance(trigger, str) else None,
        every_ms=trigger if isinstance(trigger, int) else None,
        timezone=rng.choice(ZONES),
        queue=SLOW_QUEUE if traits.sleep_ms else QUEUE,
        timeout_ms=60_000,
        misfire=policy,  # type: ignore[arg-type]  # coerced to Misfire by Schedule
        catchup_window_ms=window,
        max_attempts=traits.max_attempts,
        pause_on_failure=traits.pause_on_failure,
    )


def runs_per_s(schedules: Sequence[Schedule], *, over_ms: int = 600_000, at_ms: int = 0) -> float:
    """Average fires per second the fleet asks for over ``over_ms`` from ``at_ms``."""
    total = sum(len(fires_between(s.trigger, at_ms, at_ms + over_ms, 10**6)) for s in schedules)
    return total / (over_ms / 1000)
