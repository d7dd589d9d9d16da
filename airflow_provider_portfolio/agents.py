"""The per-asset trading agents' earlier home: see :mod:`airflow_provider_portfolio.operators.agents`."""

from __future__ import annotations

from airflow_provider_portfolio.operators.agents import TASK_TIMEOUT, trading_agent_dag

__all__ = ["TASK_TIMEOUT", "trading_agent_dag"]
