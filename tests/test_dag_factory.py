"""DAGs from YAML (airflow_provider_portfolio.dag_factory): what a valid file builds, what a wrong one says."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest
import yaml

from airflow_provider_portfolio import dag_factory
from airflow_provider_portfolio.dag_factory import (
    FORECAST_MODELS,
    DagConfigError,
    build_dags,
    load_desks,
    register_dags,
)
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.trading import AutoTraderOperator
from tests.airflow.test_dag_integrity import EXAMPLE_DAGS, dagbag

VALID = """
desks:
  - id: alpha
    universe: [aapl, MSFT, BTC/USD]
    exchange: XNYS
    store_conn_id: my_store
    connections:
      market_data: [alpaca_paper, synthetic]
      broker: alpaca_paper
    etl:
      schedule: "0 6 * * 1-5"
      history_sessions: 100
      max_failed_fraction: 0.25
      deadline_minutes: 30
    forecast:
      models: [mssa, garch_t, sarimax]
      horizon: 3
      origins: 4
      device: cpu
    trading:
      schedule: "*/15 9-16 * * 1-5"
      timeframe: 15Min
      weights: {technical: 0.7, sentiment: 0.3}
      limits: {max_order_notional: 2500, min_confidence: 0.3, allow_short: true}
      max_trades_per_day: 12
      min_score: 0.2
      sizing: volatility
      require: [bars]
      slippage_bps: 2.5
  - id: beta
    universe: [SPY]
    timezone: UTC
    trading:
      session: {at: close, close_offset: 10}
      timeframe: 1Day
"""


def write(tmp_path, text: str, name: str = "desks.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def cron_of(timetable) -> str:
    return getattr(timetable, "expression", None) or timetable._expression


def zone_of(timetable) -> str:
    return str(getattr(timetable, "timezone", None) or timetable._timezone)


# -- a valid file --------------------------------------------------------------------------------------------------

def test_a_valid_file_builds_each_desks_dags_with_the_operators_arguments(tmp_path):
    dags = build_dags(write(tmp_path, VALID))
    assert list(dags) == ["alpha_etl", "alpha_forecast", "alpha_trading", "beta_trading"]
    for dag in dags.values():
        assert {"portfolio", "desks.yaml"} <= set(dag.tags) and "desks.yaml" in dag.doc_md
        assert dag.catchup is False and dag.max_active_runs == 1
        for t in dag.tasks:
            callbacks = t.on_failure_callback if isinstance(t.on_failure_callback, list) else [t.on_failure_callback]
            assert any(isinstance(c, PortfolioNotifier) for c in callbacks), (dag.dag_id, t.task_id)

    etl = dags["alpha_etl"]
    assert (cron_of(etl.timetable), zone_of(etl.timetable)) == ("0 6 * * 1-5", "America/New_York")
    load = etl.get_task("load_bars")
    assert etl.task_ids == ["load_bars"] and load.pool == "api_pool"
    assert load.symbols == ["AAPL", "MSFT", "BTC/USD"] and load.sources == ["alpaca_paper", "synthetic"]
    assert (load.history_sessions, load.max_failed_fraction, load.exchange, load.store_conn_id) == (
        100, 0.25, "XNYS", "my_store")
    assert [o.name for o in load.outlets] == ["alpha_bars"]
    assert load.execution_timeout == timedelta(hours=2) and load.retries == 3

    forecast = dags["alpha_forecast"]
    assert type(forecast.timetable).__name__ == "AssetTriggeredTimetable"
    assert "alpha_bars" in repr(forecast.timetable.asset_condition)
    assert {t: forecast.get_task(t).upstream_task_ids for t in forecast.task_ids} == {
        "mssa": set(), "garch_t": set(), "sarimax": set(), "ensemble": {"mssa", "sarimax"}}
    ensemble = forecast.get_task("ensemble")
    assert list(ensemble.models) == ["mssa", "sarimax"] and ensemble.trigger_rule == "all_done"
    assert [o.name for o in ensemble.outlets] == ["alpha_forecasts"]
    mssa, garch_t, sarimax = (forecast.get_task(t) for t in ("mssa", "garch_t", "sarimax"))
    assert (mssa.method, mssa.device, mssa.horizon, mssa.origins, mssa.pool) == ("mssa", "cpu", 3, 4, "gpu_pool")
    assert (garch_t.dist, garch_t.pool) == ("t", "gpu_pool")
    assert (sarimax.origins, sarimax.pool) == (4, "default_pool")

    trading = dags["alpha_trading"]
    assert (cron_of(trading.timetable), zone_of(trading.timetable)) == ("*/15 9-16 * * 1-5", "America/New_York")
    assert {t: trading.get_task(t).upstream_task_ids for t in trading.task_ids} == {
        "market_hours": set(), "desk_gate": {"market_hours"}, "auto_trader": {"desk_gate"}}
    sensor, gate, trader = (trading.get_task(t) for t in ("market_hours", "desk_gate", "auto_trader"))
    assert (sensor.exchange, sensor.when_closed) == ("XNYS", "skip")
    assert gate.require == ["bars"] and gate.symbols == ["AAPL", "MSFT", "BTC/USD"]
    assert trader.weights == {"technical": 0.7, "sentiment": 0.3}
    assert trader.risk_limits == {"max_order_notional": 2500, "min_confidence": 0.3, "allow_short": True}
    assert (trader.max_trades_per_day, trader.min_score, trader.sizing, trader.timeframe) == (12, 0.2, "volatility",
                                                                                              "15Min")
    assert (trader.sources, trader.broker_conn_id, trader.store_conn_id) == (
        ["alpaca_paper", "synthetic"], "alpaca_paper", "my_store")
    assert (trader.simulated_account, trader.forecast_timeframe, trader.allow_live) == ("alpha", "1Day", False)
    assert (trader.pool, trader.execution_timeout) == ("trading_pool", timedelta(minutes=15))
    assert trader.slippage_bps == 2.5 and trader.commission_bps == AutoTraderOperator(
        task_id="defaults", symbols=["SPY"]).commission_bps  # not given: the operator's default

    beta = dags["beta_trading"]
    assert type(beta.timetable).__name__ == "MarketSessionTimetable"
    assert beta.timetable.summary == "10 min before XNYS close"
    assert {t: beta.get_task(t).upstream_task_ids for t in beta.task_ids} == {
        "desk_gate": set(), "auto_trader": {"desk_gate"}}
    beta_trader = beta.get_task("auto_trader")
    assert (beta_trader.weights, beta_trader.risk_limits, beta_trader.simulated_account) == (None, None, "beta")


def test_defaults_of_a_minimal_desk(tmp_path):
    (desk,) = load_desks(write(tmp_path, """
        desks:
          - id: d
            universe: [ON, NO]
            etl:
            forecast: {}
            trading:
    """))
    assert desk.universe == ("ON", "NO")  # read as written, not as YAML 1.1 booleans
    assert (desk.exchange, desk.timezone, desk.sources, desk.broker_conn_id) == (None, "America/New_York", None, None)
    assert desk.etl == dag_factory.EtlSpec()
    assert desk.forecast.schedule == "after_etl"
    assert desk.forecast.models == ("ssa", "samossa", "mssa", "garch", "sarimax")
    assert desk.trading.session == {"every": 30} and desk.trading.schedule is None
    assert (desk.trading.simulated_account, desk.trading.forecast_timeframe) == ("d", "1Day")
    dags = build_dags(write(tmp_path, """
        desks:
          - id: d
            universe: [AAPL]
            forecast:
              timeframe: 1Hour
            trading: {}
    """, "other.yaml"))
    forecast = dags["d_forecast"]
    assert type(forecast.timetable).__name__ == "NullTimetable"  # no ETL to follow: by hand
    assert "ensemble" in forecast.task_ids and dags["d_trading"].get_task("auto_trader").forecast_timeframe == "1Hour"
    assert dags["d_trading"].timetable.summary == "every 30 min in XNYS sessions"


def test_desks_as_a_mapping_with_a_merge_key(tmp_path):
    desks = load_desks(write(tmp_path, """
        desks:
          tech: &base
            universe: [AAPL]
            trading:
              limits: {max_order_notional: 1000}
          tech2:
            <<: *base
            universe: [MSFT]
    """))
    assert [(d.id, d.universe, dict(d.trading.limits)) for d in desks] == [
        ("tech", ("AAPL",), {"max_order_notional": 1000}), ("tech2", ("MSFT",), {"max_order_notional": 1000})]


def test_deadline_alerts_follow_the_config_flag(tmp_path, monkeypatch):
    path = write(tmp_path, VALID)
    assert all(dag.deadline in (None, []) for dag in build_dags(path).values())
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__DEADLINE_ALERTS", "True")
    dags = build_dags(path)

    def intervals(dag):
        alerts = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
        return [a.interval for a in alerts if a is not None]

    assert intervals(dags["alpha_etl"]) == [timedelta(minutes=30)]
    assert intervals(dags["alpha_forecast"]) == []
    assert intervals(dags["alpha_trading"]) == [timedelta(minutes=5)]


def test_the_dags_serialize_as_the_dag_processor_stores_them(tmp_path):
    try:
        from airflow.serialization.serialized_objects import DagSerialization as Serialization
    except ImportError:  # Airflow < 3.2
        from airflow.serialization.serialized_objects import SerializedDAG as Serialization
    for dag_id, dag in build_dags(write(tmp_path, VALID)).items():
        back = Serialization.from_dict(Serialization.to_dict(dag))
        assert (back.dag_id, sorted(back.task_ids)) == (dag_id, sorted(dag.task_ids))
        assert type(back.timetable).__name__ == type(dag.timetable).__name__


def test_register_dags_puts_them_in_the_namespace(tmp_path):
    namespace: dict = {}
    dags = register_dags(write(tmp_path, VALID), namespace)
    assert namespace == dags and set(namespace) == {"alpha_etl", "alpha_forecast", "alpha_trading", "beta_trading"}


# -- a wrong file: the file, the field path, the line --------------------------------------------------------------

WRONG = {
    "bad type": ("""
        desks:
          - id: tech
            universe: [AAPL]
            etl:
              history_sessions: many
    """, "desks[0].etl.history_sessions", 5, "must be an integer from 1 to 25000, got 'many'"),
    "bad type of a weight, second desk": ("""
        desks:
          - id: tech
            universe: [AAPL]
            etl: {}
          - id: crypto
            universe: [BTC/USD]
            trading:
              weights:
                technical: high
                forecast: 0.5
    """, "desks[1].trading.weights.technical", 9, "must be a finite number >= 0, got 'high'"),
    "unknown key": ("""
        desks:
          - id: tech
            universe: [AAPL]
            etl:
              schedul: "0 5 * * *"
    """, "desks[0].etl.schedul", 5, "unknown key 'schedul' (did you mean 'schedule'?)"),
    "missing universe": ("""
        desks:
          - id: tech
            etl: {}
    """, "desks[0].universe", 2, "required"),
    "weights summing to 0": ("""
        desks:
          - id: tech
            universe: [AAPL]
            trading:
              weights: {technical: 0, forecast: 0.0, sentiment: 0}
    """, "desks[0].trading.weights", 5, "the weights must not all be zero"),
    "YAML syntax error": ("""
        desks:
          - id: tech
            universe: [AAPL, MSFT
            etl: {}
    """, "", 4, "YAML syntax error"),
    "duplicate ids": ("""
        desks:
          - id: tech
            universe: [AAPL]
            etl: {}
          - id: tech
            universe: [MSFT]
            trading: {}
    """, "desks[1].id", 5, "desk id 'tech' is also the id of desks[0] (line 2)"),
    "bad symbol": ("""
        desks:
          - id: tech
            universe:
              - AAPL
              - BRK B
            etl: {}
    """, "desks[0].universe[1]", 5, "not a ticker: 'BRK B'"),
    "unknown model": ("""
        desks:
          - id: tech
            universe: [AAPL]
            forecast:
              models: [ssa, sarima]
    """, "desks[0].forecast.models[1]", 5, "unknown model 'sarima' (did you mean 'sarimax'?)"),
    "bad cron": ("""
        desks:
          - id: tech
            universe: [AAPL]
            etl:
              schedule: "5 25 * * *"
    """, "desks[0].etl.schedule", 5, "not a cron expression: '5 25 * * *'"),
    "duplicate key": ("""
        desks:
          - id: tech
            universe: [AAPL]
            etl: {}
            etl: {history_sessions: 5}
    """, "desks[0].etl", 5, "duplicate key (first on line 4)"),
    "risk limit out of range": ("""
        desks:
          - id: tech
            universe: [AAPL]
            trading:
              limits:
                max_position_fraction: 1.5
    """, "desks[0].trading.limits.max_position_fraction", 6, "max_position_fraction must be a number in (0, 1]"),
    "unknown risk limit": ("""
        desks:
          - id: tech
            universe: [AAPL]
            trading:
              limits: {max_positions: 3}
    """, "desks[0].trading.limits.max_positions", 5, "did you mean 'max_open_positions'?"),
    "bad timeframe": ("""
        desks:
          - id: tech
            universe: [AAPL]
            trading:
              timeframe: 30min
    """, "desks[0].trading.timeframe", 5, "unknown timeframe '30min'"),
    "after_etl without an ETL": ("""
        desks:
          - id: tech
            universe: [AAPL]
            forecast:
              schedule: after_etl
    """, "desks[0].forecast.schedule", 5, "after_etl needs an etl section"),
    "schedule and session": ("""
        desks:
          - id: tech
            universe: [AAPL]
            trading:
              schedule: "*/30 * * * 1-5"
              session: {every: 30}
    """, "desks[0].trading.session", 6, "give schedule"),
    "no section": ("""
        desks:
          - id: tech
            universe: [AAPL]
    """, "desks[0]", 2, "at least one of etl, forecast, trading"),
    "bad desk id": ("""
        desks:
          - id: tech desk
            universe: [AAPL]
            etl: {}
    """, "desks[0].id", 2, "not a name: 'tech desk'"),
    "duplicate desk in a mapping": ("""
        desks:
          tech: {universe: [AAPL], etl: {}}
          tech: {universe: [MSFT], etl: {}}
    """, "desks.tech", 3, "duplicate key (first on line 2)"),
    "not a list": ("""
        desks:
          - id: tech
            universe: AAPL
            etl: {}
    """, "desks[0].universe", 3, "must be a list"),
    "ensemble without a price-level model": ("""
        desks:
          - id: tech
            universe: [AAPL]
            forecast:
              models: [garch]
    """, "desks[0].forecast.models", 5, "the ensemble combines price-level models"),
    "no desks": ("""
        desk: []
    """, "desks", 1, "required"),
}


@pytest.mark.parametrize("case", list(WRONG))
def test_a_wrong_file_names_the_file_the_field_and_the_line(tmp_path, case):
    text, field, line, words = WRONG[case]
    path = write(tmp_path, text, "wrong_desks.yaml")
    with pytest.raises(DagConfigError) as info:
        build_dags(path)
    err = info.value
    assert isinstance(err, InvalidInputError)
    assert err.file == str(path)
    message = str(err)
    expected = f"{path}, line {line}, column "
    assert expected in message and words in message, message
    first = next(p for p in err.problems if p[0] == field)
    assert first[1] == line and words in first[3], err.problems
    if field:
        assert f"line {line}, column {first[2]}: {field}: " in message


def test_every_problem_of_a_file_is_reported_at_once_in_line_order(tmp_path):
    path = write(tmp_path, """
        desks:
          - id: tech
            universe: [AAPL, "BAD TICKER"]
            etl:
              history_sessions: 0
            trading:
              weights: {techincal: 1}
    """)
    with pytest.raises(DagConfigError) as info:
        load_desks(path)
    assert [(field, line) for field, line, _, _ in info.value.problems] == [
        ("desks[0].universe[1]", 3), ("desks[0].etl.history_sessions", 5), ("desks[0].trading.weights.techincal", 7)]
    assert str(info.value).startswith(f"3 problems in {path}:\n")
    assert "did you mean 'technical'?" in str(info.value)


def test_an_empty_file(tmp_path):
    with pytest.raises(DagConfigError, match=r"line 1, column 1: desks: the file is empty"):
        load_desks(write(tmp_path, ""))


# -- mirrors of domain constants whose modules are heavy to import at DAG parse time ---------------------------------

def test_the_factorys_mirrors_agree_with_the_domain():
    from airflow_provider_portfolio.desk.gate import REQUIREMENTS
    from airflow_provider_portfolio.forecast.backend import DEVICES
    from airflow_provider_portfolio.forecast.registry import models
    from airflow_provider_portfolio.market.bars import parse_timeframe
    from airflow_provider_portfolio.market.etl import MODES
    from airflow_provider_portfolio.trading.decision import SIZINGS

    assert (dag_factory._SIZINGS, dag_factory._DEVICES, dag_factory._ETL_MODES, dag_factory._REQUIREMENTS) == (
        SIZINGS, DEVICES, MODES, REQUIREMENTS)
    assert set(FORECAST_MODELS) <= set(models())
    reader = dag_factory._Reader("x.yaml")
    for text in ("1Min", "05Min", "59Min", "60Min", "0Min", "1Hour", "23Hour", "24Hour", "1Day", "2Day", "30min",
                 "Min", "1Week", "15 Min", " 15Min "):
        try:
            parse_timeframe(text)
            accepted = True
        except InvalidInputError:
            accepted = False
        try:
            dag_factory._timeframe(reader, yaml.compose(repr(text)), "timeframe")
            ours = True
        except dag_factory._Invalid:
            ours = False
        assert ours == accepted, text


def test_each_forecast_task_runs_the_registered_model_of_its_name(tmp_path):
    dags = build_dags(write(tmp_path, f"""
        desks:
          - id: m
            universe: [AAPL]
            forecast:
              schedule: "@daily"
              models: [{", ".join(FORECAST_MODELS)}]
    """))
    forecast = dags["m_forecast"]
    assert cron_of(forecast.timetable) in ("@daily", "0 0 * * *")
    for model in FORECAST_MODELS:
        assert forecast.get_task(model).build_model().name == model


# -- in a dags folder ----------------------------------------------------------------------------------------------

def test_the_example_folder_parses_with_the_yaml_desks():
    bag = dagbag(EXAMPLE_DAGS)
    assert bag.import_errors == {}
    expected = {"tech_desk_etl", "tech_desk_forecast", "tech_desk_trading", "crypto_desk_etl", "crypto_desk_trading"}
    assert expected <= set(bag.dag_ids)
    assert {d for d in bag.dag_ids if "portfolio_desks.yaml" in bag.dags[d].tags} == expected
    assert bag.dags["tech_desk_etl"].fileloc.endswith("portfolio_from_yaml.py")
    forecast = bag.dags["tech_desk_forecast"]
    assert "tech_desk_bars" in repr(forecast.timetable.asset_condition)
    assert set(forecast.task_ids) == {"ssa", "samossa", "garch", "ensemble"}
    crypto = bag.dags["crypto_desk_trading"].get_task("auto_trader")
    assert (crypto.sources, crypto.broker_conn_id, crypto.weights) == (["synthetic"], "simulated", {"technical": 1.0})


def test_a_wrong_yaml_in_a_dags_folder_is_the_dag_files_import_error(tmp_path):
    write(tmp_path, """
        desks:
          - id: tech
            universe: [AAPL]
            trading:
              weights: {technical: 0}
    """)
    (tmp_path / "from_yaml.py").write_text(
        "from pathlib import Path\n\n"
        "from airflow_provider_portfolio.dag_factory import register_dags\n\n"
        "register_dags(Path(__file__).with_name('desks.yaml'), globals())\n")
    bag = dagbag(tmp_path)
    assert bag.dag_ids == []
    (error,) = bag.import_errors.values()
    assert f"{tmp_path / 'desks.yaml'}, line 5, column 16: desks[0].trading.weights: the weights must not all be zero" \
        in error
