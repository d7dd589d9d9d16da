"""Daily risk audit: the book against its limits, after each session's close, GREEN / YELLOW / RED.

Copy this file (with ``portfolio_daily_etl.py``) into your dags folder; it needs no connection. It is scheduled on
the Asset ``portfolio_daily_bars``: each successful daily ETL (05:15 New York, loading the session that closed the
evening before) starts one audit, so the book is valued at the official closes of the session just ended, not at
a day-old bar as an audit at 16:30 would be before the morning ETL. Trigger it by hand to audit the book now.

``RiskAuditOperator`` audits the auto trader's account (``alpaca:alpaca_default`` when that connection exists,
else the simulated book ``simulated:default``): each position's share of equity against ``max_position_fraction``,
equities and crypto against their asset-class limits, gross and net exposure, leverage, open positions, the
drawdown from the equity curve's peak, the last session's loss against ``daily_loss_limit``, and the orders risk
rejected, by rule. The limits are the trader's: keep ``RISK_LIMITS`` below equal to ``portfolio_auto_trader``'s
``risk_limits`` (Variable ``portfolio.trading_settings`` lays a tuning study's limits over both alike).

Each audit is a row of the store's ``health_reports`` (kind ``risk_audit``) and updates the Asset
``portfolio_risk_audit``. A breach (RED) notifies through ``[portfolio] notify_*`` (SMTP, Slack; else the log);
the task still succeeds, the report is the finding. A failed task notifies too. No trades yet is not a failure:
a book of cash only is GREEN, an account the trader has not opened yet is YELLOW "no book yet".
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag

from airflow_provider_portfolio.assets import DAILY_BARS, RISK_AUDIT
from airflow_provider_portfolio.notifications import PortfolioNotifier
from airflow_provider_portfolio.operators.audit import RiskAuditOperator
from airflow_provider_portfolio.pools import DATABASE_POOL

#: The trader's limits: the same as ``risk_limits`` in ``portfolio_auto_trader``.
RISK_LIMITS = {"max_order_notional": 10_000, "max_position_fraction": 0.10, "max_open_positions": 20,
               "daily_loss_limit": 0.03, "min_confidence": 0.25}


@dag(
    dag_id="portfolio_risk_audit",
    schedule=[DAILY_BARS],
    start_date=pendulum.datetime(2024, 1, 1, tz="America/New_York"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(minutes=10),
                  "on_failure_callback": PortfolioNotifier()},
    tags=["portfolio", "risk"],
    doc_md=__doc__,
)
def portfolio_risk_audit():
    RiskAuditOperator(
        task_id="risk_audit",
        risk_limits=RISK_LIMITS,
        # equities may take the whole equity (a cash book), crypto pairs together a quarter of it
        asset_class_limits={"equity": 1.0, "crypto": 0.25},
        pool=DATABASE_POOL,
        outlets=[RISK_AUDIT],
    )


portfolio_risk_audit_dag = portfolio_risk_audit()
