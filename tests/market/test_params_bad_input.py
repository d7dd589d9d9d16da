"""Bad user input fails clearly: a template that rendered nothing, an instant that is not one or is centuries away."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.params import MAX_AHEAD, parse_instant, validate_symbols

NOW = datetime(2024, 6, 5, 15, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("rendered", ["None", "none", "null", "NULL", " None ", "", "  ", ["None"], ["AAPL", "null"],
                                      [None], []])
def test_symbols_that_rendered_empty_are_refused(rendered):
    with pytest.raises(InvalidInputError, match="symbols rendered empty"):
        validate_symbols(rendered)


def test_real_tickers_still_pass():
    assert validate_symbols("aapl,BTC/USD") == ["AAPL", "BTC/USD"]
    assert validate_symbols(["NONEX", "NUL"]) == ["NONEX", "NUL"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-06-03", datetime(2024, 6, 3, tzinfo=timezone.utc)),
        ("2024-06-03T15:30:00Z", datetime(2024, 6, 3, 15, 30, tzinfo=timezone.utc)),
        ("2024-06-03 11:30-04:00", datetime(2024, 6, 3, 15, 30, tzinfo=timezone.utc)),
        (" 2024-06-03T15:30 ", datetime(2024, 6, 3, 15, 30, tzinfo=timezone.utc)),  # naive: UTC
        (date(2024, 6, 3), datetime(2024, 6, 3, tzinfo=timezone.utc)),
        (datetime(2024, 6, 3, 17, 30, tzinfo=timezone(timedelta(hours=2))), datetime(2024, 6, 3, 15, 30,
                                                                                     tzinfo=timezone.utc)),
        (NOW + MAX_AHEAD, NOW + MAX_AHEAD),
    ],
)
def test_parse_instant_reads_dates_datetimes_and_iso_text_as_utc(value, expected):
    got = parse_instant(value, "as_of", now=NOW)
    assert got == expected and got.tzinfo == timezone.utc


def test_parse_instant_reads_pandas_timestamps():
    import pandas as pd

    assert parse_instant(pd.Timestamp("2024-06-03 15:30", tz="America/New_York"), "as_of", now=NOW) == datetime(
        2024, 6, 3, 19, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("yesterday", r"as_of must be an ISO 8601 date or instant .* got 'yesterday'"),
        ("2024-13-01", r"as_of must be an ISO 8601 date or instant .* got '2024-13-01'"),
        ("None", "as_of rendered empty"),
        ("", "as_of rendered empty"),
        (None, "as_of rendered empty"),
        (20240603, "as_of must be an ISO 8601 date or instant .* got 20240603"),
        ("2999-01-01", r"as_of 2999-01-01T00:00:00\+00:00 is more than 7 days after now"),
        (datetime(2999, 1, 1, tzinfo=timezone.utc), "is more than 7 days after now"),
        ("1066-10-14", "as_of 1066-10-14T00:00:00\\+00:00 is before 1900-01-01"),
    ],
)
def test_parse_instant_refuses_what_is_not_a_sane_instant(value, match):
    with pytest.raises(InvalidInputError, match=match):
        parse_instant(value, "as_of", now=NOW)


def test_parse_instant_can_demand_a_time_zone_and_a_nearer_horizon():
    with pytest.raises(InvalidInputError, match="as_of must carry a time zone"):
        parse_instant("2024-06-03T15:30", "as_of", now=NOW, naive_is_utc=False)
    assert parse_instant("2024-06-03", "as_of", now=NOW, naive_is_utc=False) == datetime(2024, 6, 3,
                                                                                        tzinfo=timezone.utc)
    with pytest.raises(InvalidInputError, match="more than 0:00:00 after now"):
        parse_instant(NOW + timedelta(seconds=1), "as_of", now=NOW, max_ahead=timedelta(0))


def test_parse_instant_uses_the_clock_by_default():
    soon = datetime.now(timezone.utc) + timedelta(days=1)
    assert parse_instant(soon.isoformat(), "end") == soon
    with pytest.raises(InvalidInputError, match="after now"):
        parse_instant((datetime.now(timezone.utc) + timedelta(days=30)).date().isoformat(), "end")
