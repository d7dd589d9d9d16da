"""What the cluster's DAG files share (this folder is on ``sys.path`` when they are parsed and run)."""

from __future__ import annotations


def universe(n: int) -> list[str]:
    """``n`` symbols: the desk's known names first, then synthetic tickers ``T0001``..; two crypto pairs."""
    known = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "SPY", "QQQ", "IWM", "BTC/USD", "ETH/USD"]
    names = known[:n] + [f"T{i:04d}" for i in range(1, max(0, n - len(known)) + 1)]
    return names[:n]


def chunked(names: list[str], size: int) -> list[list[str]]:
    """``names`` in consecutive chunks of ``size`` (the last one shorter)."""
    return [names[i:i + size] for i in range(0, len(names), size)]


#: ``cluster_desk_day``'s trader arguments beyond the defaults: looser than the example trader's, so the synthetic
#: market's day gives orders to count and check (``bench/bench_cluster.py`` runs the plain day with the same).
DESK_TRADER_ARGS = {"min_score": 0.02, "risk_limits": {"min_confidence": 0.05, "max_order_notional": 50_000.0}}


def universe_chunks(params: dict | None = None) -> list[list[str]]:
    """The run's universe (param ``symbols``, how many) in chunks of param ``chunk``: a TaskFlow task's callable."""
    assert params is not None
    return chunked(universe(int(params["symbols"])), int(params["chunk"]))


def universe_symbols(params: dict | None = None) -> list[str]:
    """The run's whole universe (param ``symbols``, how many): a TaskFlow task's callable."""
    assert params is not None
    return universe(int(params["symbols"]))
