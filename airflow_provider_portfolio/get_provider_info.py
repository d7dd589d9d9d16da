"""Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_portfolio import __version__
from airflow_provider_portfolio.config import OPTION_TYPES, OPTIONS, SECTION

INTEGRATION = "Portfolio"

_TIMEOUT = {
    "label": "Request timeout (seconds)",
    "schema": {"type": ["number", "null"], "default": 10, "minimum": 0.1, "maximum": 300},
    "description": "Seconds one HTTP call may take before it counts as failed.",
}
_HIDDEN_KEY_ONLY = ["host", "schema", "port", "login"]

#: Connection types with their declarative forms (Airflow >= 3.2 renders these; the hooks turn the
#: same data into the legacy form classmethods for older 3.x).
CONNECTION_TYPES: list[dict[str, Any]] = [
    {
        "connection-type": "alpaca",
        "hook-class-name": "airflow_provider_portfolio.hooks.alpaca.AlpacaHook",
        "hook-name": "Alpaca",
        "conn-fields": {
            "paper": {
                "label": "Paper trading",
                "schema": {"type": ["boolean", "null"], "default": True},
                "description": "Trade on the paper account. Live trading also needs allow_live=True on the operator.",
            },
            "feed": {
                "label": "Market data feed",
                "schema": {"type": ["string", "null"], "default": "iex", "enum": ["iex", "sip"]},
                "description": "iex (free plan) or sip (paid plan: all US exchanges).",
            },
            "trading_base_url": {
                "label": "Trading API base URL",
                "schema": {"type": ["string", "null"]},
                "description": "Optional: a proxy in front of the trading API. Empty: Alpaca's paper or live host.",
            },
            "data_base_url": {
                "label": "Market data API base URL",
                "schema": {"type": ["string", "null"]},
                "description": "Optional: a proxy in front of the market data API. Empty: Alpaca's data host.",
            },
            "timeout": _TIMEOUT,
        },
        "ui-field-behaviour": {
            "hidden-fields": ["host", "schema", "port"],
            "relabeling": {"login": "API key ID", "password": "API secret key"},
            "placeholders": {"login": "PK...", "password": "secret key of that key ID"},
        },
    },
    {
        "connection-type": "alphavantage",
        "hook-class-name": "airflow_provider_portfolio.hooks.alphavantage.AlphaVantageHook",
        "hook-name": "Alpha Vantage",
        "conn-fields": {
            "timeout": _TIMEOUT,
            "base_url": {
                "label": "API base URL",
                "schema": {"type": ["string", "null"]},
                "description": "Optional: a proxy in front of the API. Empty: https://www.alphavantage.co",
            },
        },
        "ui-field-behaviour": {
            "hidden-fields": _HIDDEN_KEY_ONLY,
            "relabeling": {"password": "API key"},
            "placeholders": {"password": "your Alpha Vantage API key"},
        },
    },
    {
        "connection-type": "finnhub",
        "hook-class-name": "airflow_provider_portfolio.hooks.finnhub.FinnhubHook",
        "hook-name": "Finnhub",
        "conn-fields": {
            "timeout": _TIMEOUT,
            "base_url": {
                "label": "API base URL",
                "schema": {"type": ["string", "null"]},
                "description": "Optional: a proxy in front of the API. Empty: https://finnhub.io/api/v1",
            },
            "crypto_exchange": {
                "label": "Crypto exchange",
                "schema": {"type": ["string", "null"], "default": "BINANCE"},
                "description": "Exchange of crypto candles: BTC/USD is asked as <exchange>:BTCUSDT.",
            },
        },
        "ui-field-behaviour": {
            "hidden-fields": _HIDDEN_KEY_ONLY,
            "relabeling": {"password": "API key"},
            "placeholders": {"password": "your Finnhub API key"},
        },
    },
]

#: The hooks' modules: the store's, then those of :data:`CONNECTION_TYPES` (the one list to edit when a vendor
#: is added; connection ids resolve to hooks through it, by Airflow's ``Connection.get_hook``).
HOOK_MODULES = list(dict.fromkeys([
    "airflow_provider_portfolio.hooks.store",
    *(entry["hook-class-name"].rpartition(".")[0] for entry in CONNECTION_TYPES),
]))


def get_provider_info() -> dict[str, Any]:
    """Return the provider info dict (validated against Airflow's ``provider_info.schema.json`` in tests)."""
    return {
        "package-name": "airflow-provider-portfolio",
        "name": "Portfolio",
        "description": "Trading-desk provider: market data, portfolio store, ETL, trading and forecasting.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://pypi.org/project/airflow-provider-portfolio/",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": INTEGRATION,
                "python-modules": HOOK_MODULES,
            }
        ],
        "connection-types": CONNECTION_TYPES,
        "sensors": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_portfolio.sensors.market_hours"],
            }
        ],
        "plugins": [{"name": "portfolio", "plugin-class": "airflow_provider_portfolio.plugins.PortfolioPlugin"}],
        "triggers": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_portfolio.triggers.market_hours"],
            }
        ],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "airflow_provider_portfolio.operators.etl",
                    "airflow_provider_portfolio.operators.forecasting",
                    "airflow_provider_portfolio.operators.trading",
                    "airflow_provider_portfolio.operators.environment",
                    "airflow_provider_portfolio.operators.monitoring",
                ],
            }
        ],
        "notifications": ["airflow_provider_portfolio.notifications.PortfolioNotifier"],
        "config": {
            SECTION: {
                "description": "Provider-wide defaults of airflow-provider-portfolio.",
                "options": {
                    name: {
                        "description": description,
                        "version_added": "0.1.0",
                        "type": OPTION_TYPES.get(name, "string"),
                        "example": None,
                        "default": default,
                    }
                    for name, (default, description) in OPTIONS.items()
                },
            }
        },
    }
