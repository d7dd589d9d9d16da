"""Print the latest forecasts in the portfolio store: per symbol, the health of each model and the
ensemble's next-bar close with its band."""

from __future__ import annotations

import math
import sys

from airflow_provider_portfolio.store import PortfolioStore


def main(path: str) -> int:
    store = PortfolioStore.for_sqlite_file(path)
    evaluations = store.read_evaluations()
    forecasts = store.read_forecasts(model="ensemble")
    if evaluations.empty:
        print(f"store {store.url}: no forecasts")
        return 1
    models = sorted(m for m in evaluations["model"].unique() if m != "ensemble")
    print(f"{'symbol':<10}" + "".join(f"{m:>12}" for m in models) + "   ensemble next close (90% band)")
    for symbol, group in evaluations.groupby("symbol", sort=True):
        by_model = group.set_index("model")
        cells = []
        for m in models:
            if m not in by_model.index:
                cells.append(f"{'-':>12}")
                continue
            skill = by_model.loc[m, "skill"]
            verdict = "ok" if by_model.loc[m, "healthy"] else "no"
            cells.append(f"{verdict + ' ' + (f'{skill:+.2f}' if math.isfinite(skill) else 'n/a'):>12}")
        first = forecasts[(forecasts["symbol"] == symbol) & (forecasts["step"] == 1)]
        if first.empty:
            tail = "no healthy model: no ensemble forecast"
        else:
            row = first.iloc[0]
            tail = (f"{math.exp(row['point']):.2f} ({math.exp(row['lower']):.2f}..{math.exp(row['upper']):.2f}) "
                    f"on {row['target_ts'].date()}")
        print(f"{symbol:<10}" + "".join(cells) + "   " + tail)
    print("cells: ok = healthy (beats the naive baseline in the backtest), no = not used; then the skill,\n"
          "1 - RMSE / RMSE of the last value (garch: of the sample variance)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
