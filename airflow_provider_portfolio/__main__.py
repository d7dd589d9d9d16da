"""``python -m airflow_provider_portfolio <command>``: see :mod:`airflow_provider_portfolio.cli`."""

from __future__ import annotations

from airflow_provider_portfolio.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
