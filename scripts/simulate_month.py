"""Replay a month of the agent DAGs on the synthetic market and the simulated broker, then reconcile the book.

Runs inside an Airflow environment (``AIRFLOW_HOME`` with a migrated metadata database, the example DAGs in
the dags folder). Each agent DAG is run once per NYSE session at 15:00 New York, with ``dag.test()``, the
function behind ``airflow dags test``, all in one process. Every agent trades its own simulated book
(``simulated:<dag_id>``), so the reconciliation below checks each book on its own:

- cash = initial cash - sum(buy qty x price) + sum(sell qty x price) - sum(commissions), over the fills;
- each position = the signed sum of its fills;
- every equity snapshot: cash + positions value = equity;
- every filled order has exactly one fill, and no client order id appears twice.

Prints a summary per agent (JSON on the last line) and exits 1 when a check fails.

Usage: ``python scripts/simulate_month.py [--start 2024-03-01] [--end 2024-03-28] [--dags agent_tsla_trading,...]``
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
from collections import Counter, defaultdict
from pathlib import Path

AGENTS = ("agent_tsla_trading", "agent_iwm_trading", "agent_btc_trading")


def reconcile(db: Path, account: str, initial_cash: float) -> dict[str, object]:
    """Check the book of ``account`` from the raw tables (plain sqlite3, not the code under test)."""
    con = sqlite3.connect(db)
    try:
        fills = con.execute("SELECT client_order_id, symbol, side, qty, price, commission, bar_ts FROM fills "
                            "WHERE account = ? ORDER BY bar_ts, client_order_id", (account,)).fetchall()
        cash_row = con.execute("SELECT cash FROM accounts WHERE account = ?", (account,)).fetchone()
        positions = dict(con.execute("SELECT symbol, qty FROM positions WHERE account = ? AND qty != 0",
                                     (account,)).fetchall())
        curve = con.execute("SELECT ts, cash, positions_value, equity FROM equity_curve WHERE account = ? ORDER BY ts",
                            (account,)).fetchall()
        orders = con.execute("SELECT client_order_id, status FROM orders WHERE account = ?", (account,)).fetchall()
    finally:
        con.close()
    problems = []
    cash = initial_cash
    held: dict[str, float] = defaultdict(float)
    for _, symbol, side, qty, price, commission, _ in fills:
        sign = 1.0 if side == "buy" else -1.0
        cash -= sign * qty * price + commission
        held[symbol] += sign * qty
    if cash_row is None:
        problems.append(f"{account}: no account row")
    elif not math.isclose(cash_row[0], cash, rel_tol=0, abs_tol=1e-6):
        problems.append(f"{account}: cash {cash_row[0]} != initial - fills {cash}")
    expected = {s: q for s, q in held.items() if abs(q) > 1e-9}
    if set(expected) != set(positions) or any(not math.isclose(positions[s], q, abs_tol=1e-9)
                                              for s, q in expected.items()):
        problems.append(f"{account}: positions {positions} != sum of fills {expected}")
    for ts, c, value, equity in curve:
        if not math.isclose(c + value, equity, rel_tol=0, abs_tol=1e-6):
            problems.append(f"{account}: at {ts} cash {c} + positions {value} != equity {equity}")
    ids = [cid for cid, _ in orders]
    if len(ids) != len(set(ids)):
        problems.append(f"{account}: a client order id appears twice")
    filled = {cid for cid, status in orders if status == "filled"}
    filled_ids = [f[0] for f in fills]
    if sorted(filled_ids) != sorted(filled):
        problems.append(f"{account}: filled orders {len(filled)} != fills {len(filled_ids)} (one each)")
    return {"account": account, "fills": len(fills), "orders": len(orders), "snapshots": len(curve),
            "cash": cash_row[0] if cash_row else None, "positions": positions,
            "equity": curve[-1][3] if curve else None, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2024-03-01")
    parser.add_argument("--end", default="2024-03-28")
    parser.add_argument("--dags", default=",".join(AGENTS))
    args = parser.parse_args(argv)

    import pandas as pd
    from airflow.configuration import conf

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag

    from airflow_provider_portfolio.hooks.store import embedded_store_path
    from airflow_provider_portfolio.market.calendar import MarketCalendar

    dag_ids = [d.strip() for d in args.dags.split(",") if d.strip()]
    bag = DagBag(dag_folder=conf.get("core", "dags_folder"))
    sessions = MarketCalendar("XNYS").sessions(args.start, args.end).index
    states: dict[str, list[str]] = defaultdict(list)
    for session in sessions:
        at = pd.Timestamp(session.date()).tz_localize("America/New_York") + pd.Timedelta(hours=15)
        for dag_id in dag_ids:
            run = bag.get_dag(dag_id).test(logical_date=at.to_pydatetime())
            states[dag_id].append(str(getattr(run, "state", run)))
    db = embedded_store_path()
    report = {"sessions": len(sessions), "runs": {k: dict(Counter(v)) for k, v in states.items()},
              "books": [reconcile(db, f"simulated:{dag_id}", 100_000.0) for dag_id in dag_ids]}
    for book in report["books"]:
        print(f"{book['account']}: {book['orders']} orders, {book['fills']} fills, {book['snapshots']} snapshots, "
              f"equity {book['equity']}, positions {book['positions']}; "
              f"{'OK' if not book['problems'] else 'PROBLEMS: ' + '; '.join(book['problems'])}")
    print(json.dumps(report, default=str))
    failed_runs = any(s != "success" for v in states.values() for s in v)
    return 1 if failed_runs or any(b["problems"] for b in report["books"]) else 0


if __name__ == "__main__":
    sys.exit(main())
