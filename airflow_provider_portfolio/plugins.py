"""The provider's Airflow plugin: registers :class:`MarketSessionTimetable` and the Portfolio page with Airflow.

Airflow serializes a DAG's custom timetable by its import path and, in the DAG processor and the
scheduler, only accepts timetable classes that a loaded plugin lists in ``timetables``. The provider
declares this plugin in its provider info (``"plugins"``), so installing the provider is enough: no
file in ``$AIRFLOW_HOME/plugins`` is needed.

The Portfolio page (:mod:`airflow_provider_portfolio.ui`) is a FastAPI app the api-server mounts at ``/portfolio``
(``fastapi_apps``) and an entry "Portfolio" in the UI's Browse menu that shows it inside the UI (``external_views``,
at ``/plugin/portfolio``). Every process that loads plugins (scheduler, DAG processor, workers) reads ``timetables``;
only the api-server reads ``fastapi_apps``, so the app (FastAPI, Airflow's API security) is imported when it is read,
not when this module is.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_portfolio.timetables.market_session import MarketSessionTimetable

#: Where the api-server mounts the Portfolio app.
PORTFOLIO_URL_PREFIX = "/portfolio"


class PortfolioPlugin(AirflowPlugin):
    """Timetables and the Portfolio page of airflow-provider-portfolio."""

    name = "portfolio"
    timetables = [MarketSessionTimetable]
    external_views = [{
        "name": "Portfolio",
        "href": PORTFOLIO_URL_PREFIX.lstrip("/") + "/",  # relative to the UI's base URL
        "url_route": "portfolio",  # shown inside the UI (an iframe at /plugin/portfolio), not in a new tab
        "destination": "nav",
        "category": "browse",
    }]

    @property  # type: ignore[override]  # a list read on an instance, as Airflow reads every plugin attribute
    def fastapi_apps(self) -> list[dict[str, Any]]:
        """The Portfolio app, imported on first read (the api-server's)."""
        from airflow_provider_portfolio.ui.app import app

        return [{"app": app, "url_prefix": PORTFOLIO_URL_PREFIX, "name": "Portfolio"}]
