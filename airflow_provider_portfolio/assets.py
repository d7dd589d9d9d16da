"""Airflow Assets of the portfolio store, shared by producer and consumer DAGs.

The daily ETL (``portfolio_daily_etl``, or the ``daily_etl`` task of ``portfolio_master``) declares
:data:`DAILY_BARS` as an outlet; ``portfolio_forecast`` uses it as its schedule, so it runs once fresh daily bars
are in the store (no polling sensor, and a run that loaded nothing new still signals completion). The forecast's
ensemble updates :data:`FORECASTS`; the environment check and monitoring update :data:`ENVIRONMENT_REPORT` and
:data:`HEALTH_REPORT` (rows of the store's ``health_reports``), for DAGs that want to follow them. Importing this
module costs only ``airflow.sdk``.
"""

from __future__ import annotations

from airflow.sdk import Asset

#: Daily bars of the portfolio store, updated by ``portfolio_daily_etl``.
DAILY_BARS = Asset(name="portfolio_daily_bars", uri="portfolio://store/bars/1Day", group="portfolio")

#: Forecasts of the portfolio store (the ensemble of ``portfolio_forecast``), updated after each forecast run.
FORECASTS = Asset(name="portfolio_forecasts", uri="portfolio://store/forecasts/1Day", group="portfolio")

#: The day's environment report in ``health_reports``, updated by ``portfolio_env_sanity``/``portfolio_master``.
ENVIRONMENT_REPORT = Asset(name="portfolio_environment_report", uri="portfolio://store/health_reports/environment",
                           group="portfolio")

#: The latest health report in ``health_reports``, updated by ``portfolio_monitoring``/``portfolio_master``.
HEALTH_REPORT = Asset(name="portfolio_health_report", uri="portfolio://store/health_reports/monitoring",
                      group="portfolio")

#: The latest ranking of opportunities (the store's ``opportunities``), updated by ``portfolio_discovery``; the trader
#: and the rebalancer can take their universe from its top N.
OPPORTUNITIES = Asset(name="portfolio_opportunities", uri="portfolio://store/opportunities", group="portfolio")

#: The latest risk audit in ``health_reports`` (kind ``risk_audit``), updated by ``portfolio_risk_audit``.
RISK_AUDIT = Asset(name="portfolio_risk_audit", uri="portfolio://store/health_reports/risk_audit", group="portfolio")
