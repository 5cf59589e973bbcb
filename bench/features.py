"""Cache hits (L1, Redis) and encrypted field writes/reads, each beside a baseline in the same run.

Aims (issue 4): L1 hit < 20 us, Redis hit < 0.5 ms median, encryption adding < 30 us per field.
Redis: BENCH_REDIS_URL, default database 2 (the Celery tests own 0 and 1); only the keys
this run wrote are deleted afterwards.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from bench.common import best_of, report
from timber_tasks import initialize_timber, runtime
from timber_tasks.features.cache import get_cached

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/2")
N_ROWS = 2000
FIELD = "x" * 64  # a 64-byte field, as in DESIGN.md's Fernet baseline

MODELS = """
version: "1"
models:
  - name: Cached
    table_name: cached
    caching: {enabled: true, ttl_seconds: 600}
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: name, type: String(50)}
      - {name: body, type: Text}
  - name: PlainRow
    table_name: plain_rows
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: body, type: Text}
  - name: SecretRow
    table_name: secret_rows
    encryption: {enabled: true, fields: [body]}
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: body, type: Text}
"""


def median_us(fn: Callable[[], Any], n: int = 2000, before: Callable[[], Any] | None = None) -> float:
    """Median microseconds of single calls; `before` runs untimed ahead of each one."""
    times = []
    for _ in range(n):
        if before is not None:
            before()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def bench_l1(timber: Any) -> None:
    Cached = timber.get_model("Cached")
    with timber.db.session_scope() as s:
        s.add(Cached(id=1, name="row", body=FIELD))
    get_cached(timber, Cached, 1)
    plain: dict[int, dict[str, Any]] = {1: {"id": 1, "name": "row", "body": FIELD}}
    payload = json.dumps(plain[1])
    report("L1 cache hit by primary key (per read)", [
        ("dict lookup", median_us(lambda: plain[1]), "us"),
        ("dict lookup + json.loads of the row", median_us(lambda: json.loads(payload)), "us"),
        ("L1 hit (get_cached)", median_us(lambda: get_cached(timber, Cached, 1)), "us"),
    ], baseline="dict lookup")


def bench_redis(timber: Any) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    Cached = timber.get_model("Cached")
    get_cached(timber, Cached, 1)  # fills L2
    key = next(iter(client.scan_iter(f"{timber.cache.namespace}:data:*")))
    report("Redis (L2) cache hit, L1 cleared before each read (median)", [
        ("raw redis GET of the same entry", median_us(lambda: client.get(key)), "us"),
        ("L2 hit (get_cached, MGET + decode)", median_us(lambda: get_cached(timber, Cached, 1),
                                                         before=timber.cache.clear_l1), "us"),
    ], baseline="raw redis GET of the same entry")
    for k in client.scan_iter(f"{timber.cache.namespace}:*"):
        client.delete(k)
    client.close()


def bench_encryption(timber: Any) -> None:
    Plain, Secret = timber.get_model("PlainRow"), timber.get_model("SecretRow")
    counter = iter(range(10**9))

    def write(model: Any) -> Callable[[], None]:
        def run() -> None:
            base = next(counter) * N_ROWS
            with timber.db.session_scope() as s:
                s.add_all([model(id=base + i, body=FIELD) for i in range(N_ROWS)])
        return run

    def read(model: Any) -> Callable[[], None]:
        def run() -> None:
            with timber.db.session_scope() as s:
                s.query(model).limit(N_ROWS).all()
        return run

    fernet = Fernet(Fernet.generate_key())
    column_type = Secret.__table__.c.body.type
    t_fernet = best_of(lambda: [fernet.decrypt(fernet.encrypt(FIELD.encode())) for _ in range(N_ROWS)], 9)
    t_type = best_of(lambda: [column_type.process_result_value(column_type.process_bind_param(FIELD, None), None)
                              for _ in range(N_ROWS)], 9)
    # Plain and encrypted runs alternate, so load from other processes hits both alike. Each run starts
    # from a collected heap with the collector paused (as timeit does): otherwise a full collection
    # lands in whichever run crosses its threshold, which depends on how many objects the process holds.
    runs: dict[str, list[float]] = {"pw": [], "sw": [], "pr": [], "sr": []}
    for _ in range(9):
        for name, fn in (("pw", write(Plain)), ("sw", write(Secret)), ("pr", read(Plain)), ("sr", read(Secret))):
            gc.collect()
            gc.disable()
            try:
                started = time.perf_counter()
                fn()
                runs[name].append(time.perf_counter() - started)
            finally:
                gc.enable()
    t_pw, t_sw, t_pr, t_sr = (statistics.median(runs[k]) for k in ("pw", "sw", "pr", "sr"))
    per = 1e6 / N_ROWS
    report(f"rows with one 64-byte field, {N_ROWS} per transaction (per row, median of 9)", [
        ("plain column write", t_pw * per, "us"),
        ("encrypted column write", t_sw * per, "us"),
        ("plain column read", t_pr * per, "us"),
        ("encrypted column read", t_sr * per, "us"),
        ("bare Fernet encrypt + decrypt", t_fernet * per, "us"),
        ("EncryptedType bind + result, no database", t_type * per, "us"),
    ], baseline="plain column write")
    print(f"  encryption adds {(t_sw - t_pw) * per:.1f} us per field on write and "
          f"{(t_sr - t_pr) * per:.1f} us per field on read (aim: < 30 us); "
          f"the column type alone costs {t_type * per:.1f} us per field for both")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "models"
        folder.mkdir()
        (folder / "bench.yaml").write_text(MODELS)
        common = {"model_config_dirs": [folder], "database_url": f"sqlite:///{tmp}/bench.db",
                  "data_dir": Path(tmp) / "var", "encryption_keys": Fernet.generate_key().decode()}
        timber = initialize_timber(**common)
        bench_l1(timber)
        bench_encryption(timber)
        try:
            with_redis = initialize_timber(create_tables=False, redis_url=REDIS_URL, **common)
            bench_redis(with_redis)
        except Exception as exc:  # no Redis here: say so, the other figures still stand
            print(f"\n== Redis (L2) cache hit: skipped ({exc})")
        runtime.reset()


if __name__ == "__main__":
    main()
