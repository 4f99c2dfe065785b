"""The durable key-value store beside the queue (`prbot.ports.Store`), on SQLite or Redis.

Beyond the protocol both stores take a `ttl` (seconds) on writes, an atomic `compare_and_set`
(the primitive of leases and locks), `incr`, `ping` and `purge_expired`.  Expiry uses wall-clock
time, since several processes (and, with Redis, several hosts) share one store.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

_NOT_EXPIRED = "(expires IS NULL OR expires > ?)"


class KeyValueStore(Protocol):
    """`prbot.ports.Store` plus what the queue's locks, leases and journal need."""

    def get(self, key: str) -> str | None: ...
    def put(self, key: str, value: str, ttl: float | None = None) -> None: ...
    def put_if_absent(self, key: str, value: str, ttl: float | None = None) -> bool: ...
    def delete(self, key: str) -> None: ...
    def items(self, prefix: str) -> Iterator[tuple[str, str]]: ...
    def compare_and_set(self, key: str, expected: str | None, new: str | None, ttl: float | None = None) -> bool:
        """Atomically: when the value of `key` is `expected` (None: absent), make it `new` (None:
        delete it); True when it did."""
        ...
    def incr(self, key: str) -> int: ...
    def ping(self) -> None: ...
    def purge_expired(self) -> int: ...
    def close(self) -> None: ...


class SqliteStore:
    """A table ``prbot_kv`` in the queue's SQLite file (WAL mode; one connection per thread)."""

    def __init__(self, path: Path | str, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout = timeout
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._conn().execute(
            "CREATE TABLE IF NOT EXISTS prbot_kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL)")
        self._conn().execute("CREATE INDEX IF NOT EXISTS prbot_kv_expires ON prbot_kv (expires)")

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @staticmethod
    def _expires(ttl: float | None) -> float | None:
        return None if ttl is None else time.time() + ttl

    def get(self, key: str) -> str | None:
        row = self._conn().execute(f"SELECT value FROM prbot_kv WHERE key = ? AND {_NOT_EXPIRED}",
                                   (key, time.time())).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        self._conn().execute("INSERT OR REPLACE INTO prbot_kv (key, value, expires) VALUES (?, ?, ?)",
                             (key, value, self._expires(ttl)))

    def put_if_absent(self, key: str, value: str, ttl: float | None = None) -> bool:
        cur = self._conn().execute(
            "INSERT INTO prbot_kv (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value, expires = excluded.expires "
            "WHERE prbot_kv.expires IS NOT NULL AND prbot_kv.expires <= ?",
            (key, value, self._expires(ttl), time.time()))
        return cur.rowcount == 1

    def delete(self, key: str) -> None:
        self._conn().execute("DELETE FROM prbot_kv WHERE key = ?", (key,))

    def items(self, prefix: str) -> Iterator[tuple[str, str]]:
        now = time.time()
        if prefix:
            upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            rows = self._conn().execute(
                f"SELECT key, value FROM prbot_kv WHERE key >= ? AND key < ? AND {_NOT_EXPIRED} ORDER BY key",
                (prefix, upper, now)).fetchall()
        else:
            rows = self._conn().execute(f"SELECT key, value FROM prbot_kv WHERE {_NOT_EXPIRED} ORDER BY key",
                                        (now,)).fetchall()
        for key, value in rows:
            yield str(key), str(value)

    def compare_and_set(self, key: str, expected: str | None, new: str | None, ttl: float | None = None) -> bool:
        now = time.time()
        conn = self._conn()
        if expected is None:
            if new is None:
                return self.get(key) is None
            return self.put_if_absent(key, new, ttl)
        if new is None:
            cur = conn.execute(f"DELETE FROM prbot_kv WHERE key = ? AND value = ? AND {_NOT_EXPIRED}",
                               (key, expected, now))
        else:
            cur = conn.execute(
                f"UPDATE prbot_kv SET value = ?, expires = ? WHERE key = ? AND value = ? AND {_NOT_EXPIRED}",
                (new, self._expires(ttl), key, expected, now))
        return cur.rowcount == 1

    def incr(self, key: str) -> int:
        row = self._conn().execute(
            "INSERT INTO prbot_kv (key, value, expires) VALUES (?, '1', NULL) ON CONFLICT (key) DO UPDATE "
            "SET value = CAST(CAST(prbot_kv.value AS INTEGER) + 1 AS TEXT) RETURNING value", (key,)).fetchone()
        return int(row[0])

    def ping(self) -> None:
        self._conn().execute("SELECT count(*) FROM prbot_kv WHERE key = ''").fetchone()

    def purge_expired(self) -> int:
        cur = self._conn().execute("DELETE FROM prbot_kv WHERE expires IS NOT NULL AND expires <= ?",
                                   (time.time(),))
        return cur.rowcount

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


_CAS = """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
else
  if cur then return 0 end
end
if ARGV[3] == '1' then
  if ARGV[5] ~= '0' then
    redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
  else
    redis.call('SET', KEYS[1], ARGV[4])
  end
else
  redis.call('DEL', KEYS[1])
end
return 1
"""


class RedisStore:
    """Keys ``<namespace>:kv:<key>`` in Redis, with native expiry."""

    def __init__(self, url: str, namespace: str = "prbot", timeout: float = 10.0) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One try per request within `timeout`: the callers decide what a failure means (the worker
        # retries, the web answers 503), a hidden retry would only multiply the wait.
        self._redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                           socket_connect_timeout=timeout, health_check_interval=30,
                                           retry=Retry(NoBackoff(), 0))
        self._prefix = f"{namespace}:kv:"
        self._cas: Any = self._redis.register_script(_CAS)

    @staticmethod
    def _px(ttl: float | None) -> int | None:
        return None if ttl is None else max(1, int(ttl * 1000))

    def get(self, key: str) -> str | None:
        value = self._redis.get(self._prefix + key)
        return None if value is None else str(value)

    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        self._redis.set(self._prefix + key, value, px=self._px(ttl))

    def put_if_absent(self, key: str, value: str, ttl: float | None = None) -> bool:
        return bool(self._redis.set(self._prefix + key, value, nx=True, px=self._px(ttl)))

    def delete(self, key: str) -> None:
        self._redis.delete(self._prefix + key)

    def items(self, prefix: str) -> Iterator[tuple[str, str]]:
        pattern = _glob_escape(self._prefix + prefix) + "*"
        keys = sorted(str(k) for k in self._redis.scan_iter(match=pattern, count=500))
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            for key, value in zip(chunk, self._redis.mget(chunk), strict=True):
                if value is not None:
                    yield key[len(self._prefix):], str(value)

    def compare_and_set(self, key: str, expected: str | None, new: str | None, ttl: float | None = None) -> bool:
        args = ["1" if expected is not None else "0", expected or "", "1" if new is not None else "0",
                new or "", str(self._px(ttl) or 0)]
        return bool(self._cas(keys=[self._prefix + key], args=args))

    def incr(self, key: str) -> int:
        return int(self._redis.incr(self._prefix + key))

    def ping(self) -> None:
        self._redis.ping()

    def purge_expired(self) -> int:
        return 0                                  # Redis expires keys itself

    def close(self) -> None:
        self._redis.close()


def store_errors() -> tuple[type[BaseException], ...]:
    """The errors of an unreachable, slow or busy store (Redis down or timing out, SQLite locked or
    out of disk): transient for every caller, never a reason to give up on a job."""
    types: list[type[BaseException]] = [sqlite3.OperationalError, ConnectionError, TimeoutError]
    try:
        import redis

        types += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover - redis comes with huey's Redis backend
        pass
    return tuple(types)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
