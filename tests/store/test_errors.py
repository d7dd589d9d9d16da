"""Failures surface as StoreError naming the store by its password-hidden URL, never leaking secrets."""

from __future__ import annotations

import socket
import sqlite3
import time

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.store import PortfolioStore
from tests.store.helpers import make_bars

SECRET = "s3cr3t-Pa55word"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed as soon as the block ends: nothing listens there


def _no_secret(err: BaseException) -> None:
    seen = []
    while err is not None:
        seen.append(str(err))
        err = err.__cause__ or err.__context__
    assert all(SECRET not in text for text in seen)


def test_unreachable_postgres_port(tmp_path):
    port = _closed_port()
    store = PortfolioStore(f"postgresql://desk:{SECRET}@127.0.0.1:{port}/portfolio")
    with pytest.raises(StoreError) as info:
        store.migrate()
    message = str(info.value)
    assert f"postgresql+psycopg://desk:***@127.0.0.1:{port}/portfolio" in message
    assert "refused" in message.lower() or "connect" in message.lower()
    _no_secret(info.value)


@pytest.mark.postgres
def test_wrong_password_never_shows_the_password(pg_server):
    pg_server.create_password_user("pwuser", "right-one")
    good = PortfolioStore(f"postgresql://pwuser:right-one@127.0.0.1:{pg_server.port}/{pg_server.database}")
    assert good.schema_version() >= 0
    good.dispose()
    bad = PortfolioStore(f"postgresql://pwuser:{SECRET}@127.0.0.1:{pg_server.port}/{pg_server.database}")
    with pytest.raises(StoreError, match="password authentication failed") as info:
        bad.count_bars()
    assert f"pwuser:***@127.0.0.1:{pg_server.port}" in str(info.value)
    _no_secret(info.value)


def test_a_file_that_is_not_a_database(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite, just text\n" * 200)
    store = PortfolioStore.for_sqlite_file(garbage)
    for call in (store.migrate, store.schema_version, store.count_bars):
        with pytest.raises(StoreError, match="not a database") as info:
            call()
        assert str(garbage) in str(info.value)


def test_a_locked_database_beyond_the_busy_timeout(tmp_path):
    path = tmp_path / "locked.db"
    PortfolioStore.for_sqlite_file(path).migrate()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO bars VALUES ('X', '1Day', 0, 1, 1, 1, 1, 1, 'hold')")
    try:
        store = PortfolioStore.for_sqlite_file(path, busy_timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(StoreError, match="locked") as info:
            store.upsert_bars(make_bars(["AAPL"], 3))
        assert 0.15 < time.monotonic() - started < 10
        assert "busy_timeout_s=0.2" in str(info.value) and str(path) in str(info.value)
        store.dispose()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert PortfolioStore.for_sqlite_file(path).upsert_bars(make_bars(["AAPL"], 3)) == 3  # fine once released


def test_a_sqlite_directory_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    store = PortfolioStore.for_sqlite_file(blocker / "sub" / "p.db")
    with pytest.raises(StoreError, match="cannot create the directory") as info:
        store.migrate()
    assert str(blocker / "sub" / "p.db") in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://desk:{SECRET}@db/portfolio",
        f"oracle+cx_oracle://desk:{SECRET}@db/portfolio",
        f"postgresql+asyncpg://desk:{SECRET}@db/portfolio",
        f"not a url at all {SECRET}",
        "",
    ],
)
def test_unknown_or_unparsable_urls_are_refused_without_echoing_secrets(url):
    with pytest.raises(InvalidInputError) as info:
        PortfolioStore(url)
    _no_secret(info.value)


def test_psycopg2_urls_need_psycopg2():
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        with pytest.raises(InvalidInputError, match="psycopg2"):
            PortfolioStore("postgresql+psycopg2://desk@db/portfolio")
    else:
        assert PortfolioStore("postgresql+psycopg2://desk@db/portfolio").dialect == "postgresql"


def test_constructing_does_no_io(tmp_path):
    PortfolioStore.for_sqlite_file(tmp_path / "nowhere" / "p.db")
    PortfolioStore(f"postgresql://desk:{SECRET}@127.0.0.1:{_closed_port()}/portfolio")
    assert not (tmp_path / "nowhere").exists()
