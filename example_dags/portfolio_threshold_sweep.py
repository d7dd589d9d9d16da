"""Weekly threshold sweep: which confidence threshold and minimum score would have traded best lately.

Copy this file into your dags folder; it needs no connection. On Mondays at 04:00 New York, the backtest replays the
trader's rules over the last 60 sessions of the store's daily bars (one cycle a session at 15:00, the stored
``ensemble`` forecasts and the sources' news as the trader sees them) once per point of the grid ``min_confidence``
x ``min_score`` (the params below), the current setting always one of them. The grid is mapped: each mapped task
loads the history from the store and prepares the signals once for its chunk of points. ``pick`` ranks the points by
Sharpe among those with at least 5 fills (ties toward the current setting, then the more conservative one) and stores
a ``threshold_sweep`` study (every point's metrics and the recommendation); a point is recommended only when it beats
the current setting.

Nothing changes the live settings unless you ask: trigger the DAG with ``apply`` = true (or change the default) and
the recommendation is written to Variable ``portfolio.trading_settings``, which ``AutoTraderOperator`` lays over its
own arguments. The current setting is the trader's defaults with that Variable laid over them: give these tasks the
same ``weights``/``risk_limits`` as your trader when they differ.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag
from airflow.timetables.trigger import CronTriggerTimetable

from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.tuning import (
    ApplyTradingSettingsOperator,
    ThresholdGridOperator,
    ThresholdPickOperator,
    ThresholdSweepOperator,
)
from airflow_provider_portfolio.pools import DATABASE_POOL

SESSIONS = 60


@dag(
    dag_id="portfolio_threshold_sweep",
    schedule=CronTriggerTimetable("0 4 * * 1", timezone="America/New_York"),
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=30),
                  "on_failure_callback": PortfolioNotifier()},
    params={
        "apply": Param(False, type="boolean", description="write the recommendation to portfolio.trading_settings"),
        "min_confidence": Param([0.1, 0.2, 0.3, 0.4, 0.55], type="array", items={"type": "number"},
                                description="confidence thresholds swept"),
        "min_score": Param([0.05, 0.1, 0.15, 0.2, 0.3], type="array", items={"type": "number"},
                           description="minimum |combined score| values swept"),
    },
    render_template_as_native_obj=True,
    tags=["portfolio", "studies"],
    doc_md=__doc__,
)
def portfolio_threshold_sweep():
    grid = ThresholdGridOperator(task_id="grid", confidence_grid="{{ params.min_confidence }}",
                                 score_grid="{{ params.min_score }}", chunk=5)
    sweep = ThresholdSweepOperator.partial(task_id="sweep", sessions=SESSIONS, pool=DATABASE_POOL).expand(
        points=grid.output)
    pick = ThresholdPickOperator(task_id="pick", results=sweep.output, sessions=SESSIONS, min_trades=5,
                                 pool=DATABASE_POOL)
    apply = ApplyTradingSettingsOperator(task_id="apply", kind="threshold_sweep", apply="{{ params.apply }}",
                                         pool=DATABASE_POOL)
    pick >> apply


portfolio_threshold_sweep_dag = portfolio_threshold_sweep()
