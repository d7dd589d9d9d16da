"""Fixtures of the desk's tests: a migrated SQLite store."""

from __future__ import annotations

import pytest

from airflow_provider_portfolio.store import PortfolioStore


@pytest.fixture
def store(tmp_path) -> PortfolioStore:
    s = PortfolioStore.for_sqlite_file(tmp_path / "portfolio.db")
    s.migrate()
    yield s
    s.dispose()
