"""Metrics and lineage in a real Airflow: `airflow dags test` of tests/dags/portfolio_metrics_desk.py (the ETL, then
an auto-trader cycle) with StatsD on (a listener on 127.0.0.1) and OpenLineage's file transport."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from pathlib import Path

import pytest

from tests.airflow.realairflow import REPO, airflow_env, run_airflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


class StatsdListener:
    """Collects the StatsD lines sent to a UDP socket on 127.0.0.1 while the block runs."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                self.lines.extend(self.sock.recv(65535).decode().splitlines())
            except TimeoutError:
                continue

    def __enter__(self) -> StatsdListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def values(self, prefix: str) -> dict[str, list[str]]:
        """``name -> [value|type, ...]`` of the lines whose name starts with ``prefix``."""
        out: dict[str, list[str]] = {}
        for line in self.lines:
            name, _, value = line.partition(":")
            if name.startswith(prefix):
                out.setdefault(name, []).append(value)
        return out


def store_rows(db: Path, sql: str) -> list[tuple]:
    """Rows read with plain sqlite3, not the code under test."""
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


def complete_events(path: Path) -> dict[str, dict]:
    """The COMPLETE event of each job in the OpenLineage file transport's output."""
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}


def datasets(items: list[dict]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in items]


def test_dags_test_sends_the_desk_metrics_and_openlineage_events(tmp_path):
    home = tmp_path / "home"
    lineage = tmp_path / "openlineage.jsonl"
    with StatsdListener() as statsd:
        env = airflow_env(
            home,
            AIRFLOW__METRICS__STATSD_ON="True",
            AIRFLOW__METRICS__STATSD_HOST="127.0.0.1",
            AIRFLOW__METRICS__STATSD_PORT=str(statsd.port),
            AIRFLOW__METRICS__STATSD_PREFIX="airflow",
            AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps({"type": "file", "log_file_path": str(lineage),
                                                        "append": True}),
            AIRFLOW__OPENLINEAGE__NAMESPACE="desk-test",
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "tests" / "dags"),
        )
        run_airflow(env, "db", "migrate")
        run_airflow(env, "dags", "test", "portfolio_metrics_desk", "2024-06-04T15:00:00-04:00")
    db = home / "portfolio" / "portfolio.db"
    sent = statsd.values("airflow.portfolio.")

    # The ETL: the rows it wrote, as the store counts them.
    (bars,), = store_rows(db, "SELECT COUNT(*) FROM bars")
    assert bars > 0
    assert sent["airflow.portfolio.etl.1Day.rows_written"] == [f"{bars}|c"]
    assert sent["airflow.portfolio.etl.1Day.symbols_failed"] == ["0|c"]

    # The trader: equity, decisions, orders sent and refused by rule, as the ledger holds them.
    (equity,), = store_rows(db, "SELECT equity FROM equity_curve WHERE account = 'simulated:metrics'")
    trader = "airflow.portfolio.trader.simulated_metrics"
    assert sent[f"{trader}.equity"] == [f"{float(equity)}|g"]
    assert sent[f"{trader}.decisions"] == ["6|c"]
    (orders,), = store_rows(db, "SELECT COUNT(*) FROM orders WHERE account = 'simulated:metrics'")
    assert orders == 1 and sent[f"{trader}.orders_sent"] == ["1|c"]
    rejected = store_rows(db, "SELECT risk_rule, COUNT(*) FROM trading_decisions WHERE approved = 0 GROUP BY risk_rule")
    assert rejected == [("max_order_notional", 2)]
    assert {k: v for k, v in sent.items() if ".orders_rejected." in k} == {
        f"{trader}.orders_rejected.max_order_notional": ["2|c"]}

    # Lineage: vendor -> store bars; bars and forecasts -> decisions, orders, fills, equity.
    events = complete_events(lineage)
    etl = events["portfolio_metrics_desk.etl"]
    assert etl["job"]["namespace"] == "desk-test"
    assert datasets(etl["inputs"]) == [("portfolio-vendor://synthetic", "bars/1Day")]
    assert datasets(etl["outputs"]) == [("sqlite://portfolio.db", "bars")]
    assert "schema" in etl["outputs"][0]["facets"]
    trade = events["portfolio_metrics_desk.auto_trader"]
    assert datasets(trade["inputs"]) == [("portfolio-vendor://synthetic", "bars/1Day"),
                                         ("sqlite://portfolio.db", "forecasts"),
                                         ("sqlite://portfolio.db", "model_evaluations")]
    assert datasets(trade["outputs"]) == [("sqlite://portfolio.db", t)
                                          for t in ("trading_decisions", "orders", "fills", "equity_curve")]
