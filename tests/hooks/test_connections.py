"""Connection ids to hooks through Airflow's own mechanism (``Connection.get_hook`` from the provider info)."""

from __future__ import annotations

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.get_provider_info import CONNECTION_TYPES, HOOK_MODULES
from airflow_provider_portfolio.hooks.alpaca import AlpacaHook
from airflow_provider_portfolio.hooks.alphavantage import AlphaVantageHook
from airflow_provider_portfolio.hooks.connections import resolve_broker_api
from airflow_provider_portfolio.hooks.finnhub import FinnhubHook
from airflow_provider_portfolio.hooks.market_data import resolve_sources
from airflow_provider_portfolio.market.sources import BarSource
from airflow_provider_portfolio.market.synthetic import SyntheticMarket
from airflow_provider_portfolio.trading.brokers.api import BrokerAPI
from tests.vendorkeys import ALPACA_KEY_ID, ALPACA_SECRET, ALPHAVANTAGE_KEY, FINNHUB_KEY


def test_hook_modules_are_derived_from_the_connection_types():
    modules = {entry["hook-class-name"].rpartition(".")[0] for entry in CONNECTION_TYPES}
    assert set(HOOK_MODULES) == modules | {"airflow_provider_portfolio.hooks.store"}
    assert len(HOOK_MODULES) == len(set(HOOK_MODULES))


def test_sources_resolve_through_get_hook(add_connection, requests_mock, monkeypatch):
    from airflow.sdk.definitions.connection import Connection

    try:  # Airflow 3.1 hands out the core Connection outside a task; later versions the SDK's
        from airflow.models.connection import Connection as CoreConnection
    except ImportError:
        CoreConnection = Connection
    add_connection("alpaca_data", "alpaca", login=ALPACA_KEY_ID, password=ALPACA_SECRET)
    add_connection("av", "alphavantage", password=ALPHAVANTAGE_KEY)
    add_connection("fh", "finnhub", password=FINNHUB_KEY)
    asked = []

    def spying(cls):
        real = cls.get_hook

        def spy(self, *, hook_params=None):
            asked.append(self.conn_id)
            return real(self, hook_params=hook_params)

        monkeypatch.setattr(cls, "get_hook", spy)

    for cls in {Connection, CoreConnection}:
        spying(cls)
    sources = resolve_sources(["fh", "synthetic", "av", "alpaca_data"], exchange="XNYS", seed=3)
    assert [type(s) for s in sources] == [FinnhubHook, SyntheticMarket, AlphaVantageHook, AlpacaHook]
    assert [s.name for s in sources if not isinstance(s, SyntheticMarket)] == ["fh", "av", "alpaca_data"]
    assert asked == ["fh", "av", "alpaca_data"]  # Airflow's mechanism, not a registry of this provider
    assert all(isinstance(s, BarSource) for s in sources)
    assert requests_mock.call_count == 0  # nothing is fetched by resolving


def test_a_connection_type_without_a_hook_names_the_connection_and_type(add_connection):
    add_connection("web", "http", host="example.invalid")
    with pytest.raises(InvalidInputError, match=r"'web' has type 'http', which serves no market data.*"
                                                r"alpaca, alphavantage, finnhub"):
        resolve_sources(["web"], exchange="XNYS", seed=0)


def test_a_hook_without_bars_names_the_missing_capability(add_connection):
    pytest.importorskip("airflow.providers.standard.hooks.filesystem")
    add_connection("files", "fs", host="/tmp")
    with pytest.raises(InvalidInputError) as info:
        resolve_sources(["files"], exchange="XNYS", seed=0)
    text = str(info.value)
    assert "'files' has type 'fs'" in text and "FSHook has no bars" in text and "get_bars)" in text
    assert "alpaca, alphavantage, finnhub" in text


def test_a_missing_source_connection(add_connection):
    with pytest.raises(InvalidInputError, match="'nowhere' is neither 'synthetic' nor an existing connection"):
        resolve_sources(["nowhere"], exchange="XNYS", seed=0)


def test_source_hooks_is_derived_from_the_provider_info():
    from airflow_provider_portfolio.hooks.market_data import SOURCE_HOOKS

    assert SOURCE_HOOKS == {c["connection-type"]: c["hook-class-name"] for c in CONNECTION_TYPES}


# --- the broker side ----------------------------------------------------------------------------------


def test_broker_api_of_an_alpaca_connection(add_connection, requests_mock):
    add_connection("alpaca_paper", "alpaca", login=ALPACA_KEY_ID, password=ALPACA_SECRET)
    api = resolve_broker_api("alpaca_paper")
    assert isinstance(api, AlpacaHook) and isinstance(api, BrokerAPI)
    assert (api.name, api.allow_live, api.is_live) == ("alpaca_paper", False, False)
    add_connection("alpaca_live", "alpaca", login=ALPACA_KEY_ID, password=ALPACA_SECRET, paper=False)
    live = resolve_broker_api("alpaca_live", allow_live=True)
    assert live.is_live and live.allow_live
    assert requests_mock.call_count == 0


def test_broker_api_refuses_what_is_no_broker(add_connection):
    add_connection("web", "http", host="example.invalid")
    with pytest.raises(InvalidInputError, match="'web' has type 'http'.*alpaca"):
        resolve_broker_api("web")
    add_connection("av", "alphavantage", password=ALPHAVANTAGE_KEY)
    with pytest.raises(InvalidInputError, match="'av' has type 'alphavantage', whose hook AlphaVantageHook is no "
                                                "broker API.*lacks.*post_order.*broker connection types: alpaca$"):
        resolve_broker_api("av")
    with pytest.raises(InvalidInputError, match="broker connection 'nowhere' does not exist"):
        resolve_broker_api("nowhere")
