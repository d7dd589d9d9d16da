"""Vendor hook tests share the suite's fixtures (``add_connection``, ``no_sleep``) and fake keys."""

from __future__ import annotations

from tests.vendorkeys import ALPACA_KEY_ID, ALPACA_SECRET, ALPHAVANTAGE_KEY, FINNHUB_KEY

__all__ = ["ALPACA_KEY_ID", "ALPACA_SECRET", "ALPHAVANTAGE_KEY", "FINNHUB_KEY"]
