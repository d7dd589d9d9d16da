"""Shared doubles for the quality gate and source tests."""

from __future__ import annotations

import pandas as pd
import pytest


class FakeCalendar:
    """Weekday sessions 14:30-21:00 UTC; ``closed`` dates are holidays. Same ``sessions`` API as
    ``MarketCalendar``."""

    name = "FAKE"

    def __init__(self, closed: tuple[str, ...] = ()) -> None:
        self.closed = {pd.Timestamp(d) for d in closed}
        self.calls: list[tuple[pd.Timestamp, pd.Timestamp]] = []

    def sessions(self, start: object, end: object) -> pd.DataFrame:
        start, end = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
        self.calls.append((start, end))
        days = pd.bdate_range(start, end)
        days = pd.DatetimeIndex([d for d in days if d not in self.closed], name="session").as_unit("ns")
        utc = days.tz_localize("UTC")
        return pd.DataFrame(
            {
                "market_open": (utc + pd.Timedelta(hours=14, minutes=30)).array,
                "market_close": (utc + pd.Timedelta(hours=21)).array,
            },
            index=days,
        )


@pytest.fixture
def fake_calendar() -> FakeCalendar:
    return FakeCalendar()


@pytest.fixture
def make_calendar() -> type[FakeCalendar]:
    return FakeCalendar
