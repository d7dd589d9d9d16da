"""Nothing waits forever on the store: lock and statement timeouts, TCP keepalives, and how they are configured."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.store import PortfolioStore
from tests.store.helpers import make_bars


def _plain_url(url: str) -> str:
    """A psycopg (libpq) conninfo URL from a store URL."""
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def pg_store(fresh_pg_url):
    """A migrated PostgreSQL store holding 10 bars of AAPL, with a 1 s lock timeout."""
    store = PortfolioStore(fresh_pg_url, lock_timeout_s=1)
    store.migrate()
    store.upsert_bars(make_bars(["AAPL"], 10))
    yield store
    store.dispose()


@pytest.fixture
def table_lock(fresh_pg_url):
    """Hold a lock on ``bars`` from another session (as a stuck writer or a long migration would)."""
    holder = psycopg.connect(_plain_url(fresh_pg_url))

    def lock(mode: str = "SHARE ROW EXCLUSIVE") -> None:
        holder.execute(f"LOCK TABLE bars IN {mode} MODE")

    yield lock
    holder.rollback()
    holder.close()


@pytest.mark.postgres
def test_the_default_store_sets_server_timeouts_and_keepalives(fresh_pg_url):
    store = PortfolioStore(fresh_pg_url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "30s"
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "5min"
        params = conn.connection.driver_connection.info.get_parameters()
    assert params["keepalives"] == "1"
    assert (params["keepalives_idle"], params["keepalives_interval"], params["keepalives_count"]) == ("60", "10", "5")
    assert params["connect_timeout"] == "10"
    store.dispose()


@pytest.mark.postgres
def test_a_write_gives_up_after_the_lock_timeout_with_a_clear_store_error(pg_store, table_lock):
    changed = make_bars(["AAPL"], 10, seed=1)
    table_lock()
    began = time.monotonic()
    with pytest.raises(StoreError) as info:
        pg_store.upsert_bars(changed)
    waited = time.monotonic() - began
    assert 0.9 <= waited < 10
    message = str(info.value)
    assert message.startswith(f"store {pg_store.url}: could not upsert bars")
    assert "lock timeout" in message and "lock_timeout_s=1" in message
    assert "another session" in message


@pytest.mark.postgres
def test_the_store_works_again_once_the_lock_is_released(pg_store, fresh_pg_url):
    holder = psycopg.connect(_plain_url(fresh_pg_url))
    holder.execute("LOCK TABLE bars IN SHARE ROW EXCLUSIVE MODE")
    with pytest.raises(StoreError, match="lock timeout"):
        pg_store.upsert_bars(make_bars(["AAPL"], 10, seed=2))
    holder.rollback()
    holder.close()
    assert pg_store.upsert_bars(make_bars(["AAPL"], 10, seed=2)) == 10


@pytest.mark.postgres
def test_a_row_lock_also_times_out(pg_store, fresh_pg_url):
    holder = psycopg.connect(_plain_url(fresh_pg_url))
    holder.execute("SELECT * FROM bars WHERE symbol = 'AAPL' FOR UPDATE")
    try:
        with pytest.raises(StoreError, match="lock timeout"):
            pg_store.upsert_bars(make_bars(["AAPL"], 10, seed=3))
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.postgres
def test_a_statement_that_runs_too_long_is_cancelled(fresh_pg_url, table_lock):
    store = PortfolioStore(fresh_pg_url, lock_timeout_s=0, statement_timeout_s=1)  # 0: no lock timeout
    store.migrate()
    table_lock("ACCESS EXCLUSIVE")
    began = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.count_bars()
    assert time.monotonic() - began < 10
    assert "statement timeout" in str(info.value) and "statement_timeout_s=1" in str(info.value)
    store.dispose()


@pytest.mark.postgres
def test_options_of_the_url_are_kept(fresh_pg_url):
    store = PortfolioStore(fresh_pg_url + "?options=-c%20application_name%3Ddesk", lock_timeout_s=2)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW application_name").scalar() == "desk"
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "2s"
    store.dispose()


@pytest.mark.parametrize(
    "kwargs",
    [{"lock_timeout_s": -1}, {"statement_timeout_s": "abc"}, {"connect_timeout_s": 0},
     {"keepalives_idle_s": True}, {"lock_timeout_s": float("nan")}],
)
def test_bad_timeouts_are_refused(kwargs):
    with pytest.raises(InvalidInputError, match=next(iter(kwargs))):
        PortfolioStore("postgresql://desk@db/portfolio", **kwargs)


def test_the_hook_passes_the_configured_timeouts(monkeypatch, tmp_path):
    from airflow_provider_portfolio.hooks.store import PortfolioStoreHook

    monkeypatch.setenv("AIRFLOW_CONN_PG_DESK", json.dumps(
        {"conn_type": "postgres", "host": "db", "login": "desk", "schema": "portfolio",
         "extra": {"statement_timeout": 600}}))
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__STORE_LOCK_TIMEOUT", "5")
    options = PortfolioStoreHook(store_conn_id="pg_desk").store_options
    assert options == {"lock_timeout_s": 5.0, "statement_timeout_s": 600.0, "connect_timeout_s": 10.0,
                       "keepalives_idle_s": 60.0}  # the connection's extra wins over the configuration
    store = PortfolioStore("postgresql://desk@db/portfolio", **options)
    assert (store.lock_timeout_s, store.statement_timeout_s) == (5.0, 600.0)

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    embedded = PortfolioStoreHook().store_options  # SQLite: the lock timeout is its busy timeout
    assert embedded == {"busy_timeout_s": 5.0}


def test_a_bad_configured_timeout_names_the_option(monkeypatch, tmp_path):
    from airflow_provider_portfolio.hooks.store import PortfolioStoreHook

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__STORE_STATEMENT_TIMEOUT", "five minutes")
    with pytest.raises(InvalidInputError, match=r"\[portfolio\] store_statement_timeout"):
        PortfolioStoreHook().store_options


def test_a_bad_timeout_in_the_connection_extra_names_the_connection(monkeypatch):
    from airflow_provider_portfolio.hooks.store import PortfolioStoreHook

    monkeypatch.setenv("AIRFLOW_CONN_PG_DESK", json.dumps(
        {"conn_type": "postgres", "host": "db", "extra": {"lock_timeout": "-3"}}))
    with pytest.raises(InvalidInputError, match="pg_desk.*lock_timeout"):
        PortfolioStoreHook(store_conn_id="pg_desk").store_options
