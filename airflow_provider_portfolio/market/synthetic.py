"""The synthetic market: deterministic, plausible bars for any ticker, offline.

Bars are a pure function of ``(seed, symbol, bar)`` on a given exchange calendar: any split of a date
range returns bitwise the same numbers as one request, so incremental loads agree with full loads.

How bars are made:

- **Daily path.** Each symbol has one daily path that starts at :data:`ORIGIN` (2000-01-03) and takes
  one step per session of its calendar (the exchange's sessions for equities, UTC days for crypto
  pairs). Per-symbol parameters (start price 20-500, drift, volatility, GARCH(1,1) persistence,
  Student-t tail index, jump rate and size, regime switching rates, volume level) are drawn from the
  symbol's key. Log returns follow ``r = drift(regime) - h/2 + sqrt(h) z + jump - kappa (log p -
  anchor)``: ``h`` is a GARCH(1,1) variance whose level rises in a stressed regime (a two-state Markov
  chain that also cuts the drift), ``z`` is unit-variance Student-t, jumps are rare with a negative
  mean and feed the GARCH variance, and a weak pull towards a steadily growing anchor keeps prices at
  plausible levels over decades. Crypto is more volatile and fatter-tailed and opens exactly where it
  closed; equities gap a little overnight. Daily high and low are drawn as the extremes of a Brownian
  bridge from open to close.
- **Randomness** comes from counter-based Philox streams keyed by ``blake2b(seed, symbol)``: daily
  innovations per block of :data:`CHUNK` sessions, intraday innovations per session date. Nothing is
  drawn from a shared stream, so no request can shift another's numbers.
- **Intraday bars** of a session come from a Brownian bridge with one point per minute (U-shaped
  intraday variance for equities) from that session's daily open to its close, stretched to touch the
  daily high and low exactly. Coarser timeframes aggregate the minutes, so bars of every timeframe
  agree with the daily bar on open, high, low and close (volumes only approximately, being rounded
  per minute for equities). No request walks over decades of minutes.
- **Caching.** The walk from the origin runs once per (seed, calendar, symbol) and process; the state
  at each block boundary is kept, and the daily values of recently used blocks are kept in a bounded
  LRU (:data:`CACHED_BLOCKS`), so later requests start from the nearest block.

Sessions before :data:`ORIGIN` do not exist in this market: asking for them raises
:class:`~airflow_provider_portfolio.exceptions.InvalidInputError`. Numbers are bitwise reproducible for
one NumPy build on one kind of CPU; elsewhere transcendental functions may differ in the last bit.
A calendar whose history changes (pandas-market-calendars adding a one-off closure) shifts the path
after that date.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime

import numpy as np
import pandas as pd

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.bars import BAR_COLUMNS, Timeframe, empty_bars, parse_timeframe
from airflow_provider_portfolio.market.calendar import (
    DEFAULT_EXCHANGE,
    MarketCalendar,
    calendar_for_symbol,
    intraday_bar_starts,
    parse_session_date,
)
from airflow_provider_portfolio.market.params import is_crypto, validate_symbols

ORIGIN = pd.Timestamp("2000-01-03")
"""First session date of the synthetic market (a Monday, the first NYSE session of 2000)."""

CHUNK = 512
"""Sessions per block of daily randomness."""

CACHED_BLOCKS = 4096
"""How many (symbol, block) daily arrays a process keeps (24 KiB each)."""

SOURCE = "synthetic"
_MINUTE_NS = 60_000_000_000
_DAY_NS = 86_400_000_000_000
_STREAM_PARAMS, _STREAM_DAILY, _STREAM_INTRADAY = 1, 2, 3
_Z_CLIP = 8.0  # unit-variance innovations beyond 8 sd are clipped
_MAX_VAR_RATIO = 10.0  # GARCH variance is capped at 10x the base variance (volatility at ~3.2x)
# A close never moves more than 40% from the previous close, so bars pass the quality gate's default
# implausible-jump threshold (50%).
_MOVE_LIMITS = (float(np.log(0.6)), float(np.log(1.4)))
_OPEN, _HIGH, _LOW, _CLOSE, _VAR, _VOLUME = range(6)  # rows of a block: log prices, GARCH variance, volume


# --- keys and streams ---------------------------------------------------------------------------


def _symbol_key(seed: int, symbol: str) -> int:
    """A 128-bit Philox key for (seed, symbol), stable across processes and platforms."""
    digest = hashlib.blake2b(f"{seed}\x1f{symbol}".encode(), digest_size=16, person=b"portfolio-syn").digest()
    return int.from_bytes(digest, "little")


def _rng(key: int, stream: int, sub: int) -> np.random.Generator:
    """An independent generator for block ``sub`` of ``stream`` under ``key``."""
    return np.random.Generator(np.random.Philox(key=key, counter=(stream << 192) | (sub << 128)))


# --- per-symbol dynamics --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Params:
    """Per-symbol dynamics as ``(S, 1)`` float arrays, so they broadcast over ``(S, sessions)``."""

    log_p0: np.ndarray
    sig_base: np.ndarray  # base volatility per session
    alpha: np.ndarray
    beta: np.ndarray
    omega_calm: np.ndarray
    omega_stress: np.ndarray
    df: np.ndarray  # Student-t tail index
    mu_calm: np.ndarray  # drift per session
    mu_stress: np.ndarray
    p_enter: np.ndarray  # per session: calm -> stressed
    p_exit: np.ndarray  # stressed -> calm
    jump_prob: np.ndarray
    jump_mean: np.ndarray  # in units of sig_base
    jump_sd: np.ndarray
    kappa: np.ndarray  # pull towards the anchor
    growth: np.ndarray  # anchor growth per session
    base_volume: np.ndarray
    gap: np.ndarray  # overnight gap sd as a fraction of sqrt(h)
    crypto: np.ndarray  # 1.0 for crypto pairs

    @classmethod
    def draw(cls, keys: Sequence[int], crypto: Sequence[bool]) -> _Params:
        u = np.array([_rng(key, _STREAM_PARAMS, 0).random(16) for key in keys]).T[:, :, None]  # (16, S, 1)
        c = np.asarray(crypto, dtype=bool)[:, None]
        per_year = np.where(c, 365.0, 252.0)
        ann_vol = np.where(c, 0.55 + 0.40 * u[1], 0.15 + 0.30 * u[1])
        sig = ann_vol / np.sqrt(per_year)
        alpha = 0.04 + 0.07 * u[2]
        persistence = 0.955 + 0.035 * u[3]
        omega = sig**2 * (1.0 - persistence)
        growth = np.where(c, 0.15 * u[5], 0.02 + 0.06 * u[5])  # long-run log growth per year
        mu_ann = growth + 0.5 * ann_vol**2 + 0.02
        half_life_years = np.where(c, 1.0 + 1.5 * u[13], 2.0 + 3.0 * u[13])
        return cls(
            log_p0=np.log(20.0) + (np.log(500.0) - np.log(20.0)) * u[0],
            sig_base=sig,
            alpha=alpha,
            beta=persistence - alpha,
            omega_calm=omega,
            omega_stress=omega * (1.5 + 1.5 * u[4]),
            df=np.where(c, 3.0 + 2.5 * u[6], 3.5 + 4.5 * u[6]),
            mu_calm=mu_ann / per_year,
            mu_stress=(mu_ann - 0.30 - 0.50 * u[7]) / per_year,
            p_enter=1.0 / 750.0 + u[8] / 400.0,
            p_exit=1.0 / 80.0 + u[9] / 30.0,
            jump_prob=1.0 / 500.0 + u[10] / 250.0,
            jump_mean=-0.5 - 0.5 * u[11],
            jump_sd=2.5 + 2.5 * u[12],
            kappa=np.log(2.0) / (half_life_years * per_year),
            growth=growth / per_year,
            base_volume=np.exp(np.where(c, np.log(300.0), np.log(3e5)) + np.log(100.0) * u[14]),
            gap=np.where(c, 0.0, 0.20 + 0.15 * u[15]),
            crypto=c.astype(np.float64),
        )

    @classmethod
    def stack(cls, parts: Sequence[_Params]) -> _Params:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def row(self, index: int) -> _Params:
        return type(self)(**{f.name: getattr(self, f.name)[index : index + 1] for f in fields(self)})


# --- daily paths ----------------------------------------------------------------------------------


@dataclass
class _Symbol:
    """One symbol's walk: its key, parameters, and the state at the start of each block reached."""

    key: int
    params: _Params
    checkpoints: list[np.ndarray] = field(default_factory=list)  # (h, shock^2, stressed, log close)


_SYMBOLS: dict[tuple[int, str, str], _Symbol] = {}
_BLOCKS: OrderedDict[tuple[int, str, str, int], np.ndarray] = OrderedDict()  # -> (6, CHUNK), read-only
_LOCK = threading.RLock()


def _simulate(symbols: Sequence[_Symbol], first: int, stop: int, keep_from: int) -> dict[int, np.ndarray]:
    """Walk ``symbols`` (all with a checkpoint at block ``first``) through blocks ``first .. stop - 1``.

    Vectorised across symbols; the GARCH recursion loops over sessions. Records the checkpoint at the
    end of each block and returns the daily values of blocks ``>= keep_from`` as ``(6, S, CHUNK)``.
    """
    p = _Params.stack([s.params for s in symbols])
    count = len(symbols)
    state = np.stack([s.checkpoints[first] for s in symbols], axis=1)  # (4, S)
    h, shock2, stressed, log_close = state[0], state[1], state[2] > 0.5, state[3]
    # Loop constants, shaped (S,) for the per-session step.
    om_calm, om_stress = p.omega_calm[:, 0], p.omega_stress[:, 0]
    alpha, beta, kappa = p.alpha[:, 0], p.beta[:, 0], p.kappa[:, 0]
    h_cap = _MAX_VAR_RATIO * p.sig_base[:, 0] ** 2
    kept: dict[int, np.ndarray] = {}
    for block in range(first, stop):
        keep = block >= keep_from
        z = np.empty((count, CHUNK))
        u = np.empty((2, count, CHUNK))
        g = np.empty((count, CHUNK))
        u_out = np.empty((2, count, CHUNK) if keep else (2, 0, 0))  # drawn only for the blocks kept
        g_out = np.empty((2, count, CHUNK) if keep else (2, 0, 0))
        for s, sym in enumerate(symbols):  # the draw order of a block never changes
            rng = _rng(sym.key, _STREAM_DAILY, block)
            z[s] = rng.standard_t(p.df[s, 0], CHUNK)
            u[:, s] = rng.random((2, CHUNK))
            g[s] = rng.standard_normal(CHUNK)
            if keep:
                u_out[:, s] = rng.random((2, CHUNK))
                g_out[:, s] = rng.standard_normal((2, CHUNK))
        z *= np.sqrt((p.df - 2.0) / p.df)
        np.clip(z, -_Z_CLIP, _Z_CLIP, out=z)
        jumps = np.where(u[1] < p.jump_prob, (p.jump_mean + p.jump_sd * g) * p.sig_base, 0.0)
        steps = np.arange(block * CHUNK, (block + 1) * CHUNK, dtype=np.float64)
        pull = p.kappa * (p.log_p0 + p.growth * steps)
        # Session-major copies for the loop.
        z_t, jumps_t = np.ascontiguousarray(z.T), np.ascontiguousarray(jumps.T)
        enter_t, stay_t = np.ascontiguousarray((u[0] < p.p_enter).T), np.ascontiguousarray((u[0] >= p.p_exit).T)
        base_calm_t = np.ascontiguousarray((p.mu_calm + pull).T)
        base_stress_t = np.ascontiguousarray((p.mu_stress + pull).T)
        var_t = np.empty((CHUNK, count))
        close_t = np.empty((CHUNK, count))
        prev_close = log_close
        for t in range(CHUNK):  # GARCH(1,1) with regimes: sequential in time, vectorised across symbols
            stressed = np.where(stressed, stay_t[t], enter_t[t])
            h = np.minimum(np.where(stressed, om_stress, om_calm) + alpha * shock2 + beta * h, h_cap)
            eps = np.sqrt(h) * z_t[t] + jumps_t[t]
            shock2 = eps * eps
            move = np.where(stressed, base_stress_t[t], base_calm_t[t]) - kappa * log_close - 0.5 * h + eps
            log_close = log_close + np.clip(move, *_MOVE_LIMITS)
            var_t[t] = h
            close_t[t] = log_close
        for s, sym in enumerate(symbols):
            if len(sym.checkpoints) == block + 1:
                sym.checkpoints.append(np.array([h[s], shock2[s], float(stressed[s]), log_close[s]]))
        if not keep:
            continue
        var, close = np.ascontiguousarray(var_t.T), np.ascontiguousarray(close_t.T)
        previous = np.concatenate([prev_close[:, None], close[:, :-1]], axis=1)
        u_high, u_low = u_out
        g_gap, g_volume = g_out
        open_ = previous + p.gap * np.sqrt(var) * g_gap
        bridge = 2.0 * var * (1.0 - p.gap**2)
        move2, mid = (close - open_) ** 2, open_ + close
        values = np.empty((6, count, CHUNK))
        values[_OPEN] = open_
        values[_HIGH] = 0.5 * (mid + np.sqrt(move2 - bridge * np.log1p(-u_high)))
        values[_LOW] = 0.5 * (mid - np.sqrt(move2 - bridge * np.log1p(-u_low)))
        values[_CLOSE] = close
        values[_VAR] = var
        activity = 0.6 + 0.4 * np.minimum(np.abs(close - previous) / p.sig_base, 10.0)
        values[_VOLUME] = p.base_volume * np.exp(0.35 * g_volume) * activity
        kept[block] = values
    return kept


def _daily_values(seed: int, calendar: str, symbols: Sequence[str], i: int, j: int) -> np.ndarray:
    """Daily values ``(6, S, j - i)`` of sessions ``i .. j - 1`` (ordinals from ORIGIN) of ``symbols``."""
    first_block, stop_block = i // CHUNK, -(-j // CHUNK)
    with _LOCK:
        entries = [_SYMBOLS.get((seed, calendar, sym)) for sym in symbols]
        fresh = [k for k, e in enumerate(entries) if e is None]
        if fresh:
            keys = [_symbol_key(seed, symbols[k]) for k in fresh]
            params = _Params.draw(keys, [is_crypto(symbols[k]) for k in fresh])
            for n, k in enumerate(fresh):
                p = params.row(n)
                origin = np.array([p.sig_base[0, 0] ** 2, p.sig_base[0, 0] ** 2, 0.0, p.log_p0[0, 0]])
                entries[k] = _SYMBOLS[(seed, calendar, symbols[k])] = _Symbol(keys[n], p, [origin])
        known = [e for e in entries if e is not None]  # every symbol has its entry now
        assert len(known) == len(entries)
        blocks: dict[tuple[int, int], np.ndarray] = {}
        todo: dict[int, list[int]] = {}  # first block to walk from -> symbol positions
        for k, (sym, entry) in enumerate(zip(symbols, known)):
            missing = []
            for block in range(first_block, stop_block):
                values = _BLOCKS.get((seed, calendar, sym, block))
                if values is None:
                    missing.append(block)
                else:
                    _BLOCKS.move_to_end((seed, calendar, sym, block))
                    blocks[(k, block)] = values
            if missing:
                todo.setdefault(min(missing[0], len(entry.checkpoints) - 1), []).append(k)
        for start, positions in todo.items():
            stop = max(b for k in positions for b in range(first_block, stop_block) if (k, b) not in blocks) + 1
            kept = _simulate([known[k] for k in positions], start, stop, max(start, first_block))
            for block, values in kept.items():
                for n, k in enumerate(positions):
                    row = values[:, n].copy()
                    row.flags.writeable = False
                    blocks.setdefault((k, block), row)
                    _BLOCKS[(seed, calendar, symbols[k], block)] = row
        while len(_BLOCKS) > max(CACHED_BLOCKS, len(symbols) * (stop_block - first_block)):
            _BLOCKS.popitem(last=False)
    out = np.empty((6, len(symbols), j - i))
    for block in range(first_block, stop_block):
        lo, hi = max(i, block * CHUNK), min(j, (block + 1) * CHUNK)
        src = slice(lo - block * CHUNK, hi - block * CHUNK)
        for k in range(len(symbols)):
            out[:, k, lo - i : hi - i] = blocks[(k, block)][:, src]
    return out


def _daily_bars(values: np.ndarray, crypto: np.ndarray) -> tuple[np.ndarray, ...]:
    """Open, high, low, close, volume ``(S, n)`` from daily values ``(6, S, n)``."""
    o, c = np.exp(values[_OPEN]), np.exp(values[_CLOSE])
    h = np.maximum(np.exp(values[_HIGH]), np.maximum(o, c))
    lo = np.minimum(np.exp(values[_LOW]), np.minimum(o, c))
    v = np.where(crypto[:, None], values[_VOLUME], np.maximum(np.rint(values[_VOLUME]), 1.0))
    return o, h, lo, c, v


# --- intraday -----------------------------------------------------------------------------------


def _minute_bars(
    key: int, crypto: bool, gap: float, values: np.ndarray, dates: np.ndarray, minutes: np.ndarray
) -> tuple[np.ndarray, ...]:
    """1-minute open, high, low, close, volume of sessions, flattened in time order.

    :param key: the symbol's key.
    :param crypto: whether the symbol is a crypto pair.
    :param gap: the symbol's overnight gap fraction (the bridge takes the rest of the variance).
    :param values: daily values ``(6, n)`` of the sessions.
    :param dates: session dates (int64 ns): each session's stream is keyed by its date.
    :param minutes: minutes in each session.
    """
    count, width = len(dates), int(minutes.max())
    rows = np.arange(count)
    last = minutes - 1
    valid = np.arange(width)[None, :] < minutes[:, None]
    normal = np.zeros((count, width))
    uniform = np.zeros((2, count, width))
    g_volume = np.zeros((count, width))
    for k in range(count):
        m = int(minutes[k])
        rng = _rng(key, _STREAM_INTRADAY, int(dates[k] // _DAY_NS) + (1 << 40))
        normal[k, :m] = rng.standard_normal(m)
        uniform[:, k, :m] = rng.random((2, m))
        g_volume[k, :m] = rng.standard_normal(m)

    x = (np.arange(width)[None, :] + 0.5) / minutes[:, None]  # position within the session
    weight = np.where(valid, 1.0 if crypto else 0.5 + 1.5 * (2.0 * x - 1.0) ** 2, 0.0)
    weight /= weight.sum(axis=1, keepdims=True)
    a, b = values[_OPEN, :, None], values[_CLOSE, :, None]
    hi, lo = values[_HIGH, :, None], values[_LOW, :, None]
    s2 = values[_VAR, :, None] * (1.0 - gap**2)
    # Brownian bridge from open to close at each minute's close, then stretched to touch high and low.
    walk = np.cumsum(np.sqrt(s2 * weight) * normal, axis=1)
    tau = np.cumsum(weight, axis=1)
    line = a + tau * (b - a)
    dev = np.where(valid, walk - tau * walk[rows, last][:, None], 0.0)
    dev[rows, last] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(dev > 0, (hi - line) / dev, np.inf).min(axis=1, keepdims=True)
        down = np.where(dev < 0, (line - lo) / -dev, np.inf).min(axis=1, keepdims=True)
    scale = np.where(dev > 0, np.where(np.isfinite(up), up, 1.0), np.where(np.isfinite(down), down, 1.0))
    close = np.clip(line + scale * dev, lo, hi)
    open_ = np.concatenate([a, close[:, :-1]], axis=1)
    move2, mid = (close - open_) ** 2, open_ + close
    minute_var = 2.0 * s2 * weight
    high = np.minimum(0.5 * (mid + np.sqrt(move2 - minute_var * np.log1p(-uniform[0]))), hi)
    low = np.maximum(0.5 * (mid - np.sqrt(move2 - minute_var * np.log1p(-uniform[1]))), lo)

    # Prices: exactly the daily bar's open, close, high and low at the session's ends and extremes.
    day_o, day_h, day_l, day_c, day_v = (arr[0] for arr in _daily_bars(values[:, None, :], np.array([crypto])))
    c = np.exp(close)
    c[rows, last] = day_c
    c = np.clip(c, day_l[:, None], day_h[:, None])
    o = np.concatenate([day_o[:, None], c[:, :-1]], axis=1)
    h = np.clip(np.maximum(np.exp(high), np.maximum(o, c)), day_l[:, None], day_h[:, None])
    lw = np.clip(np.minimum(np.exp(low), np.minimum(o, c)), day_l[:, None], day_h[:, None])
    h[~valid], lw[~valid] = -np.inf, np.inf
    h[rows, h.argmax(axis=1)] = day_h
    lw[rows, lw.argmin(axis=1)] = day_l

    shape = 1.0 if crypto else 0.5 + 2.0 * (2.0 * x - 1.0) ** 4
    activity = np.where(valid, shape * np.exp(0.4 * g_volume), 0.0)
    v = day_v[:, None] * activity / activity.sum(axis=1, keepdims=True)
    if not crypto:
        v = np.maximum(np.rint(v), 1.0)
    return o[valid], h[valid], lw[valid], c[valid], v[valid]


def _aggregate(minute: tuple[np.ndarray, ...], minutes: np.ndarray, step: int) -> tuple[np.ndarray, ...]:
    """Aggregate flattened minutes to bars of ``step`` minutes that restart at each session open."""
    if step == 1:
        return minute
    o, h, lo, c, v = minute
    offsets = np.cumsum(minutes) - minutes
    starts = intraday_bar_starts(offsets, offsets + minutes, step)
    ends = np.append(starts[1:], len(o))
    return (
        o[starts],
        np.maximum.reduceat(h, starts),
        np.minimum.reduceat(lo, starts),
        c[ends - 1],
        np.add.reduceat(v, starts),
    )


# --- frames -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _dtypes() -> dict[str, object]:
    return empty_bars().dtypes.to_dict()


def _bar_frame(symbols: Sequence[str], timeframe: str, parts: dict[str, tuple[np.ndarray, ...]]) -> pd.DataFrame:
    """The canonical bar frame (columns, dtypes, order) built directly from per-symbol arrays.

    Equal to ``to_bar_frame`` of the same rows, without its re-sorting of millions of strings.

    :param parts: symbol -> (ts ns, open, high, low, close, volume).
    """
    order = sorted(symbols)
    counts = np.array([len(parts[s][0]) for s in order], dtype=np.intp)
    total = int(counts.sum())
    dtypes = _dtypes()

    def text(values: list[str], index: np.ndarray, column: str) -> object:
        return pd.array(np.array(values, dtype=object), dtype=dtypes[column]).take(index)

    columns = {
        "symbol": text(order, np.repeat(np.arange(len(order)), counts), "symbol"),
        "timeframe": text([timeframe], np.zeros(total, dtype=np.intp), "timeframe"),
        "ts": pd.DatetimeIndex(np.concatenate([parts[s][0] for s in order]).view("M8[ns]")).tz_localize("UTC"),
    }
    for n, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        columns[name] = np.concatenate([parts[s][n] for s in order]).astype(np.float64, copy=False)
    columns["source"] = text([SOURCE], np.zeros(total, dtype=np.intp), "source")
    return pd.DataFrame(columns, columns=list(BAR_COLUMNS), copy=False)


# --- the source ---------------------------------------------------------------------------------


class SyntheticMarket:
    """A market-data source that makes bars up, deterministically (see the module docstring).

    Implements the ``MarketDataSource`` protocol (:meth:`get_bars`). Equities trade on ``exchange``
    sessions, crypto pairs (``BTC/USD``) around the clock.

    :param seed: seed of the whole market; bars are a pure function of (seed, symbol, bar).
    :param exchange: calendar of equities (any pandas-market-calendars name).
    :raises InvalidInputError: for a seed that is not an integer or an unknown exchange.
    """

    name = SOURCE

    def __init__(self, seed: int = 0, exchange: str = DEFAULT_EXCHANGE) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InvalidInputError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.exchange = MarketCalendar(exchange).name

    def __repr__(self) -> str:
        return f"SyntheticMarket(seed={self.seed}, exchange={self.exchange!r})"

    def bars(self, symbol: str, start: object, end: object, timeframe: str = "1Day") -> pd.DataFrame:
        """Bars of one symbol for the sessions in [start, end], in the canonical bar frame.

        The timestamps are exactly ``calendar_for_symbol(symbol, exchange).bar_index(start, end,
        timeframe)``.

        :param symbol: ticker (``AAPL``) or crypto pair (``BTC/USD``).
        :param start: first session date (``date``, ``datetime``, ISO string, ``pd.Timestamp``;
            tz-aware values count by their UTC date; a time of day is ignored).
        :param end: last session date, inclusive.
        :param timeframe: ``1Min`` ... ``23Hour`` or ``1Day``.
        :raises InvalidInputError: for a bad symbol, timeframe or date, start after end, or a start
            before :data:`ORIGIN`.
        """
        return self.panel([symbol], start, end, timeframe)

    def get_bars(self, symbols: object, start: object, end: object, timeframe: str = "1Day") -> pd.DataFrame:
        """The ``BarSource`` method: :meth:`bars` of one symbol, :meth:`panel` of a list (one vectorised call)."""
        if isinstance(symbols, str):
            return self.bars(symbols, start, end, timeframe)
        return self.panel(symbols, start, end, timeframe)

    def get_news(self, symbols: object, start: date | datetime, end: date | datetime) -> list:
        """The ``NewsSource`` method: the synthetic market's news feed (see
        :func:`~airflow_provider_portfolio.market.news.synthetic_news`).

        :return: :class:`~airflow_provider_portfolio.market.news.NewsItem` list, oldest first.
        """
        from airflow_provider_portfolio.market.news import synthetic_news

        return synthetic_news(validate_symbols(symbols), start, end, seed=self.seed)

    #: The feed's earlier name.
    news = get_news

    def panel(self, symbols: object, start: object, end: object, timeframe: str = "1Day") -> pd.DataFrame:
        """Bars of many symbols at once, vectorised across symbols.

        The rows equal :meth:`bars` of each symbol, concatenated and sorted by (symbol, ts).

        :param symbols: list of tickers (checked by ``validate_symbols``).
        :param start: first session date.
        :param end: last session date, inclusive.
        :param timeframe: ``1Min`` ... ``23Hour`` or ``1Day``.
        :raises InvalidInputError: as :meth:`bars`.
        """
        symbol_list = validate_symbols(symbols)
        tf = parse_timeframe(timeframe)
        first_day = parse_session_date(start, "start")
        by_calendar: dict[str, list[str]] = {}
        for symbol in symbol_list:
            by_calendar.setdefault(calendar_for_symbol(symbol, self.exchange).name, []).append(symbol)
        parts: dict[str, tuple[np.ndarray, ...]] = {}
        for calendar_name, group in by_calendar.items():
            calendar = MarketCalendar(calendar_name)
            dates, opens, closes = calendar.session_bounds(start, end)  # checks start <= end
            if first_day < ORIGIN:
                raise InvalidInputError(
                    f"the synthetic market starts on {ORIGIN.date()}: start {first_day.date()} is earlier"
                )
            if len(dates):
                parts.update(self._group(calendar, group, dates, opens, closes, tf))
        if not parts:
            return empty_bars()
        return _bar_frame(list(parts), tf.name, parts)

    def _group(
        self,
        calendar: MarketCalendar,
        symbols: list[str],
        dates: np.ndarray,
        opens: np.ndarray,
        closes: np.ndarray,
        tf: Timeframe,
    ) -> dict[str, tuple[np.ndarray, ...]]:
        """Bars of ``symbols`` sharing ``calendar`` over the given sessions: symbol -> (ts, o, h, l, c, v)."""
        i = len(calendar.session_bounds(ORIGIN, pd.Timestamp(int(dates[0])))[0]) - 1  # ordinal of the first
        values = _daily_values(self.seed, calendar.name, symbols, i, i + len(dates))
        crypto = np.array([is_crypto(s) for s in symbols])
        if tf.is_daily:
            bars = _daily_bars(values, crypto)
            return {s: (dates, *(x[k] for x in bars)) for k, s in enumerate(symbols)}
        minutes = -((opens - closes) // _MINUTE_NS)
        step = int(tf.delta.value // _MINUTE_NS)
        ts = intraday_bar_starts(opens, closes, step * _MINUTE_NS)
        out = {}
        for k, symbol in enumerate(symbols):
            entry = _SYMBOLS[(self.seed, calendar.name, symbol)]
            gap = float(entry.params.gap[0, 0])
            minute = _minute_bars(entry.key, bool(crypto[k]), gap, values[:, k], dates, minutes)
            out[symbol] = (ts, *_aggregate(minute, minutes, step))
        return out
