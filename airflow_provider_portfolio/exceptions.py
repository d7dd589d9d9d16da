"""Errors raised by the provider, in one module.

Plain Python: importing this module imports nothing heavy and never Airflow, so domain packages raise
these errors too. Messages never carry secrets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class PortfolioError(Exception):
    """Base class of every error the provider raises on purpose."""


class InvalidInputError(PortfolioError, ValueError):
    """A parameter is wrong (unknown symbol, start after end, not a list...). Raised before any write."""


class DataQualityError(PortfolioError):
    """A symbol's batch of bars failed the quality gate and was rejected whole.

    :param symbol: the symbol whose batch was rejected.
    :param rule: the rule that failed (for example ``high_below_low``).
    :param rows: a short description of the offending rows (timestamps and values).
    :param count: how many rows broke the rule.
    """

    def __init__(self, symbol: str, rule: str, rows: Sequence[str] | str, count: int | None = None):
        self.symbol = symbol
        self.rule = rule
        self.rows = [rows] if isinstance(rows, str) else list(rows)
        self.count = len(self.rows) if count is None else count
        shown = "; ".join(self.rows[:5])
        more = f" (+{self.count - 5} more)" if self.count > 5 else ""
        super().__init__(f"{symbol}: rule {rule!r} failed on {self.count} row(s): {shown}{more}")


class SourceError(PortfolioError):
    """A market-data source could not serve a request."""


class AllSourcesFailedError(SourceError):
    """Every source of a failover chain failed.

    :param symbol: the symbol requested.
    :param failures: source name -> why it failed, in the order tried.
    """

    def __init__(self, symbol: str, failures: Mapping[str, str]):
        self.symbol = symbol
        self.failures = dict(failures)
        detail = "; ".join(f"{name}: {why}" for name, why in self.failures.items()) or "no sources"
        super().__init__(f"no source could serve {symbol}: {detail}")


class StoreError(PortfolioError):
    """The portfolio store cannot be reached, is corrupt, locked, or has an unknown schema."""
