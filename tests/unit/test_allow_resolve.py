"""The allow-list judges what a target resolves to, as RQ will resolve it, against a
fixture package that imports what it must not expose (tests/allowfixture): ``os``,
a re-exported ``system``, a submodule importing ``subprocess``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rq.utils import import_attribute

from scheduler import allow as allowing
from scheduler.allow import AllowList, Verdict, under
from scheduler.clock import iso
from scheduler.engine.decide import decide
from scheduler.errors import ConfigError, InvalidSchedule
from scheduler.model import Schedule
from scheduler.protocol import DUE_FIELDS
from tests.badinput import PROFILE

PKG = "tests.allowfixture"
NOW_MS = 1_800_000_000_000


def allow(text: str = PKG) -> AllowList:
    parsed = AllowList.parse(text)
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    ("rest", "reason"),
    [
        ("os.system", "walks through module os, which is outside it"),
        ("mod.subprocess.call", "walks through module subprocess, which is outside it"),
        ("mod.subprocess.Popen", "walks through module subprocess, which is outside it"),
        ("system", "resolves to a callable defined in posix, outside it"),
        ("evaluate", "resolves to a callable defined in builtins, outside it"),
        ("fixed", "resolves to a callable defined in functools, outside it"),
        ("mod.record", "resolves to a callable defined in tests.jobs, outside it"),
        ("NAME", "does not resolve to a callable"),
        ("mod", "does not resolve to a callable"),
        ("__import__", "names a dunder (__import__)"),
        ("__builtins__.eval", "names a dunder (__builtins__)"),
        ("Job.__init__", "names a dunder (__init__)"),
        ("mod.Job._hidden", "names a private attribute or module (_x) below its prefix"),
        ("_private.job", "names a private attribute or module (_x) below its prefix"),
    ],
)
def test_what_a_hostile_target_resolves_to_is_refused(rest: str, reason: str) -> None:
    target = f"{PKG}.{rest}"
    verdict = allow().judge(target)
    assert not verdict.allowed
    assert verdict.reason == reason
    with pytest.raises(InvalidSchedule) as info:
        allow().check(target)
    assert info.value.field == "target"
    assert str(info.value).startswith(f"target: is not in the allow-list ({PKG}): {reason}")


@pytest.mark.parametrize("rest", ["job", "mod.job", "Job", "mod.Job.method", "Job.static", "mod.Job.build"])
def test_code_defined_under_the_prefix_is_allowed(rest: str) -> None:
    assert allow().judge(f"{PKG}.{rest}") == Verdict(f"{PKG}.{rest}", allowed=True, resolved=True)


def test_a_full_path_allows_just_the_callable_defined_there() -> None:
    exact = allow(f"{PKG}.mod.job, {PKG}.system, {PKG}.mod.Job.method")
    assert exact.judge(f"{PKG}.mod.job").allowed
    assert exact.judge(f"{PKG}.mod.Job.method").allowed
    assert exact.judge(f"{PKG}.system").reason == "resolves to a callable defined in posix, outside it"
    assert exact.judge(f"{PKG}.job").reason == "lies under none of its prefixes"


def test_private_code_is_allowed_when_the_list_names_it() -> None:
    assert allow(f"{PKG}._private").judge(f"{PKG}._private.job").allowed
    assert not allow(PKG).judge(f"{PKG}._private.job").allowed


@pytest.fixture
def no_myapp(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``myapp`` importable here: another test in this process may have imported a
    user's app of that name from its own directory (``rqbeat apply`` checks targets)."""
    for name in [m for m in sys.modules if m == "myapp" or m.startswith("myapp.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p or ".") / "myapp").exists()])


@pytest.mark.usefixtures("no_myapp")
def test_a_target_that_does_not_import_here_passes_by_name_only() -> None:
    verdict = allow("myapp").judge("myapp.jobs.report")
    assert (verdict.allowed, verdict.resolved) == (True, False)
    assert verdict.reason == "cannot import myapp.jobs: No module named 'myapp'"
    missing = allow().judge(f"{PKG}.mod.not_yet_deployed")
    assert (missing.allowed, missing.resolved) == (True, False)
    assert not allow("myapp").judge("myapp.__builtins__.eval").allowed


def test_a_module_that_ends_its_importer_does_not_end_the_judge() -> None:
    verdict = allow().judge(f"{PKG}.exploding.job")
    assert (verdict.allowed, verdict.resolved) == (True, False)
    assert verdict.reason == f"importing {PKG}.exploding raised SystemExit: exploding: imported"
    assert f"{PKG}.exploding" not in sys.modules


def test_verdicts_are_memoized_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Verdict] = []
    allowed = allow()
    first = allowed.judge(f"{PKG}.job", seen.append)
    assert allowed.judge(f"{PKG}.job", seen.append) is first
    assert seen == [first]
    monkeypatch.setattr(allowing, "VERDICTS_KEPT", 2)
    for rest in ["mod.job", "os.system", "system"]:
        allowed.judge(f"{PKG}.{rest}")
    assert allowed.judge(f"{PKG}.job", seen.append) == first
    assert len(seen) == 2  # forgotten once the memo was full, so judged again


@pytest.mark.parametrize("text", ["__main__", "myapp.__init__", "a,b.__x__"])
def test_a_prefix_cannot_name_a_dunder(text: str) -> None:
    with pytest.raises(ConfigError, match="cannot name a dunder"):
        AllowList.parse(text)


# -- properties: hostile paths against what RQ itself resolves ----------------------

SEGMENTS = [
    *["os", "system", "path", "join", "getcwd", "mod", "subprocess", "call", "Popen", "record"],
    *["job", "Job", "method", "static", "build", "evaluate", "fixed", "NAME", "nope", "eval"],
    *["_hidden", "_private", "_os", "__builtins__", "__import__", "__class__", "__init__"],
    *["__globals__", "__dict__", "__loader__", "__spec__", "builtins", "exploding"],
]
#: Known ways in, each of which a random tail may extend.
KNOWN = ["os.system", "mod.subprocess.call", "system", "evaluate", "fixed", "__builtins__.eval", "mod.job"]
hostile = st.tuples(
    st.sampled_from(["", *KNOWN]), st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=3)
).map(lambda parts: ".".join([PKG, *filter(None, [parts[0]]), *parts[1]]))
PREFIXES = (tuple(PKG.split(".")),)


def rq_resolves(target: str) -> Any:
    """What an RQ worker would call for ``target``, or None where RQ fails."""
    try:
        return import_attribute(target)
    except (ValueError, AttributeError, ImportError, SystemExit):
        return None


@PROFILE
@given(hostile)
def test_an_allowed_target_is_only_ever_code_defined_under_the_prefix(target: str) -> None:
    verdict = allow().judge(target)
    if not verdict.allowed:
        return
    found = rq_resolves(target)
    if verdict.resolved:
        assert callable(found) and under(PREFIXES, getattr(found, "__module__", None))
    else:  # passed by name only: here, with the same code, RQ cannot run it either
        assert found is None


@PROFILE
@given(hostile)
def test_whatever_rq_would_reach_outside_the_prefix_is_refused(target: str) -> None:
    found = rq_resolves(target)
    defined_in = getattr(found, "__module__", None)
    if found is not None and not (callable(found) and under(PREFIXES, defined_in)):
        assert not allow().judge(target).allowed


@PROFILE
@given(
    st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True), min_size=1, max_size=4),
    st.sampled_from(["__builtins__", "__import__", "__class__", "__x__", "__globals__"]),
    st.integers(min_value=0, max_value=4),
)
def test_a_dunder_anywhere_is_refused_by_name(segments: list[str], dunder: str, at: int) -> None:
    parts = [*segments]
    parts.insert(min(at, len(parts)), dunder)
    target = ".".join(parts)
    prefix = ".".join(s for s in segments if not s.startswith("__")) or "x"
    assert AllowList((tuple(prefix.split(".")),)).refusal(target) is not None


# -- dispatch: the replica's verdict, hand-written definitions ----------------------


def row(target: str) -> list[Any]:
    schedule = Schedule(id="s", target=target, every_ms=1000)
    head = [schedule.to_json().encode(), b"1", b"due", iso(NOW_MS).encode(), b"1", None]
    return head + [None] * (len(DUE_FIELDS) - len(head))


@pytest.mark.parametrize("rest", ["os.system", "mod.subprocess.call", "system", "__builtins__.eval"])
def test_dispatch_marks_a_hostile_target_broken(rest: str) -> None:
    decision = decide("s", row(f"{PKG}.{rest}"), NOW_MS, NOW_MS, allow())
    assert decision.kind == "broken"
    assert decision.error.startswith(f"target '{PKG}.{rest}' is not in this replica's allow-list ({PKG}): ")


@pytest.mark.usefixtures("no_myapp")
def test_dispatch_runs_a_target_allowed_by_name_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    allowed = allow(f"{PKG},myapp")
    assert decide("s", row(f"{PKG}.mod.job"), NOW_MS, NOW_MS, allowed).kind == "run"
    with caplog.at_level(logging.WARNING, logger="scheduler.engine.decide"):
        for _ in range(3):
            assert decide("s", row("myapp.jobs.report"), NOW_MS, NOW_MS, allowed).kind == "run"
    assert [r.getMessage() for r in caplog.records] == [
        "schedule=s target=myapp.jobs.report allowed by name only, it does not import on this replica: "
        "cannot import myapp.jobs: No module named 'myapp'"
    ]
