"""Airflow Assets of the portfolio store, shared by producer and consumer DAGs.

The daily ETL declares :data:`DAILY_BARS` as an outlet; downstream DAGs such as
``portfolio_forecast`` use it as their schedule, so they run once fresh daily bars are in the store
(no polling sensor, and a run that loaded nothing new still signals completion). Importing this module
costs only ``airflow.sdk``.
"""

from __future__ import annotations

from airflow.sdk import Asset

#: Daily bars of the portfolio store, updated by ``portfolio_daily_etl``.
DAILY_BARS = Asset(name="portfolio_daily_bars", uri="portfolio://store/bars/1Day", group="portfolio")
