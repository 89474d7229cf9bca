"""The worker's model cache: LRU by count and by bytes, hits and misses, one load per artifact."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from app.runtime.cache import ModelCache
from app.runtime.model import ModelRuntime, save_artifact
from app.runtime.training import train
from app.services.demo import demo_models
from app.store import ArtifactRef, LocalRemoteStore, file_md5

# DVC 3.67 uses a deprecated pygtrie attribute internally.
pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")


class CountingStore:
    """An in-memory ArtifactStore that counts fetches; artifacts are files on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, Path] = {}
        self.fetches: list[str] = []
        self.delay = 0.0

    def put(self, local_file: Path, name: str) -> ArtifactRef:
        md5 = file_md5(local_file)
        self.files[md5] = local_file
        return ArtifactRef(md5=md5, size=local_file.stat().st_size, path=name)

    def fetch(self, ref: ArtifactRef) -> Path:
        self.fetches.append(ref.md5)
        time.sleep(self.delay)
        return self.files[ref.md5]

    def check(self) -> None:
        return None


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three distinct small model files."""
    root = tmp_path_factory.mktemp("artifacts")
    spec = next(s for s in demo_models() if s.name == "iris-logistic")
    df, target = spec.dataset()
    paths = []
    for i, c in enumerate((0.5, 1.0, 2.0)):
        result = train(df, target, "LogisticRegression", {"C": c, "max_iter": 500}, "classification")
        path = root / f"model-{i}.skops"
        save_artifact(result.pipeline, path, result.features)
        paths.append(path)
    return paths


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path)


def refs_for(store: CountingStore, artifacts: list[Path]) -> list[ArtifactRef]:
    return [store.put(path, f"models/m{i}/model.skops") for i, path in enumerate(artifacts)]


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_second_get_is_a_hit_and_does_not_fetch(store: CountingStore, artifacts: list[Path]) -> None:
    a, _, _ = refs_for(store, artifacts)
    cache = ModelCache(store, max_models=4, max_bytes=10**9)
    hits_before, misses_before = metric("mlmarket_model_cache_hits_total"), metric("mlmarket_model_cache_misses_total")
    loads_before = metric("mlmarket_model_load_seconds_count")

    first = cache.get(a)
    second = cache.get(a)

    assert isinstance(first, ModelRuntime) and second is first
    assert store.fetches == [a.md5]
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.last_load_seconds is not None and cache.last_load_seconds > 0
    assert metric("mlmarket_model_cache_hits_total") == hits_before + 1
    assert metric("mlmarket_model_cache_misses_total") == misses_before + 1
    assert metric("mlmarket_model_load_seconds_count") == loads_before + 1


def test_least_recently_used_model_is_evicted_by_count(store: CountingStore, artifacts: list[Path]) -> None:
    a, b, c = refs_for(store, artifacts)
    cache = ModelCache(store, max_models=2, max_bytes=10**9)
    cache.get(a)
    cache.get(b)
    cache.get(a)  # a is now the most recently used
    cache.get(c)  # evicts b

    assert a.md5 in cache and c.md5 in cache and b.md5 not in cache
    assert len(cache) == 2
    cache.get(b)
    assert store.fetches == [a.md5, b.md5, c.md5, b.md5]
    assert (cache.hits, cache.misses) == (1, 4)


def test_models_are_evicted_to_stay_within_the_byte_budget(store: CountingStore, artifacts: list[Path]) -> None:
    a, b, c = refs_for(store, artifacts)
    budget = b.size + c.size  # room for the two newest models, never for all three
    assert a.size + b.size + c.size > budget
    cache = ModelCache(store, max_models=10, max_bytes=budget)
    for ref in (a, b, c):
        cache.get(ref)
    assert a.md5 not in cache and b.md5 in cache and c.md5 in cache
    assert cache.total_bytes <= budget


def test_a_model_larger_than_the_budget_is_still_kept_alone(store: CountingStore, artifacts: list[Path]) -> None:
    a, b, _ = refs_for(store, artifacts)
    cache = ModelCache(store, max_models=10, max_bytes=1)
    cache.get(a)
    cache.get(b)
    assert len(cache) == 1 and b.md5 in cache
    cache.get(b)
    assert store.fetches == [a.md5, b.md5]


def test_concurrent_gets_of_one_model_load_it_once(store: CountingStore, artifacts: list[Path]) -> None:
    a, _, _ = refs_for(store, artifacts)
    store.delay = 0.2
    cache = ModelCache(store, max_models=4, max_bytes=10**9)
    results: list[ModelRuntime] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(a))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.fetches == [a.md5]
    assert len(results) == 6 and all(r is results[0] for r in results)
    assert (cache.hits, cache.misses) == (5, 1)


def test_a_failed_load_is_not_cached(store: CountingStore, artifacts: list[Path]) -> None:
    a, _, _ = refs_for(store, artifacts)
    missing = ArtifactRef(md5="f" * 32, size=1, path="models/none")
    cache = ModelCache(store, max_models=4, max_bytes=10**9)
    with pytest.raises(KeyError):
        cache.get(missing)
    assert missing.md5 not in cache
    cache.get(a)
    assert len(cache) == 1


def test_cache_loads_models_from_a_real_dvc_store(tmp_path: Path, artifacts: list[Path]) -> None:
    author = LocalRemoteStore(tmp_path / "author", tmp_path / "remote")
    ref = author.put(artifacts[0], "models/iris/v1/model.skops")
    worker = LocalRemoteStore(tmp_path / "worker", tmp_path / "remote")
    cache = ModelCache(worker, max_models=2, max_bytes=10**9)
    runtime = cache.get(ref)
    row = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}
    assert runtime.predict([row]) == ["setosa"]
