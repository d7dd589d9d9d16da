"""Suite-wide setup: an isolated AIRFLOW_HOME before anything imports Airflow."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Tests never touch a developer's ~/airflow: every Airflow import in this process sees a private home.
_home = tempfile.mkdtemp(prefix="portfolio-tests-airflow-")
os.environ["AIRFLOW_HOME"] = _home
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "example_dags")
for key in [k for k in os.environ if k.startswith(("AIRFLOW__PORTFOLIO__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))]:
    del os.environ[key]


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
