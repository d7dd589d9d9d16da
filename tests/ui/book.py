"""A small, hand-checkable desk written into a store: the Portfolio page's tests read it (the unit tests and the real
api-server's).

The simulated account opens with 100,000 of cash and buys 10 AAPL at 100 and 5 MSFT at 200 (no commission): cash
98,000. Marked at AAPL 110 and MSFT 190, the positions are worth 1,100 + 950 = 2,050 and the book 100,050 (a return of
0.05 %); unrealized P&L AAPL +100, MSFT -50. A TSLA buy of 3 is accepted, not filled. Its equity curve has 40 daily
snapshots: 100,000 + 10 i for i < 20 (peak 100,190 at i = 19), then 99,000 + 50 (i - 20) up to 99,950: maximum
drawdown 1,190 / 100,190, current 240 / 100,190. A broker's account holds one snapshot (cash 5,000, equity 25,000).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.accounting import apply_fill
from tests.store.helpers import make_bars

ACCOUNT = "simulated:default"
BROKER_ACCOUNT = "alpaca:alpaca_paper"
DAG = "portfolio_auto_trader"
#: The first snapshot (a close); the decisions are about the bar of T0 + 39 days.
T0 = datetime(2026, 9, 1, 20, tzinfo=UTC)
LAST = T0 + timedelta(days=39)
EQUITY = [100_000.0 + 10 * i for i in range(20)] + [99_000.0 + 50 * (i - 20) for i in range(20, 40)]


def _order(coid: str, symbol: str, qty: float, price: float, minute: int) -> dict:
    return {"account": ACCOUNT, "client_order_id": coid, "dag_id": DAG, "run_id": "run-39", "symbol": symbol,
            "side": "buy", "qty": qty, "ref_price": price, "bar_ts": LAST, "created_at": LAST + timedelta(minutes=minute)}


def _decision(symbol: str, action: str, order_qty: float, approved: bool | None, rule: str | None = None,
              coid: str | None = None) -> dict:
    return {"dag_id": DAG, "symbol": symbol, "timeframe": "1Day", "bar_ts": LAST, "run_key": "", "run_id": "run-39",
            "account": ACCOUNT, "action": action, "score": 0.4 if action == "buy" else 0.0, "confidence": 0.7,
            "price": 100.0, "current_qty": 0.0, "target_qty": order_qty, "order_qty": order_qty,
            "reason": f"{symbol}: signals agree", "error": None, "signals": {"trend": {"score": 0.4}},
            "approved": approved, "risk_rule": rule, "risk_reason": f"{rule}: over the limit" if rule else None,
            "client_order_id": coid}


def _evaluation(symbol: str, model: str, label: str, skill: float) -> dict:
    asof = LAST
    return {"run_id": "forecast-39", "model": model, "symbol": symbol, "timeframe": "1Day", "asof": asof,
            "horizon": 5, "origins": 10, "rmse": 1.0, "mae": 0.8, "directional_accuracy": 0.5, "coverage": 0.9,
            "baseline": "last_value", "baseline_rmse": 1.1, "skill": skill, "label": label,
            "healthy": label == "healthy", "weight": None, "backend": "numpy", "device": "cpu", "created_at": asof}


def write_book(store: PortfolioStore) -> None:
    """Migrate ``store`` and write the desk described in the module docstring."""
    import pandas as pd

    store.migrate()
    ledger = TradingLedger(store)
    ledger.open_account(ACCOUNT, 100_000.0)
    ledger.open_account(BROKER_ACCOUNT, None)
    ledger.record_intents([_order("o-aapl", "AAPL", 10, 100.0, 1), _order("o-msft", "MSFT", 5, 200.0, 2),
                           _order("o-tsla", "TSLA", 3, 250.0, 3)])
    for coid, price in (("o-aapl", 100.0), ("o-msft", 200.0), ("o-tsla", None)):
        ledger.accept(ACCOUNT, coid, f"broker-{coid}")
        if price is not None:
            ledger.fill(ACCOUNT, coid, price=price, commission=0.0, bar_ts=LAST, rule=apply_fill)
    ledger.mark(ACCOUNT, {"AAPL": (110.0, LAST + timedelta(hours=1)), "MSFT": (190.0, LAST + timedelta(hours=1))})
    for i, equity in enumerate(EQUITY):
        ledger.snapshot(ACCOUNT, T0 + timedelta(days=i), f"run-{i}", cash=98_000.0, equity=equity)
    ledger.snapshot(BROKER_ACCOUNT, T0, "run-0", cash=5_000.0, equity=25_000.0)
    ledger.claim_decisions([
        _decision("AAPL", "buy", 10, True, coid="o-aapl"), _decision("MSFT", "buy", 5, True, coid="o-msft"),
        _decision("TSLA", "buy", 40, False, "max_position"), _decision("NVDA", "hold", 0, None),
        _decision("AMZN", "buy", 2, None),
    ])
    store.write_forecasts(None, pd.DataFrame([
        _evaluation("AAPL", "ssa", "healthy", 0.2), _evaluation("AAPL", "garch", "unhealthy", -0.1),
        _evaluation("MSFT", "ssa", "healthy", 0.3), _evaluation("MSFT", "garch", "healthy", 0.1),
        _evaluation("TSLA", "ssa", "insufficient_data", float("nan")), _evaluation("AAPL", "ensemble", "healthy", 0.25),
    ]))
    store.upsert_bars(pd.concat([make_bars(["AAPL"], 40, start="2026-09-01"), make_bars(["MSFT"], 30, start="2026-09-01"),
                                 make_bars(["TSLA"], 35, start="2026-09-01")], ignore_index=True))
    report = HealthReport("monitoring", LAST + timedelta(hours=2), (
        Check("freshness", Level.GREEN, 0, None, "AAPL: fresh", "AAPL"),
        Check("freshness", Level.RED, 10, None, "MSFT: 10 bars past due", "MSFT"),
        Check("forecast_health", Level.YELLOW, 0.5, None, "AAPL: 1 of 2 judged models healthy", "AAPL"),
    ))
    store.append_health_report(report.to_dict(), dag_id="portfolio_monitoring", run_id="monitoring-39")
