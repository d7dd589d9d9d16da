"""SyntheticRefreshOperator in-process: datasets written under the configured folder for the run's date, ``latest``
and Variable ``portfolio.synthetic_dataset_id`` set to the first profile's, a re-run rewriting nothing, the
defaults (universe Variable, ``[portfolio] synthetic_dir`` and ``synthetic_seed``, two years before the run), and
bad input refused before anything is written."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.datasets import DatasetSource, latest_dataset_id, read_dataset
from airflow_provider_portfolio.operators.synthetic import DATASET_VARIABLE, SyntheticRefreshOperator, synthetic_root
from airflow_provider_portfolio.variables import VARIABLES, get_variable

UTC = timezone.utc
NOW = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)  # Monday 01:00 New York
RUN_ID = "scheduled__2025-01-06T06:00:00+00:00"
TICKERS_ENV = "AIRFLOW_VAR_PORTFOLIO.DEFAULT_TICKERS"
DATASET_ENV = f"AIRFLOW_VAR_{DATASET_VARIABLE.upper()}"


def context(at: datetime = NOW) -> dict:
    return {"ti": SimpleNamespace(map_index=-1), "dag_run": SimpleNamespace(
        dag_id="portfolio_synthetic_refresh", run_id=RUN_ID, run_after=at), "data_interval_end": at, "run_id": RUN_ID}


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch, tmp_path):
    for name in ("SYNTHETIC_DIR", "SYNTHETIC_SEED", "DEFAULT_EXCHANGE"):
        monkeypatch.delenv(f"AIRFLOW__PORTFOLIO__{name}", raising=False)
    monkeypatch.delenv(TICKERS_ENV, raising=False)
    monkeypatch.delenv(DATASET_ENV, raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))


@pytest.fixture
def variable_writes(monkeypatch) -> list[tuple[str, object]]:
    """``Variable.set`` outside a task runner has no API server: record each write and make it visible to
    ``Variable.get`` through the environment."""
    from airflow.sdk import Variable

    writes: list[tuple[str, object]] = []

    def fake_set(cls, key, value, description=None, serialize_json=False):
        writes.append((key, value))
        monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", str(value))

    monkeypatch.setattr(Variable, "set", classmethod(fake_set))
    return writes


def refresh(**kwargs) -> SyntheticRefreshOperator:
    return SyntheticRefreshOperator(**{"task_id": "refresh_datasets", **kwargs})


def test_a_refresh_writes_the_datasets_and_sets_latest_and_the_variable(tmp_path, variable_writes):
    root = tmp_path / "datasets"
    op = refresh(profiles=["crash", "calm"], symbols="AAPL,BTC/USD", root=str(root))
    result = op.execute(context())
    assert result["latest"] == "crash-20250106" and result["previous"] is None
    assert [(d["dataset_id"], d["status"]) for d in result["datasets"]] == [("crash-20250106", "written"),
                                                                            ("calm-20250106", "written")]
    assert result["variable"] == {DATASET_VARIABLE: "crash-20250106"}
    assert variable_writes == [(DATASET_VARIABLE, "crash-20250106")]
    assert json.loads(json.dumps(result)) == result and len(json.dumps(result)) < 2000
    assert sorted(os.listdir(root)) == ["calm-20250106", "crash-20250106", "latest"]
    manifest = read_dataset(root).manifest
    # Default range: the two years before the run's date; seed: [portfolio] synthetic_seed's default.
    assert (manifest.profile, manifest.start, manifest.end, manifest.seed) == ("crash", "2023-01-06", "2025-01-05", 0)
    assert manifest.symbols == ("AAPL", "BTC/USD") and manifest.exchange == "XNYS"
    # The Variable names a dataset the desk's source reads.
    source = DatasetSource(root, get_variable(DATASET_VARIABLE))
    assert source.get_bars("AAPL", "2024-12-02", "2024-12-06")["close"].notna().sum() == 5

    again = refresh(profiles=["crash", "calm"], symbols="AAPL,BTC/USD", root=str(root)).execute(context())
    assert [d["status"] for d in again["datasets"]] == ["unchanged", "unchanged"]
    assert again["previous"] == "crash-20250106"
    assert sorted(os.listdir(root)) == ["calm-20250106", "crash-20250106", "latest"]


def test_defaults_come_from_the_variables_and_the_config(tmp_path, monkeypatch, variable_writes):
    monkeypatch.setenv(TICKERS_ENV, '["AAPL", "msft"]')
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__SYNTHETIC_SEED", "42")
    default_root = tmp_path / "airflow" / "portfolio" / "synthetic"
    assert synthetic_root() == default_root  # beside the embedded store
    result = refresh(profiles="jumps", start="2024-07-01", end="2024-12-31").execute(context())
    assert result["root"] == str(default_root) and latest_dataset_id(default_root) == "jumps-20250106"
    manifest = read_dataset(default_root).manifest
    assert (manifest.symbols, manifest.seed, manifest.start, manifest.end) == (("AAPL", "MSFT"), 42, "2024-07-01",
                                                                               "2024-12-31")
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__SYNTHETIC_DIR", "weekly")
    assert synthetic_root() == tmp_path / "airflow" / "portfolio" / "weekly"
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__SYNTHETIC_DIR", str(tmp_path / "elsewhere"))
    result = refresh(profiles='["calm", "trending"]', start="2024-07-01", end="2024-12-31",
                     set_variable=False).execute(context())
    assert result["root"] == str(tmp_path / "elsewhere") and "variable" not in result
    assert sorted(os.listdir(tmp_path / "elsewhere")) == ["calm-20250106", "latest", "trending-20250106"]
    assert variable_writes == [(DATASET_VARIABLE, "jumps-20250106")]


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"profiles": "calm,boom"}, {}, "unknown profile 'boom'"),
        ({"symbols": "AAPL,null"}, {}, "symbols rendered empty"),
        ({"start": "2024-12-31", "end": "2024-01-01"}, {}, "before start"),
        ({}, {"AIRFLOW__PORTFOLIO__SYNTHETIC_SEED": "abc"}, "seed must be an integer"),
        ({"exchange": "NOPE"}, {}, "unknown market calendar"),
        ({"keep": 0}, {}, "keep"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, monkeypatch, variable_writes, kwargs, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    root = tmp_path / "datasets"
    with pytest.raises(InvalidInputError, match=message):
        refresh(**{"symbols": ["AAPL"], "root": str(root), **kwargs}).execute(context())
    assert not root.exists() and variable_writes == []


def test_the_operator_is_thin_and_templated():
    op = refresh()
    assert set(op.template_fields) >= {"profiles", "symbols", "start", "end", "root"}
    assert DATASET_VARIABLE in VARIABLES and VARIABLES[DATASET_VARIABLE].default == "latest"


def test_the_desk_s_jobs_read_a_dataset_by_name_or_through_the_variable(tmp_path, monkeypatch, variable_writes):
    """``sources=["dataset"]`` is the dataset Variable ``portfolio.synthetic_dataset_id`` names (under
    ``[portfolio] synthetic_dir``), ``"dataset:<id>"`` one dataset; missing ones and live mode are refused."""
    from airflow_provider_portfolio.hooks.market_data import data_sources

    refresh(profiles=["crash", "calm"], symbols="AAPL,BTC/USD", start="2024-07-01", end="2024-12-31").execute(context())
    [by_variable] = data_sources(["dataset"], exchange="XNYS")
    assert by_variable.name == "dataset:crash-20250106"
    [calm] = data_sources(["dataset:calm-20250106"], exchange="XNYS")
    crash_bars = by_variable.get_bars(["AAPL"], "2024-12-02", "2024-12-06")
    calm_bars = calm.get_bars(["AAPL"], "2024-12-02", "2024-12-06")
    assert len(crash_bars) == len(calm_bars) == 5 and not crash_bars["close"].equals(calm_bars["close"])
    monkeypatch.setenv(DATASET_ENV, "calm-20250106")  # the Variable moved: "dataset" follows it
    assert data_sources(["dataset"], exchange="XNYS")[0].name == "dataset:calm-20250106"

    with pytest.raises(InvalidInputError, match=r"source 'dataset:jumps-20250106': no synthetic dataset "
                                                r"'jumps-20250106' in .*run portfolio_synthetic_refresh"):
        data_sources(["dataset:jumps-20250106"], exchange="XNYS")
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__EXECUTION_MODE", "live")
    with pytest.raises(InvalidInputError, match="a synthetic dataset.*refused in .* execution_mode = live"):
        data_sources(["dataset"], exchange="XNYS")
