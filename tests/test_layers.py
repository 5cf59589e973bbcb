"""Imports point down the layers, and the cache's shared level keeps one contract per backend."""

from __future__ import annotations

import ast
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from timber_tasks.stores.cache import SharedCache, open_shared_cache

PACKAGE = Path(__file__).resolve().parents[1] / "timber_tasks"

FORBIDDEN = [  # (modules, what they must not import)
    ("models", "timber_tasks.features"),
    ("features/isolation.py", "timber_tasks.jobs"),
    ("jobs/persistence.py", "timber_tasks.runtime"),
    ("pools.py", "timber_tasks.celery_app"),
    ("stores", "celery"),
    ("features/writes.py", "celery"),
    ("embeddings", "celery"),
]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("where", "forbidden"), FORBIDDEN)
def test_imports_point_down_the_layers(where: str, forbidden: str) -> None:
    target = PACKAGE / where
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files
    offending = {f"{f.relative_to(PACKAGE)} imports {name}" for f in files for name in _imports(f)
                 if name == forbidden or name.startswith(forbidden + ".")}
    assert not offending


@pytest.fixture(params=["local", "redis"])
def shared(request: pytest.FixtureRequest) -> Iterator[SharedCache]:
    url = "local://" if request.param == "local" else request.getfixturevalue("redis_url")
    store = open_shared_cache(url)
    yield store
    store.close()


def test_every_shared_cache_backend_keeps_versions_entries_and_the_channel(shared: SharedCache) -> None:
    got: list[dict[str, object]] = []
    arrived = threading.Event()

    def on_message(message: dict[str, object]) -> None:
        got.append(json.loads(message["data"]))  # type: ignore[arg-type]
        arrived.set()

    thread = shared.subscribe("t:chan", on_message, lambda *a: None)
    try:
        assert shared.read("t:d", "t:v", "t:mv") == (None, None, None)
        shared.write("t:d", '{"r": 1}', 60)
        assert json.loads(shared.read("t:d", "t:v", "t:mv")[0]) == {"r": 1}
        for _ in range(50):  # Redis subscribes in its thread: publish until it listens
            shared.invalidate([("t:d", "t:v")], 60, "t:mv", "t:chan", json.dumps({"n": 1}))
            if arrived.wait(0.1):
                break
        data, ver, model_ver = shared.read("t:d", "t:v", "t:mv")
        assert data is None and int(ver) >= 1 and int(model_ver) >= 1
        assert got and got[0] == {"n": 1}
    finally:
        thread.stop()
        thread.join(2)


def test_an_unknown_cache_url_names_the_scheme() -> None:
    with pytest.raises(ValueError, match="'memcached'"):
        open_shared_cache("memcached://x")
