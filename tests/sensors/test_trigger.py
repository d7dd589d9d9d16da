"""MarketOpenTrigger: serialization round trip and one event at its moment."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.triggers.market_hours import MarketOpenTrigger

UTC = timezone.utc


async def collect(trigger: MarketOpenTrigger) -> list:
    return [event async for event in trigger.run()]


def test_serialize_round_trips():
    trigger = MarketOpenTrigger(moment=datetime(2024, 7, 5, 13, 30, tzinfo=UTC), exchange="XNYS")
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_portfolio.triggers.market_hours.MarketOpenTrigger"
    assert kwargs == {"moment": "2024-07-05T13:30:00+00:00", "exchange": "XNYS"}
    again = MarketOpenTrigger(**kwargs)
    assert again.moment == datetime(2024, 7, 5, 13, 30, tzinfo=UTC)
    assert again.serialize() == (path, kwargs)


def test_moment_is_stored_in_utc():
    eastern = timezone(timedelta(hours=-4))
    trigger = MarketOpenTrigger(moment=datetime(2024, 7, 5, 9, 30, tzinfo=eastern), exchange="XNYS")
    assert trigger.serialize()[1]["moment"] == "2024-07-05T13:30:00+00:00"
    assert MarketOpenTrigger(moment="2024-07-05T09:30:00-04:00", exchange="XNYS").moment == datetime(
        2024, 7, 5, 13, 30, tzinfo=UTC)


@pytest.mark.parametrize("moment", [datetime(2024, 7, 5, 13, 30), "2024-07-05T13:30:00", "soon", 1720186200])
def test_naive_or_bad_moment_is_refused(moment):
    with pytest.raises(InvalidInputError, match="moment must be"):
        MarketOpenTrigger(moment=moment, exchange="XNYS")


def test_a_past_moment_fires_at_once():
    trigger = MarketOpenTrigger(moment=datetime(2024, 7, 5, 13, 30, tzinfo=UTC), exchange="XNYS")
    events = asyncio.run(asyncio.wait_for(collect(trigger), timeout=5))
    assert len(events) == 1
    assert events[0].payload == {"status": "fired", "moment": "2024-07-05T13:30:00+00:00", "exchange": "XNYS"}


def test_a_future_moment_fires_once_after_it():
    moment = datetime.now(UTC) + timedelta(milliseconds=300)
    trigger = MarketOpenTrigger(moment=moment, exchange="24/7")
    started = time.monotonic()
    events = asyncio.run(asyncio.wait_for(collect(trigger), timeout=10))
    assert time.monotonic() - started >= 0.25
    assert datetime.now(UTC) >= moment
    assert [e.payload["status"] for e in events] == ["fired"]
    assert events[0].payload["exchange"] == "24/7"


def test_sleeps_in_short_chunks(monkeypatch):
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await real_sleep(0)

    clock = iter([datetime(2024, 7, 5, 13, 27, tzinfo=UTC), datetime(2024, 7, 5, 13, 28, tzinfo=UTC),
                  datetime(2024, 7, 5, 13, 29, 30, tzinfo=UTC), datetime(2024, 7, 5, 13, 30, tzinfo=UTC)])
    from airflow_provider_portfolio.triggers import market_hours

    monkeypatch.setattr(market_hours, "utc_now", lambda: next(clock))
    monkeypatch.setattr(market_hours.asyncio, "sleep", fake_sleep)
    trigger = MarketOpenTrigger(moment=datetime(2024, 7, 5, 13, 30, tzinfo=UTC), exchange="XNYS")
    events = asyncio.run(collect(trigger))
    # 180 s left -> 60; 120 s -> 60; 30 s -> 30; then due: one event
    assert sleeps == [60.0, 60.0, 30.0]
    assert len(events) == 1
