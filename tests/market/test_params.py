"""Checks of user parameters: one ticker, a list of tickers, a UTC date."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.params import is_crypto, utc_date, validate_symbol, validate_symbols


def test_validate_symbol_accepts_one_ticker_only():
    assert validate_symbol(" brk.b ") == "BRK.B"
    assert validate_symbol("BTC/USD") == "BTC/USD" and is_crypto("BTC/USD") and not is_crypto("AAPL")
    for bad in ["AAPL,MSFT", "not a ticker", "", 42, None]:
        with pytest.raises(InvalidInputError):
            validate_symbol(bad)


def test_validate_symbols_dedups_in_order():
    assert validate_symbols("aapl, MSFT,AAPL") == ["AAPL", "MSFT"]


def test_utc_date_takes_dates_datetimes_and_iso_strings():
    assert utc_date(date(2024, 6, 3), "start") == date(2024, 6, 3)
    assert utc_date(datetime(2024, 6, 3, 23, 30, tzinfo=timezone(timedelta(hours=-4))), "start") == date(2024, 6, 4)
    assert utc_date(datetime(2024, 6, 3, 23, 30), "start") == date(2024, 6, 3)  # naive: UTC
    assert utc_date("2024-06-03T10:00:00Z", "start") == date(2024, 6, 3)
    with pytest.raises(InvalidInputError, match="end must be a date"):
        utc_date("yesterday", "end")
    with pytest.raises(InvalidInputError, match="end must be a date"):
        utc_date(20240603, "end")


def test_importing_params_loads_no_pandas():
    code = "import sys, airflow_provider_portfolio.market.params; print('pandas' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_utc_date_range_and_day_window():
    from airflow_provider_portfolio.market.params import utc_date_range, utc_day_window

    assert utc_date_range("2024-06-03", date(2024, 6, 7)) == (date(2024, 6, 3), date(2024, 6, 7))
    assert utc_day_window("2024-06-03", "2024-06-07") == (
        datetime(2024, 6, 3, tzinfo=timezone.utc), datetime(2024, 6, 8, tzinfo=timezone.utc))
    with pytest.raises(InvalidInputError, match="start 2024-06-07 is after end 2024-06-03"):
        utc_day_window("2024-06-07", "2024-06-03")
