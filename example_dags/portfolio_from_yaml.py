"""DAGs from YAML: the desks of ``portfolio_desks.yaml``, each as its ETL, forecasting and trading DAGs.

Copy this file and ``portfolio_desks.yaml`` into your dags folder; edit the YAML, not this file. The provider's
DAG factory (``airflow_provider_portfolio.dag_factory``) checks the whole file when Airflow parses this one: a
mistake (a wrong type, an unknown key, a symbol that is no ticker, weights that are all zero, an unknown model, a
bad cron, two desks with one id) shows as this file's import error, naming the YAML file, the field and the line.

Here: ``tech_desk_etl`` (weekdays 05:30 New York), ``tech_desk_forecast`` (after each run of that ETL),
``tech_desk_trading`` (each 30-minute bar of NYSE sessions), ``crypto_desk_etl`` (01:00 UTC) and
``crypto_desk_trading`` (hourly, around the clock). They need no connection: synthetic market, simulated broker.
"""

from __future__ import annotations

from pathlib import Path

from airflow_provider_portfolio.dag_factory import register_dags

register_dags(Path(__file__).with_name("portfolio_desks.yaml"), globals())
