from __future__ import annotations

import pytest

from airflow_provider_portfolio.store import PortfolioStore
from tests.etl.recording import RecordingSource


@pytest.fixture
def store(tmp_path) -> PortfolioStore:
    s = PortfolioStore.for_sqlite_file(tmp_path / "store.db")
    s.migrate()
    yield s
    s.dispose()


@pytest.fixture
def source() -> RecordingSource:
    return RecordingSource()
