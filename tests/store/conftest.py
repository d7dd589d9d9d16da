"""Store fixtures: a private PostgreSQL server for the session, a fresh store per test on each dialect."""

from __future__ import annotations

import itertools
import os

import pytest

from airflow_provider_portfolio.store import PortfolioStore
from tests.pgserver import INSTALL_HINT, PostgresServer, find_bindir

_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL server. Without its binaries the PostgreSQL tests fail, never skip:
    ``make test`` and ``make test-fast`` install them (``make system-deps``)."""
    if find_bindir() is None:
        pytest.fail(f"{INSTALL_HINT}; the PostgreSQL store tests need it (make system-deps)")
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def pg_url(pg_server) -> str:
    """URL of the session's PostgreSQL database (shared: tests that write should use ``fresh_pg_url``)."""
    return pg_server.url


@pytest.fixture
def fresh_pg_url(pg_server) -> str:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"store_{os.getpid()}_{next(_databases)}"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    """URL of an empty database, once per dialect."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'portfolio.db'}"
    return request.getfixturevalue("fresh_pg_url")


@pytest.fixture
def store(store_url) -> PortfolioStore:
    """An unmigrated store on an empty database, once per dialect."""
    s = PortfolioStore(store_url)
    yield s
    s.dispose()


@pytest.fixture
def migrated(store) -> PortfolioStore:
    """A migrated, empty store, once per dialect."""
    store.migrate()
    return store
