"""The model registry: YAML files in, mapped classes out, looked up by name."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from timber_tasks.errors import ModelConfigError, ModelNotFoundError
from timber_tasks.models.factory import ModelFactory, make_base
from timber_tasks.models.loader import ResolvedModel, find_model_files, load_model_files


class ModelRegistry:
    """The mapped classes of one app, built from one set of YAML files."""

    def __init__(self, base: type[DeclarativeBase], models: dict[str, type[Any]],
                 files: list[Path], app_name: str) -> None:
        self.base = base
        self._models = models
        self.files = files
        self.app_name = app_name

    @classmethod
    def from_dirs(cls, dirs: Iterable[Path | str], *, app_name: str,
                  dialect: str | None = None, keyring: Any = None) -> ModelRegistry:
        """Load every model under the dirs; any error leaves nothing half-registered."""
        return cls.from_files(find_model_files(dirs), app_name=app_name, dialect=dialect, keyring=keyring)

    @classmethod
    def from_files(cls, files: list[Path], *, app_name: str,
                   dialect: str | None = None, keyring: Any = None) -> ModelRegistry:
        resolved = load_model_files(files, app_name=app_name, dialect=dialect)
        base = make_base()
        models = ModelFactory(base, dialect, keyring).build_all(resolved)
        try:
            base.registry.configure()
        except Exception as exc:  # SQLAlchemy's own complaint, with our context
            raise ModelConfigError(f"models do not map: {exc}") from exc
        return cls(base, models, files, app_name)

    @property
    def metadata(self) -> MetaData:
        return self.base.metadata

    def get(self, name: str) -> type[Any]:
        try:
            model = self._models[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._models, n=3, cutoff=0.5)
            lowered = [n for n in self._models if n.lower() == name.lower() and n not in close]
            raise ModelNotFoundError(name, lowered + close) from None
        spec: ResolvedModel = model.timber_spec
        if spec.spec.deprecated:
            warnings.warn(
                f"model {name} is deprecated: {spec.spec.deprecated_message or 'it will be removed'}",
                DeprecationWarning, stacklevel=2,
            )
        return model


    def names(self) -> list[str]:
        return list(self._models)

    def specs(self) -> list[ResolvedModel]:
        return [m.timber_spec for m in self._models.values()]

    def with_feature(self, feature: str) -> list[type[Any]]:
        """Models whose YAML enables a feature block (encryption, caching, gdpr, vector_search)."""
        out = []
        for model in self._models.values():
            block = getattr(model.timber_spec.spec, feature)
            if block is not None and block.enabled:
                out.append(model)
        return out

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[type[Any]]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)
