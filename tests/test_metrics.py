"""The desk's metrics through Airflow's own Stats, received by a StatsD listener on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timezone

import pytest

from airflow_provider_portfolio import metrics
from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
from airflow_provider_portfolio.metrics import emit_cycle, emit_etl, emit_forecast, emit_health, metric_segment


def use_configured_stats() -> None:
    """Point Airflow's ``Stats`` at what ``[metrics]`` says now, as a task process does when it starts."""
    try:
        from airflow.sdk.observability.metrics.stats_utils import get_stats_factory
        from airflow.sdk.observability.stats import initialize
    except ImportError:  # Airflow 3.1: the Stats metaclass keeps one instance per process
        from airflow.configuration import conf
        from airflow.metrics.base_stats_logger import NoStatsLogger
        from airflow.metrics.statsd_logger import get_statsd_logger
        from airflow.stats import Stats

        Stats.instance = get_statsd_logger(Stats) if conf.getboolean("metrics", "statsd_on") else NoStatsLogger()
        Stats._instance_pid = os.getpid()
        return
    initialize(factory=get_stats_factory(), export_legacy_names=True)


class Listener:
    """A UDP socket on 127.0.0.1 that collects StatsD lines."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def lines(self, quiet: float = 0.3) -> list[str]:
        """Every line received until nothing more arrives for ``quiet`` seconds."""
        out: list[str] = []
        self.sock.settimeout(quiet)
        while True:
            try:
                out.extend(self.sock.recv(65535).decode().splitlines())
            except TimeoutError:
                return out

    def portfolio(self) -> dict[str, str]:
        """``name -> value|type`` of the ``airflow.portfolio.*`` lines (a name sent twice would fail the test)."""
        lines = [line for line in self.lines() if line.startswith("airflow.portfolio.")]
        parsed = dict(line.split(":", 1) for line in lines)
        assert len(parsed) == len(lines), lines
        return parsed


@pytest.fixture
def statsd(monkeypatch):
    listener = Listener()
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(listener.port))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
    use_configured_stats()
    yield listener
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "False")
    use_configured_stats()
    listener.sock.close()


CYCLE = {  # what AutoTraderOperator returns
    "decided": 5, "skipped": 0, "holds": 1, "errors": {},
    "risk_rejected": {"AAPL": "max_order_notional: 6000 > 5000", "MSFT": "max_order_notional: 7000 > 5000",
                      "BTC/USD": "kill_switch: trading halted"},
    "submitted": 2, "broker_rejected": {"NVDA": "insufficient buying power"}, "unknown": {}, "synced_orders": 1,
    "equity": {"cash": 90000.5, "positions_value": 10000.25, "equity": 100000.75},
    "start_of_day_equity": 99000.0, "loss_reference": None,
    "account": "simulated:core", "as_of": "2024-06-04T18:00:00+00:00", "symbols": 5,
}


def test_a_cycle_sends_equity_orders_rejections_by_rule_and_fills(statsd):
    emit_cycle({**CYCLE, "fills": 3})
    assert statsd.portfolio() == {
        "airflow.portfolio.trader.simulated_core.equity": "100000.75|g",
        "airflow.portfolio.trader.simulated_core.cash": "90000.5|g",
        "airflow.portfolio.trader.simulated_core.positions_value": "10000.25|g",
        "airflow.portfolio.trader.simulated_core.decisions": "5|c",
        "airflow.portfolio.trader.simulated_core.orders_sent": "2|c",
        "airflow.portfolio.trader.simulated_core.orders_rejected.max_order_notional": "2|c",
        "airflow.portfolio.trader.simulated_core.orders_rejected.kill_switch": "1|c",
        "airflow.portfolio.trader.simulated_core.orders_rejected.broker": "1|c",
        "airflow.portfolio.trader.simulated_core.fills": "3|c",
    }


def test_a_cycle_with_unknown_orders_counts_them_and_no_fills_without_a_count(statsd):
    emit_cycle({**CYCLE, "risk_rejected": {}, "broker_rejected": {}, "unknown": {"AAPL": "timeout"}})
    sent = statsd.portfolio()
    assert sent["airflow.portfolio.trader.simulated_core.orders_unknown"] == "1|c"
    assert not any(".orders_rejected." in name or name.endswith(".fills") for name in sent), sent


def test_the_etl_sends_rows_written_and_each_failed_symbol(statsd):
    emit_etl({"timeframe": "1Day", "rows_written": 504, "failed": ["BTC/USD", "TSLA"], "symbols": {}})
    assert statsd.portfolio() == {
        "airflow.portfolio.etl.1Day.rows_written": "504|c",
        "airflow.portfolio.etl.1Day.symbols_failed": "2|c",
        "airflow.portfolio.etl.1Day.failed.BTC_USD": "1|c",
        "airflow.portfolio.etl.1Day.failed.TSLA": "1|c",
    }


def test_forecasting_sends_symbols_labels_and_duration(statsd):
    emit_forecast({"model": "ssa", "symbols": 3, "failed": {"X": "too short"}, "seconds": 1.5,
                   "labels": {"healthy": 2, "insufficient_data": 1}})
    assert statsd.portfolio() == {
        "airflow.portfolio.forecast.ssa.symbols": "3|c",
        "airflow.portfolio.forecast.ssa.symbols_failed": "1|c",
        "airflow.portfolio.forecast.ssa.labels.healthy": "2.0|g",
        "airflow.portfolio.forecast.ssa.labels.insufficient_data": "1.0|g",
        "airflow.portfolio.forecast.ssa.duration": "1500.000000|ms",
    }


@pytest.mark.parametrize(("level", "value"), [(Level.GREEN, "0.0"), (Level.YELLOW, "1.0"), (Level.RED, "2.0")])
def test_health_sends_its_level_failed_checks_and_bars_behind_per_symbol(statsd, level, value):
    checks = [Check("freshness", level, 2, {"yellow": 1, "red": 2}, "2 bars behind", subject="BTC/USD"),
              Check("store_integrity", Level.GREEN, "ok")]
    report = HealthReport("monitoring", datetime(2024, 6, 4, 14, tzinfo=timezone.utc), tuple(checks)).to_dict()
    emit_health(report, freshness={"BTC/USD": 2, "AAPL": 0})
    assert statsd.portfolio() == {
        "airflow.portfolio.health.monitoring.level": f"{value}|g",
        "airflow.portfolio.health.monitoring.checks_failed": f"{1.0 if level is Level.RED else 0.0}|g",
        "airflow.portfolio.data.bars_behind.BTC_USD": "2.0|g",
        "airflow.portfolio.data.bars_behind.AAPL": "0.0|g",
    }


def test_nothing_is_sent_when_metrics_are_off(monkeypatch):
    listener = Listener()
    try:
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "False")
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(listener.port))
        use_configured_stats()
        emit_cycle(CYCLE)
        emit_etl({"timeframe": "1Day", "rows_written": 1, "failed": []})
        assert listener.lines() == []
    finally:
        listener.sock.close()


def test_an_emit_never_raises_and_sends_what_it_can(statsd, monkeypatch, caplog):
    # garbage in the report: nothing raises, the good values still go out
    emit_cycle({"account": None, "equity": {"equity": "n/a", "cash": float("nan")}, "submitted": 1,
                "risk_rejected": ["not", "a", "dict"]})
    emit_etl({"rows_written": None, "failed": None})
    emit_health({"level": "PURPLE", "failed": 3}, freshness={"AAPL": "stale"})
    emit_cycle(None)  # type: ignore[arg-type]
    assert statsd.portfolio() == {
        "airflow.portfolio.trader.unknown.orders_sent": "1|c",
        "airflow.portfolio.etl.unknown.symbols_failed": "0|c",
        "airflow.portfolio.health.health.checks_failed": "3.0|g",
    }

    class Broken:
        def __getattr__(self, name):
            raise OSError("statsd is down")

    monkeypatch.setattr(metrics, "_stats", Broken)
    with caplog.at_level(logging.DEBUG, logger=metrics.__name__):
        emit_cycle(CYCLE)
        emit_health({"kind": "monitoring", "level": "RED", "failed": []})
    assert "statsd is down" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == metrics.__name__)


@pytest.mark.parametrize(("value", "segment"), [
    ("BTC/USD", "BTC_USD"), ("simulated:core", "simulated_core"), ("alpaca:alpaca.paper", "alpaca_alpaca_paper"),
    ("max_order_notional", "max_order_notional"), ("", "unknown"), ("日本", "unknown"), ("x" * 100, "x" * 64),
])
def test_a_label_is_one_safe_segment_of_a_name(value, segment):
    assert metric_segment(value) == segment
    assert metrics.metric_name("data", "bars_behind", value) == f"portfolio.data.bars_behind.{segment}"
