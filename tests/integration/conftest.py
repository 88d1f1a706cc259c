"""Fixtures of the integration tests (the private Redis ones are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.cli import Invoke, invoker


@pytest.fixture
def rqbeat(redis_url: str) -> Invoke:
    """Run ``rqbeat --redis-url <private server> ARGS...`` in-process."""
    return invoker(redis_url)
