"""workers/*.yaml: one worker pool per file (queues, pool type, concurrency, prefetch, limits)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from timber_tasks.errors import ConfigError
from timber_tasks.queues import QUEUES


class PoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    queues: tuple[str, ...] = Field(min_length=1)
    pool: Literal["prefork", "threads", "solo"] = "prefork"
    concurrency: PositiveInt = 2
    prefetch_multiplier: PositiveInt = 1
    max_tasks_per_child: PositiveInt | None = None
    time_limit: PositiveInt | None = None
    soft_time_limit: PositiveInt | None = None

    @model_validator(mode="after")
    def _limits(self) -> PoolConfig:
        unknown = [q for q in self.queues if q not in QUEUES]
        if unknown:
            raise ValueError(f"unknown queue(s) {unknown}; queues are {', '.join(QUEUES)}")
        if self.soft_time_limit and self.time_limit and self.soft_time_limit >= self.time_limit:
            raise ValueError("soft_time_limit must be below time_limit")
        return self

    def worker_argv(self, loglevel: str = "INFO") -> list[str]:
        argv = ["worker", "-Q", ",".join(self.queues), "-P", self.pool, "-c", str(self.concurrency),
                "--prefetch-multiplier", str(self.prefetch_multiplier), "-n", f"{self.name}@%h",
                "-E", "-l", loglevel]
        if self.max_tasks_per_child:
            argv += ["--max-tasks-per-child", str(self.max_tasks_per_child)]
        if self.time_limit:
            argv += ["--time-limit", str(self.time_limit)]
        if self.soft_time_limit:
            argv += ["--soft-time-limit", str(self.soft_time_limit)]
        return argv


def load_pool(path: Path) -> PoolConfig:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return PoolConfig.model_validate({"name": path.stem, **raw})
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read worker pool file: {exc}") from exc
    except (yaml.YAMLError, pydantic.ValidationError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_pools(folder: Path) -> list[PoolConfig]:
    return [load_pool(p) for p in sorted(folder.glob("*.yaml"))] if folder.is_dir() else []


def find_pool(folder: Path, name: str) -> PoolConfig:
    path = folder / f"{name}.yaml"
    if not path.exists():
        known = [p.stem for p in sorted(folder.glob("*.yaml"))]
        raise ConfigError(f"no worker pool {name!r}: {path} does not exist; pools: {', '.join(known) or 'none'}")
    return load_pool(path)
