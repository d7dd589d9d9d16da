"""How a trading cycle decides (:class:`CycleSettings`) and what it did (:class:`CycleReport`). Plain Python."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.bars import parse_timeframe
from airflow_provider_portfolio.market.quality import QualityRules
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE
from airflow_provider_portfolio.trading.decision import AUTO_TRADER_WEIGHTS, check_weights
from airflow_provider_portfolio.trading.risk import RiskLimits, normalise_kill_switch

log = logging.getLogger(__name__)

#: Bars of history the signals look at (the slowest moving average needs 50).
LOOKBACK_BARS = 120


@dataclass(frozen=True)
class CycleSettings:
    """How a cycle decides. Defaults are the portfolio auto trader's.

    :param timeframe: the bars decided on (``1Day``, ``30Min``...).
    :param weights: signal name (``technical``, ``forecast``, ``sentiment``) -> weight.
    :param limits: the hard risk limits.
    :param kill_switch: the raw kill switch value (Variable ``portfolio.kill_switch``).
    :param bar_aware: decide each bar once per DAG, whatever runs overlap (where the symbol's market is open at
        the cycle's instant: a decision made while it is closed cannot trade and leaves the bar to a later run).
    :param min_score: the smallest |combined score| traded.
    :param sizing: ``fixed_fraction`` or ``volatility``.
    :param fraction: the target position as a fraction of equity at full score.
    :param target_volatility: per-bar volatility aimed at under volatility sizing.
    :param max_stale_bars: how many bars a symbol's last bar may lag its calendar.
    :param exchange: the calendar of equities.
    :param news_half_life_hours: the age at which a news item weighs half.
    :param max_abs_return: the quality gate's implausible move, bar to bar, of the bars decided on; also the
        largest distance of the last close from the median of the 20 closes before it (``None``: neither).
    :param lock_timeout_s: how long a cycle waits for its account's lock (another cycle trading it), seconds.

    ``kill_switch`` may be a callable returning the raw value: it is then read again right before orders are
    sent (the operator passes the Variable's reader).
    """

    timeframe: str = "1Day"
    weights: Mapping[str, float] = field(default_factory=lambda: dict(AUTO_TRADER_WEIGHTS))
    limits: RiskLimits = field(default_factory=RiskLimits)
    kill_switch: object = "active"
    bar_aware: bool = True
    min_score: float = 0.1
    sizing: str = "fixed_fraction"
    fraction: float = 0.05
    target_volatility: float = 0.01
    max_stale_bars: int = 2
    exchange: str = DEFAULT_EXCHANGE
    news_half_life_hours: float = 24.0
    max_abs_return: float | None = 0.5
    lock_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        parse_timeframe(self.timeframe)
        QualityRules(max_abs_return=self.max_abs_return)  # checks it
        if isinstance(self.lock_timeout_s, bool) or not isinstance(self.lock_timeout_s, int | float) \
                or not math.isfinite(self.lock_timeout_s) or self.lock_timeout_s < 0:
            raise InvalidInputError(f"lock_timeout_s must be a finite number >= 0, got {self.lock_timeout_s!r}")
        object.__setattr__(self, "weights", check_weights(self.weights))
        unknown = sorted(set(self.weights) - {"technical", "forecast", "sentiment"})
        if unknown:
            raise InvalidInputError(f"unknown signal name(s) {unknown} in weights: use technical, forecast, sentiment")
        if not isinstance(self.limits, RiskLimits):
            raise InvalidInputError(f"limits must be RiskLimits, got {type(self.limits).__name__}")
        if isinstance(self.max_stale_bars, bool) or not isinstance(self.max_stale_bars, int) or self.max_stale_bars < 0:
            raise InvalidInputError(f"max_stale_bars must be an integer >= 0, got {self.max_stale_bars!r}")

    def kill_switch_now(self) -> str:
        """The kill switch state now (``kill_switch`` called when it is a reader), normalised."""
        raw = self.kill_switch
        if callable(raw):
            try:
                raw = raw()
            except Exception as err:  # an unreadable kill switch stops trading
                log.error("could not read the kill switch (%s): trading as 'halted'", err)
                return "halted"
        return normalise_kill_switch(raw)


@dataclass
class CycleReport:
    """What a cycle did (JSON-friendly through :meth:`to_dict`)."""

    decided: int = 0
    skipped: list[str] = field(default_factory=list)
    holds: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)
    broker_rejected: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)
    synced: int = 0
    fills: int = 0
    equity: dict[str, float] = field(default_factory=dict)
    start_of_day_equity: float | None = None
    loss_reference: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "decided": self.decided, "skipped": len(self.skipped), "holds": self.holds, "errors": self.errors,
            "risk_rejected": self.rejected, "submitted": len(self.submitted), "broker_rejected": self.broker_rejected,
            "unknown": self.unknown, "synced_orders": self.synced, "fills": self.fills, "equity": self.equity,
            "start_of_day_equity": self.start_of_day_equity, "loss_reference": self.loss_reference,
        }



def check_instant(now: Any) -> datetime:
    """``now`` as an aware UTC datetime.

    :raises InvalidInputError: for a naive or non-datetime value.
    """
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise InvalidInputError(f"now must be a tz-aware datetime, got {now!r}")
    return now.astimezone(timezone.utc)


def with_max_trades_per_day(limits: RiskLimits, max_trades_per_day: int | None) -> RiskLimits:
    """``limits`` with ``max_orders_per_day`` set to ``max_trades_per_day`` (unchanged for ``None``)."""
    if max_trades_per_day is None:
        return limits
    if isinstance(max_trades_per_day, bool) or not isinstance(max_trades_per_day, int) or max_trades_per_day < 0:
        raise InvalidInputError(f"max_trades_per_day must be an integer >= 0, got {max_trades_per_day!r}")
    return replace(limits, max_orders_per_day=max_trades_per_day)


def news_window(now: datetime, half_life_hours: float = 24.0) -> tuple[datetime, datetime]:
    """The news worth fetching for a cycle at ``now``: four half-lives back (weights below 1/16 are noise)."""
    return now - timedelta(hours=4 * half_life_hours), now
