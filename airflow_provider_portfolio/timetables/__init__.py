"""Airflow timetables that follow exchange sessions.

Register them with Airflow through :class:`airflow_provider_portfolio.plugins.PortfolioPlugin` (the
provider declares it, so installing the provider is enough).
"""

from __future__ import annotations

from airflow_provider_portfolio.timetables.market_session import MarketSessionTimetable

__all__ = ["MarketSessionTimetable"]
