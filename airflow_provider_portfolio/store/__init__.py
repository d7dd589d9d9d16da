"""Domain: the portfolio store on SQLAlchemy Core (SQLite or PostgreSQL). Never imports Airflow."""

from __future__ import annotations

from airflow_provider_portfolio.store.repository import PortfolioStore

__all__ = ["PortfolioStore"]
