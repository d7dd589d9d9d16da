"""Print the latest trading run in the portfolio store: each symbol's decision, its risk verdict and its
order, then the book's equity."""

from __future__ import annotations

import sys

from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.ledger import TradingLedger


def main(path: str, dag_id: str) -> int:
    ledger = TradingLedger(PortfolioStore.for_sqlite_file(path))
    decisions = ledger.decisions(dag_id)
    if not decisions:
        print(f"no decisions of {dag_id} in {ledger.store.url}")
        return 1
    run_id = max(decisions, key=lambda d: d["created_at"])["run_id"]
    print(f"{dag_id}, run {run_id}")
    print(f"{'symbol':<9}{'action':<6}{'score':>7}{'conf':>6}  verdict / reason")
    for d in sorted((d for d in decisions if d["run_id"] == run_id), key=lambda d: d["symbol"]):
        if d["approved"]:
            verdict = f"approved: {d['action']} {d['order_qty']:g} ({d['client_order_id']})"
        elif d["approved"] is False:
            verdict = f"rejected by {d['risk_rule']}: {d['risk_reason']}"
        else:
            verdict = d["reason"]
        print(f"{d['symbol']:<9}{d['action']:<6}{d['score']:>+7.2f}{d['confidence']:>6.2f}  {verdict}")
    account = decisions[-1]["account"]
    orders = [o for o in ledger.orders(account) if o["run_id"] == run_id]
    print(f"orders sent: {len(orders)} ({', '.join(sorted({o['status'] for o in orders})) or 'none'})")
    curve = ledger.equity_curve(account)
    if curve:
        last = curve[-1]
        print(f"{account}: equity {last['equity']:,.2f} = cash {last['cash']:,.2f} + positions "
              f"{last['positions_value']:,.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "portfolio_auto_trader"))
