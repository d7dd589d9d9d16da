"""Shared fixtures of the vendor hook tests: connections from the environment, no sleeping."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

# Key-shaped values: long enough to be found if they leak, obviously fake.
ALPACA_KEY_ID = "PKTESTKEYID0000000001"
ALPACA_SECRET = "test-secret-Zq8vN3xK1mP5rT7wY2bD4fH6jL9"
ALPHAVANTAGE_KEY = "test-key-AV0Q7WX2ZK9L"
FINNHUB_KEY = "test-key-fh-c0ffee1234abcd"


@pytest.fixture
def add_connection(monkeypatch) -> Callable[..., str]:
    """Define a connection through ``AIRFLOW_CONN_<ID>`` (JSON); returns the conn id."""

    def add(conn_id: str, conn_type: str, *, login: str | None = None, password: str | None = None,
            host: str | None = None, **extra: object) -> str:
        body = {"conn_type": conn_type, "login": login, "password": password, "host": host, "extra": extra}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({k: v for k, v in body.items() if v is not None}))
        return conn_id

    return add


@pytest.fixture
def no_sleep() -> list[float]:
    """A list that records the waits of hooks given ``hook.sleep = no_sleep.append``."""
    return []
