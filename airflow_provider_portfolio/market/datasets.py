"""Synthetic datasets: stored sets of bars that tell a documented market story, under a dataset id.

A dataset is a pure function of ``(profile, seed, symbols, start, end, timeframe, exchange)``: the same inputs
give byte-identical bars (and the same checksum). Each symbol starts at a price a user recognises
(:data:`PRICE_LEVELS`: AAPL 190, MSFT 420, SPY 520, BTC/USD 60,000 ...; another symbol gets a level drawn from
its name, 20-400 for equities, 0.5-2,000 for crypto pairs) and takes one step per session of its calendar
(equities: the exchange's sessions; crypto pairs: every UTC day). Prices are rounded to cents (to four
significant digits below $1).

How a path is made. A close-to-close log return is ``(mu - sigma^2 / 2) / N + sigma / sqrt(N) z + move``, with
``N`` sessions a year (252 equities, 365 crypto), ``mu`` and ``sigma`` the profile's annual drift and volatility
(crypto pairs: drift x2, volatility x2.5), ``z = rho m + sqrt(1 - rho^2) e`` clipped at +-4 (``m`` one market
factor per calendar day shared by every symbol, ``e`` the symbol's own Gaussian noise, ``rho`` the profile's
correlation) and ``move`` the profile's events. Equities open a little away from the previous close (a quarter
of the day's volatility); crypto opens where it closed. High and low are the extremes of a Brownian bridge from
open to close, as in :mod:`~airflow_provider_portfolio.market.synthetic`, whose intraday generator makes
intraday datasets (bars of every timeframe agree with the session's open, high, low and close).

Profiles (drift and volatility per year, equities; dates are calendar days of the range):

=====================  =======  ======  ====  =================================================================
profile                drift    vol     rho   what happens, and when
=====================  =======  ======  ====  =================================================================
``calm``               +6%      10%     0.5   nothing: a quiet, slightly rising market
``trending``           +40%     12%     0.5   a steady rally (every symbol drifts up)
``crash``              +10%     15%     0.6   on the first session of every symbol on or after 60% of the
                                              range, a crash of 5 sessions with no noise: the close after it
                                              is exactly 70% of the close before (crypto: 55%), the first day
                                              the worst (-11.7%, crypto -18.9%); afterwards drift +5% and the
                                              volatility doubled
``regime_switch``      +12%     12%     0.6   calm and stressed regimes alternate, calm first, the same dates
                                              for every symbol: calm lasts 40-120 days (the first one ends by a
                                              third of the range), stressed 20-60 days with drift -25% and
                                              volatility 40%
``correlated_shocks``  +8%      15%     0.85  shock days, one per 30 days of range (at least 2), on sessions
                                              common to every symbol: each moves every symbol's close by 6%
                                              (crypto 12%), two in three down, on top of its usual move
``jumps``              +8%      15%     0.5   each symbol jumps 4 times per year of sessions (at least once)
                                              on its own sessions: a log move of 10-15% (crypto 20-30%), up or
                                              down
=====================  =======  ======  ====  =================================================================

With noise clipped at 4 standard deviations, the events stand out: a jump or shock day is never confused with
an ordinary day, and no session moves more than the quality gate's plausible 50%
(:func:`~airflow_provider_portfolio.market.quality.validate_bars` passes every dataset). Each dataset's
manifest lists its events (the crash date, the regimes, the shock days, every jump).

Storage: ``<root>/<dataset_id>/bars.csv.gz`` (the canonical bar frame as gzip-compressed CSV) and
``manifest.json`` (profile, seed, symbols, range, rows per symbol, the SHA-256 of the uncompressed CSV,
``created_at``, the events). CSV rather than Parquet: pyarrow is not a dependency of the provider, and a dataset
written on one worker must read on every other; one format also keeps one checksum independent of library
versions, and ``zcat`` reads it. A dataset is written into a hidden temporary folder and renamed into place
once complete, so a folder named by an id always holds a whole dataset; the ``latest`` file names the dataset
the desk runs on and is replaced atomically, only after its dataset is complete.

Plain Python: never imports Airflow. Bad input raises
:class:`~airflow_provider_portfolio.exceptions.InvalidInputError` before anything is written; a root that
cannot be written or a dataset that cannot be read raises :class:`~airflow_provider_portfolio.exceptions.StoreError`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from airflow_provider_portfolio.exceptions import InvalidInputError, PartialBarsError, SourceError, StoreError
from airflow_provider_portfolio.market.bars import BAR_COLUMNS, PRICE_COLUMNS, empty_bars, parse_timeframe, to_bar_frame
from airflow_provider_portfolio.market.calendar import (
    DEFAULT_EXCHANGE,
    MarketCalendar,
    calendar_for_symbol,
    intraday_bar_starts,
    parse_session_date,
    session_positions,
)
from airflow_provider_portfolio.market.params import is_crypto, validate_symbols
from airflow_provider_portfolio.market.synthetic import (
    _CLOSE,
    _HIGH,
    _LOW,
    _OPEN,
    _VAR,
    _VOLUME,
    _aggregate,
    _bar_frame,
    _daily_bars,
    _minute_bars,
    _rng,
    _symbol_key,
)
from airflow_provider_portfolio.market.timeutil import ensure_utc, to_ns_array

log = logging.getLogger(__name__)

__all__ = [
    "BARS_FILE", "DEFAULT_KEEP", "LATEST", "MANIFEST_FILE", "PRICE_LEVELS", "PROFILES", "Dataset", "DatasetSource",
    "Manifest", "Profile", "RefreshReport", "WriteResult", "default_dataset_id", "generate_dataset",
    "latest_dataset_id", "list_datasets", "price_level", "prune_datasets", "read_dataset", "refresh_datasets",
    "validate_dataset_id", "write_dataset",
]


@dataclass(frozen=True)
class Profile:
    """A market story: annual drift and volatility of equities (crypto pairs: x2 and x2.5), the loading on the
    market factor, and what happens (the module's table)."""

    name: str
    drift: float
    volatility: float
    correlation: float
    story: str


#: Every profile, in the documented order.
PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("calm", 0.06, 0.10, 0.5, "a quiet, slightly rising market"),
        Profile("trending", 0.40, 0.12, 0.5, "a steady rally: every symbol drifts up"),
        Profile("crash", 0.10, 0.15, 0.6, "a 5-session crash at 60% of the range: -30% (crypto -45%), then "
                                          "doubled volatility"),
        Profile("regime_switch", 0.12, 0.12, 0.6, "calm (40-120 days) and stressed (20-60 days: drift -25%, "
                                                  "volatility 40%) regimes alternate, calm first"),
        Profile("correlated_shocks", 0.08, 0.15, 0.85, "one shock day per 30 days moves every symbol 6% (crypto "
                                                       "12%), two in three down"),
        Profile("jumps", 0.08, 0.15, 0.5, "each symbol jumps 4 times a year: 10-15% (crypto 20-30%), up or down"),
    )
}

#: Starting prices of the default tickers and a few well-known pairs (roughly their mid-2024 levels).
PRICE_LEVELS: dict[str, float] = {
    "AAPL": 190.0, "MSFT": 420.0, "NVDA": 120.0, "AMZN": 185.0, "GOOGL": 170.0, "GOOG": 172.0, "META": 500.0,
    "TSLA": 200.0, "JPM": 200.0, "SPY": 520.0, "QQQ": 450.0, "IWM": 205.0, "DIA": 390.0,
    "BTC/USD": 60_000.0, "ETH/USD": 3_000.0, "SOL/USD": 150.0, "DOGE/USD": 0.15,
}

BARS_FILE = "bars.csv.gz"
MANIFEST_FILE = "manifest.json"
#: The pointer file naming the dataset the desk runs on (and the id that reads it).
LATEST = "latest"
#: How many datasets of each profile pruning keeps by default.
DEFAULT_KEEP = 4
FORMAT_VERSION = 1
#: The shortest range a dataset may cover, in calendar days (every profile's events fit in it).
MIN_DAYS = 28

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DAY_NS = 86_400_000_000_000
_MINUTE_NS = 60_000_000_000
_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_CSV_CHUNK_ROWS = 200_000
_STALE_S = 6 * 3600  # a hidden temporary folder older than this is left over from a crashed write
_STREAM_MARKET, _STREAM_SYMBOL = 11, 12

_Z_LIMIT = 4.0
_GAP = 0.25  # an equity's overnight gap, as a fraction of the session's volatility
_CRYPTO_DRIFT, _CRYPTO_VOL, _CRYPTO_MOVE = 2.0, 2.5, 2.0
_CRASH_AT, _CRASH_SESSIONS, _CRASH_DROP, _CRASH_DROP_CRYPTO = 0.6, 5, 0.30, 0.45
_CRASH_SHARES = np.array([0.35, 0.20, 0.15, 0.10, 0.20])  # of the crash's log drop, per session
_AFTER_CRASH_DRIFT, _AFTER_CRASH_VOL = 0.05, 2.0
_CALM_DAYS, _STRESSED_DAYS = (40, 120), (20, 60)
_STRESSED_DRIFT, _STRESSED_VOL = -0.25, 0.40
_SHOCK_EVERY_DAYS, _SHOCK_MOVE, _SHOCK_DOWN = 30, 0.06, 2.0 / 3.0
_JUMPS_PER_YEAR, _JUMP_SIZE = 4, (0.10, 0.15)


# --- names and levels -----------------------------------------------------------------------------


def validate_dataset_id(dataset_id: object) -> str:
    """Check a dataset id: a safe folder name (letters, digits, ``.``, ``_``, ``-``; up to 100; not ``latest``).

    :raises InvalidInputError: naming the id and what is allowed.
    """
    if not isinstance(dataset_id, str) or not _ID_RE.match(dataset_id) or dataset_id.lower() == LATEST:
        raise InvalidInputError(
            f"dataset id must be a safe folder name (a letter or digit, then letters, digits, '.', '_' or '-'; "
            f"at most 100; not {LATEST!r}), got {dataset_id!r}"
        )
    return dataset_id


def default_dataset_id(profile: str, at: datetime | date) -> str:
    """``<profile>-<YYYYMMDD>`` of ``at`` (a tz-aware instant counts by its UTC date)."""
    day = ensure_utc(at, "at").date() if isinstance(at, datetime) else at
    return validate_dataset_id(f"{profile}-{day:%Y%m%d}")


def price_level(symbol: str) -> float:
    """The price ``symbol`` starts at: :data:`PRICE_LEVELS`, else a level drawn from its name (20-400 for
    equities, 0.5-2,000 for crypto pairs, three significant digits)."""
    if symbol in PRICE_LEVELS:
        return PRICE_LEVELS[symbol]
    digest = hashlib.blake2b(symbol.encode(), digest_size=8, person=b"portfolio-lvl").digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    lo, hi = (0.5, 2000.0) if is_crypto(symbol) else (20.0, 400.0)
    level = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return float(f"{level:.3g}")


def _decimals(level: float) -> int:
    """Decimals prices of a symbol at ``level`` are rounded to: cents, or four significant digits below $1."""
    return max(2, 3 - math.floor(math.log10(level)))


def _base_volume(symbol: str, crypto: bool) -> float:
    digest = hashlib.blake2b(symbol.encode(), digest_size=8, person=b"portfolio-vol").digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    lo, hi = (200.0, 20_000.0) if crypto else (2e6, 6e7)
    return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def _profile(name: object) -> Profile:
    if not isinstance(name, str) or name.strip() not in PROFILES:
        raise InvalidInputError(f"unknown profile {name!r}: use one of {', '.join(PROFILES)}")
    return PROFILES[name.strip()]


def _profiles(profiles: object) -> list[Profile]:
    if isinstance(profiles, str):
        profiles = [p.strip() for p in profiles.split(",") if p.strip()]
    if not isinstance(profiles, (list, tuple)) or not profiles:
        raise InvalidInputError(f"profiles must be a non-empty list of {', '.join(PROFILES)}; got {profiles!r}")
    return [PROFILES[name] for name in dict.fromkeys(_profile(p).name for p in profiles)]


def _seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


# --- the market story -----------------------------------------------------------------------------


@dataclass
class _Story:
    """What happens to every symbol, per calendar day of the range (equity units)."""

    factor: np.ndarray  # market factor, N(0, 1) per day
    drift: np.ndarray
    vol: np.ndarray
    moves: np.ndarray  # shock log moves
    crash_day: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


def _iso(first: pd.Timestamp, offset: int) -> str:
    return (first + pd.Timedelta(days=int(offset))).date().isoformat()


def _story(profile: Profile, seed: int, first: pd.Timestamp, n_days: int, offsets: list[np.ndarray]) -> _Story:
    """The market-wide part of a dataset: factor, drift and volatility per day, and the profile's events.

    :param offsets: for each calendar in play, its sessions as day offsets from ``first``.
    """
    rng = _rng(_symbol_key(seed, f"dataset/{profile.name}/market"), _STREAM_MARKET, 0)
    story = _Story(rng.standard_normal(n_days), np.full(n_days, profile.drift), np.full(n_days, profile.volatility),
                   np.zeros(n_days))
    common = offsets[0]
    for days in offsets[1:]:
        common = np.intersect1d(common, days)
    # A day with a session of every calendar in play, and a close before it in each.
    after_first = common[common > max(int(days[0]) for days in offsets)]
    if profile.name == "crash":
        fits = [int(d) for d in after_first
                if all(len(days) - int(np.searchsorted(days, d)) >= _CRASH_SESSIONS for days in offsets)]
        if not fits:
            raise InvalidInputError(f"the range is too short for the crash profile ({_CRASH_SESSIONS} sessions "
                                    "of every symbol after its first)")
        target = int(_CRASH_AT * (n_days - 1))
        story.crash_day = next((d for d in fits if d >= target), fits[-1])
        story.events.append({"event": "crash", "date": _iso(first, story.crash_day), "sessions": _CRASH_SESSIONS,
                             "drop": _CRASH_DROP, "crypto_drop": _CRASH_DROP_CRYPTO})
    elif profile.name == "regime_switch":
        day, stressed = 0, False
        while day < n_days:
            lo, hi = _STRESSED_DAYS if stressed else _CALM_DAYS
            length = int(rng.integers(lo, hi + 1))
            if day == 0:
                length = min(length, max(7, n_days // 3))
            stop = min(day + length, n_days)
            if stressed:
                story.drift[day:stop], story.vol[day:stop] = _STRESSED_DRIFT, _STRESSED_VOL
            story.events.append({"event": "regime", "state": "stressed" if stressed else "calm",
                                 "start": _iso(first, day), "end": _iso(first, stop - 1)})
            day, stressed = stop, not stressed
    elif profile.name == "correlated_shocks":
        count = min(max(2, n_days // _SHOCK_EVERY_DAYS), len(after_first))
        chosen = np.sort(rng.choice(after_first, size=count, replace=False))
        down = rng.random(count) < _SHOCK_DOWN
        for day, is_down in zip(chosen, down):
            move = -_SHOCK_MOVE if is_down else _SHOCK_MOVE
            story.moves[int(day)] = move
            story.events.append({"event": "shock", "date": _iso(first, int(day)), "move": move,
                                 "crypto_move": move * _CRYPTO_MOVE})
    return story


def _symbol_values(profile: Profile, seed: int, story: _Story, symbol: str, offsets: np.ndarray,
                   first: pd.Timestamp) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Daily values ``(6, n)`` of one symbol in the layout of the synthetic market (log prices, variance,
    volume), and its own events (jumps)."""
    n = len(offsets)
    crypto = is_crypto(symbol)
    rng = _rng(_symbol_key(seed, f"dataset/{profile.name}/{symbol}"), _STREAM_SYMBOL, 0)
    noise, g_gap, g_volume = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    u_high, u_low = rng.random((2, n))
    per_year = 365.0 if crypto else 252.0
    drift = story.drift[offsets] * (_CRYPTO_DRIFT if crypto else 1.0)
    vol = story.vol[offsets] * (_CRYPTO_VOL if crypto else 1.0)
    moves = story.moves[offsets] * (_CRYPTO_MOVE if crypto else 1.0)
    crash = None
    if story.crash_day is not None:
        crash = int(np.searchsorted(offsets, story.crash_day))
        after = np.arange(n) >= crash + _CRASH_SESSIONS
        drift[after] = _AFTER_CRASH_DRIFT * (_CRYPTO_DRIFT if crypto else 1.0)
        vol[after] *= _AFTER_CRASH_VOL
    rho = profile.correlation
    z = np.clip(rho * story.factor[offsets] + math.sqrt(1.0 - rho * rho) * noise, -_Z_LIMIT, _Z_LIMIT)
    sd = vol / math.sqrt(per_year)
    returns = (drift - 0.5 * vol * vol) / per_year + sd * z + moves
    events: list[dict[str, Any]] = []
    if profile.name == "jumps" and n > 1:
        count = min(max(1, round(n * _JUMPS_PER_YEAR / per_year)), n - 1)
        where = np.sort(rng.choice(np.arange(1, n), size=count, replace=False))
        size = rng.uniform(*_JUMP_SIZE, size=count) * np.where(rng.random(count) < 0.5, -1.0, 1.0)
        size *= _CRYPTO_MOVE if crypto else 1.0
        returns[where] += size
        events = [{"event": "jump", "symbol": symbol, "date": _iso(first, int(offsets[k])), "move": round(float(s), 6)}
                  for k, s in zip(where, size)]
    if crash is not None:
        drop = _CRASH_DROP_CRYPTO if crypto else _CRASH_DROP
        returns[crash : crash + _CRASH_SESSIONS] = math.log(1.0 - drop) * _CRASH_SHARES
    level = math.log(price_level(symbol))
    close = level + np.cumsum(returns)
    previous = np.concatenate([[level], close[:-1]])
    gap = 0.0 if crypto else _GAP
    open_ = previous + gap * sd * np.clip(g_gap, -_Z_LIMIT, _Z_LIMIT)
    open_[0] = level
    var = sd * sd
    bridge = 2.0 * var * (1.0 - gap * gap)
    move2, mid = (close - open_) ** 2, open_ + close
    values = np.empty((6, n))
    values[_OPEN], values[_CLOSE], values[_VAR] = open_, close, var
    values[_HIGH] = 0.5 * (mid + np.sqrt(move2 - bridge * np.log1p(-u_high)))
    values[_LOW] = 0.5 * (mid - np.sqrt(move2 - bridge * np.log1p(-u_low)))
    activity = 0.6 + 0.4 * np.minimum(np.abs(returns) / sd, 10.0)
    values[_VOLUME] = _base_volume(symbol, crypto) * np.exp(0.3 * np.clip(g_volume, -_Z_LIMIT, _Z_LIMIT)) * activity
    return values, events


def _rounded(symbol: str, bars: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Prices rounded to the symbol's tick (monotone, so high >= open, close >= low still holds)."""
    decimals = _decimals(price_level(symbol))
    prices = [np.round(x, decimals) for x in bars[:4]]
    return (*prices, np.round(bars[4], 6))


# --- datasets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What a dataset is: its inputs, its rows per symbol, its events, and (once written) its checksum.

    :param checksum: SHA-256 (hex) of the uncompressed bars CSV; ``None`` until written.
    :param created_at: ISO instant (UTC) the dataset was generated.
    """

    dataset_id: str
    profile: str
    seed: int
    symbols: tuple[str, ...]
    start: str
    end: str
    timeframe: str
    exchange: str
    rows: Mapping[str, int]
    created_at: str
    events: tuple[Mapping[str, Any], ...] = ()
    checksum: str | None = None

    @property
    def total_rows(self) -> int:
        return int(sum(self.rows.values()))

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready data (``manifest.json``)."""
        spec = PROFILES.get(self.profile)
        return {
            "version": FORMAT_VERSION, "dataset_id": self.dataset_id, "profile": self.profile,
            "description": spec.story if spec else "", "seed": self.seed, "symbols": list(self.symbols),
            "start": self.start, "end": self.end, "timeframe": self.timeframe, "exchange": self.exchange,
            "rows": dict(self.rows), "total_rows": self.total_rows, "bars_file": BARS_FILE, "format": "csv.gz",
            "checksum": self.checksum, "created_at": self.created_at,
            "parameters": {"drift": spec.drift, "volatility": spec.volatility, "correlation": spec.correlation}
            if spec else {},
            "events": [dict(e) for e in self.events],
        }

    @classmethod
    def from_dict(cls, data: object, where: str = "manifest") -> Manifest:
        """A manifest read back.

        :raises StoreError: when ``data`` is not a manifest this code can read.
        """
        try:
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            if data.get("version") != FORMAT_VERSION:
                raise StoreError(f"{where}: format version {data.get('version')!r}, this code reads {FORMAT_VERSION}")
            return cls(
                dataset_id=str(data["dataset_id"]), profile=str(data["profile"]), seed=int(data["seed"]),
                symbols=tuple(str(s) for s in data["symbols"]), start=str(data["start"]), end=str(data["end"]),
                timeframe=str(data["timeframe"]), exchange=str(data["exchange"]),
                rows={str(k): int(v) for k, v in data["rows"].items()}, created_at=str(data["created_at"]),
                events=tuple(dict(e) for e in data.get("events", ())),
                checksum=None if data.get("checksum") is None else str(data["checksum"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise StoreError(f"{where} is not a dataset manifest: {type(err).__name__}: {err}") from None


@dataclass(frozen=True)
class Dataset:
    """A dataset: its manifest and its bars (the canonical bar frame, sorted by symbol and ts)."""

    manifest: Manifest
    bars: pd.DataFrame

    @property
    def dataset_id(self) -> str:
        return self.manifest.dataset_id


def generate_dataset(
    dataset_id: str,
    *,
    profile: str,
    symbols: Sequence[str] | str,
    start: object,
    end: object,
    timeframe: str = "1Day",
    seed: int = 0,
    exchange: str = DEFAULT_EXCHANGE,
    created_at: datetime | None = None,
) -> Dataset:
    """Generate a dataset in memory (see the module docstring for the profiles).

    :param dataset_id: its id (:func:`validate_dataset_id`), e.g. :func:`default_dataset_id`.
    :param profile: one of :data:`PROFILES`.
    :param symbols: tickers and crypto pairs (``BTC/USD``).
    :param start: first session date (``date``, ISO string ...).
    :param end: last session date, inclusive; at least :data:`MIN_DAYS` calendar days after ``start``.
    :param timeframe: ``1Day`` (default) or an intraday timeframe (``1Min`` ... ``23Hour``).
    :param seed: integer >= 0; the same inputs give the same bars.
    :param exchange: calendar of equities.
    :param created_at: when it was made (tz-aware), default now; recorded in the manifest only.
    :raises InvalidInputError: for an unknown profile, bad or empty symbols, a bad date, timeframe, seed or
        exchange, an end before the start or a range shorter than :data:`MIN_DAYS`.
    """
    dataset_id = validate_dataset_id(dataset_id)
    spec = _profile(profile)
    symbol_list = validate_symbols(symbols)
    tf = parse_timeframe(timeframe)
    seed = _seed(seed)
    first, last = parse_session_date(start, "start"), parse_session_date(end, "end")
    if last < first:
        raise InvalidInputError(f"end {last.date()} is before start {first.date()}")
    n_days = (last - first).days + 1
    if n_days < MIN_DAYS:
        raise InvalidInputError(f"a dataset covers at least {MIN_DAYS} days; {first.date()}..{last.date()} is {n_days}")
    made = ensure_utc(created_at, "created_at") if created_at is not None else pd.Timestamp.now(tz="UTC")
    by_calendar: dict[str, list[str]] = {}
    for symbol in symbol_list:
        by_calendar.setdefault(calendar_for_symbol(symbol, exchange).name, []).append(symbol)
    bounds = {name: MarketCalendar(name).session_bounds(first, last) for name in by_calendar}
    offsets = {name: (b[0] - first.value) // _DAY_NS for name, b in bounds.items()}
    if any(len(days) < 2 for days in offsets.values()):
        raise InvalidInputError(f"{first.date()}..{last.date()} holds fewer than 2 sessions of a symbol's calendar")
    story = _story(spec, seed, first, n_days, list(offsets.values()))
    events = list(story.events)
    parts: dict[str, tuple[np.ndarray, ...]] = {}
    for name, group in by_calendar.items():
        dates, opens, closes = bounds[name]
        minutes = -((opens - closes) // _MINUTE_NS)
        for symbol in group:
            values, own = _symbol_values(spec, seed, story, symbol, offsets[name], first)
            events.extend(own)
            crypto = is_crypto(symbol)
            if tf.is_daily:
                bars = tuple(x[0] for x in _daily_bars(values[:, None, :], np.array([crypto])))
                parts[symbol] = (dates, *_rounded(symbol, bars))
                continue
            key = _symbol_key(seed, f"dataset/{spec.name}/{symbol}/intraday")
            minute = _minute_bars(key, crypto, 0.0 if crypto else _GAP, values, dates, minutes)
            step = int(tf.delta.value // _MINUTE_NS)
            ts = intraday_bar_starts(opens, closes, step * _MINUTE_NS)
            parts[symbol] = (ts, *_rounded(symbol, _aggregate(minute, minutes, step)))
    frame = _bar_frame(list(parts), tf.name, parts)
    manifest = Manifest(
        dataset_id=dataset_id, profile=spec.name, seed=seed, symbols=tuple(symbol_list),
        start=first.date().isoformat(), end=last.date().isoformat(), timeframe=tf.name,
        exchange=MarketCalendar(exchange).name, rows={s: int(len(parts[s][0])) for s in symbol_list},
        created_at=pd.Timestamp(made).tz_convert("UTC").isoformat(), events=tuple(events),
    )
    return Dataset(manifest, frame)


# --- files ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteResult:
    """What :func:`write_dataset` did: ``written`` (new), ``replaced`` (an id with other bars), or ``unchanged``
    (the id already held the same bars: nothing written, its manifest kept)."""

    manifest: Manifest
    status: str


def _root(root: str | os.PathLike[str], *, create: bool) -> Path:
    path = Path(root)
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the dataset root {str(path)!r}: {err.strerror or err}") from None
        if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
            raise StoreError(f"cannot write datasets under {str(path)!r}: not a writable folder")
    return path


def _csv_chunks(bars: pd.DataFrame) -> Iterator[bytes]:
    """The bars as CSV (UTF-8, ``\\n`` lines, ISO timestamps, shortest round-trip floats), in chunks."""
    frame = bars.loc[:, list(BAR_COLUMNS)]
    if frame.empty:
        yield (",".join(BAR_COLUMNS) + "\n").encode()
        return
    for i in range(0, len(frame), _CSV_CHUNK_ROWS):
        part = frame.iloc[i : i + _CSV_CHUNK_ROWS]
        yield part.to_csv(index=False, header=i == 0, date_format=_TS_FORMAT, lineterminator="\n").encode()


def _write_bars(path: Path, bars: pd.DataFrame) -> str:
    """Write ``bars`` gzip-compressed (reproducible: no name or time in the header); return the CSV's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            for chunk in _csv_chunks(bars):
                digest.update(chunk)
                gz.write(chunk)
        raw.flush()
        os.fsync(raw.fileno())
    return digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())


def _sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{str(folder)!r} holds no dataset ({MANIFEST_FILE} missing)") from None
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read {str(path)!r}: {err}") from None
    return Manifest.from_dict(data, where=str(path))


def _remove(root: Path, folder: Path) -> None:
    """Remove a dataset folder: renamed away first (atomic), so no half-deleted dataset keeps its name."""
    trash = root / f".trash-{folder.name}-{uuid.uuid4().hex}"
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def write_dataset(root: str | os.PathLike[str], dataset: Dataset, *, overwrite: bool = False) -> WriteResult:
    """Write ``dataset`` under ``<root>/<dataset_id>/``, atomically: into a hidden temporary folder, renamed into
    place when complete. A failure leaves nothing under the id (and never touches ``latest``).

    :param root: the datasets' folder (created when missing).
    :param dataset: from :func:`generate_dataset`.
    :param overwrite: replace an existing dataset of that id holding other bars (the same bars: ``unchanged``).
    :raises StoreError: when ``root`` cannot be written, or the id exists with other bars and not ``overwrite``.
    """
    base = _root(root, create=True)
    dataset_id = validate_dataset_id(dataset.dataset_id)
    target = base / dataset_id
    temp = base / f".tmp-{dataset_id}-{uuid.uuid4().hex}"
    try:
        temp.mkdir()
        checksum = _write_bars(temp / BARS_FILE, dataset.bars)
        manifest = replace(dataset.manifest, checksum=checksum)
        _write_json(temp / MANIFEST_FILE, manifest.to_dict())
        _sync_dir(temp)
        if not target.exists():
            os.rename(temp, target)
            status = "written"
        else:
            try:
                existing: Manifest | None = _read_manifest(target)
            except StoreError:
                existing = None
            if existing is not None and existing.checksum == checksum:
                return WriteResult(existing, "unchanged")
            if not overwrite:
                raise StoreError(f"dataset {dataset_id!r} already exists under {str(base)!r} with other bars: "
                                 "pass overwrite=True to replace it")
            trash = base / f".trash-{dataset_id}-{uuid.uuid4().hex}"
            os.rename(target, trash)
            try:
                os.rename(temp, target)
            except OSError:
                os.rename(trash, target)
                raise
            shutil.rmtree(trash, ignore_errors=True)
            status = "replaced"
        _sync_dir(base)
    except OSError as err:
        raise StoreError(f"cannot write dataset {dataset_id!r} under {str(base)!r}: {err.strerror or err}") from None
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    log.info("Dataset %s %s: %s, %d rows", dataset_id, status, manifest.profile, manifest.total_rows)
    return WriteResult(manifest, status)


def latest_dataset_id(root: str | os.PathLike[str]) -> str | None:
    """The id the ``latest`` pointer names, ``None`` when there is none.

    :raises StoreError: when the pointer cannot be read or names no valid id.
    """
    path = Path(root) / LATEST
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreError(f"cannot read {str(path)!r}: {err}") from None
    try:
        return validate_dataset_id(text)
    except InvalidInputError:
        raise StoreError(f"{str(path)!r} names no dataset: {text[:100]!r}") from None


def _set_latest(base: Path, dataset_id: str) -> None:
    """Point ``latest`` at ``dataset_id`` (a complete dataset), atomically."""
    temp = base / f".latest-{uuid.uuid4().hex}"
    try:
        with open(temp, "w", encoding="utf-8") as out:
            out.write(dataset_id + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, base / LATEST)
        _sync_dir(base)
    except OSError as err:
        raise StoreError(f"cannot point {LATEST!r} at {dataset_id!r} under {str(base)!r}: {err}") from None
    finally:
        if temp.exists():
            temp.unlink()


def _resolve(base: Path, dataset_id: str) -> str:
    if dataset_id == LATEST:
        found = latest_dataset_id(base)
        if found is None:
            raise StoreError(f"no {LATEST!r} dataset under {str(base)!r}: run the synthetic refresh first")
        return found
    return validate_dataset_id(dataset_id)


def read_dataset(root: str | os.PathLike[str], dataset_id: str = LATEST) -> Dataset:
    """Read a stored dataset back, its checksum verified.

    :param root: the datasets' folder.
    :param dataset_id: an id, or ``latest`` (the pointer's).
    :raises StoreError: when it does not exist (the message lists those that do), or is unreadable or corrupt.
    :raises InvalidInputError: for an id that is not a valid one.
    """
    base = Path(root)
    resolved = _resolve(base, dataset_id)
    folder = base / resolved
    if not (folder / MANIFEST_FILE).is_file():
        known = ", ".join(m.dataset_id for m in list_datasets(base)) or "none"
        raise StoreError(f"no dataset {resolved!r} under {str(base)!r} (datasets: {known})")
    manifest = _read_manifest(folder)
    try:
        with gzip.open(folder / BARS_FILE, "rb") as gz:
            data = gz.read()
    except (OSError, EOFError) as err:
        raise StoreError(f"cannot read the bars of dataset {resolved!r}: {err}") from None
    checksum = hashlib.sha256(data).hexdigest()
    if checksum != manifest.checksum:
        raise StoreError(f"dataset {resolved!r} is corrupt: its bars' checksum is {checksum[:12]}..., its manifest "
                         f"says {str(manifest.checksum)[:12]}...")
    text = {c: str for c in ("symbol", "timeframe", "source")}
    raw = pd.read_csv(io.BytesIO(data), dtype={**text, **dict.fromkeys(PRICE_COLUMNS + ("volume",), "float64")},
                      keep_default_na=False)
    raw["ts"] = pd.to_datetime(raw["ts"], format=_TS_FORMAT, utc=True)
    bars = to_bar_frame(raw) if len(raw) else empty_bars()
    counts = bars["symbol"].value_counts().to_dict()
    if {s: int(counts.get(s, 0)) for s in manifest.rows} != dict(manifest.rows):
        raise StoreError(f"dataset {resolved!r} is corrupt: its rows per symbol differ from its manifest")
    return Dataset(manifest, bars)


def list_datasets(root: str | os.PathLike[str]) -> list[Manifest]:
    """The datasets under ``root``, oldest first (by ``created_at``, then id); an unreadable folder is skipped."""
    base = Path(root)
    if not base.is_dir():
        return []
    found = []
    for folder in base.iterdir():
        if folder.name.startswith(".") or not folder.is_dir() or not (folder / MANIFEST_FILE).is_file():
            continue
        try:
            found.append(_read_manifest(folder))
        except StoreError as err:
            log.warning("Skipping %s: %s", folder.name, err)
    return sorted(found, key=lambda m: (pd.Timestamp(m.created_at), m.dataset_id))


def prune_datasets(root: str | os.PathLike[str], keep: int = DEFAULT_KEEP) -> list[str]:
    """Remove old datasets: the newest ``keep`` of each profile stay, and so does the one ``latest`` names.

    Also removes hidden temporary folders left by a crashed write (older than six hours).

    :param keep: datasets kept per profile, >= 1.
    :return: the removed ids.
    :raises InvalidInputError: for ``keep`` < 1.
    :raises StoreError: when a dataset cannot be removed.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InvalidInputError(f"keep must be an integer >= 1, got {keep!r}")
    base = Path(root)
    latest = latest_dataset_id(base)
    by_profile: dict[str, list[Manifest]] = {}
    for manifest in list_datasets(base):
        by_profile.setdefault(manifest.profile, []).append(manifest)
    removed = []
    for manifests in by_profile.values():
        for manifest in manifests[: max(0, len(manifests) - keep)]:
            if manifest.dataset_id == latest:
                continue
            try:
                _remove(base, base / manifest.dataset_id)
            except OSError as err:
                raise StoreError(f"cannot remove dataset {manifest.dataset_id!r}: {err}") from None
            removed.append(manifest.dataset_id)
    if base.is_dir():
        for leftover in base.iterdir():
            if leftover.name.startswith((".tmp-", ".trash-", ".latest-")):
                try:
                    if time.time() - leftover.stat().st_mtime > _STALE_S:
                        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
                except OSError:
                    pass
    if removed:
        log.info("Pruned %d dataset(s): %s", len(removed), ", ".join(removed))
    return removed


# --- the job --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshReport:
    """What :func:`refresh_datasets` did.

    :param latest: the id ``latest`` names now.
    :param previous: the id it named before (``None``: none).
    :param datasets: per dataset: id, profile, rows, status (``written``, ``replaced``, ``unchanged``), checksum.
    :param pruned: ids removed.
    """

    root: str
    latest: str
    previous: str | None
    datasets: tuple[Mapping[str, Any], ...]
    pruned: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A small JSON summary (the operator's XCom)."""
        return {"root": self.root, "latest": self.latest, "previous": self.previous,
                "datasets": [dict(d) for d in self.datasets], "pruned": list(self.pruned)}


def refresh_datasets(
    root: str | os.PathLike[str],
    *,
    profiles: Sequence[str] | str = tuple(PROFILES),
    symbols: Sequence[str] | str,
    start: object,
    end: object,
    seed: int = 0,
    now: datetime,
    keep: int = DEFAULT_KEEP,
    timeframe: str = "1Day",
    exchange: str = DEFAULT_EXCHANGE,
) -> RefreshReport:
    """The weekly refresh: one dataset per profile, ``<profile>-<YYYYMMDD of now>``; then ``latest`` names the
    first profile's; then old datasets are pruned.

    Every input is checked and every dataset generated before anything is written; each dataset is written
    atomically, and ``latest`` moves only once all are written. A re-run with the same inputs rewrites nothing
    (``unchanged``).

    :param root: the datasets' folder (created when missing).
    :param profiles: names of :data:`PROFILES` (a list or comma-separated); the first is the desk's (``latest``).
    :param symbols: tickers and crypto pairs.
    :param start: first session date.
    :param end: last session date (at least :data:`MIN_DAYS` days after ``start``).
    :param seed: integer >= 0.
    :param now: the run's instant (tz-aware): the ids' date and the datasets' ``created_at``.
    :param keep: datasets kept per profile (>= 1).
    :param timeframe: the bars' timeframe.
    :param exchange: calendar of equities.
    :raises InvalidInputError: for bad input (nothing written).
    :raises StoreError: when ``root`` cannot be written (``latest`` untouched).
    """
    specs = _profiles(profiles)
    symbol_list = validate_symbols(symbols)
    at = ensure_utc(now, "now")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InvalidInputError(f"keep must be an integer >= 1, got {keep!r}")
    datasets = [generate_dataset(default_dataset_id(spec.name, at), profile=spec.name, symbols=symbol_list,
                                 start=start, end=end, timeframe=timeframe, seed=seed, exchange=exchange,
                                 created_at=at) for spec in specs]
    base = _root(root, create=True)
    previous = latest_dataset_id(base)
    results = [write_dataset(base, dataset, overwrite=True) for dataset in datasets]
    latest = datasets[0].dataset_id
    if previous != latest:
        _set_latest(base, latest)
    pruned = prune_datasets(base, keep)
    summary = tuple({"dataset_id": r.manifest.dataset_id, "profile": r.manifest.profile,
                     "rows": r.manifest.total_rows, "status": r.status, "checksum": r.manifest.checksum}
                    for r in results)
    log.info("Synthetic refresh: latest %s (was %s); %d dataset(s); pruned %d", latest, previous, len(results),
             len(pruned))
    return RefreshReport(str(base), latest, previous, summary, tuple(pruned))


# --- the source -----------------------------------------------------------------------------------


class DatasetSource:
    """A stored dataset as a market-data source (``BarSource`` and ``NewsSource``), so the ETL and the trader run
    on it.

    Serves the dataset's bars of its timeframe for the sessions in [start, end] that the dataset covers (a range
    that overlaps it only in part gets that part); ``source`` is ``dataset:<id>``. News is the synthetic
    market's feed under the dataset's seed.

    :param root: the datasets' folder.
    :param dataset_id: an id or ``latest`` (resolved now; the bars are read on first use).
    :raises StoreError: when ``latest`` names nothing.
    """

    def __init__(self, root: str | os.PathLike[str], dataset_id: str = LATEST) -> None:
        self.root = Path(root)
        self.dataset_id = _resolve(self.root, dataset_id)
        self.name = f"dataset:{self.dataset_id}"

    @classmethod
    def of(cls, dataset: Dataset) -> DatasetSource:
        """A source over a dataset in memory."""
        source = cls.__new__(cls)
        source.root, source.dataset_id = Path("."), dataset.dataset_id
        source.name = f"dataset:{dataset.dataset_id}"
        source.__dict__["dataset"] = dataset
        return source

    def __repr__(self) -> str:
        return f"DatasetSource({self.dataset_id!r})"

    @cached_property
    def dataset(self) -> Dataset:
        return read_dataset(self.root, self.dataset_id)

    def get_bars(self, symbols: str | Sequence[str], start: date | datetime, end: date | datetime,
                 timeframe: str = "1Day") -> pd.DataFrame:
        """Bars of ``symbols`` for the sessions dated in [start, end] (``BarSource``).

        :raises SourceError: when the timeframe is not the dataset's, the range lies outside it, or one symbol
            asked for is not in it.
        :raises PartialBarsError: symbols of a list that the dataset does not hold (with the frame of the others).
        :raises InvalidInputError: for a bad symbol, timeframe or date, or start after end.
        """
        manifest = self.dataset.manifest
        tf = parse_timeframe(timeframe)
        wanted = validate_symbols([symbols] if isinstance(symbols, str) else symbols)
        first, last = parse_session_date(start, "start"), parse_session_date(end, "end")
        if first > last:
            raise InvalidInputError(f"start {first.date()} is after end {last.date()}")
        if tf.name != manifest.timeframe:
            raise SourceError(f"{self.name} holds {manifest.timeframe} bars, not {tf.name}")
        if last < pd.Timestamp(manifest.start) or first > pd.Timestamp(manifest.end):
            raise SourceError(f"{self.name} covers {manifest.start}..{manifest.end}, nothing of "
                              f"{first.date()}..{last.date()}")
        missing = {s: f"{s} is not in {self.name} (it holds {', '.join(manifest.symbols)})" for s in wanted
                   if s not in manifest.symbols}
        if isinstance(symbols, str) and missing:
            raise SourceError(missing[wanted[0]])
        bars = self.dataset.bars
        rows = np.array(bars["symbol"].isin([s for s in wanted if s not in missing]), dtype=bool)
        ts = to_ns_array(bars["ts"])
        if tf.is_daily:
            rows = rows & (ts >= first.value) & (ts <= last.value)
        else:
            inside = np.zeros(len(bars), dtype=bool)
            for symbol in set(wanted) - set(missing):
                mine = rows & (bars["symbol"] == symbol).to_numpy()
                _, opens, closes = calendar_for_symbol(symbol, manifest.exchange).session_bounds(first, last)
                inside[mine] = session_positions(opens, closes, ts[mine])[1]
            rows = rows & inside
        frame = bars.loc[rows].reset_index(drop=True)
        frame["source"] = self.name
        frame = to_bar_frame(frame) if len(frame) else empty_bars()
        if missing:
            raise PartialBarsError(frame, missing)
        return frame

    def get_news(self, symbols: Sequence[str], start: date | datetime, end: date | datetime) -> list:
        """The synthetic market's news feed under the dataset's seed (``NewsSource``)."""
        from airflow_provider_portfolio.market.news import synthetic_news

        return synthetic_news(validate_symbols(symbols), start, end, seed=self.dataset.manifest.seed)
