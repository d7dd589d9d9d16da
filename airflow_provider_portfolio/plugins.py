"""The provider's Airflow plugin: registers :class:`MarketSessionTimetable` with Airflow.

Airflow serializes a DAG's custom timetable by its import path and, in the DAG processor and the
scheduler, only accepts timetable classes that a loaded plugin lists in ``timetables``. The provider
declares this plugin in its provider info (``"plugins"``), so installing the provider is enough: no
file in ``$AIRFLOW_HOME/plugins`` is needed.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_portfolio.timetables.market_session import MarketSessionTimetable


class PortfolioPlugin(AirflowPlugin):
    """Timetables of airflow-provider-portfolio."""

    name = "portfolio"
    timetables = [MarketSessionTimetable]
