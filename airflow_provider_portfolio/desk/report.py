"""The desk's report: one self-contained HTML page of the book, its data and its models, and a PNG of its headline
chart for messages.

:func:`build_report` reads the store at ``now`` and returns a :class:`PortfolioReport`: ``html`` (one file: CSS and
charts inline, the charts SVG drawn by matplotlib; no script, no URL, and a Content-Security-Policy that forbids
loading anything), ``headline_png`` (equity and drawdown) and ``summary`` (small JSON for XCom and messages).
:func:`write_report` writes the two files to a local folder or any fsspec URL. Plain Python: never imports Airflow;
pandas, matplotlib and fsspec are imported when a report is made.

Sections
    *Summary* (equity, the period's return and P&L, drawdowns, exposure, counts, the latest health reports);
    *Equity and drawdown* (the ledger's equity snapshots over ``history_days``, the period shaded; maximum and
    current drawdown of that curve, Sharpe and Sortino of its daily returns: :mod:`~airflow_provider_portfolio.desk.performance`);
    *Positions and exposure* (each open position valued at its mark, gross and net exposure as fractions of equity,
    by symbol and by asset class); *P&L by symbol* (realised: the trades closed by the account's fills, replayed
    with average cost, net of their commissions; unrealised: open quantity x (mark - average price));
    *Forecast health* (each model's latest evaluation per symbol, and the latest ``monitoring`` and ``risk_audit``
    health reports); *Data freshness* (each symbol's last stored bar against its calendar's last closed bar, graded
    as the hourly monitoring grades it: :func:`~airflow_provider_portfolio.desk.monitoring.freshness_check`);
    *Recent decisions* (the newest ``decisions_limit`` decisions of the period with their reasons and risk
    verdicts, and the period's tally); *Period over period* (this period against the one before).

Periods
    ``daily``: from the close of the session before the latest session that opened by ``now`` (the previous
    close, as "today's loss" is measured) to ``now``, against the session before. ``weekly``: the 7 days to ``now``
    against the 7 days before. Orders, fills and closed trades count by the instant of the cycle that placed the
    order (the desk's clock), decisions by when they were made. The equity at a period's start is the last
    snapshot at or before it (else the period's first).

Marks
    An open position is valued at the ledger's mark when it was made by ``now``, else at the close of the symbol's
    last bar closed by ``now``, else at its average price (shown "at cost"). Positions and realised P&L are
    replayed from the account's fills up to ``now`` (the newest :data:`MAX_FILLS`), so a simulated book and an
    Alpaca account read alike.

Empty and unready stores
    A migrated store without a book, bars or evaluations gives a report that says so section by section ("no
    equity snapshots yet: run portfolio_auto_trader..."), with ``summary["empty"]`` true: never a crash. A database
    without the portfolio schema at all (version 0: an empty file, often a mistyped path) raises
    :class:`~airflow_provider_portfolio.exceptions.InvalidInputError`; one migrated only part way raises
    :class:`~airflow_provider_portfolio.exceptions.StoreError` (call ``migrate()``): an empty report would hide the
    mistake.

Files
    ``portfolio-report-<period>-<stamp>.html`` and ``portfolio-report-<period>-<stamp>-headline.png``; the stamp
    defaults to the date of ``now`` in the exchange's time zone, so a re-run of a day replaces that day's report.
    A local folder (a path or ``file://``) is written atomically: each file to a temporary name in the folder, then
    renamed; another filesystem (``s3://``, ``gs://``, ``memory://``...) gets each file in one put, checked by size
    (an object store shows an object only once its upload is complete). A destination that cannot be written
    raises :class:`~airflow_provider_portfolio.exceptions.InvalidInputError` naming ``out`` and why, and leaves no
    file of this report behind.
"""

from __future__ import annotations

import html
import math
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.desk import performance
from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE, ensure_utc
from airflow_provider_portfolio.trading.performance import downsample

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_portfolio.desk.monitoring import HealthThresholds
    from airflow_provider_portfolio.store.repository import PortfolioStore

__all__ = ["DEFAULT_ACCOUNT", "DEFAULT_DECISIONS_LIMIT", "DEFAULT_HISTORY_DAYS", "DEFAULT_MAX_ROWS", "MAX_FILLS",
           "PERIODS", "PortfolioReport", "Window", "build_report", "report_file_names", "write_report"]

#: The report's periods.
PERIODS: tuple[str, ...] = ("daily", "weekly")
#: The ledger account reported when none is given: the simulated broker's default book.
DEFAULT_ACCOUNT = "simulated:default"
#: Decisions listed when not told, and the most listed.
DEFAULT_DECISIONS_LIMIT = 50
MAX_DECISIONS_LIMIT = 1000
#: Days of equity the chart shows when not told, and the most.
DEFAULT_HISTORY_DAYS = 90
MAX_HISTORY_DAYS = 3660
#: Rows of a table (symbols of freshness, forecast health, positions) when not told, and the most.
DEFAULT_MAX_ROWS = 50
MAX_ROWS = 5000
#: Fills replayed for positions and realised P&L (the newest).
MAX_FILLS = 100_000
#: The schema version the report reads (health reports: migration 4).
_SCHEMA_NEEDED = 4
_MAX_POINTS = 2000
_MAX_TEXT = 300
_STAMP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PROPOSED = ("buy", "sell")
_ORDER_OPEN = ("pending_submit", "new", "accepted", "pending_new", "partially_filled", "held", "accepted_for_bidding")
_HOW_TO_TRADE = "run portfolio_auto_trader (or any trading DAG) to start the book"


@dataclass(frozen=True)
class Window:
    """A period of the report: instants after ``start`` up to and including ``end``."""

    start: datetime
    end: datetime

    def __contains__(self, at: object) -> bool:
        return isinstance(at, datetime) and self.start < at <= self.end

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass(frozen=True)
class PortfolioReport:
    """A report built by :func:`build_report`.

    :param period: ``daily`` or ``weekly``.
    :param now: the instant it reports at (UTC).
    :param account: the ledger account reported.
    :param timezone: the exchange's time zone, that its times are shown in.
    :param window: the period reported on.
    :param html: the whole page (UTF-8 text; CSS and charts inline).
    :param headline_png: the equity and drawdown chart as PNG bytes.
    :param summary: small JSON: period, instant, equity, return, drawdowns, exposure, counts.
    """

    period: str
    now: datetime
    account: str
    timezone: str
    window: Window
    html: str
    headline_png: bytes
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def stamp(self) -> str:
        """The default file stamp: the date of :attr:`now` in :attr:`timezone` (``2026-11-18``)."""
        from zoneinfo import ZoneInfo

        return self.now.astimezone(ZoneInfo(self.timezone)).strftime("%Y-%m-%d")


def report_file_names(period: str, stamp: str) -> tuple[str, str]:
    """The (HTML, PNG) file names of a report: ``portfolio-report-<period>-<stamp>.html`` and ``...-headline.png``.

    :raises InvalidInputError: for an unknown period, or a stamp that is not 1-64 letters, digits, ``.``, ``_`` or
        ``-`` (it becomes part of a file name).
    """
    if period not in PERIODS:
        raise InvalidInputError(f"period must be one of {list(PERIODS)}, got {period!r}")
    if not isinstance(stamp, str) or not _STAMP.match(stamp):
        raise InvalidInputError(f"stamp must be 1-64 letters, digits, '.', '_' or '-' starting with a letter or "
                                f"digit (it names the files), got {stamp!r}")
    base = f"portfolio-report-{period}-{stamp}"
    return f"{base}.html", f"{base}-headline.png"


# -- inputs -------------------------------------------------------------------------------------------------
def _whole(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _check_schema(store: PortfolioStore) -> None:
    version = store.schema_version()
    if version == 0:
        raise InvalidInputError(f"store {store.url} holds no portfolio schema (an empty database: is the path or "
                                "connection right?); run any job of the desk, or PortfolioStore.migrate(), first")
    if version < _SCHEMA_NEEDED:
        raise StoreError(f"store {store.url}: schema version {version}, the report needs {_SCHEMA_NEEDED} or later; "
                         "call migrate() first (any job of the desk does)")


def _windows(now: datetime, period: str, exchange: str) -> tuple[Window, Window]:
    """(this period, the one before); see the module docstring."""
    if period == "weekly":
        week = timedelta(days=7)
        return Window(now - week, now), Window(now - 2 * week, now - week)
    import pandas as pd

    from airflow_provider_portfolio.market.calendar import MarketCalendar

    calendar = MarketCalendar(exchange)
    _, opens, closes = calendar.session_bounds((now - timedelta(days=20)).date(), (now + timedelta(days=1)).date())
    now_ns = pd.Timestamp(now).as_unit("ns").value
    started = int((opens <= now_ns).sum())
    if started < 3:  # never with 20 days of any calendar; a guard
        day = timedelta(days=1)
        return Window(now - day, now), Window(now - 2 * day, now - day)

    def at(ns: int) -> datetime:
        return pd.Timestamp(int(ns), tz="UTC").to_pydatetime()

    last_close, close_before = at(closes[started - 2]), at(closes[started - 3])
    return Window(last_close, now), Window(close_before, last_close)


# -- reading the store --------------------------------------------------------------------------------------
def _equity(store: PortfolioStore, account: str, now: datetime) -> list[dict[str, Any]]:
    from airflow_provider_portfolio.store.ledger import TradingLedger

    return [r for r in TradingLedger(store).equity_curve(account) if r["ts"] <= now]


def _fills(store: PortfolioStore, account: str, now: datetime) -> tuple[list[dict[str, Any]], bool]:
    """The account's fills up to ``now``, oldest first, and whether :data:`MAX_FILLS` cut older ones off."""
    frame = store.executions(account=account, until=now, limit=MAX_FILLS)
    rows = []
    for r in frame.iloc[::-1].itertuples(index=False):
        commission = float(r.commission)
        rows.append({"symbol": str(r.symbol), "side": str(r.side), "qty": float(r.qty), "price": float(r.price),
                     "commission": commission if math.isfinite(commission) else 0.0,
                     "filled_at": r.created_at.to_pydatetime(), "client_order_id": str(r.client_order_id)})
    rows.sort(key=lambda f: f["filled_at"])  # stable: the store's order within an instant
    return rows, len(frame) >= MAX_FILLS


def _orders(store: PortfolioStore, account: str, since: datetime, now: datetime) -> list[dict[str, Any]]:
    from airflow_provider_portfolio.store.ledger import TradingLedger

    return [o for o in TradingLedger(store).orders(account, since=since) if o["created_at"] <= now]


def _decisions(store: PortfolioStore, account: str, windows: Sequence[Window],
               limit: int) -> tuple[list[dict[str, Any]], list[dict[str, int]]]:
    """The newest ``limit`` decisions of ``account`` made in ``windows[0]``, and a tally per window (one bounded
    read: a list and grouped counts)."""
    from sqlalchemy import func, select

    from airflow_provider_portfolio.store import schema

    d = schema.trading_decisions.c
    cols = (d.created_at, d.bar_ts, d.dag_id, d.symbol, d.timeframe, d.action, d.score, d.confidence, d.price,
            d.order_qty, d.reason, d.error, d.approved, d.risk_rule, d.risk_reason, d.client_order_id)

    def where(w: Window) -> list[Any]:
        return [d.account == account, d.created_at > w.start, d.created_at <= w.end]

    with store.database.read(f"read the decisions of {account}") as conn:
        if not store.database.has_table(conn, schema.trading_decisions.name):
            return [], [_tally([]) for _ in windows]
        rows = [dict(r._mapping) for r in conn.execute(
            select(*cols).where(*where(windows[0])).order_by(d.created_at.desc(), d.bar_ts.desc(), d.symbol)
            .limit(limit)).all()]
        tallies = [_tally(conn.execute(
            select(d.action, d.order_qty > 0, d.approved, d.risk_rule, func.count()).where(*where(w))
            .group_by(d.action, d.order_qty > 0, d.approved, d.risk_rule)).all()) for w in windows]
    return rows, tallies


def _tally(groups: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"decisions": 0, "proposed": 0, "approved": 0, "rejected": 0, "unchecked": 0,
                           "by_action": {}, "rejected_by_rule": {}}
    for action, has_qty, approved, rule, n in groups:
        n = int(n)
        out["decisions"] += n
        out["by_action"][str(action)] = out["by_action"].get(str(action), 0) + n
        if action not in _PROPOSED or not has_qty:
            continue
        out["proposed"] += n
        if approved is None:
            out["unchecked"] += n
        elif approved:
            out["approved"] += n
        else:
            out["rejected"] += n
            key = str(rule or "unknown")
            out["rejected_by_rule"][key] = out["rejected_by_rule"].get(key, 0) + n
    out["by_action"] = dict(sorted(out["by_action"].items()))
    out["rejected_by_rule"] = dict(sorted(out["rejected_by_rule"].items()))
    return out


def _marks(store: PortfolioStore, account: str, symbols: Sequence[str], now: datetime, timeframe: str,
           exchange: str) -> dict[str, tuple[float, str]]:
    """symbol -> (price, where it came from) for the open positions: the ledger's mark made by ``now``, else the
    close of the last bar closed by ``now``."""
    import pandas as pd

    from airflow_provider_portfolio.market.timing import closed_bars
    from airflow_provider_portfolio.store.ledger import TradingLedger

    out: dict[str, tuple[float, str]] = {}
    for symbol, p in TradingLedger(store).positions(account).items():
        if symbol in symbols and p.mark_price is not None and p.mark_ts is not None and p.mark_ts <= now:
            out[symbol] = (float(p.mark_price), "mark")
    missing = [s for s in symbols if s not in out]
    if missing:
        bars = store.read_bars(missing, timeframe, start=pd.Timestamp(now) - pd.Timedelta(days=15),
                               end=pd.Timestamp(now))
        bars = closed_bars(bars, now, timeframe, exchange) if not bars.empty else bars
        for symbol, group in bars.groupby("symbol", sort=False):
            out[str(symbol)] = (float(group.sort_values("ts")["close"].iloc[-1]), "last close")
    return out


# -- the book -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Position:
    symbol: str
    asset_class: str
    qty: float
    avg_price: float
    mark_price: float | None
    source: str
    realised: float

    @property
    def value(self) -> float:
        from airflow_provider_portfolio.trading.accounting import valuation_price

        return self.qty * valuation_price(self)

    @property
    def unrealised(self) -> float | None:
        return None if self.mark_price is None else self.qty * (self.mark_price - self.avg_price)


def _book(fills: Sequence[Mapping[str, Any]], trades: Sequence[Any], marks: Mapping[str, tuple[float, str]]
          ) -> list[_Position]:
    """Every symbol traded: its position after ``fills`` (average cost, :func:`apply_fill`), mark and realised
    P&L, open positions first, then by symbol."""
    from airflow_provider_portfolio.trading.accounting import apply_fill
    from airflow_provider_portfolio.trading.costs import asset_class

    held: dict[str, tuple[float, float]] = {}
    for f in fills:
        qty, avg = held.get(f["symbol"], (0.0, 0.0))
        effect = apply_fill(qty, avg, side=f["side"], fill_qty=f["qty"], price=f["price"],
                            commission=f["commission"])
        held[f["symbol"]] = (effect.qty, effect.avg_price)
    realised: dict[str, float] = {}
    for t in trades:
        realised[t.symbol] = realised.get(t.symbol, 0.0) + t.pnl
    out = []
    for symbol in sorted(set(held) | set(realised)):
        qty, avg = held.get(symbol, (0.0, 0.0))
        mark = marks.get(symbol) if qty else None
        out.append(_Position(symbol, asset_class(symbol), qty, avg, None if mark is None else mark[0],
                             "" if not qty else "at cost" if mark is None else mark[1], realised.get(symbol, 0.0)))
    return sorted(out, key=lambda p: (p.qty == 0, p.symbol))


# -- the period's figures -----------------------------------------------------------------------------------
def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _figures(w: Window, curve: Sequence[Mapping[str, Any]], fills: Sequence[Mapping[str, Any]],
             trades: Sequence[Any], orders: Sequence[Mapping[str, Any]], tally: Mapping[str, Any]) -> dict[str, Any]:
    before = [r for r in curve if r["ts"] <= w.start]
    inside = [r for r in curve if r["ts"] in w]
    start = before[-1] if before else (inside[0] if inside else None)
    end = inside[-1] if inside else start
    out: dict[str, Any] = {"equity_start": None, "equity_end": None, "return": None, "pnl": None,
                           "max_drawdown": None}
    if start is not None and end is not None:
        s, e = float(start["equity"]), float(end["equity"])
        out.update(equity_start=s, equity_end=e, pnl=e - s)
        out["return"] = e / s - 1.0 if s > 0 else None
        if inside:
            out["max_drawdown"] = performance.max_drawdown(
                [float(r["equity"]) for r in ([before[-1]] if before else []) + inside]).value
    placed = [o for o in orders if o["created_at"] in w]
    statuses: dict[str, int] = {}
    for o in placed:
        statuses[str(o["status"])] = statuses.get(str(o["status"]), 0) + 1
    done = [f for f in fills if f["filled_at"] in w]
    closed = [t for t in trades if t.closed_at is not None and t.closed_at in w]
    out.update(orders=len(placed), orders_by_status=dict(sorted(statuses.items())), fills=len(done),
               traded_notional=math.fsum(f["qty"] * f["price"] for f in done),
               commissions=math.fsum(f["commission"] for f in done), closed_trades=len(closed),
               realised_pnl=math.fsum(t.pnl for t in closed), win_rate=performance.win_rate(closed).value,
               decisions=tally["decisions"], proposed=tally["proposed"], rejected=tally["rejected"],
               rejected_by_rule=tally["rejected_by_rule"])
    return {k: _finite(v) if isinstance(v, float) else v for k, v in out.items()}


def _drawdowns(equity: Sequence[float]) -> list[float]:
    """Each point's fall below the running peak (for the chart; the figures are :mod:`performance`'s)."""
    out, peak = [], -math.inf
    for v in equity:
        peak = max(peak, v)
        out.append((peak - v) / peak if peak > 0 else 0.0)
    return out


# -- the job ------------------------------------------------------------------------------------------------
def build_report(store: PortfolioStore, *, now: datetime, period: str = "daily", account: str = DEFAULT_ACCOUNT,
                 symbols: Sequence[str] | str | None = None, timeframe: str = "1Day",
                 exchange: str = DEFAULT_EXCHANGE, decisions_limit: int = DEFAULT_DECISIONS_LIMIT,
                 history_days: int = DEFAULT_HISTORY_DAYS, max_rows: int = DEFAULT_MAX_ROWS,
                 periods_per_year: float = performance.TRADING_DAYS_PER_YEAR,
                 thresholds: HealthThresholds | Mapping[str, Any] | str | None = None,
                 title: str | None = None) -> PortfolioReport:
    """Build the report of ``account`` at ``now`` (see the module docstring). Reads only.

    :param store: the portfolio store (migrated).
    :param now: the report's instant (aware); nothing after it is shown.
    :param period: ``daily`` or ``weekly``.
    :param account: the ledger account (``simulated:<name>``, ``alpaca:<conn_id>``).
    :param symbols: the universe whose data freshness and forecast health are shown (a list or comma-separated);
        ``None``: every symbol with stored bars of ``timeframe`` and every symbol the book traded.
    :param timeframe: the bars and model evaluations judged (``1Day``).
    :param exchange: the calendar of equities (crypto pairs use the 24/7 one); its time zone shows times.
    :param decisions_limit: the most decisions listed (1 to :data:`MAX_DECISIONS_LIMIT`).
    :param history_days: days of equity charted and measured for drawdown, Sharpe and Sortino.
    :param max_rows: the most rows of each per-symbol table (the worst first); the rest are counted.
    :param periods_per_year: daily returns per year for Sharpe and Sortino (252; 365 for a 24/7 book).
    :param thresholds: the freshness limits, as monitoring's (:class:`HealthThresholds`, or overrides as a
        mapping or JSON text); ``None``: the defaults.
    :param title: the page's title (default ``Portfolio report``).
    :raises InvalidInputError: for bad input (before the store is read), or a database without the portfolio
        schema.
    :raises StoreError: when the store cannot be read or is migrated only part way.
    """
    from airflow_provider_portfolio.desk.monitoring import HealthThresholds
    from airflow_provider_portfolio.market.bars import parse_timeframe
    from airflow_provider_portfolio.market.calendar import MarketCalendar
    from airflow_provider_portfolio.market.params import validate_symbols

    instant = ensure_utc(now, "now")
    if period not in PERIODS:
        raise InvalidInputError(f"period must be one of {list(PERIODS)}, got {period!r}")
    if not isinstance(account, str) or not account.strip():
        raise InvalidInputError(f"account must be a ledger account name such as 'simulated:default', got {account!r}")
    account = account.strip()
    universe = None if symbols is None else validate_symbols(symbols)
    timeframe = parse_timeframe(timeframe).name
    calendar = MarketCalendar(exchange)
    decisions_limit = _whole(decisions_limit, "decisions_limit", 1, MAX_DECISIONS_LIMIT)
    history_days = _whole(history_days, "history_days", 1, MAX_HISTORY_DAYS)
    max_rows = _whole(max_rows, "max_rows", 1, MAX_ROWS)
    limits = thresholds if isinstance(thresholds, HealthThresholds) else HealthThresholds.from_mapping(thresholds)
    performance.sharpe([], periods_per_year)  # checks periods_per_year, naming it
    if title is not None and not isinstance(title, str):
        raise InvalidInputError(f"title must be text, got {title!r}")

    _check_schema(store)
    current, previous = _windows(instant, period, calendar.name)
    curve = _equity(store, account, instant)
    fills, cut = _fills(store, account, instant)
    trades = performance.closed_trades(fills)
    orders = _orders(store, account, previous.start, instant)
    decisions, (tally, tally_before) = _decisions(store, account, (current, previous), decisions_limit)
    book_symbols = sorted({f["symbol"] for f in fills})
    open_symbols = [p.symbol for p in _book(fills, [], {}) if p.qty]
    marks = _marks(store, account, open_symbols, instant, timeframe, calendar.name) if open_symbols else {}
    book = _book(fills, trades, marks)
    if universe is None:
        stored = store.latest_bar_ts(None, timeframe)
        universe = sorted(set(stored) | set(book_symbols))
    freshness = _freshness(store, universe, instant, timeframe, calendar.name, limits)
    evaluations = _evaluations(store, universe, timeframe, instant)
    health = _health_reports(store, instant)

    history = Window(min(instant - timedelta(days=history_days), previous.start), instant)
    shown = [r for r in curve if r["ts"] in history]
    data = _Data(period=period, now=instant, account=account, timezone=calendar.timezone, window=current,
                 previous=previous, history=history, curve=shown, all_curve=curve, book=book, fills_cut=cut,
                 figures=_figures(current, curve, fills, trades, orders, tally),
                 figures_before=_figures(previous, curve, fills, trades, orders, tally_before),
                 decisions=decisions, tally=tally, freshness=freshness, evaluations=evaluations, health=health,
                 max_rows=max_rows, periods_per_year=float(periods_per_year), timeframe=timeframe,
                 title=title or "Portfolio report", universe=len(universe))
    summary = data.summary()
    page, headline = _render(data)
    return PortfolioReport(period, instant, account, calendar.timezone, current, page, headline, summary)


def _freshness(store: PortfolioStore, symbols: Sequence[str], now: datetime, timeframe: str, exchange: str,
               limits: HealthThresholds) -> list[dict[str, Any]]:
    from airflow_provider_portfolio.desk.monitoring import freshness_check
    from airflow_provider_portfolio.market.timing import expected_last_bar

    if not symbols:
        return []
    latest = store.latest_bar_ts(list(symbols), timeframe)
    out = []
    for symbol in symbols:
        last = latest.get(symbol)
        check = freshness_check(symbol, last, now, timeframe, exchange, limits)
        out.append({"symbol": symbol, "last": last, "expected": expected_last_bar(symbol, now, timeframe, exchange),
                    "behind": check.value, "level": check.level.name, "message": check.message})
    rank = {"RED": 0, "YELLOW": 1, "GREEN": 2}
    return sorted(out, key=lambda r: (rank[r["level"]], -(r["behind"] or 0), r["symbol"]))


def _evaluations(store: PortfolioStore, symbols: Sequence[str], timeframe: str, now: datetime) -> pd.DataFrame:
    frame = store.read_evaluations(list(symbols) if symbols else None, timeframe=timeframe, latest=True)
    if frame.empty:
        return frame
    import pandas as pd

    return frame[frame["asof"] <= pd.Timestamp(now)].reset_index(drop=True)


def _health_reports(store: PortfolioStore, now: datetime) -> list[tuple[str, Any]]:
    from airflow_provider_portfolio.store import schema

    return [(kind, store.latest_health_report(kind, until=now))
            for kind in ("monitoring", "risk_audit") if kind in schema.HEALTH_REPORT_KINDS]


# -- rendering ----------------------------------------------------------------------------------------------
class _Raw(str):
    """HTML already escaped (a badge, a link to a section): table cells of this type are not escaped again."""


def _e(value: object) -> str:
    return value if isinstance(value, _Raw) else html.escape(str(value), quote=True)


def _clip(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."


def _money(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+,.2f}" if signed else f"{value:,.2f}"


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.2%}" if signed else f"{value:.2%}"


def _qty(value: float) -> str:
    return f"{value:,.6f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value):,d}"


def _level(name: str | None) -> _Raw:
    if not name:
        return _Raw('<span class="lvl">none</span>')
    return _Raw(f'<span class="lvl lvl-{_e(name)}">{_e(name)}</span>')


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, numeric: Sequence[int] = (),
           wrap: Sequence[int] = (), cls: str = "") -> str:
    """A table; cells are escaped (but :class:`_Raw` ones), ``numeric`` columns right-aligned, ``wrap`` columns (free
    text) wrapped, the others kept on one line."""
    def attr(i: int) -> str:
        return " class=num" if i in numeric else " class=wrap" if i in wrap else ""

    head = "".join(f"<th{attr(i)}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{attr(i)}>{_e(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    return f'<table class="{_e(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{_e(text)}</p>'


def _more(total: int, shown: int, what: str) -> str:
    return _note(f"{total - shown} more {what} not listed ({total} in all).") if total > shown else ""


@dataclass
class _Data:
    period: str
    now: datetime
    account: str
    timezone: str
    window: Window
    previous: Window
    history: Window
    curve: list[dict[str, Any]]
    all_curve: list[dict[str, Any]]
    book: list[_Position]
    fills_cut: bool
    figures: dict[str, Any]
    figures_before: dict[str, Any]
    decisions: list[dict[str, Any]]
    tally: dict[str, Any]
    freshness: list[dict[str, Any]]
    evaluations: Any
    health: list[tuple[str, Any]]
    max_rows: int
    periods_per_year: float
    timeframe: str
    title: str
    universe: int

    def when(self, at: Any) -> str:
        from zoneinfo import ZoneInfo

        if at is None:
            return "n/a"
        value = at.to_pydatetime() if hasattr(at, "to_pydatetime") else at
        return str(value.astimezone(ZoneInfo(self.timezone)).strftime("%Y-%m-%d %H:%M %Z"))

    def bar(self, ts: Any) -> str:
        """A bar's timestamp: its session date for daily bars (stamped at midnight UTC), else its local time."""
        if ts is None:
            return "none"
        from airflow_provider_portfolio.market.bars import parse_timeframe

        if parse_timeframe(self.timeframe).is_daily:
            return str(ts.strftime("%Y-%m-%d"))
        return self.when(ts)

    @property
    def empty(self) -> bool:
        return not self.all_curve and not self.book and not self.tally["decisions"]

    @property
    def open_positions(self) -> list[_Position]:
        return [p for p in self.book if p.qty]

    @property
    def equity(self) -> float | None:
        return float(self.all_curve[-1]["equity"]) if self.all_curve else None

    @property
    def cash(self) -> float | None:
        return float(self.all_curve[-1]["cash"]) if self.all_curve else None

    def drawdown(self) -> tuple[float | None, float | None]:
        """(maximum, current) drawdown of the charted curve."""
        from airflow_provider_portfolio.trading.performance import drawdown

        values = [float(r["equity"]) for r in self.curve]
        found = performance.max_drawdown(values)
        if found.value is None:
            return None, None
        measured = drawdown(values)
        return found.value, None if measured is None else measured.current

    def exposure(self) -> tuple[float | None, float | None]:
        """(gross, net) exposure, fractions of equity."""
        equity = self.equity
        if not self.open_positions or equity is None or equity <= 0:
            return None, None
        values = [p.value for p in self.open_positions]
        return math.fsum(abs(v) for v in values) / equity, math.fsum(values) / equity

    def model_counts(self) -> dict[str, dict[str, int]]:
        """model -> label -> symbols (the ensemble aside, as monitoring counts)."""
        out: dict[str, dict[str, int]] = {}
        frame = self.evaluations
        if frame is None or frame.empty:
            return out
        for model, label in zip(frame["model"], frame["label"], strict=True):
            if model == "ensemble":
                continue
            counts = out.setdefault(str(model), {"healthy": 0, "unhealthy": 0, "insufficient_data": 0})
            counts[str(label)] = counts.get(str(label), 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> dict[str, Any]:
        maximum, current = self.drawdown()
        gross, net = self.exposure()
        unhealthy = sum(c["unhealthy"] for c in self.model_counts().values())
        unrealised = [p.unrealised for p in self.open_positions if p.unrealised is not None]
        latest = {kind: (None if record is None else record.level) for kind, record in self.health}
        out = {"period": self.period, "as_of": self.now.isoformat(), "account": self.account,
               "window": self.window.to_dict(), "empty": self.empty, "equity": self.equity,
               "period_return": self.figures["return"], "period_pnl": self.figures["pnl"],
               "max_drawdown": maximum, "current_drawdown": current, "positions": len(self.open_positions),
               "gross_exposure": gross, "net_exposure": net, "realised_pnl": self.figures["realised_pnl"],
               "unrealised_pnl": math.fsum(unrealised) if unrealised else None, "orders": self.figures["orders"],
               "fills": self.figures["fills"], "decisions": self.tally["decisions"],
               "rejected": self.tally["rejected"], "symbols": self.universe,
               "stale_symbols": sum(1 for r in self.freshness if r["level"] != "GREEN"),
               "unhealthy_models": unhealthy, "health": latest}
        return _json_safe(out)


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float ``None`` and numpy numbers plain (JSON for XCom)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_CSS = """
:root{--text:#333;--muted:#6b7480;--line:#d9dde3;--bg:#f6f7f9;--green:#2e7d32;--yellow:#b7791f;--red:#c0392b}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--text);
margin:0;background:var(--bg)}main{max-width:1100px;margin:0 auto;padding:16px 20px 40px}
header h1{margin:8px 0 2px;font-size:22px}header p{margin:0;color:var(--muted)}
section{background:#fff;border:1px solid var(--line);border-radius:6px;margin:16px 0;padding:12px 16px}
h2{font-size:17px;margin:4px 0 10px}h3{font-size:14px;margin:12px 0 6px}
nav a{margin-right:12px;color:#1f5fa8;text-decoration:none}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(165px,1fr));gap:10px}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 10px}.card b{display:block;font-size:18px}
.card span{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%;margin:6px 0;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:4px 6px;text-align:left;vertical-align:top;white-space:nowrap}
td.wrap,th.wrap{white-space:normal}
th{background:var(--bg);font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.chart{display:block;width:100%;height:auto;margin:6px 0}
.lvl{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;font-weight:600;background:#e5e7eb}
.lvl-GREEN{background:#d9f0dc;color:var(--green)}.lvl-YELLOW{background:#fbeecf;color:var(--yellow)}
.lvl-RED{background:#f7d6d2;color:var(--red)}.pos{color:var(--green)}.neg{color:var(--red)}
.note{color:var(--muted)}.empty{font-size:15px;padding:8px 0}
footer{color:var(--muted);font-size:12px;margin-top:20px}
"""


def _signed(value: float | None, text: str) -> _Raw:
    cls = "" if value is None or value == 0 else " class=pos" if value > 0 else " class=neg"
    return _Raw(f"<span{cls}>{_e(text)}</span>")


def _render(d: _Data) -> tuple[str, bytes]:
    """The page and the headline PNG."""
    from airflow_provider_portfolio.desk import charts

    label = "Week" if d.period == "weekly" else "Session"
    sections = [
        ("summary", "Summary", _summary_section(d)),
        ("equity", "Equity and drawdown", ""),
        ("positions", "Positions and exposure", _positions_section(d)),
        ("pnl", "P&L by symbol", _pnl_section(d)),
        ("forecast-health", "Forecast health", _forecast_section(d)),
        ("freshness", "Data freshness", _freshness_section(d)),
        ("decisions", "Recent decisions", _decisions_section(d)),
        ("comparison", f"{label} over {label.lower()}", _comparison_section(d)),
    ]
    equity_html, headline = _equity_section(d, charts)
    sections[1] = ("equity", "Equity and drawdown", equity_html)
    nav = "".join(f'<a href="#{key}">{_e(name)}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{_e(name)}</h2>{content}</section>' for key, name, content in sections)
    period = "Daily" if d.period == "daily" else "Weekly"
    heading = (f"{d.title}: {period.lower()}, {d.when(d.now)}")
    sub = (f"Account {d.account}. Period {d.when(d.window.start)} to {d.when(d.window.end)}; previous "
           f"{d.when(d.previous.start)} to {d.when(d.previous.end)}. Times in {d.timezone}.")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        # Nothing may load or run: the page is read offline, attached to a message or opened from a bucket.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:\">"
        f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body><main>"
        f"<header><h1>{_e(heading)}</h1><p>{_e(sub)}</p><nav>{nav}</nav></header>{body}"
        f"<footer>{_e(period)} report of airflow-provider-portfolio, built at {_e(d.when(d.now))} from the "
        "portfolio store. Figures: the desk's own formulas (drawdown, Sharpe, Sortino, average-cost P&amp;L).</footer>"
        "</main></body></html>\n")
    return page, headline


def _card(title: str, value: str | _Raw, hint: str = "") -> str:
    return f'<div class="card"><span>{_e(title)}</span><b>{_e(value)}</b><span>{_e(hint)}</span></div>'


def _summary_section(d: _Data) -> str:
    f = d.figures
    maximum, current = d.drawdown()
    gross, net = d.exposure()
    out = ""
    if d.empty:
        bars = sum(1 for r in d.freshness if r["last"] is not None)
        out += _note(f"No book yet: account {d.account} has no equity snapshots, fills or decisions in the store "
                     f"({_HOW_TO_TRADE}). "
                     + (f"{bars} of {len(d.freshness)} symbols have {d.timeframe} bars." if bars else
                        "No market data either: run portfolio_daily_etl to load bars."), "empty")
    cards = [
        _card("Equity", _money(d.equity), f"cash {_money(d.cash)}"),
        _card(f"{d.period.capitalize()} return", _signed(f["return"], _pct(f["return"], True)),
              f"P&L {_money(f['pnl'], True)}"),
        _card("Max drawdown", _pct(maximum), f"current {_pct(current)}, {len(d.curve)} snapshots"),
        _card("Positions", str(len(d.open_positions)), f"gross {_pct(gross)}, net {_pct(net)} of equity"),
        _card("Orders / fills", f"{f['orders']} / {f['fills']}", f"realised {_money(f['realised_pnl'], True)}"),
        _card("Decisions", str(d.tally["decisions"]),
              f"{d.tally['proposed']} orders proposed, {d.tally['rejected']} rejected by risk"),
        _card("Stale symbols", str(sum(1 for r in d.freshness if r["level"] != "GREEN")),
              f"of {len(d.freshness)} checked"),
        _card("Unhealthy models", str(sum(c["unhealthy"] for c in d.model_counts().values())),
              "latest evaluation per symbol"),
    ]
    for kind, record in d.health:
        cards.append(_card(f"Latest {kind.replace('_', ' ')}", _level(None if record is None else record.level),
                           "none yet" if record is None else d.when(record.ts)))
    return out + f'<div class="cards">{"".join(cards)}</div>'


def _equity_section(d: _Data, charts: Any) -> tuple[str, bytes]:
    if not d.curve:
        why = (f"No equity snapshots of {d.account} in the {(d.history.end - d.history.start).days} days to "
               f"{d.when(d.now)}" + ("" if d.all_curve else f": {_HOW_TO_TRADE}."))
        return _note(why), charts.png(charts.empty_chart(why.split(":")[0] + "."))
    # at most _MAX_POINTS snapshots, each bucket's low and high kept (the trough stays on the chart)
    kept = downsample([float(r["equity"]) for r in d.curve], _MAX_POINTS)
    ts = [d.curve[i]["ts"] for i in kept]
    equity = [float(d.curve[i]["equity"]) for i in kept]
    maximum, current = d.drawdown()
    change = "week" if d.period == "weekly" else "session"
    title = (f"{d.account}: equity {_money(d.equity)}, {_pct(d.figures['return'], True)} this {change}, "
             f"max drawdown {_pct(maximum)}")
    fig = charts.equity_drawdown_chart(ts, equity, _drawdowns(equity), period_start=d.window.start, title=title,
                                       tz=d.timezone)
    svg = charts.inline_svg(fig, label=f"equity and drawdown of {d.account}", prefix="eq-")
    headline = charts.png(fig)
    try:
        returns = performance.daily_returns(d.curve)
        sharpe = performance.sharpe(returns, d.periods_per_year)
        sortino = performance.sortino(returns, d.periods_per_year)
    except InvalidInputError as err:  # a book whose equity fell to 0 or below: no return can be measured from it
        returns = []
        sharpe = sortino = performance.Measure(None, f"daily returns cannot be measured: {err}")
    first = float(d.all_curve[0]["equity"])
    rows = [
        ("Equity", _money(d.equity), f"at {d.when(d.all_curve[-1]['ts'])}"),
        ("Cash", _money(d.cash), ""),
        ("Since the first snapshot", _pct(d.equity / first - 1.0 if d.equity is not None and first > 0 else None,
                                          True), f"from {_money(first)} at {d.when(d.all_curve[0]['ts'])}"),
        ("Maximum drawdown", _pct(maximum), f"of {len(d.curve)} snapshots since {d.when(d.history.start)}"),
        ("Current drawdown", _pct(current), "below the peak of that curve"),
        ("Sharpe ratio", "n/a" if sharpe.value is None else f"{sharpe.value:.2f}",
         sharpe.reason or f"{len(returns)} daily returns, annualised x sqrt({d.periods_per_year:g})"),
        ("Sortino ratio", "n/a" if sortino.value is None else f"{sortino.value:.2f}",
         sortino.reason or f"{len(returns)} daily returns"),
    ]
    return svg + _table(("Figure", "Value", "Note"), rows, numeric=(1,), wrap=(2,), cls="figures"), headline


def _positions_section(d: _Data) -> str:
    from airflow_provider_portfolio.desk import charts

    held = d.open_positions
    if not held:
        return _note(f"No open positions in {d.account}" + (" (the book is flat)." if d.book else
                                                           f": {_HOW_TO_TRADE}."))
    equity = d.equity
    by_class: dict[str, float] = {}
    for p in held:
        by_class[p.asset_class] = by_class.get(p.asset_class, 0.0) + p.value
    shown = sorted(held, key=lambda p: -abs(p.value))[:d.max_rows]
    fig = charts.exposure_chart([(p.symbol, p.value) for p in shown], sorted(by_class.items()))
    svg = charts.inline_svg(fig, label="market value by symbol and asset class", prefix="ex-")
    rows = [(p.symbol, p.asset_class, _qty(p.qty), _money(p.avg_price),
             "n/a" if p.mark_price is None else _money(p.mark_price), p.source, _money(p.value),
             _pct(p.value / equity if equity else None)) for p in shown]
    gross, net = d.exposure()
    classes = [(c, _money(v), _pct(v / equity if equity else None)) for c, v in sorted(by_class.items())]
    return (svg + _table(("Symbol", "Class", "Quantity", "Avg price", "Price", "Priced at", "Value", "Weight"),
                         rows, numeric=(2, 3, 4, 6, 7)) + _more(len(held), len(shown), "positions")
            + "<h3>Exposure</h3>" + _table(("Asset class", "Net value", "Weight"), classes, numeric=(1, 2))
            + _note(f"Gross exposure {_pct(gross)} and net {_pct(net)} of equity {_money(equity)}; cash "
                    f"{_money(d.cash)}."))


def _pnl_section(d: _Data) -> str:
    from airflow_provider_portfolio.desk import charts

    if not d.book:
        return _note(f"No fills in {d.account} yet: no P&L to show.")
    rows = sorted(d.book, key=lambda p: -abs(p.realised + (p.unrealised or 0.0)))[:d.max_rows]
    fig = charts.pnl_chart([(p.symbol, p.realised, p.unrealised or 0.0) for p in rows])
    svg = charts.inline_svg(fig, label="realised and unrealised P&L by symbol", prefix="pnl-")
    table: list[tuple[object, ...]] = [(p.symbol, _signed(p.realised, _money(p.realised, True)),
              _signed(p.unrealised, _money(p.unrealised, True)),
              _signed(p.realised + (p.unrealised or 0.0), _money(p.realised + (p.unrealised or 0.0), True)))
             for p in rows]
    realised = math.fsum(p.realised for p in d.book)
    unrealised = math.fsum(p.unrealised or 0.0 for p in d.book)
    table.append((_Raw("<b>all symbols</b>"), _money(realised, True), _money(unrealised, True),
                  _money(realised + unrealised, True)))
    cut = (f" Only the newest {MAX_FILLS} fills were replayed: older ones are left out." if d.fills_cut else "")
    return (svg + _table(("Symbol", "Realised", "Unrealised", "Total"), table, numeric=(1, 2, 3))
            + _more(len(d.book), len(rows), "symbols")
            + _note("Realised: trades closed by the fills (average cost), net of their commissions. Unrealised: open "
                    "quantity x (price - average price); commissions of open positions count when they close."
                    + cut))


def _forecast_section(d: _Data) -> str:
    from airflow_provider_portfolio.desk import charts

    out = ""
    for kind, record in d.health:
        name = kind.replace("_", " ")
        if record is None:
            out += _note(f"No {name} report yet.")
            continue
        checks = [c for c in record.report.get("checks", ()) if c.get("level") != "GREEN"]
        out += (f"<h3>Latest {_e(name)} report: {_level(record.level)} at {_e(d.when(record.ts))}</h3>")
        if checks:
            rows: list[tuple[object, ...]] = [(_level(c.get("level")), str(c.get("name", "")) + (f"[{c['subject']}]" if c.get("subject")
                                                                       else ""), _clip(c.get("message", "")))
                    for c in checks[:d.max_rows]]
            out += _table(("Level", "Check", "Message"), rows, wrap=(2,)) + _more(len(checks), len(rows), "checks")
        else:
            out += _note("Every check green.")
    counts = d.model_counts()
    frame = d.evaluations
    if not counts:
        return out + _note(f"No {d.timeframe} model evaluations yet: has portfolio_forecast run?")
    fig = charts.forecast_health_chart([(m, c["healthy"], c["unhealthy"], c["insufficient_data"])
                                        for m, c in counts.items()])
    out += "<h3>Models' latest evaluations</h3>" + charts.inline_svg(
        fig, label="symbols per model by health label", prefix="fh-")
    per_symbol = []
    for symbol, group in frame[frame["model"] != "ensemble"].groupby("symbol", sort=True):
        labels = {lab: sorted(group.loc[group["label"] == lab, "model"].astype(str))
                  for lab in ("healthy", "unhealthy", "insufficient_data")}
        judged = len(labels["healthy"]) + len(labels["unhealthy"])
        share = len(labels["healthy"]) / judged if judged else None
        skill = group.dropna(subset=["skill"])
        best = skill.loc[skill["skill"].idxmax()] if not skill.empty else None
        per_symbol.append((share if share is not None else -1.0, str(symbol), d.bar(group["asof"].max()),
                           ", ".join(labels["healthy"]) or "none", ", ".join(labels["unhealthy"]) or "none",
                           ", ".join(labels["insufficient_data"]) or "none",
                           "n/a" if best is None else f"{best['model']} {float(best['skill']):+.3f}"))
    per_symbol.sort()
    rows = [r[1:] for r in per_symbol[:d.max_rows]]
    return (out + _table(("Symbol", "Last bar seen", "Healthy", "Unhealthy", "Insufficient data", "Best skill"), rows,
                         wrap=(2, 3, 4))
            + _more(len(per_symbol), len(rows), "symbols")
            + _note("Skill: 1 - RMSE / the naive baseline's RMSE in the rolling-origin backtest. Unhealthy models are "
                    "left out of trading."))


def _freshness_section(d: _Data) -> str:
    if not d.freshness:
        return _note(f"No symbols to check: no {d.timeframe} bars stored yet; run portfolio_daily_etl.")
    rows = [(r["symbol"], _level(r["level"]), d.bar(r["last"]), d.bar(r["expected"]),
             "n/a" if r["behind"] is None else f"{r['behind']:g}", _clip(r["message"]))
            for r in d.freshness[:d.max_rows]]
    stale = sum(1 for r in d.freshness if r["level"] != "GREEN")
    return (_note(f"{stale} of {len(d.freshness)} symbols behind their calendar ({d.timeframe} bars; graded as the "
                  "hourly monitoring grades them).")
            + _table(("Symbol", "Level", "Last bar", "Last closed bar", "Bars behind", "Detail"), rows, numeric=(4,),
                     wrap=(5,))
            + _more(len(d.freshness), len(rows), "symbols"))


def _verdict(row: Mapping[str, Any]) -> _Raw:
    if row["action"] not in _PROPOSED or not (row["order_qty"] or 0) > 0:
        return _Raw('<span class="note">no order</span>')
    if row["approved"] is None:
        return _Raw('<span class="lvl lvl-YELLOW">unchecked</span>')
    if row["approved"]:
        return _Raw('<span class="lvl lvl-GREEN">approved</span>')
    return _Raw(f'<span class="lvl lvl-RED">rejected: {_e(row["risk_rule"] or "unknown")}</span>')


def _decisions_section(d: _Data) -> str:
    t = d.tally
    if not t["decisions"]:
        return _note(f"No decisions of {d.account} made in the period.")
    rules = ", ".join(f"{rule} {n}" for rule, n in t["rejected_by_rule"].items()) or "none"
    actions = ", ".join(f"{a} {n}" for a, n in t["by_action"].items())
    head = _note(f"{t['decisions']} decisions in the period ({actions}); {t['proposed']} proposed an order: "
                 f"{t['approved']} approved, {t['rejected']} rejected by risk (by rule: {rules}), {t['unchecked']} "
                 "without a verdict.")
    rows = [(d.when(r["created_at"]), r["symbol"], r["action"], "n/a" if r["score"] is None else f"{r['score']:+.3f}",
             "n/a" if r["order_qty"] is None else _qty(float(r["order_qty"])), _verdict(r),
             _clip(r["reason"] or "") + (f" (error: {_clip(r['error'])})" if r["error"] else ""),
             _clip(r["risk_reason"] or "")) for r in d.decisions]
    return (head + _table(("Decided at", "Symbol", "Action", "Score", "Order qty", "Risk", "Reason", "Risk reason"),
                          rows, numeric=(3, 4), wrap=(6, 7))
            + _more(t["decisions"], len(rows), "decisions"))


def _comparison_section(d: _Data) -> str:
    now, before = d.figures, d.figures_before

    def change(key: str, kind: str) -> str:
        a, b = now[key], before[key]
        if a is None or b is None:
            return "n/a"
        if kind in ("pct", "share"):
            return f"{(a - b) * 100:+.2f} pt"
        if kind == "money":
            return _money(a - b, True)
        return f"{a - b:+g}"

    def cell(value: Any, kind: str) -> str:
        if kind == "pct":
            return _pct(value, True)
        if kind == "share":
            return _pct(value)
        if kind == "money":
            return _money(value, True)
        return "n/a" if value is None else str(value)

    lines = [("Return", "return", "pct"), ("P&L (equity change)", "pnl", "money"),
             ("Maximum drawdown", "max_drawdown", "share"), ("Orders placed", "orders", "n"),
             ("Fills", "fills", "n"), ("Traded notional", "traded_notional", "money"),
             ("Commissions", "commissions", "money"), ("Closed trades", "closed_trades", "n"),
             ("Realised P&L", "realised_pnl", "money"), ("Win rate", "win_rate", "share"),
             ("Decisions", "decisions", "n"), ("Rejected by risk", "rejected", "n")]
    rows = [(name, cell(now[key], kind), cell(before[key], kind), change(key, kind)) for name, key, kind in lines]
    this, prev = ("This week", "Previous week") if d.period == "weekly" else ("This session", "Previous session")
    return _table(("", this, prev, "Change"), rows, numeric=(1, 2, 3)) + _note(
        f"{this}: {d.when(d.window.start)} to {d.when(d.window.end)}; {prev.lower()}: {d.when(d.previous.start)} to "
        f"{d.when(d.previous.end)}. Orders, fills and trades count by the cycle that placed the order.")


# -- writing ------------------------------------------------------------------------------------------------
def write_report(report: PortfolioReport, out: str | os.PathLike[str], *, stamp: str | None = None,
                 filesystem: Any = None) -> dict[str, str]:
    """Write ``report``'s HTML page and headline PNG into ``out`` (see the module docstring).

    :param report: a report of :func:`build_report`.
    :param out: a local folder (created with its parents), or an fsspec URL of one (``file://``, ``s3://bucket/prefix``,
        ``memory://reports``...).
    :param stamp: names the files (letters, digits, ``.``, ``_``, ``-``); default :attr:`PortfolioReport.stamp`.
    :param filesystem: an fsspec filesystem to write with (an Airflow ``ObjectStoragePath``'s ``fs``, holding a
        connection's credentials); ``out`` is then a path on it. Default: the filesystem ``out``'s URL names.
    :return: ``{"html": where, "headline_png": where}``: absolute local paths, or URLs.
    :raises InvalidInputError: for a bad stamp, an unknown filesystem, or a destination that cannot be written
        (nothing of this report is left there).
    """
    html_name, png_name = report_file_names(report.period, report.stamp if stamp is None else stamp)
    if not isinstance(out, str | os.PathLike) or not str(os.fspath(out)).strip():
        raise InvalidInputError(f"out must be a folder path or URL, got {out!r}")
    target = os.fspath(out).strip()
    files = ((html_name, report.html.encode("utf-8")), (png_name, report.headline_png))
    fs, root = _filesystem(target, filesystem)
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        written = _write_local(target, root, files)
    else:
        written = _write_remote(target, fs, root, files)
    return {"html": written[0], "headline_png": written[1]}


def _filesystem(target: str, filesystem: Any) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    if filesystem is not None:
        return filesystem, filesystem._strip_protocol(target)
    if "://" not in target:
        target = os.path.abspath(os.path.expanduser(target))
    try:
        return url_to_fs(target)
    except ImportError as err:
        raise InvalidInputError(f"out={target!r}: its filesystem needs a package that is not installed ({err})") \
            from None
    except (ValueError, OSError) as err:
        raise InvalidInputError(f"out={target!r} is not a folder path or a known fsspec URL: {err}") from None


def _cannot(target: str, err: BaseException) -> InvalidInputError:
    return InvalidInputError(f"out={target!r}: the report cannot be written there ({type(err).__name__}: {err}); "
                             "nothing was written")


def _write_local(target: str, folder: str, files: Sequence[tuple[str, bytes]]) -> list[str]:
    """Each file to a temporary name in ``folder`` (flushed to disk), then all renamed into place; any failure
    removes the temporary files and the files this call placed."""
    temps: list[str] = []
    placed: list[str] = []
    try:
        os.makedirs(folder, exist_ok=True)
        for name, data in files:
            temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
            temps.append(temp)
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        finals = [os.path.join(folder, name) for name, _ in files]
        for temp, final in zip(temps, finals, strict=True):
            os.replace(temp, final)
            placed.append(final)
        return finals
    except OSError as err:
        for path in temps + placed:
            try:
                os.remove(path)
            except OSError:
                pass
        raise _cannot(target, err) from None


def _write_remote(target: str, fs: Any, root: str, files: Sequence[tuple[str, bytes]]) -> list[str]:
    """Each file in one put, then its size checked; any failure removes what this call wrote."""
    written: list[str] = []
    try:
        try:
            fs.makedirs(root, exist_ok=True)  # object stores have no folders: a no-op there
        except (FileExistsError, NotImplementedError):
            pass
        for name, data in files:
            path = f"{root.rstrip('/')}/{name}"
            written.append(path)
            fs.pipe_file(path, data)
            size = fs.size(path)
            if size != len(data):
                raise OSError(f"{path} holds {size} bytes after the write, not {len(data)}")
        return [fs.unstrip_protocol(p) for p in written]
    except Exception as err:  # any filesystem's own errors (botocore, gcsfs...): none is left half-written
        for path in written:
            try:
                fs.rm_file(path)
            except Exception:  # noqa: S110 -- best effort: the error below says what failed
                pass
        raise _cannot(target, err) from None
