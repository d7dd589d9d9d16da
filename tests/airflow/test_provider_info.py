"""The provider as Airflow discovers it: entry point, provider info schema, config section."""

from __future__ import annotations

import importlib
import json
import re
from importlib.metadata import distribution
from pathlib import Path

import jsonschema

from airflow_provider_portfolio import __version__
from airflow_provider_portfolio.config import OPTIONS, get_option
from airflow_provider_portfolio.get_provider_info import get_provider_info


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_provider_info_validates_against_airflows_schema():
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_package_name_is_the_canonical_distribution_name():
    dist = distribution("airflow-provider-portfolio")
    info = get_provider_info()
    assert info["package-name"] == canonical(dist.metadata["Name"]) == "airflow-provider-portfolio"
    assert info["versions"][0] == __version__ == dist.version


def test_entry_point_points_at_get_provider_info():
    eps = [ep for ep in distribution("airflow-provider-portfolio").entry_points if ep.group == "apache_airflow_provider"]
    assert [ep.value for ep in eps] == ["airflow_provider_portfolio.get_provider_info:get_provider_info"]
    assert eps[0].load()() == get_provider_info()


def test_every_listed_module_imports():
    info = get_provider_info()
    modules = [m for kind in ("hooks", "operators", "sensors", "triggers") for e in info.get(kind, []) for m in e["python-modules"]]
    assert "airflow_provider_portfolio.operators.etl" in modules
    assert "airflow_provider_portfolio.operators.forecasting" in modules
    assert "airflow_provider_portfolio.operators.trading" in modules
    for module in modules:
        importlib.import_module(module)


def test_config_section_declares_every_option_with_its_default():
    section = get_provider_info()["config"]["portfolio"]["options"]
    assert set(section) == set(OPTIONS) >= {"store_conn_id", "default_exchange", "execution_mode"}
    assert section["execution_mode"]["default"] == "synthetic"
    assert section["store_conn_id"]["default"] == "portfolio_store_default"


def test_config_reads_environment_overrides(monkeypatch):
    assert get_option("default_exchange") == "XNYS"
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__DEFAULT_EXCHANGE", "XLON")
    assert get_option("default_exchange") == "XLON"


def test_providers_manager_discovers_the_provider():
    from airflow.providers_manager import ProvidersManager

    providers = ProvidersManager().providers
    assert "airflow-provider-portfolio" in providers
    assert providers["airflow-provider-portfolio"].version == __version__


def test_connection_types_match_their_hooks_and_forms():
    info = get_provider_info()
    types = {c["connection-type"]: c for c in info["connection-types"]}
    assert set(types) == {"alpaca", "alphavantage", "finnhub"}
    hook_modules = {m for e in info["hooks"] for m in e["python-modules"]}
    for conn_type, entry in types.items():
        module, _, name = entry["hook-class-name"].rpartition(".")
        assert module in hook_modules
        hook = getattr(importlib.import_module(module), name)
        assert hook.conn_type == conn_type and hook.hook_name == entry["hook-name"]
        assert hook.default_conn_name == f"{conn_type}_default"
        assert hook.conn_name_attr == f"{conn_type}_conn_id"
        assert callable(hook.test_connection)
        for field, spec in entry["conn-fields"].items():
            jsonschema.Draft7Validator.check_schema(spec["schema"])
            assert spec["label"], field
        behaviour = entry["ui-field-behaviour"]
        assert "password" not in behaviour["hidden-fields"]
        assert set(behaviour["relabeling"]) <= {"login", "password"}
    assert types["alpaca"]["conn-fields"]["paper"]["schema"]["default"] is True


def test_market_data_connection_types_resolve_to_their_hooks():
    from airflow_provider_portfolio.hooks.market_data import SOURCE_HOOKS

    info = get_provider_info()
    assert SOURCE_HOOKS == {c["connection-type"]: c["hook-class-name"] for c in info["connection-types"]}
