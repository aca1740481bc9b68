"""Dashboard test fixtures; the seeded store (`seeded`, `now`) comes from tests/conftest.py."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"
