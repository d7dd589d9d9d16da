"""The daily risk audit: the book against its limits, graded GREEN / YELLOW / RED.

:func:`audit_risk` is the job (the ``RiskAuditOperator`` calls it; so can a notebook, the CLI or a container). It
reads one ledger account's book as it stood at ``now``, values it, makes every check below and appends the report
(kind ``risk_audit``, level the worst check's) to the store's ``health_reports``, one row per run (a re-run of a
run replaces its row). The limits are the trader's own (:class:`~airflow_provider_portfolio.trading.risk.RiskLimits`:
a position's share of equity, open positions, the daily loss) and the audit's (:class:`AuditThresholds` and the
asset-class limits), each named in the message with the numbers, as the risk rules name theirs.

Levels: ``RED`` a limit is breached; ``YELLOW`` a limit is approached (from ``approach``, 80 % of it, by default)
or something is worth a look (stale prices, many rejected orders, no book yet); ``GREEN`` within limits. A cap
(a position's share, an asset class's, net exposure, leverage, open positions) is breached *beyond* it, as the risk
rules reject only beyond it; a loss limit (drawdown, daily loss) is breached *at* it, as the daily-loss rule is.

The book
    A simulated account's book is the ledger's (cash and positions), with the fills of bars stamped after ``now``
    undone: a re-run of a past instant audits the book as it stood then. A real broker's account (``alpaca:...``)
    keeps its positions at the broker: pass them as ``book`` (``broker.account_state()``, what the operator does).
Prices (no look-ahead)
    Each open position is valued at the close of its last bar of ``timeframe`` stored in the store and closed by
    ``now`` (:func:`~airflow_provider_portfolio.market.timing.closed_bars`; within the last 40 days). A symbol
    without one is valued at the trader's mark (if stamped by ``now``), else at its average price, and the
    ``prices`` check is ``YELLOW``; a broker's position without a stored bar cannot be valued: ``RED``. Prices
    ``stale_bars_yellow`` or more closed bars behind their calendar are ``YELLOW``. Equity is cash plus the
    positions so valued.

Checks (``subject`` in brackets):

``book`` [account]
    Cash, positions and equity. Equity at or below 0 is ``RED`` (no share of it means anything). An account the
    ledger has never seen is ``YELLOW`` "no book yet" and the only check: an empty book is not an error for an
    auditor (the trader opens its account on its first cycle). But where the ledger knows other accounts and the
    account was named on purpose (``strict_account``), it is a typo: ``InvalidInputError`` listing them.
``prices`` [account]
    How the positions were valued (see above).
``concentration`` [symbol]
    ``|position value| / equity`` against ``max_position_fraction``, the trader's limit.
``asset_class_concentration`` [equity, crypto]
    The gross value of the class's positions / equity against its limit (``asset_class_limits``; RiskLimits has
    none). Defaults: equity 1.0 (the whole equity, no margin), crypto 0.25.
``gross_exposure``, ``net_exposure``, ``leverage`` [account]
    ``gross = sum |qty x price|``, ``net = sum qty x price``. Gross exposure is graded against ``max_gross_notional``
    (account currency) when set, else reported; ``|net| / equity`` against ``max_net_exposure``; leverage
    ``gross / equity`` against ``max_leverage``.
``open_positions`` [account]
    Open positions against ``max_open_positions``, the trader's limit.
``drawdown`` [account]
    ``1 - equity / peak``: equity now below the highest of the account's equity snapshots at or before ``now``
    (and equity now), against ``max_drawdown``.
``daily_loss`` [account]
    ``1 - equity / start-of-day equity``, against ``daily_loss_limit``, the trader's limit, measured as the
    trader's rule measures it (:func:`~airflow_provider_portfolio.market.timing.loss_reference`): from the close
    of the session before the one the last bar of ``timeframe`` closed by ``now`` belongs to, on ``exchange``'s
    calendar (24/7 for an all-crypto book). After Monday's close (or before Tuesday's open) with daily bars,
    that is Friday's close: the loss audited is Monday's. The simulated book is valued as it stood then (later
    fills undone) at the closes of then (:func:`~airflow_provider_portfolio.trading.accounting.book_at`); a
    broker's account by its own previous close (Alpaca's ``last_equity``), else its last equity snapshot by
    then. Unknown: ``YELLOW``.
``rejections`` [account], ``rejected_orders`` [rule]
    The risk verdicts of the account's decisions about bars stamped in the window (default: since the daily-loss
    reference, the last closed session; else ``window`` before ``now``): the share of proposed orders risk rejected
    is ``YELLOW`` from ``rejections_yellow`` once ``min_orders`` were judged, never ``RED`` (a rejection is the
    risk layer doing its job; many mean the strategy keeps pushing against a limit). One ``rejected_orders`` check
    per rule that rejected any, its count the value. The kill switch's refusals are counted, not graded.

Thresholds (:class:`AuditThresholds`; a mapping or its JSON text overrides any of them,
:meth:`AuditThresholds.from_mapping`):

=====================  =======  ==============================================================================
key                    default  meaning
=====================  =======  ==============================================================================
approach               0.8      YELLOW from this share of a limit (0.8: a position at 8 % of a 10 % limit)
max_leverage           1.0      gross exposure / equity: 1.0 is a cash book (2.0: a Reg T margin account)
max_net_exposure       1.0      abs(net exposure) / equity
max_gross_notional     null     gross exposure in account currency (null: reported, not graded)
max_drawdown           0.20     fall of equity below its peak, a fraction of the peak
rejections_yellow      0.25     YELLOW from this share of proposed orders rejected by risk (null: off)
min_orders             5        judged orders needed before the rejection share is graded
stale_bars_yellow      2        YELLOW when a held symbol's price is this many closed bars behind its calendar
=====================  =======  ==============================================================================

Plain Python: never imports Airflow.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.desk.health import Check, HealthReport, Level, checked_thresholds
from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.params import is_crypto, json_object
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE, ensure_utc

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from airflow_provider_portfolio.store.ledger import Position, TradingLedger
    from airflow_provider_portfolio.store.repository import PortfolioStore
    from airflow_provider_portfolio.trading.brokers import AccountSnapshot
    from airflow_provider_portfolio.trading.risk import RiskLimits

log = logging.getLogger(__name__)

__all__ = ["ASSET_CLASSES", "AUDIT", "DEFAULT_ASSET_CLASS_LIMITS", "AuditThresholds", "asset_class",
           "asset_class_limits_from", "audit_risk"]

#: The ``kind`` of the risk audit's reports in ``health_reports``.
AUDIT = "risk_audit"
#: The asset classes the audit limits: crypto pairs (``BTC/USD``) and everything else.
ASSET_CLASSES = ("equity", "crypto")
#: Each class's most gross value as a fraction of equity, where not given.
DEFAULT_ASSET_CLASS_LIMITS: Mapping[str, float] = MappingProxyType({"equity": 1.0, "crypto": 0.25})
#: How far back a position's price is looked for among the stored bars.
PRICE_LOOKBACK = timedelta(days=40)
#: How far back bars behind are counted (a price older is "at least that many behind").
_STALE_HORIZON = timedelta(days=30)
_ACCOUNT_RE = re.compile(r"[a-z][a-z0-9_]*:\S+")
_MAX_ACCOUNT = 128
#: A hair after ``now``: fills of bars stamped after it are undone.
_AFTER = timedelta(microseconds=1)


def asset_class(symbol: str) -> str:
    """``crypto`` for a crypto pair (``BTC/USD``), else ``equity``."""
    return "crypto" if is_crypto(symbol) else "equity"


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def _qty(value: float) -> str:
    return f"{value:,.6g}" if not float(value).is_integer() else f"{value:,.0f}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# -- limits -------------------------------------------------------------------------------------------------
#: key -> (kind, may be null). Kinds: ``share`` (0 < x <= 1), ``fraction`` (0..1), ``positive`` (> 0),
#: ``count`` (a whole number >= 1).
_KINDS: dict[str, tuple[str, bool]] = {
    "approach": ("share", False), "max_leverage": ("positive", False), "max_net_exposure": ("positive", False),
    "max_gross_notional": ("positive", True), "max_drawdown": ("share", False),
    "rejections_yellow": ("fraction", True), "min_orders": ("count", False), "stale_bars_yellow": ("count", False),
}


def _checked(values: Mapping[str, Any], setting: str) -> dict[str, Any]:
    return checked_thresholds(values, setting, _KINDS)


@dataclass(frozen=True)
class AuditThresholds:
    """The audit's own limits, each with its documented default (see the module docstring).

    :raises InvalidInputError: naming the key and the value, for a value of the wrong kind or out of range.
    """

    approach: float = 0.8
    max_leverage: float = 1.0
    max_net_exposure: float = 1.0
    max_gross_notional: float | None = None
    max_drawdown: float = 0.20
    rejections_yellow: float | None = 0.25
    min_orders: int = 5
    stale_bars_yellow: int = 2

    def __post_init__(self) -> None:
        for key, value in _checked(self.to_dict(), "AuditThresholds").items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_mapping(cls, mapping: AuditThresholds | Mapping[str, Any] | str | None,
                     setting: str = "risk audit thresholds") -> AuditThresholds:
        """The defaults with the overrides of ``mapping``.

        :param mapping: a mapping or its JSON text; ``None``, ``""`` and ``{}`` keep every default; thresholds
            themselves are returned as they are.
        :param setting: how messages name where it came from.
        :raises InvalidInputError: naming the setting, the key and the value: text that is not a JSON object, an
            unknown key, a value that is not a number (or ``null`` where a limit may be off) or out of range.
        """
        if isinstance(mapping, AuditThresholds):
            return mapping
        mapping = json_object(mapping, setting, example='{"max_drawdown": 0.25}', what="thresholds")
        unknown = sorted(str(k) for k in mapping if k not in _KINDS)
        if unknown:
            raise InvalidInputError(f"{setting}: unknown key(s) {unknown} (value {mapping[unknown[0]]!r}); the keys "
                                    f"are {', '.join(_KINDS)}")
        return cls(**_checked({**cls().to_dict(), **mapping}, setting))

    def to_dict(self) -> dict[str, Any]:
        """Every threshold by key."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def asset_class_limits_from(value: Mapping[str, Any] | str | None,
                            setting: str = "asset_class_limits") -> dict[str, float]:
    """Each asset class's most gross value as a fraction of equity: :data:`DEFAULT_ASSET_CLASS_LIMITS` with the
    overrides of ``value`` (a mapping ``{"crypto": 0.1}`` or its JSON text).

    :raises InvalidInputError: naming the setting, the class and the value, for an unknown class or a value that is
        not a finite number > 0.
    """
    given = json_object(value, setting, example='{"equity": 1.0, "crypto": 0.25}', what="asset class -> fraction")
    out = dict(DEFAULT_ASSET_CLASS_LIMITS)
    for key, limit in given.items():
        if key not in ASSET_CLASSES:
            raise InvalidInputError(f"{setting}: unknown asset class {key!r} (value {limit!r}); the classes are "
                                    f"{', '.join(ASSET_CLASSES)}")
        if not _is_number(limit) or limit <= 0:
            raise InvalidInputError(f"{setting}: {key} must be a fraction of equity > 0 (a number), got {limit!r}")
        out[key] = float(limit)
    return out


def _risk_limits(limits: RiskLimits | Mapping[str, Any] | None) -> RiskLimits:
    from airflow_provider_portfolio.trading.risk import RiskLimits

    if isinstance(limits, RiskLimits):
        return limits
    return RiskLimits.from_dict(limits)


# -- grading ------------------------------------------------------------------------------------------------
def _against(name: str, value: float, limit: float, approach: float, *, rule: str, what: str, fmt: Any = _pct,
             inclusive: bool = False, breached: bool | None = None, subject: str | None = None,
             note: str = "") -> Check:
    """``value`` against ``limit``: ``RED`` beyond it (``inclusive``: at it too; ``breached``: as the caller found,
    where the rule compares in its own terms), ``YELLOW`` from ``approach`` of it (a value of 0 never), else
    ``GREEN``; the message names the measurement, the rule and both numbers."""
    yellow = approach * limit
    threshold = {"yellow": yellow, "red": limit}
    if breached is None:
        breached = value >= limit if inclusive else value > limit
    if breached:
        cmp = ">=" if inclusive else ">"
        return Check(name, Level.RED, value, threshold, f"{what} {fmt(value)} {cmp} {rule} {fmt(limit)}: "
                                                          f"breached{note}", subject)
    if value > 0 and value >= yellow:
        return Check(name, Level.YELLOW, value, threshold,
                     f"{what} {fmt(value)} is {value / limit:.0%} of {rule} {fmt(limit)} (YELLOW from "
                     f"{approach:.0%}){note}", subject)
    return Check(name, Level.GREEN, value, threshold, f"{what} {fmt(value)} within {rule} {fmt(limit)}{note}", subject)


def _unmeasured(name: str, why: str, subject: str | None, threshold: Any = None) -> Check:
    return Check(name, Level.RED, None, threshold, f"could not be measured: {why}", subject)


# -- the book -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Holding:
    """An open position valued: ``price`` ``None`` when it could not be valued."""

    symbol: str
    qty: float
    price: float | None
    source: str  # "bar", "mark", "average price" or "none"
    price_ts: pd.Timestamp | None = None
    behind: int | None = None
    behind_more: bool = False

    @property
    def value(self) -> float | None:
        return None if self.price is None else self.qty * self.price


def _undone(cash: float, positions: Mapping[str, Position], later: Any) -> tuple[float, dict[str, float]]:
    """Cash and signed quantities with the ``later`` fills undone (as
    :func:`~airflow_provider_portfolio.trading.accounting.book_at` undoes them)."""
    from airflow_provider_portfolio.trading.accounting import QTY_DECIMALS

    qty = {s: float(p.qty) for s, p in positions.items()}
    for fill in later:
        signed = float(fill.qty) if fill.side == "buy" else -float(fill.qty)
        cash += signed * float(fill.price) + float(fill.commission)
        qty[fill.symbol] = qty.get(fill.symbol, 0.0) - signed
    return cash, {s: round(q, QTY_DECIMALS) for s, q in qty.items() if round(q, QTY_DECIMALS)}


def _closed(store: PortfolioStore, symbols: list[str], now: datetime, timeframe: str,
            exchange: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The stored bars of ``symbols`` closed by ``now`` (the last :data:`PRICE_LOOKBACK`), and when each ended."""
    from airflow_provider_portfolio.market.calendar import bar_times
    from airflow_provider_portfolio.market.timing import closed_bars

    bars = store.read_bars(symbols, timeframe, start=now - PRICE_LOOKBACK, end=now) if symbols else None
    if bars is None or bars.empty:
        import numpy as np
        import pandas as pd

        return pd.DataFrame(columns=["symbol", "ts", "close", "timeframe"]), np.empty(0, dtype=np.int64)
    done = closed_bars(bars, now, timeframe, exchange)
    _, ends = bar_times(done.assign(timeframe=timeframe), exchange)
    return done, ends


def _bars_behind(symbol: str, last: pd.Timestamp, now: datetime, timeframe: str, exchange: str) -> tuple[int, bool]:
    """Closed bars of ``symbol``'s calendar after ``last`` by ``now`` (counted over :data:`_STALE_HORIZON` at most),
    and whether more lie before that horizon."""
    import pandas as pd

    from airflow_provider_portfolio.market.calendar import calendar_for_symbol

    calendar = calendar_for_symbol(symbol, exchange)
    now_ts = pd.Timestamp(now)
    start = max(pd.Timestamp(last), now_ts - pd.Timedelta(_STALE_HORIZON))
    index = calendar.bar_index(start - pd.Timedelta(days=1), now_ts, timeframe)
    ts_ns = index.as_unit("ns").asi8
    _, ends = calendar.bar_bounds(ts_ns, timeframe)
    behind = int(((ts_ns > pd.Timestamp(last).as_unit("ns").value) & (ends <= now_ts.as_unit("ns").value)).sum())
    return behind, start > pd.Timestamp(last)


def _value(qty: Mapping[str, float], closed: pd.DataFrame, marks: Mapping[str, Position], now: datetime,
           timeframe: str, exchange: str) -> list[_Holding]:
    import pandas as pd

    last = closed.sort_values(["symbol", "ts"]).groupby("symbol", sort=False).tail(1) if not closed.empty else closed
    closes = {str(r.symbol): (float(r.close), pd.Timestamp(r.ts)) for r in last.itertuples(index=False)}
    out = []
    for symbol in sorted(qty):
        q = qty[symbol]
        found = closes.get(symbol)
        if found is not None and math.isfinite(found[0]) and found[0] > 0:
            behind, more = _bars_behind(symbol, found[1], now, timeframe, exchange)
            out.append(_Holding(symbol, q, found[0], "bar", found[1], behind, more))
            continue
        held = marks.get(symbol)
        if held is not None and held.mark_price is not None and held.mark_ts is not None \
                and ensure_utc(held.mark_ts, "mark_ts") <= now:
            out.append(_Holding(symbol, q, float(held.mark_price), "mark", pd.Timestamp(held.mark_ts)))
        elif held is not None and held.avg_price > 0:
            out.append(_Holding(symbol, q, float(held.avg_price), "average price"))
        else:
            out.append(_Holding(symbol, q, None, "none"))
    return out


def _stamp(ts: pd.Timestamp | None) -> str:
    if ts is None:
        return "?"
    return ts.strftime("%Y-%m-%d") if ts.hour == ts.minute == 0 else ts.strftime("%Y-%m-%d %H:%M UTC")


def _prices_check(holdings: list[_Holding], account: str, timeframe: str, t: AuditThresholds) -> Check:
    threshold = {"yellow": t.stale_bars_yellow}
    if not holdings:
        return Check("prices", Level.GREEN, 0, threshold, "no open positions to value", account)
    notes: list[str] = []
    level = Level.GREEN
    for h in holdings:
        if h.source == "none":
            level = Level.RED
            notes.append(f"{h.symbol}: no closed {timeframe} bar stored in the last {PRICE_LOOKBACK.days} days: "
                         "cannot be valued (run the ETL for it)")
        elif h.source != "bar":
            level = max(level, Level.YELLOW)
            when = f" of {_stamp(h.price_ts)}" if h.source == "mark" else ""
            notes.append(f"{h.symbol}: no closed {timeframe} bar stored in the last {PRICE_LOOKBACK.days} days: "
                         f"valued at its {h.source}{when} {h.price:.6g}")
        elif h.behind and h.behind >= t.stale_bars_yellow:
            level = max(level, Level.YELLOW)
            notes.append(f"{h.symbol}: last {timeframe} bar {_stamp(h.price_ts)} is {h.behind}"
                         f"{'+' if h.behind_more else ''} closed bar(s) behind: stale")
        elif h.behind:
            notes.append(f"{h.symbol}: last {timeframe} bar {_stamp(h.price_ts)}, {h.behind} behind")
    worst = max((h.behind or 0 for h in holdings if h.source == "bar"), default=0)
    head = (f"{len(holdings)} open position(s) valued at the close of their last {timeframe} bar closed by the "
            "audit's instant")
    return Check("prices", level, worst, threshold, head + (": " + "; ".join(notes) if notes else ""), account)


def _start_of_day(ledger: TradingLedger, account: str, reference: pd.Timestamp, closed: pd.DataFrame,
                  ends: np.ndarray, book: AccountSnapshot | None) -> tuple[float | None, str]:
    """The equity today's loss is measured from, and where it came from."""
    from airflow_provider_portfolio.market.timing import closes_at
    from airflow_provider_portfolio.trading.accounting import book_at

    if book is not None:
        if book.start_of_day_equity is not None and _is_number(book.start_of_day_equity):
            return float(book.start_of_day_equity), "the broker's previous close"
        stored = ledger.last_equity_at(account, reference.to_pydatetime())
        return stored, "the last equity snapshot by then"
    then = ledger.book(account, fills_from=reference.to_pydatetime())
    return book_at(then.cash, then.positions, then.fills, closes_at(closed, ends, reference)), \
        "the book as it stood then, at the closes of then"


# -- the job ------------------------------------------------------------------------------------------------
def _check_account(account: object) -> str:
    if not isinstance(account, str) or not _ACCOUNT_RE.fullmatch(account.strip()) \
            or len(account.strip()) > _MAX_ACCOUNT:
        raise InvalidInputError(f"account must be a ledger account such as 'simulated:default' or "
                                f"'alpaca:alpaca_default', got {account!r}")
    return account.strip()


def _no_book(account: str, instant: datetime, known: list[str]) -> HealthReport:
    where = (f"the ledger of this store has no account {account} (its accounts: {', '.join(known)})" if known else
             f"the ledger of this store has no account at all, {account} included")
    return HealthReport(AUDIT, instant, (Check(
        "book", Level.YELLOW, None, None,
        f"no book yet: {where}; nothing traded yet (the trader opens its account on its first cycle): nothing to "
        "audit", account),))


def audit_risk(store: PortfolioStore, *, now: datetime, account: str,
               limits: RiskLimits | Mapping[str, Any] | None = None,
               asset_class_limits: Mapping[str, Any] | str | None = None,
               thresholds: AuditThresholds | Mapping[str, Any] | str | None = None,
               window: timedelta | None = None, timeframe: str = "1Day", exchange: str = DEFAULT_EXCHANGE,
               book: AccountSnapshot | None = None, strict_account: bool = True, dag_id: str | None = None,
               run_id: str | None = None, write: bool = True) -> HealthReport:
    """Audit ``account``'s book against its limits (see the module docstring), append the report to
    ``health_reports`` and return it.

    :param store: the portfolio store (migrated).
    :param now: the audit's instant (aware): the book as it stood then, at the closes known then.
    :param account: the ledger account (``simulated:<name>``, ``alpaca:<conn_id>``).
    :param limits: the trader's risk limits (``RiskLimits`` or a dict of its fields; ``None``: the defaults):
        ``max_position_fraction``, ``max_open_positions`` and ``daily_loss_limit`` are audited.
    :param asset_class_limits: class (``equity``, ``crypto``) -> most gross value as a fraction of equity, over
        :data:`DEFAULT_ASSET_CLASS_LIMITS` (a mapping or its JSON text).
    :param thresholds: the audit's own limits: :class:`AuditThresholds`, or overrides of it (a mapping or JSON).
    :param window: how far back the rejected orders are counted; ``None``: since the daily-loss reference (the
        last closed session, so each session is counted by one daily audit).
    :param timeframe: the stored bars positions are valued at (``1Day``: the daily ETL's).
    :param exchange: the calendar of equities (crypto pairs: the 24/7 one).
    :param book: a real broker's account now (``Broker.account_state()``): its cash, positions and previous close;
        ``None``: the simulated book in the ledger.
    :param strict_account: an account the ledger does not know, while it knows others, is an error (a typo; the
        default, for an account named on purpose); ``False``: a YELLOW "no book yet" naming the ledger's accounts
        (for a default account whose trader has not run yet, while other books exist). A ledger with no account
        at all is "no book yet" either way.
    :param dag_id: the DAG of the run, stored with the report.
    :param run_id: the run, stored with the report (a re-run replaces its row).
    :param write: append the report to the store; ``False``: a dry run.
    :raises InvalidInputError: for bad input, before anything is read or written: malformed limits, account name,
        window, timeframe or exchange; with ``strict_account``, an account the ledger does not know while it knows
        others (a typo: the message lists them); an account without a simulated book and no ``book`` given.
    :raises StoreError: when the store cannot be read or written, or is not migrated (a missing store is an
        error; an empty one is not).
    """
    from airflow_provider_portfolio.market.bars import parse_timeframe
    from airflow_provider_portfolio.market.calendar import MarketCalendar
    from airflow_provider_portfolio.store import schema
    from airflow_provider_portfolio.store.ledger import TradingLedger
    from airflow_provider_portfolio.trading.brokers import AccountSnapshot

    instant = ensure_utc(now, "now")
    account = _check_account(account)
    risk = _risk_limits(limits)
    classes = asset_class_limits_from(asset_class_limits)
    t = AuditThresholds.from_mapping(thresholds)
    if window is not None and (not isinstance(window, timedelta) or window <= timedelta(0)):
        raise InvalidInputError(f"window must be a positive timedelta (or None: since the last session), got "
                                f"{window!r}")
    timeframe = parse_timeframe(timeframe).name
    exchange = MarketCalendar(exchange).name
    if book is not None and not isinstance(book, AccountSnapshot):
        raise InvalidInputError(f"book must be a broker's AccountSnapshot (Broker.account_state()), got "
                                f"{type(book).__name__}")

    version = store.schema_version()
    if version < schema.latest_version():
        raise StoreError(f"store {store.url}: schema version {version}, the audit needs {schema.latest_version()}: "
                         "migrate it (PortfolioStore.migrate(), or run any job of the desk once)")
    ledger = TradingLedger(store)

    if book is None:
        known = ledger.accounts()
        if account not in known:
            if known and strict_account:
                raise InvalidInputError(f"account {account!r} is not in the ledger of {store.url}; its accounts: "
                                        f"{', '.join(known)}")
            return _finish(store, _no_book(account, instant, known), dag_id, run_id, write)
        try:
            now_book = ledger.book(account, fills_from=instant + _AFTER)
        except StoreError:
            raise InvalidInputError(f"account {account!r} has no simulated book in the store: a broker's positions "
                                    "are at the broker; pass book=broker.account_state() (the RiskAuditOperator "
                                    "does)") from None
        cash, qty = _undone(now_book.cash, now_book.positions, now_book.fills)
        marks: Mapping[str, Position] = now_book.positions
        traded = sorted(set(now_book.positions) | set(qty))
    else:
        cash = float(book.cash)
        qty = {str(s): float(q) for s, q in book.positions.items() if _is_number(q) and q != 0}
        marks = {}
        traded = sorted(qty)

    closed, ends = _closed(store, traded, instant, timeframe, exchange)
    holdings = _value(qty, closed, marks, instant, timeframe, exchange)
    checks = _book_checks(holdings, cash, account, risk, classes, t, timeframe)
    equity = _equity(holdings, cash)
    reference = _reference(sorted(qty), instant, timeframe, exchange)
    checks += _loss_checks(ledger, account, instant, equity, reference, closed, ends, book, risk, t)
    since = reference.to_pydatetime() if window is None else instant - window
    checks += _rejection_checks(store, account, since, instant, t)
    return _finish(store, HealthReport(AUDIT, instant, tuple(checks)), dag_id, run_id, write)


def _finish(store: PortfolioStore, report: HealthReport, dag_id: str | None, run_id: str | None,
            write: bool) -> HealthReport:
    if write:
        store.append_health_report(report.to_dict(), dag_id=dag_id, run_id=run_id)
    log.info("%s", report.summary())
    return report


def _equity(holdings: list[_Holding], cash: float) -> float | None:
    from airflow_provider_portfolio.trading.accounting import equity

    if any(h.price is None for h in holdings):
        return None
    return equity(cash, [(h.qty, float(h.price)) for h in holdings if h.price is not None])


def _book_checks(holdings: list[_Holding], cash: float, account: str, risk: RiskLimits, classes: Mapping[str, float],
                 t: AuditThresholds, timeframe: str) -> list[Check]:
    equity = _equity(holdings, cash)
    valued = [h for h in holdings if h.value is not None]
    gross = sum(abs(h.value) for h in valued if h.value is not None)
    net = sum(h.value for h in valued if h.value is not None)
    n = len(holdings)
    checks = []
    if equity is None:
        unpriced = ", ".join(h.symbol for h in holdings if h.price is None)
        checks.append(_unmeasured("book", f"cash {_money(cash)}, {n} open position(s), equity unknown: no price for "
                                          f"{unpriced}", account))
    elif equity <= 0:
        checks.append(Check("book", Level.RED, equity, 0, f"equity {_money(equity)} <= 0 (cash {_money(cash)}, "
                                                           f"{n} open position(s) worth {_money(net)}): every limit "
                                                           "measured against equity is breached", account))
    else:
        checks.append(Check("book", Level.GREEN, equity, None, f"cash {_money(cash)}, {n} open position(s) worth "
                                                                f"{_money(net)}, equity {_money(equity)}", account))
    checks.append(_prices_check(holdings, account, timeframe, t))
    fine = equity is not None and equity > 0

    for h in holdings:
        if h.value is None or not fine:
            checks.append(_unmeasured("concentration", "no price" if h.value is None else "equity is not positive",
                                      h.symbol, {"yellow": t.approach * risk.max_position_fraction,
                                                 "red": risk.max_position_fraction}))
            continue
        assert equity is not None
        checks.append(_against(
            "concentration", abs(h.value) / equity, risk.max_position_fraction, t.approach,
            rule="max_position_fraction", subject=h.symbol,
            what=f"position {_qty(h.qty)} {h.symbol} x {h.price:,.6g} = {_money(abs(h.value))} of equity "
                 f"{_money(equity)}:"))

    for cls in ASSET_CLASSES:
        members = [h for h in holdings if asset_class(h.symbol) == cls]
        if not members:
            continue
        limit = classes[cls]
        threshold = {"yellow": t.approach * limit, "red": limit}
        if not fine or any(h.value is None for h in members):
            checks.append(_unmeasured("asset_class_concentration", "a position without a price or equity not "
                                      "positive", cls, threshold))
            continue
        assert equity is not None
        worth = sum(abs(h.value) for h in members if h.value is not None)
        checks.append(_against("asset_class_concentration", worth / equity, limit, t.approach,
                               rule=f"asset_class_limits[{cls}]", subject=cls,
                               what=f"{cls} positions ({len(members)}) worth {_money(worth)} of equity "
                                    f"{_money(equity)}:"))

    if not fine:
        for name in ("gross_exposure", "net_exposure", "leverage"):
            checks.append(_unmeasured(name, "equity unknown or not positive", account))
    else:
        assert equity is not None
        longs = sum(h.value for h in valued if h.value is not None and h.value > 0)
        split = f" (long {_money(longs)}, short {_money(longs - net)})"
        if t.max_gross_notional is None:
            checks.append(Check("gross_exposure", Level.GREEN, gross, None,
                                f"gross exposure {_money(gross)} = {_pct(gross / equity)} of equity {_money(equity)}"
                                f"{split}; no max_gross_notional set: not graded", account))
        else:
            checks.append(_against("gross_exposure", gross, t.max_gross_notional, t.approach, fmt=_money,
                                   rule="max_gross_notional", subject=account, what="gross exposure",
                                   note=f"; {_pct(gross / equity)} of equity {_money(equity)}{split}"))
        checks.append(_against("net_exposure", abs(net) / equity, t.max_net_exposure, t.approach,
                               rule="max_net_exposure", subject=account,
                               what=f"net exposure {_money(net)} of equity {_money(equity)}: abs"))
        checks.append(_against("leverage", gross / equity, t.max_leverage, t.approach, fmt=lambda v: f"{v:.4g}x",
                               rule="max_leverage", subject=account,
                               what=f"gross exposure {_money(gross)} / equity {_money(equity)}: leverage"))

    checks.append(_against("open_positions", n, risk.max_open_positions, t.approach, fmt=lambda v: f"{v:g}",
                           rule="max_open_positions", subject=account, what="open positions"))
    return checks


def _reference(symbols: list[str], now: datetime, timeframe: str, exchange: str) -> pd.Timestamp:
    """The instant today's loss is measured from, by the trader's rule
    (:func:`~airflow_provider_portfolio.market.timing.loss_reference`): the close of the session before the one the
    last bar of ``timeframe`` closed by ``now`` belongs to, on ``exchange``'s calendar (24/7 for an all-crypto
    book)."""
    import pandas as pd

    from airflow_provider_portfolio.market.calendar import ALWAYS_OPEN, MarketCalendar
    from airflow_provider_portfolio.market.timing import loss_reference

    calendar = MarketCalendar(ALWAYS_OPEN if symbols and all(is_crypto(s) for s in symbols) else exchange)
    now_ts = pd.Timestamp(now)
    index = calendar.bar_index(now_ts - pd.Timedelta(days=15), now_ts, timeframe)
    _, ends = calendar.bar_bounds(index.as_unit("ns").asi8, timeframe)
    done = ends[ends <= now_ts.as_unit("ns").value]
    return loss_reference(int(done.max()) if done.size else None, symbols, now, exchange)


def _loss_checks(ledger: TradingLedger, account: str, now: datetime, equity: float | None, reference: pd.Timestamp,
                 closed: pd.DataFrame, ends: np.ndarray, book: AccountSnapshot | None, risk: RiskLimits,
                 t: AuditThresholds) -> list[Check]:
    checks = []
    dd_limits = {"yellow": t.approach * t.max_drawdown, "red": t.max_drawdown}
    curve = [r for r in ledger.equity_curve(account) if ensure_utc(r["ts"], "ts") <= now]
    if equity is None or equity <= 0:
        checks.append(_unmeasured("drawdown", "equity unknown or not positive", account, dd_limits))
    else:
        peak_row = max(curve, key=lambda r: float(r["equity"]), default=None)
        peak, when = equity, "now"
        if peak_row is not None and float(peak_row["equity"]) > equity:
            peak, when = float(peak_row["equity"]), _stamp_dt(peak_row["ts"])
        # breached at the limit, compared in money as the daily-loss rule compares (1 - 100 / 125 is 0.19999...)
        checks.append(_against("drawdown", 1 - equity / peak, t.max_drawdown, t.approach, inclusive=True,
                               breached=equity <= peak * (1 - t.max_drawdown), rule="max_drawdown", subject=account,
                               what=f"equity {_money(equity)} below its peak {_money(peak)} ({when}; "
                                    f"{len(curve)} snapshot(s)): drawdown"))

    loss_limits = {"yellow": t.approach * risk.daily_loss_limit, "red": risk.daily_loss_limit}
    start, source = _start_of_day(ledger, account, reference, closed, ends, book)
    at = reference.strftime("%Y-%m-%d %H:%M UTC")
    if equity is None or equity <= 0:
        checks.append(_unmeasured("daily_loss", "equity unknown or not positive", account, loss_limits))
    elif start is None or not math.isfinite(start) or start <= 0:
        checks.append(Check("daily_loss", Level.YELLOW, None, loss_limits,
                            f"no equity known at the previous session's close ({at}; {source}): today's loss "
                            "cannot be measured", account))
    else:
        checks.append(_against("daily_loss", 1 - equity / start, risk.daily_loss_limit, t.approach, inclusive=True,
                               breached=equity <= start * (1 - risk.daily_loss_limit), rule="daily_loss_limit", subject=account,
                               what=f"equity {_money(equity)} against {_money(start)} at the previous session's "
                                    f"close ({at}; {source}): loss"))
    return checks


def _stamp_dt(value: Any) -> str:
    return ensure_utc(value, "ts").strftime("%Y-%m-%d %H:%M UTC")


def _rejection_checks(store: PortfolioStore, account: str, since: datetime, now: datetime,
                      t: AuditThresholds) -> list[Check]:
    from airflow_provider_portfolio.store.health import HealthTables

    tally = HealthTables(store.database).risk_verdicts(account, since=since, until=now)
    switch = tally.rejected.get("kill_switch", 0)
    rejected = sum(tally.rejected.values()) - switch
    judged = tally.proposed - tally.unchecked - switch
    span = f"bars after {_stamp_dt(since)}"
    by_rule = ", ".join(f"{rule} {n}" for rule, n in tally.rejected.items() if rule != "kill_switch")
    note = (f"; by rule: {by_rule}" if rejected else "") + (
        f"; kill_switch refused {switch} more (not graded)" if switch else "")
    threshold = {"yellow": t.rejections_yellow, "min_orders": t.min_orders}
    share = rejected / judged if judged else None
    head = f"{rejected} of {judged} proposed order(s) rejected by risk ({span})"
    if judged < t.min_orders or t.rejections_yellow is None or share is None:
        why = f"{judged} judged, {t.min_orders} needed" if judged < t.min_orders else "rejections_yellow is off"
        check = Check("rejections", Level.GREEN, share, threshold, f"{head}; not graded: {why}{note}", account)
    elif share >= t.rejections_yellow:
        check = Check("rejections", Level.YELLOW, share, threshold,
                      f"{head}: share {_pct(share)} >= rejections_yellow {_pct(t.rejections_yellow)}: the strategy "
                      f"keeps pushing against the limits{note}", account)
    else:
        check = Check("rejections", Level.GREEN, share, threshold,
                      f"{head}: share {_pct(share)} below rejections_yellow {_pct(t.rejections_yellow)}{note}",
                      account)
    return [check] + [Check("rejected_orders", Level.GREEN, n, None,
                            f"{n} proposed order(s) rejected by rule {rule} ({span})", rule)
                      for rule, n in tally.rejected.items()]
