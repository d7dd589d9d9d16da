"""MarketOpenTrigger: wakes a deferred MarketHoursSensor at a given instant.

Runs in the triggerer. It imports nothing heavy and holds no calendar: the sensor computes the
instant (the next trading window's start, capped by its deferral horizon) and re-checks the calendar
when it resumes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.timeutil import ensure_utc, utc_now


class MarketOpenTrigger(BaseTrigger):
    """Fire one event at ``moment``.

    The trigger sleeps in chunks of at most :attr:`max_sleep` seconds and computes what is left from
    the current time on every loop, so it follows wall-clock corrections, stays responsive to
    cancellation, and a triggerer restart (which re-creates it from :meth:`serialize`) simply waits
    the rest. A ``moment`` already past fires at once.

    :param moment: when to fire; a tz-aware datetime or an ISO string with an offset (stored in UTC).
    :param exchange: the exchange the sensor waits on (reported back in the event).
    :raises InvalidInputError: when ``moment`` is naive or not a datetime.
    """

    #: Longest single sleep, in seconds.
    max_sleep: float = 60.0

    def __init__(self, moment: datetime | str, exchange: str) -> None:
        super().__init__()
        if isinstance(moment, str):
            try:
                moment = datetime.fromisoformat(moment)
            except ValueError:
                raise InvalidInputError(f"moment must be an ISO datetime with an offset, got {moment!r}") from None
        self.moment: datetime = ensure_utc(moment, "moment")
        self.exchange = exchange

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider_portfolio.triggers.market_hours.MarketOpenTrigger",
            {"moment": self.moment.isoformat(), "exchange": self.exchange},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            remaining = (self.moment - utc_now()).total_seconds()
            if remaining <= 0:
                break
            self.log.debug("Waiting %.1f s until %s", remaining, self.moment.isoformat())
            await asyncio.sleep(min(remaining, self.max_sleep))
        yield TriggerEvent({"status": "fired", "moment": self.moment.isoformat(), "exchange": self.exchange})
