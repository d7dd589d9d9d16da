"""Print what the portfolio store holds: per symbol, bars, first and last session, source."""

from __future__ import annotations

import sys

from airflow_provider_portfolio.store import PortfolioStore


def main(path: str) -> int:
    store = PortfolioStore.for_sqlite_file(path)
    bars = store.read_bars(timeframe="1Day")
    if bars.empty:
        print(f"store {store.url}: no daily bars")
        return 1
    print(f"store: {store.url}  (schema version {store.schema_version()})")
    print(f"{'symbol':<10}{'bars':>6}  {'first':<12}{'last':<12}{'last close':>12}  source")
    for symbol, group in bars.groupby("symbol", sort=True):
        last = group.iloc[-1]
        print(
            f"{symbol:<10}{len(group):>6}  {group['ts'].iloc[0].date()!s:<12}{last['ts'].date()!s:<12}"
            f"{last['close']:>12.2f}  {','.join(sorted(group['source'].unique()))}"
        )
    print(f"total: {len(bars)} daily bars for {bars['symbol'].nunique()} symbols")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
