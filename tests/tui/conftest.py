"""A seeded store (deterministic rows, fixed clock) shared by analytics, report and dashboard tests."""

from __future__ import annotations

import pytest

from tests.analytics.seed import FIXED_NOW, seed


@pytest.fixture
def seeded(store):
    counts = seed(store)
    store.seed_counts = counts
    return store


@pytest.fixture
def now():
    return FIXED_NOW


@pytest.fixture
def anyio_backend():
    return "asyncio"
