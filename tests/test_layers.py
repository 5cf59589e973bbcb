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

# Each top-level module or package of timber_tasks, by layer: a unit imports only units of lower
# layers (imports inside a unit are its own business). A new unit must be given a layer here.
LAYERS: dict[str, int] = {
    "errors": 0, "settings": 0, "queues": 0,                    # constants and the error tree
    "models": 1, "db": 1, "brokers": 1, "stores": 1,            # YAML -> models, the database, plug-in stores
    "features": 2,                                              # encryption, cache, isolation, the after-write step
    "jobs": 3,                                                  # job bookkeeping, no Celery
    "market_data": 4, "embeddings": 4, "gdpr": 4,               # the heavy work, still no Celery
    "services": 5,                                              # the domain services apps call (search included)
    "runtime": 6,                                               # initialize_timber(): puts it all together
    "startup": 7, "beat_scheduler": 7,                          # process start-up checks, beat's Redis lock
    "migrations": 7, "beat": 7, "pools": 7, "celery_app": 8, "tasks": 9,  # the Celery edge
    "cli": 10, "__init__": 10,                                  # what users call
}
# The upward imports the layers allow, each for a reason (an explicit escape hatch, not a silent one).
ALLOWED_UPWARD = {
    ("celery_app", "tasks"): "the app installs the task-level guards (poison messages, result errors) kept with tasks",
    ("startup", "cli"): "a process that cannot start explains why in the CLI's words (cli/failures.explain)",
    ("runtime", "tasks"): "a Timber with vector_search models loads the embedding tasks, whose after-write hook "
                          "queues the embedding jobs of every write (an app may never import them itself)",
}
FORBIDDEN = [  # (modules, what they must not import), beyond the layer rule
    ("pools.py", "timber_tasks.celery_app"),
    ("stores", "celery"),
    ("features", "celery"),
    ("models", "celery"),
    ("jobs", "celery"),
    ("gdpr", "celery"),
    ("embeddings", "celery"),
]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "timber_tasks":  # `from timber_tasks import runtime` names a unit
                names.update(f"timber_tasks.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


def _unit(name: str) -> str | None:
    parts = name.split(".")
    return (parts[1] if len(parts) > 1 else "__init__") if parts[0] == "timber_tasks" else None


def test_every_unit_has_a_layer_and_imports_only_lower_layers() -> None:
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert units - set(LAYERS) == set(), "give each new unit a layer in LAYERS"
    upward = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).parts
        unit = rel[0].removesuffix(".py")
        for name in _imports(path):
            target = _unit(name)
            if target is None or target == unit:
                continue
            if target in LAYERS and LAYERS[target] >= LAYERS[unit] and (unit, target) not in ALLOWED_UPWARD:
                upward.add(f"{'/'.join(rel)} (layer {LAYERS[unit]}) imports {name} (layer {LAYERS[target]})")
    assert not upward, sorted(upward)


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
