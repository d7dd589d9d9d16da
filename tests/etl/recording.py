"""A recording market-data source for ETL tests."""

from __future__ import annotations

import pandas as pd

from airflow_provider_portfolio.exceptions import SourceError
from airflow_provider_portfolio.market.synthetic import SyntheticMarket


class RecordingSource:
    """A source over the synthetic market that records calls and can fail or corrupt on demand."""

    def __init__(self, name: str = "recorder", *, fail_for: set[str] | None = None, corrupt: set[str] | None = None):
        self.name = name
        self.market = SyntheticMarket(seed=7)
        self.calls: list[tuple[str, str, str, str]] = []
        self.fail_for = fail_for or set()
        self.corrupt = corrupt or set()

    def get_bars(self, symbol, start, end, timeframe="1Day") -> pd.DataFrame:
        self.calls.append((symbol, str(start), str(end), timeframe))
        if symbol in self.fail_for or "*" in self.fail_for:
            raise SourceError(f"{self.name} has no data for {symbol}")
        bars = self.market.get_bars(symbol, start, end, timeframe)
        if symbol in self.corrupt and len(bars) > 1:
            bars.loc[1, "high"] = bars.loc[1, "low"] - 1.0
        return bars
