"""The plain side of the cluster load benchmark (bench/bench_cluster.py): the desk's day of ``cluster_desk_day`` as plain
Python in one process, on 6 symbols and a SQLite store, imports no Airflow module and leaves what the DAG leaves.

The day runs once in a fresh interpreter (whose ``sys.modules`` then says what it imported); the store it wrote is read
here. No cluster, no Airflow.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_portfolio.market.calendar import MarketCalendar
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.ledger import TradingLedger

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "bench_cluster.py"
START, END, AS_OF = "2024-04-01", "2024-12-30", "2024-12-31T15:00:00-05:00"
RUN_ID = "plain__test"

DAY = """
import json, sys
sys.path.insert(0, {bench_dir!r})
import bench_cluster as bc
day = bc.plain_desk_day({url!r}, bc.universe(6), 3, {start!r}, {end!r}, {as_of!r}, run_id={run_id!r},
                        trade_order=[1, 0])
print(json.dumps({{"seconds": day.seconds, "total": day.total, "imports": day.imports, "order": day.trade_order,
                  "etl": [len(r["symbols"]) for r in day.etl], "forecast": sorted(day.forecast),
                  "trade": [r["symbols"] for r in day.trade], "health": day.health["level"],
                  "airflow": bc.airflow_modules()}}))
"""


def bench_module():
    if "bench_cluster" not in sys.modules:  # registered first: its dataclasses look their module up
        spec = importlib.util.spec_from_file_location("bench_cluster", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_cluster"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_cluster"]


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    path = tmp_path_factory.mktemp("plain") / "store.db"
    url = f"sqlite:///{path}"
    code = DAY.format(bench_dir=str(BENCH.parent), url=url, start=START, end=END, as_of=AS_OF, run_id=RUN_ID)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), url


def test_the_plain_day_imports_no_airflow_and_times_each_stage(day):
    out, _ = day
    assert out["airflow"] == []
    assert set(out["seconds"]) == {"etl", "forecast", "trade", "monitoring"}
    assert all(s > 0 for s in out["seconds"].values())
    assert out["total"] >= sum(out["seconds"].values()) + out["imports"] - 1e-6
    assert out["etl"] == [3, 3] and out["trade"] == [3, 3] and out["order"] == [1, 0]
    assert out["forecast"] == ["garch", "ssa"]
    assert out["health"] in ("GREEN", "YELLOW", "RED")


def test_the_plain_day_leaves_in_the_store_what_the_dag_leaves(day):
    _, url = day
    symbols = bench_module().universe(6)
    assert symbols == ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META"]
    store = PortfolioStore(url)
    try:
        # every XNYS session of the window, per symbol (all six are equities)
        sessions = len(MarketCalendar("XNYS").sessions(START, END))
        bars = store.read_bars(symbols, "1Day")
        assert bars.groupby("symbol").size().to_dict() == {s: sessions for s in symbols}
        assert bars["ts"].max().date().isoformat() == END
        # both GPU-routed models, every symbol, horizon 5, under the run's id
        forecasts = store.read_forecasts(symbols, model=["ssa", "garch"], timeframe="1Day", latest=True)
        assert set(forecasts["run_id"]) == {RUN_ID}
        assert Counter(zip(forecasts["model"], forecasts["symbol"], strict=True)) == {
            (m, s): 5 for m in ("ssa", "garch") for s in symbols}
        assert sorted(set(forecasts["step"])) == [1, 2, 3, 4, 5]
        # one decision per symbol on the DAG's book, as many orders as approved decisions; the chunks in the order given
        ledger = TradingLedger(store)
        decisions = ledger.decisions("cluster_desk_day", RUN_ID)
        assert sorted(d["symbol"] for d in decisions) == sorted(symbols)
        assert {d["account"] for d in decisions} == {"simulated:cluster"}
        assert len(ledger.orders("simulated:cluster")) == sum(bool(d["approved"]) for d in decisions)
        first = {d["symbol"]: d["created_at"] for d in decisions}
        assert max(first[s] for s in symbols[3:]) <= min(first[s] for s in symbols[:3])
        assert ledger.equity_curve("simulated:cluster")[-1]["equity"] > 0
        health = store.latest_health_report("monitoring")
        assert health is not None and health.run_id == RUN_ID and health.dag_id == "cluster_desk_day"
    finally:
        store.dispose()


def test_a_trade_order_that_is_not_one_of_the_chunks_is_refused_before_the_store_is_opened(tmp_path):
    bench = bench_module()
    with pytest.raises(ValueError, match="trade_order must order the 2 chunks"):
        bench.plain_desk_day(f"sqlite:///{tmp_path / 'never.db'}", bench.universe(6), 3, START, END, AS_OF,
                             trade_order=[0, 0])
    assert not (tmp_path / "never.db").exists()
