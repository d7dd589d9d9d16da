"""Portfolio auto trader: every 30 minutes, 07:00-19:30 New York on weekdays, trading in NYSE hours.

Copy this file into your dags folder; it needs no connection. ``MarketHoursSensor`` skips the run when the
NYSE is closed (before 09:30, after 16:00, weekends, holidays, early closes), so the 07:00 and evening runs
of the cron-era schedule cost one cheap task. Then ``AutoTraderOperator`` runs one trading cycle on
30-minute bars, mapped over chunks of the universe: forecast first (the stored ensemble forecasts of
``portfolio_forecast``, used only where the model is healthy), then technical, then sentiment.

Chunks take turns on the account (the cycle holds the account's lock) so each chunk's risk check sees the
orders of the chunks before it (daily order counts, buying power); ``max_active_tis_per_dagrun=1`` keeps them
from waiting on each other. A failing chunk does not stop the others, and its retry never doubles an order. ``max_active_runs=1``, and each bar is decided once (``bar_aware``).

Without a broker connection it trades the simulated broker (its book is in the portfolio store); add an
``alpaca_default`` connection (paper) to trade Alpaca paper. Live trading needs a live connection AND
``allow_live=True`` below. Stop trading at once with Variable ``portfolio.kill_switch`` = ``halted`` (or
``reduce_only``). The universe comes from Variable ``portfolio.default_tickers`` (a JSON list or
comma-separated; unset: the list below), read by the ``universe`` task when the run starts, never at parse time;
the run's param ``exchange`` picks the calendar the sensor watches.

Before trading, ``desk_gate`` reads the store: it skips the cycle (reason in its log and XCom) when today's
environment check (``portfolio_env_sanity`` or ``portfolio_master``) failed, when the latest health report
(``portfolio_monitoring``) is RED, or when the universe's daily bars are stale (a closed session missing past
its due time). A report that does not exist at all only logs here (``require=[]``), so this DAG also runs alone;
with the master and monitoring deployed, remove ``require=[]`` to trade only when every check vouches for the
desk. A cycle not done within 5 minutes of its run's start notifies (a deadline alert, with ``[portfolio]
deadline_alerts = True``), as does a failed task.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from airflow_provider_portfolio.notifications import PortfolioNotifier, configured_deadline, trader_cycle_deadline
from airflow_provider_portfolio.operators.monitoring import DeskGateOperator, desk_symbols
from airflow_provider_portfolio.operators.trading import AutoTraderOperator
from airflow_provider_portfolio.pools import TRADING_POOL
from airflow_provider_portfolio.sensors.market_hours import MarketHoursSensor
from airflow_provider_portfolio.variables import DEFAULT_TICKERS

#: The universe when Variable ``portfolio.default_tickers`` is not set.
UNIVERSE = list(DEFAULT_TICKERS)
CHUNK = 6


def universe_chunks(chunk: int = CHUNK) -> list[list[str]]:
    """Variable ``portfolio.default_tickers`` (a JSON list or comma-separated; unset: :data:`UNIVERSE`), checked,
    in chunks of ``chunk`` symbols: one mapped cycle each."""
    symbols = desk_symbols(None)
    return [symbols[i:i + chunk] for i in range(0, len(symbols), chunk)]


@dag(
    dag_id="portfolio_auto_trader",
    schedule=CronTriggerTimetable("*/30 7-19 * * 1-5", timezone="America/New_York"),
    start_date=pendulum.datetime(2024, 1, 2, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    # A stuck cycle fails well before the next run is due (every 30 minutes); its retry never doubles an order.
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "execution_timeout": timedelta(minutes=15),
                  "on_failure_callback": PortfolioNotifier()},
    deadline=configured_deadline(trader_cycle_deadline),
    params={"exchange": Param("XNYS", type="string", description="calendar the market-hours sensor watches")},
    tags=["portfolio", "example", "trading"],
    doc_md=__doc__,
)
def portfolio_auto_trader():
    market_open = MarketHoursSensor(task_id="market_hours", exchange="{{ params.exchange }}", when_closed="skip")
    # The gate judges the universe's daily bars on [portfolio] default_exchange (crypto pairs on 24/7).
    desk_gate = DeskGateOperator(task_id="desk_gate", require=[])
    universe = task(universe_chunks, task_id="universe")()
    AutoTraderOperator.partial(
        task_id="auto_trader",
        timeframe="30Min",
        risk_limits={"max_order_notional": 10_000, "max_position_fraction": 0.10, "max_open_positions": 20,
                     "daily_loss_limit": 0.03, "min_confidence": 0.25},
        max_trades_per_day=40,
        max_active_tis_per_dagrun=1,
        pool=TRADING_POOL,
    ).expand(symbols=universe)
    market_open >> desk_gate >> universe


portfolio_auto_trader_dag = portfolio_auto_trader()
