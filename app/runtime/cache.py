"""The worker's model cache: loaded models kept in LRU order, bounded by count and by artifact bytes.

Models are keyed by the md5 of their artifact, so a new version is a new entry
and a cached model can never be stale. The store verifies every fetched file
against that md5 before it is loaded.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Histogram

from app.store.base import ArtifactRef, ArtifactStore

CACHE_HITS = Counter("mlmarket_model_cache_hits_total", "Model lookups served from the worker's cache")
CACHE_MISSES = Counter("mlmarket_model_cache_misses_total", "Model lookups that fetched and loaded an artifact")
MODEL_LOAD_SECONDS = Histogram(
    "mlmarket_model_load_seconds",
    "Time to fetch a model artifact from the store and load it",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


@dataclass
class _Entry:
    runtime: Any  # a ModelRuntime, or a CompiledModel for ONNX artifacts
    size: int


class ModelCache:
    """Thread-safe LRU of loaded models.

    Concurrent requests for the same artifact load it once; different
    artifacts load in parallel. The newest model is always kept, even when it
    alone is larger than ``max_bytes``, so a big model is not reloaded for
    every task.
    """

    def __init__(self, store: ArtifactStore, max_models: int, max_bytes: int) -> None:
        if max_models < 1 or max_bytes < 1:
            raise ValueError("the model cache needs room for at least one model")
        self.store = store
        self.max_models = max_models
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.last_load_seconds: float | None = None
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, md5: object) -> bool:
        with self._lock:
            return md5 in self._entries

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def _cached(self, md5: str) -> Any | None:
        """The cached model, counted as a hit and marked most recently used (call with the lock held)."""
        entry = self._entries.get(md5)
        if entry is None:
            return None
        self._entries.move_to_end(md5)
        self.hits += 1
        CACHE_HITS.inc()
        return entry.runtime

    def peek(self, md5: str) -> Any | None:
        """The cached model without loading anything (cheap enough for the event loop), or None."""
        with self._lock:
            return self._cached(md5)

    def get(self, ref: ArtifactRef, load: Callable[[Path], Any] | None = None) -> Any:
        """The model of ``ref``, fetched and loaded with ``load`` when not cached.

        The default loads a skops artifact into a :class:`~app.runtime.model.ModelRuntime` (imported only then:
        a process serving compiled models never imports scikit-learn).
        """
        if load is None:
            from app.runtime.model import ModelRuntime

            load = ModelRuntime.load
        with self._lock:
            runtime = self._cached(ref.md5)
            if runtime is not None:
                return runtime
            loading = self._loading.setdefault(ref.md5, threading.Lock())
        with loading:
            with self._lock:
                runtime = self._cached(ref.md5)  # loaded by another thread while this one waited
                if runtime is not None:
                    return runtime
                self.misses += 1
                CACHE_MISSES.inc()
            try:
                started = time.perf_counter()
                runtime = load(self.store.fetch(ref))
                elapsed = time.perf_counter() - started
            finally:
                with self._lock:
                    self._loading.pop(ref.md5, None)
            MODEL_LOAD_SECONDS.observe(elapsed)
            with self._lock:
                self.last_load_seconds = elapsed
                self._entries[ref.md5] = _Entry(runtime, ref.size)
                self._evict()
            return runtime

    def _evict(self) -> None:
        total = sum(e.size for e in self._entries.values())
        while len(self._entries) > 1 and (len(self._entries) > self.max_models or total > self.max_bytes):
            _, evicted = self._entries.popitem(last=False)
            total -= evicted.size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
