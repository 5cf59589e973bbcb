"""beat_schedule.yaml: entries validated at load; a wrong task or schedule names its entry."""

from __future__ import annotations

import inspect
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import pydantic
import yaml
from celery import Celery
from celery.schedules import crontab
from pydantic import BaseModel, ConfigDict, Field, model_validator

from timber_tasks.errors import ConfigError


class BeatEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str
    every: Annotated[float, Field(ge=1)] | None = None  # seconds; more often floods the broker
    crontab: str | None = None  # "minute hour day-of-month month day-of-week"
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_schedule(self) -> BeatEntry:
        if (self.every is None) == (self.crontab is None):
            raise ValueError("give exactly one of 'every' (seconds) or 'crontab' (five fields)")
        if self.crontab is not None and len(self.crontab.split()) != 5:
            raise ValueError(f"crontab {self.crontab!r} needs five fields: minute hour day month weekday")
        if "queue" in self.options:
            raise ValueError("queues follow the task name; drop options.queue")
        return self

    def schedule(self) -> Any:
        if self.every is not None:
            return timedelta(seconds=self.every)
        minute, hour, day_of_month, month_of_year, day_of_week = (self.crontab or "").split()
        return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                       month_of_year=month_of_year, day_of_week=day_of_week)


class BeatFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entries: dict[str, BeatEntry] = Field(default_factory=dict)


def load_schedule(path: Path, app: Celery) -> dict[str, dict[str, Any]]:
    """Celery's beat_schedule from the YAML file; a missing file is an empty schedule unless it was named."""
    if not path.exists():
        if os.environ.get("TIMBER_BEAT_SCHEDULE"):  # named on purpose: an empty schedule would stop the relay
            raise ConfigError(f"{path}: no such beat schedule file (TIMBER_BEAT_SCHEDULE)")
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        parsed = BeatFile.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): save the file as UTF-8") from exc
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"entry {err['loc'][1]!r}: {'.'.join(map(str, err['loc'][2:])) + ': ' if len(err['loc']) > 2 else ''}"
            f"{err['msg']}" if len(err["loc"]) > 1 and err["loc"][0] == "entries"
            else f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
    schedule: dict[str, dict[str, Any]] = {}
    for name, entry in parsed.entries.items():
        if entry.task not in app.tasks:
            known = sorted(t for t in app.tasks if t.startswith("timber."))
            raise ConfigError(f"{path}: entry {name!r}: unknown task {entry.task!r}; known: {', '.join(known)}")
        try:  # the task must take the entry's arguments, or every tick fails
            inspect.signature(app.tasks[entry.task].run).bind(*entry.args, **entry.kwargs)
        except TypeError as exc:
            raise ConfigError(f"{path}: entry {name!r}: task {entry.task!r} does not take these args/kwargs: "
                              f"{exc}") from exc
        try:
            schedule[name] = {"task": entry.task, "schedule": entry.schedule(), "args": tuple(entry.args),
                              "kwargs": entry.kwargs, "options": entry.options}
        except ValueError as exc:
            raise ConfigError(f"{path}: entry {name!r}: bad crontab {entry.crontab!r}: {exc}") from exc
    return schedule
