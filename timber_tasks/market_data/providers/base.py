"""The provider interface: bars for some symbols, and why the others have none."""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from timber_tasks.errors import ConfigError
from timber_tasks.jobs.faults import TransientError

if TYPE_CHECKING:
    import pandas as pd

PROVIDER_ENV = "TIMBER_MARKET_DATA_PROVIDER"  # which provider jobs use when none is named
FILES_ENV = "TIMBER_MARKET_DATA_FILES"  # the file provider's folder (default: <data dir>/market_data)
DEFAULT_PROVIDER = "yfinance"

# name -> "module:class"; a new provider (Alpha Vantage, Polygon.io, ...) is one module and one line here.
PROVIDERS: dict[str, str] = {
    "yfinance": "timber_tasks.market_data.providers.yfinance:YFinanceProvider",
    "file": "timber_tasks.market_data.providers.file:FileProvider",
}


class RateLimited(TransientError):
    """Raised when a provider answers that we ask too often (HTTP 429); worth a retry after a pause."""

    def __init__(self, provider: str, symbols: list[str]) -> None:
        super().__init__(f"{provider} rate-limited the request for {', '.join(symbols)}")
        self.provider = provider
        self.symbols = symbols


@dataclass
class ProviderResult:
    """Raw bars per symbol, and a reason for each symbol that got none."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    rate_limited: list[str] = field(default_factory=list)  # symbols to ask again after a pause


class Provider(ABC):
    """Fetches OHLCV bars; one call may cover many symbols (one request each or one for all)."""

    name: str

    @abstractmethod
    def fetch(self, symbols: list[str], start: datetime, end: datetime | None, interval: str) -> ProviderResult:
        """Bars with start <= timestamp < end (end None: up to now), as raw frames per symbol.

        start/end arrive as naive UTC (normalize.as_utc): a provider whose API reads naive times in another
        zone must say they are UTC (yfinance gets epoch seconds).
        """

    def requests_for(self, symbols: list[str]) -> int:
        """How many rate-limit tokens a fetch of these symbols costs (one request per symbol by default)."""
        return len(symbols)

    @classmethod
    def from_env(cls, data_dir: Path) -> Provider:
        """The provider as the environment and the data dir configure it."""
        return cls()


def get_provider(name: str | None = None, *, data_dir: Path | str = "var") -> Provider:
    """The provider called `name` (default: $TIMBER_MARKET_DATA_PROVIDER, else yfinance).

    A name from PROVIDERS, or "module:Class" for an app's own provider (no change to this package).
    """
    name = name or os.environ.get(PROVIDER_ENV) or DEFAULT_PROVIDER
    target = PROVIDERS.get(name) or (name if ":" in name else None)
    if target is None:
        raise ConfigError(f"unknown market-data provider {name!r} (from the job or {PROVIDER_ENV}); "
                          f"known: {', '.join(sorted(PROVIDERS))}, or 'module:Class' of your own")
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"market-data provider {name!r} cannot be loaded: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(f"market-data provider {name!r} is not a subclass of {Provider.__module__}.Provider")
    return cls.from_env(Path(data_dir))
