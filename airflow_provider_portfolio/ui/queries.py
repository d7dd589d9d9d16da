"""Bounded reads of the portfolio store for the Portfolio page, as JSON-ready dicts.

:class:`PortfolioReader` answers what the page shows: the book of an account (cash, positions, equity), its equity
curve, recent orders, recent trading decisions with their risk verdicts, forecast health and data freshness. Plain
Python over the store's public API (:class:`~airflow_provider_portfolio.store.PortfolioStore`, its ``database`` and
the ``schema`` tables, as :mod:`airflow_provider_portfolio.store.executions` reads them); never imports Airflow or
FastAPI.

Bounds: every list has a limit (:data:`MAX_LIMIT`; positions :data:`MAX_POSITIONS`), the equity curve a window of days
before its last snapshot and at most :data:`MAX_EQUITY_POINTS` points (lowest and highest of equal buckets, so a
drawdown's trough stays on the chart), read from at most :data:`MAX_EQUITY_ROWS` snapshots. A book is valued from at
most :data:`MAX_OPEN_POSITIONS` open positions.

Nothing is ever written: a store that does not exist yet (the embedded SQLite file before the first job) is not
created, and a store without the tables asked about answers empty. Every answer has a ``message``: ``None``, or one
line a person reads saying why it is empty. Valuation is the trading domain's
(:func:`~airflow_provider_portfolio.trading.accounting.value_book`), drawdown too
(:func:`~airflow_provider_portfolio.trading.performance.drawdown`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.bars import parse_timeframe
from airflow_provider_portfolio.market.timeutil import utc_now
from airflow_provider_portfolio.store import schema
from airflow_provider_portfolio.store.ledger import Position
from airflow_provider_portfolio.trading.accounting import valuation_price, value_book
from airflow_provider_portfolio.trading.performance import downsample, drawdown

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from airflow_provider_portfolio.store import PortfolioStore
    from airflow_provider_portfolio.store.health import HealthRecord

__all__ = ["DEFAULT_EQUITY_DAYS", "DEFAULT_EQUITY_POINTS", "DEFAULT_LIMIT", "DEFAULT_POSITIONS", "MAX_ACCOUNTS",
           "MAX_EQUITY_DAYS", "MAX_EQUITY_POINTS", "MAX_EQUITY_ROWS", "MAX_LIMIT", "MAX_OPEN_POSITIONS",
           "MAX_POSITIONS", "MIN_EQUITY_POINTS", "PortfolioReader", "downsample", "verdict"]

#: Orders, decisions and symbols (forecast health, freshness) returned when not told, and the most.
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: Positions of a book returned when not told (largest first), and the most.
DEFAULT_POSITIONS = 100
MAX_POSITIONS = 1000
#: The most open positions read to value one book (more: the answer says ``truncated``).
MAX_OPEN_POSITIONS = 10_000
#: The most accounts listed.
MAX_ACCOUNTS = 100
#: The equity curve's window, days before its last snapshot: default and most.
DEFAULT_EQUITY_DAYS = 365
MAX_EQUITY_DAYS = 3660
#: Points of the equity curve returned: default, least and most.
DEFAULT_EQUITY_POINTS = 500
MIN_EQUITY_POINTS = 10
MAX_EQUITY_POINTS = 2000
#: The most snapshots read for one curve (the newest of the window).
MAX_EQUITY_ROWS = 50_000

_HOUR_S = 3600.0


def _whole(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _name(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{name} must be a non-empty name, got {value!r}")
    return value.strip()


def _num(value: Any) -> float | None:
    """A float for JSON: ``None`` for a missing or non-finite number."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _ts(value: Any) -> str | None:
    """An instant for JSON: ISO 8601 in UTC, or ``None``."""
    return None if value is None else value.isoformat()


def _report(record: HealthRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"ts": _ts(record.ts), "level": record.level, "summary": record.summary, "dag_id": record.dag_id,
            "run_id": record.run_id}


def _checks_by_subject(record: HealthRecord | None, name: str) -> dict[str, dict[str, Any]]:
    """The ``name`` checks of a stored health report, by subject (a symbol)."""
    checks = (record.report.get("checks") if record is not None else None) or []
    return {str(c["subject"]): {"level": c.get("level"), "message": c.get("message")}
            for c in checks if isinstance(c, Mapping) and c.get("name") == name and c.get("subject")}


def verdict(action: str | None, order_qty: float | None, approved: bool | None) -> str:
    """A decision's risk verdict as the page shows it: ``approved`` or ``rejected`` (risk judged its order),
    ``unchecked`` (an order proposed, no verdict stored: the cycle stopped before its risk step), ``no order`` (a hold,
    or nothing to trade)."""
    if approved is not None:
        return "approved" if approved else "rejected"
    if action in ("buy", "sell") and order_qty:
        return "unchecked"
    return "no order"


class PortfolioReader:
    """Read what the Portfolio page shows from a store, in bounded queries; create once and share (thread-safe: each
    method opens its own read).

    :param store: the store (never migrated nor created here).
    :param now: the clock of data freshness (default: the wall clock in UTC).
    """

    def __init__(self, store: PortfolioStore, *, now: Callable[[], datetime] = utc_now) -> None:
        self.store = store
        self._now = now
        self._exists = False

    def __repr__(self) -> str:
        return f"PortfolioReader({self.store.url!r})"

    # -- the store itself ---------------------------------------------------------------------------------------
    def missing(self) -> str | None:
        """Why there is nothing to read: the store is a SQLite file that does not exist yet; else ``None``.

        The file is not created (opening it would): the first job of the desk creates and migrates it.
        """
        if self._exists:
            return None
        path = self.store.database.sqlite_file
        if path is not None and not path.exists():
            return (f"No portfolio store yet ({self.store.url}): the first portfolio job (the daily ETL or a trading "
                    "DAG) creates it.")
        self._exists = True
        return None

    def _no_table(self, conn: Connection, table: Any, what: str) -> str | None:
        if self.store.database.has_table(conn, table.name):
            return None
        version = self.store.database.version(conn)
        return (f"The store has no {what} yet (schema version {version}): the first portfolio job migrates it "
                f"({self.store.url}).")

    # -- accounts -----------------------------------------------------------------------------------------------
    @staticmethod
    def _accounts(conn: Connection) -> dict[str, dict[str, Any]]:
        a, e = schema.accounts.c, schema.equity_curve.c
        last = select(func.max(e.ts)).where(e.account == a.account).scalar_subquery()
        rows = conn.execute(select(a.account, a.cash, a.initial_cash, a.updated_at, last.label("last_snapshot"))
                            .order_by(a.account).limit(MAX_ACCOUNTS)).all()
        return {r.account: dict(r._mapping) for r in rows}

    def _ledger_accounts(self, conn: Connection,
                         account: str | None) -> str | tuple[dict[str, dict[str, Any]], str]:
        """The ledger's accounts and the one to show (see :meth:`_pick`), or the message saying why there is none."""
        missing = self._no_table(conn, schema.accounts, "trading ledger")
        if missing:
            return missing
        accounts = self._accounts(conn)
        if not accounts:
            return "No trading account in the store yet: a trading DAG opens one on its first cycle."
        return accounts, self._pick(accounts, account)

    @staticmethod
    def _pick(accounts: Mapping[str, Mapping[str, Any]], account: str | None) -> str:
        """``account`` (it must exist), else the account snapshotted last, else the one updated last."""
        if account is not None:
            if account not in accounts:
                raise InvalidInputError(f"account {account!r} is not in the store; accounts: {sorted(accounts)}")
            return account
        return max(accounts, key=lambda name: (accounts[name]["last_snapshot"] is not None,
                                               accounts[name]["last_snapshot"] or accounts[name]["updated_at"], name))

    def _health(self) -> dict[str, Any]:
        return {kind: _report(self.store.latest_health_report(kind)) for kind in ("monitoring", "risk_audit")
                if kind in schema.HEALTH_REPORT_KINDS}

    # -- the book -----------------------------------------------------------------------------------------------
    def book(self, account: str | None = None, *, limit: int = DEFAULT_POSITIONS) -> dict[str, Any]:
        """The book of ``account`` (default: the account snapshotted last): cash, positions valued at their last mark
        (else their average price), equity, the return since the initial cash, and the latest monitoring and risk
        audit reports' levels.

        A real broker's account (no simulated cash in the store) shows its last equity snapshot; its positions are
        the broker's.

        :param account: a ledger account (``simulated:default``); ``None``: the default.
        :param limit: the most positions returned, largest market value first (1 to :data:`MAX_POSITIONS`).
        :raises InvalidInputError: for an unknown account or a limit out of range.
        :raises StoreError: when the store cannot be read.
        """
        limit = _whole(limit, "limit", 1, MAX_POSITIONS)
        account = _name(account, "account")
        out: dict[str, Any] = {"account": None, "accounts": [], "as_of": None, "cash": None, "positions_value": None,
                               "equity": None, "initial_cash": None, "total_return": None, "positions": [],
                               "positions_total": 0, "truncated": False, "snapshot": None, "health": {},
                               "message": self.missing()}
        if out["message"]:
            return out
        p, e = schema.positions.c, schema.equity_curve.c
        with self.store.database.read("read the book") as conn:
            found = self._ledger_accounts(conn, account)
            if isinstance(found, str):
                out["message"] = found
                return out
            accounts, name = found
            held = conn.execute(select(schema.positions).where(p.account == name, p.qty != 0)
                                .order_by(p.symbol).limit(MAX_OPEN_POSITIONS + 1)).all()
            snap = conn.execute(select(e.ts, e.cash, e.positions_value, e.equity).where(e.account == name)
                                .order_by(e.ts.desc()).limit(1)).first()
        row = accounts[name]
        out.update(account=name, accounts=sorted(accounts), as_of=_ts(row["updated_at"]),
                   initial_cash=_num(row["initial_cash"]), health=self._health(),
                   snapshot=None if snap is None else {"ts": _ts(snap.ts), "cash": _num(snap.cash),
                                                       "positions_value": _num(snap.positions_value),
                                                       "equity": _num(snap.equity)})
        if row["cash"] is None:  # a real broker's account: cash and positions live at the broker
            if snap is not None:
                out.update(cash=_num(snap.cash), positions_value=_num(snap.positions_value), equity=_num(snap.equity),
                           as_of=_ts(snap.ts))
            out["message"] = (f"{name} is a broker's account: its positions are the broker's; the book shows its last "
                              "equity snapshot." if snap is not None else f"{name} has no equity snapshot yet.")
            return out
        positions = [Position(r.symbol, float(r.qty), float(r.avg_price),
                              None if r.mark_price is None else float(r.mark_price), r.mark_ts)
                     for r in held[:MAX_OPEN_POSITIONS]]
        valued = value_book(float(row["cash"]), positions)
        lines: list[dict[str, Any]] = []
        for pos in positions:
            price = valuation_price(pos)
            value = pos.qty * price
            lines.append({"symbol": pos.symbol, "qty": pos.qty, "avg_price": _num(pos.avg_price),
                          "mark_price": _num(pos.mark_price), "mark_ts": _ts(pos.mark_ts), "price": _num(price),
                          "market_value": _num(value), "unrealized_pnl": _num((price - pos.avg_price) * pos.qty),
                          "weight": _num(value / valued.equity) if valued.equity else None})
        lines.sort(key=lambda line: (-abs(line["market_value"] or 0.0), line["symbol"]))
        initial = out["initial_cash"]
        out.update(cash=_num(valued.cash), positions_value=_num(valued.positions_value), equity=_num(valued.equity),
                   total_return=_num(valued.equity / initial - 1.0) if initial else None, positions=lines[:limit],
                   positions_total=len(positions), truncated=len(held) > MAX_OPEN_POSITIONS)
        return out

    # -- equity curve -------------------------------------------------------------------------------------------
    def equity(self, account: str | None = None, *, days: int = DEFAULT_EQUITY_DAYS,
               points: int = DEFAULT_EQUITY_POINTS) -> dict[str, Any]:
        """The equity curve of ``account`` over the ``days`` before its last snapshot, at most ``points`` points,
        with the window's drawdown (current and maximum, fractions of the peak) and change.

        :param account: a ledger account; ``None``: the default (as :meth:`book`).
        :param days: the window (1 to :data:`MAX_EQUITY_DAYS`).
        :param points: the most points returned (:data:`MIN_EQUITY_POINTS` to :data:`MAX_EQUITY_POINTS`); the
            drawdown and change are measured on every snapshot read, not on the points.
        :raises InvalidInputError: for an unknown account, or a window or number of points out of range.
        :raises StoreError: when the store cannot be read.
        """
        days = _whole(days, "days", 1, MAX_EQUITY_DAYS)
        points = _whole(points, "points", MIN_EQUITY_POINTS, MAX_EQUITY_POINTS)
        account = _name(account, "account")
        out: dict[str, Any] = {"account": None, "since": None, "until": None, "points": [], "points_total": 0,
                               "truncated": False, "first": None, "last": None, "change": None, "drawdown": None,
                               "message": self.missing()}
        if out["message"]:
            return out
        e = schema.equity_curve.c
        with self.store.database.read("read the equity curve") as conn:
            found = self._ledger_accounts(conn, account)
            if isinstance(found, str):
                out["message"] = found
                return out
            accounts, name = found
            out["account"] = name
            last = accounts[name]["last_snapshot"]
            if last is None:
                out["message"] = f"No equity snapshot of {name} yet: each trading cycle writes one."
                return out
            newest = conn.execute(select(e.ts, e.cash, e.equity).where(e.account == name,
                                                                        e.ts >= last - timedelta(days=days))
                                  .order_by(e.ts.desc()).limit(MAX_EQUITY_ROWS)).all()
        rows = newest[::-1]
        values = [float(r.equity) for r in rows]
        try:
            fall = drawdown(values)
        except InvalidInputError:  # a curve through zero or with a hole has no drawdown as a fraction
            fall = None
        first, final = _num(values[0]), _num(values[-1])
        out.update(since=_ts(rows[0].ts), until=_ts(rows[-1].ts), points_total=len(rows),
                   truncated=len(rows) == MAX_EQUITY_ROWS, first=first, last=final,
                   change=_num(final / first - 1.0) if first and final is not None else None,
                   drawdown=None if fall is None else {"current": _num(fall.current), "maximum": _num(fall.maximum),
                                                       "peak": _num(fall.peak)},
                   points=[{"ts": _ts(rows[i].ts), "equity": _num(rows[i].equity), "cash": _num(rows[i].cash)}
                           for i in downsample(values, points)])
        return out

    # -- orders and decisions -----------------------------------------------------------------------------------
    def orders(self, account: str | None = None, *, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
        """The newest orders (by the cycle's instant), of ``account`` or of every account.

        :param limit: the most returned (1 to :data:`MAX_LIMIT`).
        :raises InvalidInputError: for a limit out of range.
        :raises StoreError: when the store cannot be read.
        """
        limit = _whole(limit, "limit", 1, MAX_LIMIT)
        account = _name(account, "account")
        out: dict[str, Any] = {"account": account, "orders": [], "message": self.missing()}
        if out["message"]:
            return out
        o = schema.orders.c
        stmt = select(schema.orders).order_by(o.created_at.desc(), o.client_order_id.desc()).limit(limit)
        if account is not None:
            stmt = stmt.where(o.account == account)
        with self.store.database.read("read the recent orders") as conn:
            out["message"] = self._no_table(conn, schema.orders, "trading ledger")
            rows = [] if out["message"] else conn.execute(stmt).all()
        out["orders"] = [{
            "account": r.account, "client_order_id": r.client_order_id, "symbol": r.symbol, "side": r.side,
            "qty": _num(r.qty), "ref_price": _num(r.ref_price), "status": r.status, "filled_qty": _num(r.filled_qty),
            "filled_avg_price": _num(r.filled_avg_price), "reason": r.reason, "broker_order_id": r.broker_order_id,
            "dag_id": r.dag_id, "run_id": r.run_id, "bar_ts": _ts(r.bar_ts), "created_at": _ts(r.created_at),
            "updated_at": _ts(r.updated_at)} for r in rows]
        if not rows and not out["message"]:
            out["message"] = "No orders yet."
        return out

    def decisions(self, account: str | None = None, *, dag_id: str | None = None,
                  limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
        """The newest trading decisions (by the bar decided), with their risk verdicts (:func:`verdict`) and a count
        of the verdicts among those returned.

        :param account: only this account's decisions; ``None``: every account's.
        :param dag_id: only this DAG's decisions.
        :param limit: the most returned (1 to :data:`MAX_LIMIT`).
        :raises InvalidInputError: for a limit out of range.
        :raises StoreError: when the store cannot be read.
        """
        limit = _whole(limit, "limit", 1, MAX_LIMIT)
        account, dag_id = _name(account, "account"), _name(dag_id, "dag_id")
        out: dict[str, Any] = {"account": account, "dag_id": dag_id, "decisions": [], "verdicts": {},
                               "message": self.missing()}
        if out["message"]:
            return out
        t = schema.trading_decisions.c
        where = [c == v for c, v in ((t.account, account), (t.dag_id, dag_id)) if v is not None]
        stmt = (select(schema.trading_decisions).where(*where)
                .order_by(t.bar_ts.desc(), t.updated_at.desc(), t.dag_id, t.symbol).limit(limit))
        with self.store.database.read("read the recent decisions") as conn:
            out["message"] = self._no_table(conn, schema.trading_decisions, "trading ledger")
            rows = [] if out["message"] else conn.execute(stmt).all()
        decisions = []
        for r in rows:
            try:
                signals = json.loads(r.signals)
            except ValueError:
                signals = {}
            decisions.append({
                "dag_id": r.dag_id, "run_id": r.run_id, "account": r.account, "symbol": r.symbol,
                "timeframe": r.timeframe, "bar_ts": _ts(r.bar_ts), "action": r.action, "score": _num(r.score),
                "confidence": _num(r.confidence), "price": _num(r.price), "current_qty": _num(r.current_qty),
                "target_qty": _num(r.target_qty), "order_qty": _num(r.order_qty), "reason": r.reason, "error": r.error,
                "signals": signals, "verdict": verdict(r.action, r.order_qty, r.approved), "approved": r.approved,
                "risk_rule": r.risk_rule, "risk_reason": r.risk_reason, "client_order_id": r.client_order_id})
        counts: dict[str, int] = {}
        for d in decisions:
            counts[d["verdict"]] = counts.get(d["verdict"], 0) + 1
        out.update(decisions=decisions, verdicts=counts)
        if not rows and not out["message"]:
            out["message"] = "No trading decisions yet."
        return out

    # -- forecast health and data freshness ---------------------------------------------------------------------
    def forecast_health(self, *, timeframe: str = "1Day", limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
        """The latest model evaluations: per model, how many symbols it is healthy, unhealthy or without enough data
        for and its median skill; per symbol (the ``ensemble`` aside, as monitoring counts), the share of its judged
        models labelled healthy, worst first; and the latest monitoring report's ``forecast_health`` verdicts.

        :param timeframe: the evaluations' timeframe.
        :param limit: the most symbols returned (1 to :data:`MAX_LIMIT`).
        :raises InvalidInputError: for a bad timeframe or a limit out of range.
        :raises StoreError: when the store cannot be read.
        """
        limit = _whole(limit, "limit", 1, MAX_LIMIT)
        timeframe = parse_timeframe(timeframe).name
        out: dict[str, Any] = {"timeframe": timeframe, "models": [], "symbols": [], "symbols_total": 0,
                               "monitoring": None, "message": self.missing()}
        if out["message"]:
            return out
        frame = self.store.read_evaluations(None, timeframe=timeframe, latest=True)
        monitoring = self.store.latest_health_report("monitoring")
        verdicts = _checks_by_subject(monitoring, "forecast_health")
        out["monitoring"] = _report(monitoring)
        models: dict[str, dict[str, Any]] = {}
        symbols: dict[str, dict[str, list[str]]] = {}
        for model, symbol, label, skill, asof in zip(frame["model"], frame["symbol"], frame["label"], frame["skill"],
                                                     frame["asof"], strict=True):
            entry = models.setdefault(str(model), {"model": str(model), "healthy": 0, "unhealthy": 0,
                                                   "insufficient_data": 0, "skills": [], "asof": None})
            entry[str(label)] = entry.get(str(label), 0) + 1
            if _num(skill) is not None:
                entry["skills"].append(float(skill))
            entry["asof"] = asof if entry["asof"] is None else max(entry["asof"], asof)
            if model != "ensemble":
                symbols.setdefault(str(symbol), {}).setdefault(str(label), []).append(str(model))
        for entry in models.values():
            skills = sorted(entry.pop("skills"))
            mid = len(skills) // 2
            entry["median_skill"] = (None if not skills else
                                     skills[mid] if len(skills) % 2 else (skills[mid - 1] + skills[mid]) / 2)
            entry["asof"] = _ts(entry["asof"])
        rows = []
        for symbol, labels in symbols.items():
            healthy, unhealthy = sorted(labels.get("healthy", [])), sorted(labels.get("unhealthy", []))
            judged = len(healthy) + len(unhealthy)
            rows.append({"symbol": symbol, "healthy": healthy, "unhealthy": unhealthy,
                         "insufficient_data": sorted(labels.get("insufficient_data", [])),
                         "share_healthy": len(healthy) / judged if judged else None,
                         "level": verdicts.get(symbol, {}).get("level"),
                         "monitoring_message": verdicts.get(symbol, {}).get("message")})
        rows.sort(key=lambda r: (r["share_healthy"] is None, r["share_healthy"] or 0.0, r["symbol"]))
        out.update(models=sorted(models.values(), key=lambda m: m["model"]), symbols=rows[:limit],
                   symbols_total=len(rows))
        if not rows and not models:
            out["message"] = f"No {timeframe} model evaluations yet: the forecasting job writes them."
        return out

    def freshness(self, *, timeframe: str = "1Day", limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
        """The last stored bar of each symbol and its age, stalest first, with the latest monitoring report's
        ``freshness`` verdict where it judged the symbol (it knows the calendar: a weekend is not staleness).

        :param timeframe: the bars' timeframe.
        :param limit: the most symbols returned (1 to :data:`MAX_LIMIT`).
        :raises InvalidInputError: for a bad timeframe or a limit out of range.
        :raises StoreError: when the store cannot be read.
        """
        limit = _whole(limit, "limit", 1, MAX_LIMIT)
        timeframe = parse_timeframe(timeframe).name
        now = self._now()
        out: dict[str, Any] = {"timeframe": timeframe, "now": _ts(now), "symbols": [], "symbols_total": 0,
                               "monitoring": None, "message": self.missing()}
        if out["message"]:
            return out
        latest = {s: ts for s, ts in self.store.latest_bar_ts(None, timeframe).items() if ts is not None}
        monitoring = self.store.latest_health_report("monitoring")
        verdicts = _checks_by_subject(monitoring, "freshness")
        stalest = sorted(latest.items(), key=lambda item: (item[1], item[0]))[:limit]
        out.update(monitoring=_report(monitoring), symbols_total=len(latest), symbols=[
            {"symbol": s, "last_bar": _ts(ts), "age_hours": _num((now - ts.to_pydatetime()).total_seconds() / _HOUR_S),
             "level": verdicts.get(s, {}).get("level"), "monitoring_message": verdicts.get(s, {}).get("message")}
            for s, ts in stalest])
        if not latest:
            out["message"] = f"No {timeframe} bars in the store yet: the daily ETL loads them."
        return out
