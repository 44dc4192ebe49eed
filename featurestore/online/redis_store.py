"""The Redis online store: one key per entity per view version, ``<prefix>:<table>:<entity key>``,
holding ``[event time, generation, *values]`` as JSON; a set ``<prefix>:<table>:__keys`` lists the
entities (for sampling and clearing). Batches use MGET and pipelines. The prefix (``online.prefix``,
default ``fs``) lets several stores, or test runs, share one Redis database without touching each
other's keys.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import VALUES_AT, Row

_SET_IF_NEWER = """
local n = #KEYS
local members, generation = ARGV[1], ARGV[2]
for i = 1, n do
  local new = ARGV[2 + i]
  local old = redis.call('GET', KEYS[i])
  local keep = false
  if old then
    local old_e = tonumber(string.match(old, '^%[(%-?%d+),'))
    local new_e = tonumber(string.match(new, '^%[(%-?%d+),'))
    keep = old_e ~= nil and new_e ~= nil and old_e > new_e
  end
  if keep then
    redis.call('SET', KEYS[i], (string.gsub(old, '^(%[%-?%d+, )%-?%d+', '%1' .. generation, 1)))
  else
    redis.call('SET', KEYS[i], new)
  end
  redis.call('SADD', members, ARGV[2 + n + i])
end
return n
"""
"""Set each key unless its stored row has a later event time (then only its generation is stamped).
Rows are JSON ``[event time, generation, ...]`` as json.dumps writes them; event times are compared
as integers parsed from the text (Lua numbers are exact below 2^53 microseconds, year 2255)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisOnlineStore:
    """Online rows in Redis (``redis://host:port/db``)."""

    def __init__(self, url: str, prefix: str = "fs") -> None:
        from ..errors import ConfigError, missing_extra

        try:
            import redis
        except ImportError as exc:
            raise missing_extra("a Redis online store (online.type: redis)", "redis", exc) from None

        self.url = url
        self.prefix = prefix
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            raise ConfigError(f"cannot reach the Redis online store at {url}: {exc}") from exc

    def _key(self, table: str, key: str) -> str:
        return f"{self.prefix}:{table}:{key}"

    def ensure_table(self, table: str, features: Sequence[str]) -> None:
        self._redis.set(f"{self.prefix}:{table}:__features", json.dumps(list(features)))

    def write(self, table: str, rows: Iterable[Row], generation: int, *, newer_only: bool = False) -> int:
        rows = list(rows)
        if newer_only and rows:  # compare-and-set per key, atomically on the server
            for start in range(0, len(rows), 5000):
                part = rows[start : start + 5000]
                keys = [self._key(table, row[0]) for row in part]
                values = [json.dumps([row[1], generation, *row[2:]]) for row in part]
                self._redis.eval(
                    _SET_IF_NEWER,
                    len(keys),
                    *keys,
                    f"{self.prefix}:{table}:__keys",
                    str(generation),
                    *values,
                    *(row[0] for row in part),
                )
            return len(rows)
        count = 0
        with self._redis.pipeline(transaction=True) as pipe:
            keys_set: list[str] = []
            for row in rows:
                pipe.set(self._key(table, row[0]), json.dumps([row[1], generation, *row[2:]]))
                keys_set.append(row[0])
                count += 1
            if keys_set:
                pipe.sadd(f"{self.prefix}:{table}:__keys", *keys_set)
            pipe.execute()
        return count

    def copy_table(self, source: str, target: str, columns: dict[str, str | None], generation: int) -> int:
        stored = self._redis.get(f"{self.prefix}:{source}:__features")
        names: list[str] = json.loads(stored) if stored is not None else []
        at = [None if c is None else names.index(c) for c in columns.values()]
        members = sorted(_text(m) for m in self._redis.smembers(f"{self.prefix}:{source}:__keys"))
        count = 0
        for start in range(0, len(members), 1000):
            part = members[start : start + 1000]
            rows = [
                (key, row[1], *(None if i is None else row[VALUES_AT + i] for i in at))
                for key, row in zip(part, self.read(source, part), strict=True)
                if row is not None
            ]
            count += self.write(target, rows, generation)
        return count

    def read(self, table: str, keys: Sequence[str]) -> list[Row | None]:
        if not keys:
            return []
        prefix = f"{self.prefix}:{table}:"
        raw: list[Any] = self._redis.mget([prefix + k for k in keys])  # bytes: the client does not decode
        # One JSON array of every stored value (null where absent): one parse instead of one per key.
        decoded: list[list[Any] | None] = json.loads(b"[" + b",".join(b"null" if v is None else v for v in raw) + b"]")
        return [None if row is None else (key, *row) for key, row in zip(keys, decoded, strict=True)]

    def point_reader(
        self, table: str, features: Sequence[str], positions: Sequence[int]
    ) -> Callable[[str], Row | None]:
        get, key_of = self._redis.get, self._key
        at = [p - 1 for p in positions]  # a stored value is (event time, generation, *values): no key

        def read_one(key: str) -> Row | None:
            value = get(key_of(table, key))
            if value is None:
                return None
            row = json.loads(value)
            return (*[row[i] for i in at], row[0])

        return read_one

    def sample_keys(self, table: str, n: int, seed: int) -> list[str]:
        members = sorted(_text(m) for m in self._redis.smembers(f"{self.prefix}:{table}:__keys"))
        return random.Random(seed).sample(members, min(n, len(members)))

    def prune(self, table: str, generation: int) -> int:
        members = sorted(_text(m) for m in self._redis.smembers(f"{self.prefix}:{table}:__keys"))
        stale: list[str] = []
        for start in range(0, len(members), 1000):
            part = members[start : start + 1000]
            for key, row in zip(part, self.read(table, part), strict=True):
                if row is None or row[2] < generation:
                    stale.append(key)
        with self._redis.pipeline(transaction=True) as pipe:
            for start in range(0, len(stale), 1000):
                pipe.delete(*(self._key(table, k) for k in stale[start : start + 1000]))
                pipe.srem(f"{self.prefix}:{table}:__keys", *stale[start : start + 1000])
            pipe.execute()
        return len(stale)

    def delete(self, table: str, keys: Sequence[str]) -> int:
        """Remove keys (Redis keeps nothing on disk here; with persistence on, its own rewrite applies)."""
        if not keys:
            return 0
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(self._key(table, k) for k in keys))
            pipe.srem(f"{self.prefix}:{table}:__keys", *keys)
            removed, _ = pipe.execute()
        return int(removed)

    def delete_older(self, table: str, before_us: int, keep: Sequence[str] = ()) -> int:
        """Remove rows older than `before_us` but the kept keys."""
        members = sorted(_text(m) for m in self._redis.smembers(f"{self.prefix}:{table}:__keys"))
        kept = set(keep)
        stale = [
            key
            for start in range(0, len(members), 1000)
            for key, row in zip(
                members[start : start + 1000], self.read(table, members[start : start + 1000]), strict=True
            )
            if row is not None and row[1] < before_us and key not in kept
        ]
        return sum(self.delete(table, stale[i : i + 1000]) for i in range(0, len(stale), 1000))

    def close(self) -> None:
        self._redis.close()
