"""Per-asset trading agents: one DAG per symbol, one task per step of the trading cycle.

:func:`trading_agent_dag` builds the pipeline the cron-era agents ran as one script::

    check_market_hours >> fetch_market_data >> [analyze_sentiment, analyze_technical]
        >> make_decision >> validate_risk >> execute_trade >> log_performance

(the task ids of the cron-era pipeline, so runbooks such as ``airflow tasks test agent_tsla_trading
analyze_sentiment`` keep working). Each step is a ``@task`` over the provider's domain functions
(``trading.cycle``, ``trading.signals``), so every step has its own log, retries and duration in the UI, and
what a step decided is in the store before the next one starts. Data passes through the store, not XCom:
``fetch_market_data`` writes the symbol's closed bars (past the quality gate) to the store and passes on a
small summary (their range, the one bar in progress whose open fills orders, why bars are missing);
``analyze_technical`` and ``make_decision`` read the bars back; ``analyze_sentiment`` fetches the news where it
is used; ``make_decision`` asks for the latest quote, with a real broker, where a source has quotes. The steps
are those of :func:`airflow_provider_portfolio.trading.cycle.run_cycle`, with
the same guarantees: a bar is decided once (``bar_aware``), a retried task carries out the stored decision,
an order is sent at most once per client order id. The default weights are the agents' 60% sentiment and
40% technical.

``check_market_hours`` skips the run (and so every later step) when the symbol's market is closed at the
cycle's instant: the run's ``data_interval_end`` with the simulated broker (replays and back-fills decide
as they would have), the wall clock with Alpaca.

Nothing heavy is imported when a DAG file using this module is parsed: pandas, NumPy and the brokers load
inside the tasks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import dag, get_current_context, task

try:  # Airflow >= 3.2
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowSkipException



#: How long one agent task may run by default (a cycle waits up to 2 minutes for its account's lock).
TASK_TIMEOUT = timedelta(minutes=10)


def _default_args(given: Mapping[str, Any] | None) -> dict[str, Any]:
    args = dict(given or {"retries": 2, "retry_delay": timedelta(seconds=30)})
    args.setdefault("execution_timeout", TASK_TIMEOUT)
    return args


class _Agent:
    """What every step needs: the settings and how to open the store, the ledger and the broker."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    def store(self) -> Any:
        """The portfolio store (migrated)."""
        from airflow_provider_portfolio.hooks.store import PortfolioStoreHook

        return PortfolioStoreHook(store_conn_id=self.config["store_conn_id"]).get_conn()

    def open(self) -> tuple[Any, Any, Any]:
        """(store, ledger, broker)."""
        import logging

        from airflow_provider_portfolio.operators.trading import resolve_broker
        from airflow_provider_portfolio.store.ledger import TradingLedger

        store = self.store()
        ledger = TradingLedger(store)
        broker = resolve_broker(self.config["broker_conn_id"], ledger, allow_live=self.config["allow_live"],
                                simulated=self.config["simulated"], log=logging.getLogger("airflow.task"))
        return store, ledger, broker

    def settings(self) -> Any:
        import logging

        from airflow_provider_portfolio.operators.trading import cycle_settings
        from airflow_provider_portfolio.trading.decision import AGENT_WEIGHTS

        c = self.config
        return cycle_settings(timeframe=c["timeframe"], weights=c["weights"] or AGENT_WEIGHTS, risk_limits=c["risk_limits"],
                              max_trades_per_day=c["max_trades_per_day"], exchange=c["exchange"],
                              log=logging.getLogger("airflow.task"), bar_aware=True, min_score=c["min_score"],
                              sizing=c["sizing"], fraction=c["fraction"])

    def lock(self, ledger: Any, broker: Any, settings: Any) -> Any:
        """The account's lock, held by each step that reads the account or sends orders."""
        ids = self.ids()
        return ledger.account_lock(broker.account, owner=f"{ids['dag_id']}/{ids['run_id']}",
                                   timeout_s=settings.lock_timeout_s)

    @contextlib.contextmanager
    def this_run(self, settings: Any) -> Iterator[tuple[Any, Any, dict[str, str], dict[str, dict[str, Any]]]]:
        """Holding the account's lock: (ledger, broker, the run's ids, this run's stored decisions by symbol,
        read under the lock)."""
        _, ledger, broker = self.open()
        ids = self.ids()
        with self.lock(ledger, broker, settings):
            yield ledger, broker, ids, {d["symbol"]: d for d in ledger.decisions(**ids)}

    def sources(self, settings: Any) -> list[Any]:
        """The market-data sources of the agent, resolved (connection ids through their hooks)."""
        from airflow_provider_portfolio.hooks.market_data import data_sources

        return data_sources(self.config["sources"], exchange=settings.exchange)

    def stored_bars(self, data: Mapping[str, Any], store: Any = None) -> Any:
        """The closed bars ``fetch_market_data`` stored for this run (the store's rows of its range).

        :param store: the store when the caller has it open (else it is opened here, without a broker).
        """
        from airflow_provider_portfolio.market.bars import empty_bars

        if not data["bars"]:
            return empty_bars()
        return (store or self.store()).read_bars([self.config["symbol"]], self.config["timeframe"], data["first_bar"],
                               data["last_bar"])

    def decide(self, data: Mapping[str, Any], technical: Mapping[str, Any],
               sentiment: Mapping[str, Any]) -> dict[str, Any]:
        """``make_decision``: the signals combined, the target sized (at the latest quote, with a real broker,
        where a source has one; else the last close), the decision claimed for the bar, under the account's lock.

        :param data: ``fetch_market_data``'s summary.
        :param technical: ``analyze_technical``'s signal.
        :param sentiment: ``analyze_sentiment``'s signal.
        :raises AirflowSkipException: when another run already decided the bar.
        """
        from datetime import datetime

        import pandas as pd

        from airflow_provider_portfolio.market.sources import fetch_quotes
        from airflow_provider_portfolio.trading.cycle import CycleReport, decide_step

        symbol = self.config["symbol"]
        store, ledger, broker = self.open()
        report = CycleReport()
        settings = self.settings()
        bars = pd.concat([self.stored_bars(data, store), _bars_frame(data["forming"])], ignore_index=True)
        quotes = fetch_quotes(self.sources(settings), [symbol])[0] if broker.kind != "simulated" else None
        with self.lock(ledger, broker, settings):
            mine = decide_step([symbol], bars, datetime.fromisoformat(data["now"]), broker=broker, ledger=ledger,
                               **self.ids(), settings=settings, report=report,
                               signals={"technical": _signal(technical), "sentiment": _signal(sentiment)},
                               missing=data["missing"], quotes=quotes)
        if symbol not in mine:
            raise AirflowSkipException(f"{symbol}: the bar was already decided by another run")
        return {**_decision_view(mine[symbol]), "start_of_day_equity": report.start_of_day_equity}

    def ids(self) -> dict[str, str]:
        run = get_current_context()["dag_run"]
        return {"dag_id": run.dag_id, "run_id": run.run_id}


def _bars_frame(records: list[dict[str, Any]]) -> Any:
    import pandas as pd

    from airflow_provider_portfolio.market.bars import empty_bars

    if not records:
        return empty_bars()
    frame = pd.DataFrame.from_records(records)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ns")
    return frame


def _signal_dict(signal: Any) -> dict[str, Any]:
    return {"name": signal.name, "score": [float(x) for x in signal.score],
            "confidence": [float(x) for x in signal.confidence], "reason": list(signal.reason)}


def _signal(data: Mapping[str, Any]) -> Any:
    import numpy as np

    from airflow_provider_portfolio.trading.signals import Signal

    return Signal(data["name"], np.asarray(data["score"], dtype=float), np.asarray(data["confidence"], dtype=float),
                  list(data["reason"]))


def _decision_view(d: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("symbol", "action", "score", "confidence", "price", "current_qty", "target_qty", "order_qty", "reason",
            "error", "approved", "risk_rule", "risk_reason", "client_order_id")
    out = {k: d.get(k) for k in keys}
    out["bar_ts"] = d["bar_ts"].isoformat()
    return out


def trading_agent_dag(
    *,
    dag_id: str,
    symbol: str,
    schedule: Any,
    start_date: Any,
    timeframe: str,
    weights: Mapping[str, float] | None = None,
    broker_conn_id: str | None = None,
    sources: list[str] | None = None,
    store_conn_id: str | None = None,
    exchange: str | None = None,
    risk_limits: Mapping[str, Any] | None = None,
    max_trades_per_day: int | None = None,
    sizing: str = "fixed_fraction",
    fraction: float = 0.05,
    min_score: float = 0.1,
    allow_live: bool = False,
    simulated: Mapping[str, Any] | None = None,
    tags: list[str] | None = None,
    doc_md: str | None = None,
    default_args: Mapping[str, Any] | None = None,
) -> Any:
    """Build the trading agent DAG of one symbol (see the module docstring).

    :param dag_id: the DAG id (part of every client order id).
    :param symbol: the ticker or crypto pair traded.
    :param schedule: the DAG's schedule (a cron timetable, a ``MarketSessionTimetable``...).
    :param start_date: the DAG's start date.
    :param timeframe: the bars decided on (``5Min``, ``1Hour``...).
    :param weights: signal weights (``sentiment``, ``technical``); default
        :data:`airflow_provider_portfolio.trading.decision.AGENT_WEIGHTS` (read in the tasks: it imports NumPy).
    :param broker_conn_id: Alpaca connection, ``"simulated"`` or ``None`` (``alpaca_default`` if it exists,
        else the simulated broker).
    :param sources: market-data sources (``"synthetic"`` or connection ids); default the default data
        connections that exist, else the synthetic market.
    :param store_conn_id: the store connection; default ``[portfolio] store_conn_id``.
    :param exchange: calendar of equities; default ``[portfolio] default_exchange``.
    :param risk_limits: ``RiskLimits`` fields (missing ones keep their defaults).
    :param max_trades_per_day: the most orders per trading day.
    :param sizing: ``fixed_fraction`` or ``volatility``.
    :param fraction: target position as a fraction of equity at full score.
    :param min_score: the smallest |combined score| traded.
    :param allow_live: allow a live Alpaca account.
    :param simulated: the simulated broker's settings (``name``, ``initial_cash``, ``slippage_bps``,
        ``commission_bps``); each agent keeps its own book, named after the DAG, unless ``name`` says otherwise.
    :param tags: DAG tags.
    :param doc_md: DAG documentation.
    :param default_args: DAG default arguments (default: 2 retries 30 s apart); every task gets an
        ``execution_timeout`` (default :data:`TASK_TIMEOUT`) unless these give one: nothing waits forever.
    """
    agent = _Agent({
        "symbol": symbol, "timeframe": timeframe, "weights": dict(weights) if weights else None,
        "broker_conn_id": broker_conn_id, "sources": sources, "store_conn_id": store_conn_id,
        "exchange": exchange, "risk_limits": dict(risk_limits or {}), "max_trades_per_day": max_trades_per_day,
        "sizing": sizing, "fraction": fraction, "min_score": min_score, "allow_live": allow_live,
        "simulated": {"name": dag_id, **dict(simulated or {})},
    })

    @dag(dag_id=dag_id, schedule=schedule, start_date=start_date, catchup=False, max_active_runs=1,
         tags=tags or ["portfolio", "example", "agent"], doc_md=doc_md,
         default_args=_default_args(default_args))
    def agent_dag() -> None:
        @task
        def check_market_hours() -> dict[str, Any]:
            """The cycle's instant; skip the run when the symbol's market is closed then."""
            from airflow_provider_portfolio.market.windows import window_state
            from airflow_provider_portfolio.operators.trading import cycle_instant

            _, _, broker = agent.open()
            now = cycle_instant(get_current_context(), broker)
            state = window_state(symbol, now, exchange=agent.settings().exchange)
            if not state.is_open:
                raise AirflowSkipException(state.reason)
            return {"now": now.isoformat(), "calendar": state.calendar}

        @task
        def fetch_market_data(market: dict[str, Any]) -> dict[str, Any]:
            """The symbol's bars of the look-back: the closed ones pass the quality gate into the store (the
            next steps read them there); the bar in progress, whose open fills orders, is the one bar passed on."""
            from datetime import datetime

            from airflow_provider_portfolio.market.timing import closed_bars, started_bars
            from airflow_provider_portfolio.trading.cycle import gate_bars
            from airflow_provider_portfolio.trading.session import fetch_inputs

            settings = agent.settings()
            now = datetime.fromisoformat(market["now"])
            store = agent.store()
            inputs = fetch_inputs(agent.sources(settings), [symbol], now, settings, news=False)
            started = started_bars(inputs.bars, now, settings.exchange)  # a daily bar starts at its session's open
            closed = closed_bars(started, now, timeframe, settings.exchange)
            forming = started[started["ts"] > closed["ts"].max()] if not closed.empty else started
            gated, refused = gate_bars(closed, settings)
            stored = store.upsert_bars(gated) if not gated.empty else 0
            return {"now": market["now"], "stored": stored, "bars": len(gated),
                    "first_bar": gated["ts"].min().isoformat() if len(gated) else None,
                    "last_bar": gated["ts"].max().isoformat() if len(gated) else None,
                    "forming": forming.assign(ts=forming["ts"].map(lambda t: t.isoformat())).to_dict("records"),
                    "missing": {**inputs.missing, **refused}}

        @task
        def analyze_technical(data: dict[str, Any]) -> dict[str, Any]:
            """Moving-average crossover, RSI, MACD, Bollinger and momentum on the stored closed bars."""
            from airflow_provider_portfolio.trading.panels import panels_of
            from airflow_provider_portfolio.trading.settings import LOOKBACK_BARS
            from airflow_provider_portfolio.trading.signals import technical_signal

            panel = panels_of(agent.stored_bars(data), [symbol], LOOKBACK_BARS)
            return _signal_dict(technical_signal(panel["close"], high=panel["high"], low=panel["low"]))

        @task
        def analyze_sentiment(data: dict[str, Any]) -> dict[str, Any]:
            """News sentiment, decayed by age (the news is fetched here, where it is used)."""
            import logging
            from datetime import datetime

            from airflow_provider_portfolio.market.sources import fetch_news
            from airflow_provider_portfolio.trading.settings import news_window
            from airflow_provider_portfolio.trading.signals import sentiment_signal

            settings = agent.settings()
            now = datetime.fromisoformat(data["now"])
            news, why = fetch_news(agent.sources(settings), [symbol], *news_window(now, settings.news_half_life_hours))
            if why:
                logging.getLogger("airflow.task").info("No news (%s): sentiment carries no confidence", why)
            return _signal_dict(sentiment_signal([symbol], news, now, settings.news_half_life_hours))

        @task
        def make_decision(data: dict[str, Any], technical: dict[str, Any], sentiment: dict[str, Any]) -> dict[str, Any]:
            """Combine the signals, size the target (at the latest quote where a source has one, with a real
            broker), and claim the decision for the bar."""
            return agent.decide(data, technical, sentiment)

        @task
        def validate_risk(decided: dict[str, Any], market: dict[str, Any]) -> dict[str, Any]:
            """Check the order against the risk limits and the kill switch; store the verdict."""
            from datetime import datetime

            from airflow_provider_portfolio.trading.cycle import CycleReport, risk_step

            report = CycleReport(start_of_day_equity=decided.get("start_of_day_equity"))
            settings = agent.settings()
            with agent.this_run(settings) as (ledger, broker, ids, mine):
                risk_step(mine, datetime.fromisoformat(market["now"]), broker=broker, ledger=ledger, **ids,
                          settings=settings, report=report)
            return {**_decision_view(mine[symbol]), "start_of_day_equity": report.start_of_day_equity}

        @task
        def execute_trade(verdict: dict[str, Any], market: dict[str, Any]) -> dict[str, Any]:
            """Send the approved order at most once; fail (for a retry) when its outcome is unknown."""
            from datetime import datetime

            from airflow_provider_portfolio.exceptions import PortfolioError
            from airflow_provider_portfolio.trading.cycle import CycleReport, execute_step

            report = CycleReport(start_of_day_equity=verdict.get("start_of_day_equity"))
            settings = agent.settings()  # the kill switch is read again right before sending
            with agent.this_run(settings) as (ledger, broker, ids, mine):
                execute_step(mine, datetime.fromisoformat(market["now"]), broker=broker, ledger=ledger, **ids,
                             report=report, settings=settings)
            if report.unknown:
                raise PortfolioError(f"order in an unknown state: {report.unknown}; the retry looks it up first")
            cid = mine[symbol].get("client_order_id")
            order = ledger.order(broker.account, cid) if cid else None
            d = mine[symbol]
            return {"action": d["action"], "approved": d["approved"], "client_order_id": cid,
                    "status": order["status"] if order else None,
                    "reason": (order or {}).get("reason") or d["risk_reason"] or d["reason"]}

        @task(trigger_rule="none_failed_min_one_success")
        def log_performance(market: dict[str, Any]) -> dict[str, Any]:
            """Write the performance snapshot: cash, positions value, equity."""
            import logging
            from datetime import datetime

            _, ledger, broker = agent.open()
            snapshot = broker.snapshot(datetime.fromisoformat(market["now"]), agent.ids()["run_id"])
            logging.getLogger("airflow.task").info("%s equity %.2f (cash %.2f, positions %.2f)", broker.account,
                                                 snapshot["equity"], snapshot["cash"], snapshot["positions_value"])
            return snapshot

        market = check_market_hours()
        data = fetch_market_data(market)
        decided = make_decision(data, analyze_technical(data), analyze_sentiment(data))
        verdict = validate_risk(decided, market)
        done = execute_trade(verdict, market)
        performance = log_performance(market)
        done >> performance

    return agent_dag()
