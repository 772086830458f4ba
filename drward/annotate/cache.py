"""A persistent cache of metric values, so a rerun of the annotation recomputes nothing.

A value is keyed by the image file (absolute path, size in bytes, modification time in ns), the metric's name and
version, and — for metrics that compare with a reference image — the reference file's key as well. Editing or
replacing an image changes its size or mtime and so misses the cache; nothing else does. Values live in one
SQLite file (standard library; safe to interrupt: committed rows survive).
"""
from __future__ import annotations

import os
import sqlite3
from typing import Callable, Optional


def file_key(path: str | os.PathLike) -> str:
    """``'<absolute path>|<size>|<mtime_ns>'`` of an existing file (FileNotFoundError naming it otherwise)."""
    absolute = os.path.abspath(path)
    try:
        stat = os.stat(absolute)
    except FileNotFoundError:
        raise FileNotFoundError(f'image file not found: {absolute}') from None
    return f'{absolute}|{stat.st_size}|{stat.st_mtime_ns}'


def metric_key(image: str, metric: str, version: str = '1', reference: Optional[str] = None) -> str:
    """The cache key of ``metric`` (at ``version``) on ``image``, compared with ``reference`` if given."""
    key = f'{file_key(image)}#{metric}@{version}'
    return key if reference is None else f'{key}#ref={file_key(reference)}'


class MetricCache:
    """``get_or_compute(key, compute)``; ``path=None`` keeps values in memory only.

    Counters ``hits`` and ``misses`` tell how many values came from the cache and how many were computed.
    """

    def __init__(self, path: Optional[str | os.PathLike] = None, commit_every: int = 200) -> None:
        self.path = None if path is None else os.fspath(path)
        if self.path is not None and os.path.dirname(os.path.abspath(self.path)):
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._db = sqlite3.connect(self.path or ':memory:')
        self._db.execute('CREATE TABLE IF NOT EXISTS metric (key TEXT PRIMARY KEY, value REAL)')
        self._commit_every = commit_every
        self._pending = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Optional[float]:
        row = self._db.execute('SELECT value FROM metric WHERE key = ?', (key,)).fetchone()
        if row is None:
            return None
        return float('nan') if row[0] is None else float(row[0])  # SQLite stores nan as NULL

    def put(self, key: str, value: float) -> None:
        self._db.execute('INSERT OR REPLACE INTO metric (key, value) VALUES (?, ?)', (key, float(value)))
        self._pending += 1
        if self._pending >= self._commit_every:
            self.flush()

    def get_or_compute(self, key: str, compute: Callable[[], float]) -> float:
        """The cached value of ``key``, or ``compute()`` stored under it."""
        value = self.get(key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value = float(compute())
        self.put(key, value)
        return value

    def flush(self) -> None:
        self._db.commit()
        self._pending = 0

    def close(self) -> None:
        self.flush()
        self._db.close()

    def __len__(self) -> int:
        return self._db.execute('SELECT COUNT(*) FROM metric').fetchone()[0]

    def __enter__(self) -> 'MetricCache':
        return self

    def __exit__(self, *exc) -> None:
        self.close()
