"""Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_portfolio import __version__
from airflow_provider_portfolio.config import OPTIONS, SECTION

INTEGRATION = "Portfolio"


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
                "python-modules": ["airflow_provider_portfolio.hooks.store"],
            }
        ],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_portfolio.operators.etl"],
            }
        ],
        "config": {
            SECTION: {
                "description": "Provider-wide defaults of airflow-provider-portfolio.",
                "options": {
                    name: {
                        "description": description,
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": None,
                        "default": default,
                    }
                    for name, (default, description) in OPTIONS.items()
                },
            }
        },
    }
