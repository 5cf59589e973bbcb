"""Market-data providers, one module each, chosen by name (TIMBER_MARKET_DATA_PROVIDER)."""

from timber_tasks.market_data.providers.base import PROVIDERS, Provider, ProviderResult, RateLimited, get_provider

__all__ = ["PROVIDERS", "Provider", "ProviderResult", "RateLimited", "get_provider"]
