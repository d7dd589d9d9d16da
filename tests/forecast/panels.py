"""Simulated panels with a known truth, shared by the forecasting tests."""

from __future__ import annotations

from airflow_provider_portfolio.forecast.simulate import garch_panel, seasonal_ar_panel

__all__ = ["garch_panel", "seasonal_ar_panel"]
