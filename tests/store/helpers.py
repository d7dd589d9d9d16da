"""Bar frames and process workers for the store tests (a module, so spawned processes can import it)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from airflow_provider_portfolio.market.bars import to_bar_frame


def make_bars(symbols, n: int, *, start="2024-01-01", timeframe: str = "1Day", source: str = "synthetic",
              seed: int = 0) -> pd.DataFrame:
    """A canonical frame of ``n`` valid bars per symbol with awkward floats (full 17-digit precision)."""
    rng = np.random.default_rng(seed)
    step = {"1Day": "D", "5Min": "5min", "1Hour": "h"}[timeframe]
    parts = []
    for symbol in symbols:
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
        open_ = close * np.exp(rng.normal(0.0, 0.005, n))
        high = np.maximum(open_, close) * (1 + rng.random(n) / 50)
        low = np.minimum(open_, close) * (1 - rng.random(n) / 50)
        parts.append(pd.DataFrame({
            "symbol": symbol, "timeframe": timeframe,
            "ts": pd.date_range(pd.Timestamp(start, tz="UTC"), periods=n, freq=step),
            "open": open_, "high": high, "low": low, "close": close,
            "volume": rng.integers(1, 10_000_000, n) + rng.random(n), "source": source,
        }))
    return to_bar_frame(pd.concat(parts, ignore_index=True))


def upsert_worker(url: str, symbols: list[str], n: int, seed_of: dict[str, int], chunks: int, go, results) -> None:
    """Wait for ``go``, migrate, then upsert ``symbols`` in ``chunks`` slices; put the counts on ``results``.

    The bars of a symbol are the same in every worker (its seed), so overlapping writes agree.
    """
    from airflow_provider_portfolio.store import PortfolioStore

    frame = pd.concat([make_bars([s], n, seed=seed_of[s]) for s in symbols], ignore_index=True)
    go.wait(60)
    try:
        store = PortfolioStore(url, busy_timeout_s=60)
        store.migrate()
        counts = [store.upsert_bars(frame.iloc[part].reset_index(drop=True))
                  for part in np.array_split(np.arange(len(frame)), chunks)]
        store.dispose()
        results.put(counts)
    except Exception as err:  # reported to the parent, which fails the test
        results.put(f"{type(err).__name__}: {err}")


def migrate_worker(url: str, go, results) -> None:
    """Wait for ``go``, then migrate; put the version (or the error text) on ``results``."""
    from airflow_provider_portfolio.store import PortfolioStore

    go.wait(60)
    try:
        results.put(PortfolioStore(url).migrate())
    except Exception as err:  # reported to the parent, which fails the test
        results.put(f"{type(err).__name__}: {err}")


def _utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


FORECAST_MODELS = ("ssa", "samossa", "mssa", "garch", "sarimax", "ensemble")


def make_forecasts(symbols, models=FORECAST_MODELS, horizon: int = 5, *, run_id: str = "manual__2024-03-01",
                   asof="2024-03-01", timeframe: str = "1Day", seed: int = 0) -> pd.DataFrame:
    """A valid forecast frame: one row per (model, symbol, step) of one run, with awkward floats.

    GARCH rows forecast ``log_return`` with a conditional variance; the others ``log_close`` (variance NaN).
    """
    rng = np.random.default_rng(seed)
    asof_ts = _utc(asof)
    rows = []
    for model in models:
        garch = model.startswith("garch")
        for symbol in symbols:
            level = np.log(100.0) + rng.normal(0.0, 0.5)
            for step in range(1, horizon + 1):
                point = rng.normal(0.0, 0.01) if garch else level + rng.normal(0.0, 0.01) * step
                half = abs(rng.normal(0.02, 0.005)) * np.sqrt(step)
                rows.append({
                    "run_id": run_id, "model": model, "symbol": symbol, "timeframe": timeframe, "step": step,
                    "asof": asof_ts, "target_ts": asof_ts + pd.Timedelta(days=step),
                    "target": "log_return" if garch else "log_close",
                    "point": point, "lower": point - half, "upper": point + half, "level": 0.9,
                    "variance": (half / 1.645) ** 2 if garch else np.nan,
                    "backend": "numpy", "device": "cpu",
                })
    return pd.DataFrame(rows)


def make_evaluations(symbols, models=FORECAST_MODELS, *, run_id: str = "manual__2024-03-01", asof="2024-03-01",
                     timeframe: str = "1Day", seed: int = 0) -> pd.DataFrame:
    """A valid evaluation frame: one row per (model, symbol), NaN where a metric is undefined."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, model in enumerate(models):
        for j, symbol in enumerate(symbols):
            insufficient = (k + j) % 4 == 3
            rmse = np.nan if insufficient else float(rng.uniform(0.005, 0.05))
            base = np.nan if insufficient else float(rng.uniform(0.005, 0.05))
            label = "insufficient_data" if insufficient else ("healthy" if rmse < base else "unhealthy")
            rows.append({
                "run_id": run_id, "model": model, "symbol": symbol, "timeframe": timeframe,
                "asof": _utc(asof), "horizon": 5, "origins": 0 if insufficient else 20,
                "rmse": rmse, "mae": np.nan if insufficient else rmse * 0.8,
                "directional_accuracy": np.nan if insufficient else float(rng.uniform(0, 1)),
                "coverage": np.nan if insufficient else float(rng.uniform(0.5, 1)),
                "baseline": "last_value", "baseline_rmse": base,
                "skill": np.nan if insufficient else 1 - rmse / base,
                "label": label, "healthy": label == "healthy",
                "weight": float(rng.uniform(0, 1)) if label == "healthy" else np.nan,
                "backend": "numpy", "device": "cpu",
            })
    return pd.DataFrame(rows)
