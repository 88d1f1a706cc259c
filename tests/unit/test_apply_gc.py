"""``rqbeat apply`` loads and writes with the cycle collector off, and puts it back."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from scheduler.cli import applycmd


@pytest.fixture
def collector_state() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.usefixtures("collector_state")
@pytest.mark.parametrize("enabled_before", [True, False])
def test_collector_is_off_inside_and_as_before_after(enabled_before: bool) -> None:
    gc.enable() if enabled_before else gc.disable()
    with applycmd._without_cycle_collection():
        assert not gc.isenabled()
    assert gc.isenabled() is enabled_before


@pytest.mark.usefixtures("collector_state")
def test_collector_is_back_after_an_error() -> None:
    gc.enable()
    with pytest.raises(ValueError, match="bad file"), applycmd._without_cycle_collection():
        raise ValueError("bad file")
    assert gc.isenabled()
