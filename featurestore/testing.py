"""Helpers for tests of code that uses a feature store: a fixed master key and a clock.

Never use :data:`TEST_KEY_PROVIDER` outside tests: its key is public.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .privacy.keys import DataKey, KeyProvider, KeyRing, StaticKeyProvider

TEST_MASTER_KEY = bytes(range(32))
"""A public, fixed master key for tests only."""

TEST_KEY_PROVIDER = StaticKeyProvider(TEST_MASTER_KEY)
"""Key provider with the public test master key."""


class StepClock:
    """A clock that starts at `start` and moves `step` forward on every call."""

    def __init__(
        self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC), step: timedelta = timedelta(seconds=1)
    ) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> datetime:
        current = self.now
        self.now += self.step
        return current


def data_key(registry_url: str, key_id: str, provider: KeyProvider = TEST_KEY_PROVIDER) -> DataKey:
    """Unwrap one data key from a registry, as a test computing expected pseudonyms needs it."""
    from .registry import Registry

    registry = Registry(registry_url)
    try:
        return KeyRing(registry, provider, lambda: datetime.now(UTC)).get(key_id)
    finally:
        registry.close()
