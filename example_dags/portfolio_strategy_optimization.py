"""Weekly (and on demand) walk-forward optimisation of the trader's signal weights and risk parameters.

Copy this file into your dags folder; it needs no connection. On Saturdays at 06:00 New York (or triggered with
your own params), ``plan`` draws 24 candidates (seeded) from the search space (signal weights, ``min_confidence``,
``min_score``, ``max_position_fraction``), the current setting always one of them, and cuts the last 120 sessions
of the store's daily bars into walk-forward splits: train on 40 cycles, test on the next 20. ``split`` is mapped, one
task per split: it loads that split's history from the store, prepares the backtest once and runs every candidate on
the train window and on the test window. ``pick`` takes each split's in-sample best, reports its in- and
out-of-sample Sharpe side by side, flags overfitting (out of sample keeps under half the in-sample score), and
ranks those picks and the current setting by mean out-of-sample Sharpe: the out-of-sample score decides, and
nothing is recommended unless it beats the current setting out of sample. The result is a
``strategy_optimization`` study in the store.

Nothing changes the live settings unless you ask: trigger with ``apply`` = true and the recommendation is written to
Variable ``portfolio.trading_settings``, which ``AutoTraderOperator`` lays over its own arguments.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag
from airflow.timetables.trigger import CronTriggerTimetable

from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.tuning import (
    DEFAULT_SPACE,
    ApplyTradingSettingsOperator,
    WalkForwardPickOperator,
    WalkForwardPlanOperator,
    WalkForwardSplitOperator,
)
from airflow_provider_portfolio.pools import DATABASE_POOL


@dag(
    dag_id="portfolio_strategy_optimization",
    schedule=CronTriggerTimetable("0 6 * * 6", timezone="America/New_York"),
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=30),
                  "on_failure_callback": PortfolioNotifier()},
    params={
        "apply": Param(False, type="boolean", description="write the recommendation to portfolio.trading_settings"),
        "space": Param(DEFAULT_SPACE, type="object", description="setting -> values searched"),
        "sample": Param(24, type=["integer", "null"], description="candidates drawn from the space (null: all)"),
        "seed": Param(0, type="integer", description="the sample's seed"),
        "sessions": Param(120, type="integer", minimum=4, description="cycles of history"),
        "train": Param(40, type="integer", minimum=2, description="cycles of each train window"),
        "test": Param(20, type="integer", minimum=2, description="cycles of each test window"),
    },
    render_template_as_native_obj=True,
    tags=["portfolio", "studies"],
    doc_md=__doc__,
)
def portfolio_strategy_optimization():
    plan = WalkForwardPlanOperator(task_id="plan", space="{{ params.space }}", sample="{{ params.sample }}",
                                   seed="{{ params.seed }}", sessions="{{ params.sessions }}",
                                   train="{{ params.train }}", test="{{ params.test }}")
    split = WalkForwardSplitOperator.partial(task_id="split", pool=DATABASE_POOL).expand_kwargs(plan.output)
    pick = WalkForwardPickOperator(task_id="pick", results=split.output, min_trades=5, pool=DATABASE_POOL)
    apply = ApplyTradingSettingsOperator(task_id="apply", kind="strategy_optimization", apply="{{ params.apply }}",
                                         pool=DATABASE_POOL)
    pick >> apply


portfolio_strategy_optimization_dag = portfolio_strategy_optimization()
