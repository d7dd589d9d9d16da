"""The trading ledger in the portfolio store: decisions, orders, fills, positions, cash and equity.

Plain Python over the public API of the store's :class:`~airflow_provider_portfolio.store.database.Database`
(never imports Airflow, nor the trading domain). The ledger keeps and reads rows; the accounting (what a fill does
to a position and the cash, what a book is worth) is the trading domain's
(:mod:`airflow_provider_portfolio.trading.accounting`), handed to :meth:`TradingLedger.fill` as its rule. Every
method is one transaction; the ones that move money (:meth:`TradingLedger.fill`) change the order, the fill, the
position and the cash together or not at all. Keys are the broker's own uniqueness
(``account``, ``client_order_id``) and the decision's (``dag_id``, ``symbol``, ``timeframe``, ``bar_ts``,
``run_key``), so a repeated write (an Airflow retry, an overlapping run) can never add a second order or
decision: it finds the first one.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, select, update

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.market.timeutil import ensure_utc, utc_now
from airflow_provider_portfolio.store import schema

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from airflow_provider_portfolio.store.database import Database
    from airflow_provider_portfolio.store.repository import PortfolioStore

log = logging.getLogger(__name__)

_ROWS_PER_STATEMENT = 400


class FillRule(Protocol):
    """What a fill does to a position and the cash (the trading domain's
    :func:`~airflow_provider_portfolio.trading.accounting.apply_fill`): returns the position's new signed quantity,
    its average price and the cash the fill moves."""

    def __call__(self, qty: float, avg_price: float, *, side: str, fill_qty: float, price: float,
                 commission: float) -> tuple[float, float, float]: ...


_now = utc_now


def _utc(value: Any) -> datetime:
    """An instant stored by the ledger: an aware ``datetime`` (a ``pandas.Timestamp`` as a plain one) in UTC."""
    return ensure_utc(value.to_pydatetime() if hasattr(value, "to_pydatetime") else value, "instant")


@dataclass(frozen=True)
class Position:
    """A simulated position: signed ``qty``, ``avg_price`` of the open quantity, last ``mark_price``."""

    symbol: str
    qty: float
    avg_price: float
    mark_price: float | None
    mark_ts: datetime | None


@dataclass(frozen=True)
class FillResult:
    """What :meth:`TradingLedger.fill` did: the fill and the cash after it."""

    client_order_id: str
    symbol: str
    side: str
    qty: float
    price: float
    commission: float
    cash_after: float


@dataclass(frozen=True)
class BookFill:
    """A stored fill, as the book needs it."""

    symbol: str
    side: str
    qty: float
    price: float
    commission: float


@dataclass(frozen=True)
class Book:
    """A simulated account's book read in one transaction: ``cash``, every stored position by symbol (flat ones
    included), and the ``fills`` asked for (oldest first)."""

    cash: float
    positions: dict[str, Position]
    fills: list[BookFill]


class TradingLedger:
    """Read and write the trading tables of a migrated store (schema version 3 or later).

    :param store: the store; call ``store.migrate()`` first.
    """

    def __init__(self, store: PortfolioStore) -> None:
        self.store = store

    @property
    def _db(self) -> Database:
        return self.store.database

    def __repr__(self) -> str:
        return f"TradingLedger({self.store.url!r})"

    def _insert(self, table: Any, rows: list[dict[str, Any]]) -> Any:
        """The dialect's INSERT of ``rows`` (it has ``on_conflict_do_nothing``/``on_conflict_do_update``)."""
        if self.store.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]  # the other dialect's Insert, alike for on_conflict_do_*
        return insert(table).values(rows)

    def _insert_ignore(self, conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
        """Insert rows whose key is free; rows whose key exists are left as they are."""
        if not rows:
            return
        if self.store.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]  # the other dialect's Insert, alike for on_conflict_do_*
        for i in range(0, len(rows), _ROWS_PER_STATEMENT):
            conn.execute(insert(table).on_conflict_do_nothing(), rows[i:i + _ROWS_PER_STATEMENT])

    def _check_ready(self, conn: Connection) -> None:
        version = self._db.version(conn)
        if version < 3:
            raise StoreError(f"store {self.store.url}: no trading tables (schema version {version}); "
                             "call migrate() first")

    def account_lock(self, account: str, *, owner: str = "", timeout_s: float | None = None) -> Any:
        """A context manager holding ``account``'s exclusive lock: one trading cycle per account at a time
        (see :mod:`airflow_provider_portfolio.store.locks`).

        :param owner: who holds it (``<dag_id>/<run_id>``), for the messages of those who wait.
        :param timeout_s: the longest wait (default :data:`~airflow_provider_portfolio.store.locks.DEFAULT_LOCK_TIMEOUT_S`).
        :raises AccountLockedError: when another cycle holds it longer.
        """
        from airflow_provider_portfolio.store.locks import DEFAULT_LOCK_TIMEOUT_S, account_lock

        return account_lock(self.store, account, owner=owner,
                            timeout_s=DEFAULT_LOCK_TIMEOUT_S if timeout_s is None else timeout_s)

    # -- accounts, cash and positions -----------------------------------------------------------------
    def open_account(self, account: str, initial_cash: float | None) -> float | None:
        """Create ``account`` with ``initial_cash`` if it does not exist; return its cash.

        :param initial_cash: the simulated book's starting cash (> 0), or ``None`` for a real broker's account.
        """
        if initial_cash is not None and (not isinstance(initial_cash, int | float) or isinstance(initial_cash, bool)
                                         or not math.isfinite(initial_cash) or initial_cash <= 0):
            raise InvalidInputError(f"initial_cash must be a positive number, got {initial_cash!r}")
        now = _now()
        with self._db.write(f"open account {account}") as conn:
            self._check_ready(conn)
            self._insert_ignore(conn, schema.accounts, [{
                "account": account, "cash": initial_cash, "initial_cash": initial_cash,
                "created_at": now, "updated_at": now}])
            cash = conn.execute(select(schema.accounts.c.cash).where(schema.accounts.c.account == account)).scalar()
        return None if cash is None else float(cash)

    def cash(self, account: str) -> tuple[float, float]:
        """(cash, initial cash) of a simulated account.

        :raises StoreError: when the account does not exist or has no book.
        """
        t = schema.accounts.c
        with self._db.read(f"read account {account}") as conn:
            row = conn.execute(select(t.cash, t.initial_cash).where(t.account == account)).first()
        if row is None or row.cash is None:
            raise StoreError(f"store {self.store.url}: account {account!r} has no simulated book; open it first")
        return float(row.cash), float(row.initial_cash)

    def accounts(self) -> list[str]:
        """Every account of the ledger (simulated books and real brokers' accounts alike), sorted."""
        t = schema.accounts.c
        with self._db.read("list the accounts") as conn:
            return sorted(str(r[0]) for r in conn.execute(select(t.account)).all())

    def positions(self, account: str) -> dict[str, Position]:
        """Open (non-zero) positions of a simulated account, by symbol."""
        t = schema.positions.c
        with self._db.read(f"read the positions of {account}") as conn:
            rows = conn.execute(select(schema.positions).where(t.account == account, t.qty != 0)).all()
        return {r.symbol: Position(r.symbol, float(r.qty), float(r.avg_price),
                                   None if r.mark_price is None else float(r.mark_price), r.mark_ts) for r in rows}

    def mark(self, account: str, prices: Mapping[str, tuple[float, datetime]]) -> int:
        """Value the open positions of ``account`` at the given (price, bar time); later marks only.

        :param prices: symbol -> (last close, its bar's timestamp); symbols without a position are ignored.
        :return: how many positions were re-marked.
        """
        t = schema.positions.c
        changed = 0
        with self._db.write(f"mark the positions of {account}") as conn:
            held = {r.symbol: r.mark_ts for r in conn.execute(
                select(t.symbol, t.mark_ts).where(t.account == account, t.qty != 0)).all()}
            for symbol, (price, ts) in prices.items():
                if symbol not in held or not (isinstance(price, float | int) and math.isfinite(price) and price > 0):
                    continue
                ts = _utc(ts)
                if held[symbol] is not None and held[symbol] > ts:
                    continue  # an earlier bar never replaces a later mark; the same bar's close replaces its open
                conn.execute(update(schema.positions).where(t.account == account, t.symbol == symbol)
                             .values(mark_price=float(price), mark_ts=ts, updated_at=_now()))
                changed += 1
        return changed

    # -- orders ---------------------------------------------------------------------------------------
    def record_intents(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Record orders about to be sent, with status ``pending_submit``; existing ids are left alone.

        :param rows: dicts with ``account``, ``client_order_id``, ``dag_id``, ``run_id``, ``symbol``, ``side``,
            ``qty``, ``ref_price``, ``bar_ts`` and ``created_at``: the cycle's instant, which the day's order
            counts go by (a simulated month counts its own days, not the wall clock's).
        """
        now = _now()
        prepared = [{**row, "bar_ts": _utc(row["bar_ts"]), "created_at": _utc(row["created_at"]),
                     "status": "pending_submit", "broker_order_id": None, "filled_qty": None,
                     "filled_avg_price": None, "reason": None, "updated_at": now} for row in rows]
        with self._db.write(f"record {len(prepared)} order(s)") as conn:
            self._check_ready(conn)
            self._insert_ignore(conn, schema.orders, prepared)

    def order(self, account: str, client_order_id: str) -> dict[str, Any] | None:
        """The stored order, or ``None``."""
        t = schema.orders.c
        with self._db.read(f"read order {client_order_id}") as conn:
            row = conn.execute(select(schema.orders).where(t.account == account,
                                                           t.client_order_id == client_order_id)).first()
        return None if row is None else dict(row._mapping)

    def orders(self, account: str, *, open_only: bool = False, since: datetime | None = None,
               symbols: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Stored orders of ``account`` (oldest first), optionally only open ones, created since ``since``,
        or about ``symbols``."""
        t = schema.orders.c
        where = [t.account == account]
        if open_only:
            where.append(t.status.not_in(schema.TERMINAL_ORDER_STATES))
        if since is not None:
            where.append(t.created_at >= _utc(since))
        if symbols is not None:
            where.append(t.symbol.in_(sorted(set(symbols))))
        with self._db.read(f"read the orders of {account}") as conn:
            rows = conn.execute(select(schema.orders).where(*where).order_by(t.created_at, t.client_order_id)).all()
        return [dict(r._mapping) for r in rows]

    def settled_unplaced(self, account: str, since: datetime) -> list[dict[str, Any]]:
        """Orders of ``account`` settled as ``not_placed`` (the broker had none when asked) at or after ``since``
        (wall clock), oldest first: a request of a killed worker may still reach the broker after that answer."""
        t = schema.orders.c
        with self._db.read(f"read the unplaced orders of {account}") as conn:
            rows = conn.execute(select(schema.orders).where(t.account == account, t.status == "not_placed",
                                                            t.updated_at >= _utc(since))
                                .order_by(t.updated_at, t.client_order_id)).all()
        return [dict(r._mapping) for r in rows]

    def reserved_cash(self, account: str, *, exclude: str | None = None) -> float:
        """Cash held for the open buy orders that reached the book (accepted, not filled): the sum of their
        quantity times reference price; orders still ``pending_submit`` (never sent) hold nothing.

        :param exclude: a client order id left out (the order being checked itself).
        """
        t = schema.orders.c
        where = [t.account == account, t.side == "buy",
                 t.status.not_in((*schema.TERMINAL_ORDER_STATES, "pending_submit"))]
        if exclude is not None:
            where.append(t.client_order_id != exclude)
        with self._db.read(f"sum the open buy orders of {account}") as conn:
            value = conn.execute(select(func.sum(t.qty * t.ref_price)).where(*where)).scalar()
        return float(value or 0.0)

    def orders_per_symbol(self, account: str, since: datetime, *, exclude: Iterable[str] = ()) -> dict[str, int]:
        """Orders of ``account`` created since ``since`` that reached or may have reached the broker, by symbol.

        :param exclude: client order ids not to count (the orders being checked themselves).
        """
        t = schema.orders.c
        where = [t.account == account, t.created_at >= _utc(since), t.status != "not_placed"]
        exclude = sorted(set(exclude))
        if exclude:
            where.append(t.client_order_id.not_in(exclude))
        with self._db.read(f"count the orders of {account}") as conn:
            rows = conn.execute(select(t.symbol, func.count()).where(*where).group_by(t.symbol)).all()
        return {r[0]: int(r[1]) for r in rows}

    def update_order(self, account: str, client_order_id: str, **state: Any) -> None:
        """Set the broker's view of an order: ``status``, ``broker_order_id``, ``filled_qty``,
        ``filled_avg_price``, ``reason`` (only the keys given)."""
        allowed = {"status", "broker_order_id", "filled_qty", "filled_avg_price", "reason"}
        unknown = set(state) - allowed
        if unknown:
            raise InvalidInputError(f"unknown order field(s) {sorted(unknown)}")
        t = schema.orders.c
        with self._db.write(f"update order {client_order_id}") as conn:
            done = conn.execute(update(schema.orders).where(t.account == account, t.client_order_id == client_order_id)
                                .values(**state, updated_at=_now())).rowcount
        if done != 1:
            raise StoreError(f"store {self.store.url}: no order {client_order_id!r} in account {account!r}")

    def accept(self, account: str, client_order_id: str, broker_order_id: str) -> dict[str, Any]:
        """Move a ``pending_submit`` order to ``new`` (the simulated broker accepting it); return the order.

        An order already past ``pending_submit`` is returned as it is: the broker's uniqueness of ids.
        """
        t = schema.orders.c
        with self._db.write(f"accept order {client_order_id}") as conn:
            conn.execute(update(schema.orders).where(t.account == account, t.client_order_id == client_order_id,
                                                     t.status == "pending_submit")
                         .values(status="new", broker_order_id=broker_order_id, filled_qty=0.0, updated_at=_now()))
            row = conn.execute(select(schema.orders).where(t.account == account,
                                                           t.client_order_id == client_order_id)).first()
        if row is None:
            raise StoreError(f"store {self.store.url}: no order {client_order_id!r} in account {account!r}")
        return dict(row._mapping)

    def fill(self, account: str, client_order_id: str, *, price: float, commission: float,
             bar_ts: datetime, rule: FillRule) -> FillResult | None:
        """Fill an open order whole at ``price``: order, fill, position and cash in one transaction.

        The position's new quantity and average price and the cash moved are ``rule``'s, applied to the position
        read (locked, on PostgreSQL) inside the transaction.

        :param rule: the accounting of a fill (:func:`airflow_provider_portfolio.trading.accounting.apply_fill`;
            the store never imports the trading domain, so it is handed in).
        :return: the fill, or ``None`` when the order is not open any more (already filled by another
            process): nothing is changed then.
        :raises InvalidInputError: for a price or commission out of range.
        """
        if not (math.isfinite(price) and price > 0 and math.isfinite(commission) and commission >= 0):
            raise InvalidInputError(f"bad fill price {price!r} or commission {commission!r}")
        o, p, a = schema.orders.c, schema.positions.c, schema.accounts.c
        now = _now()
        bar_ts = _utc(bar_ts)
        with self._db.write(f"fill order {client_order_id}") as conn:
            # Claim the order first, by a conditional UPDATE: of two processes filling it at once (PostgreSQL,
            # read committed), the second waits for the first's row lock and then finds it filled.
            claimed = conn.execute(update(schema.orders).where(
                o.account == account, o.client_order_id == client_order_id,
                o.status.not_in((*schema.TERMINAL_ORDER_STATES, "pending_submit")),
            ).values(status="filled", filled_qty=o.qty, filled_avg_price=price, updated_at=now)).rowcount
            if claimed != 1:
                return None
            order = conn.execute(select(schema.orders).where(o.account == account,
                                                             o.client_order_id == client_order_id)).first()
            assert order is not None  # claimed by the UPDATE above, in this transaction
            qty = float(order.qty)
            self._insert_ignore(conn, schema.fills, [{
                "account": account, "client_order_id": client_order_id, "symbol": order.symbol, "side": order.side,
                "qty": qty, "price": price, "commission": commission, "bar_ts": bar_ts, "filled_at": now}])
            # The position row exists before it is read, and is read locked (PostgreSQL): concurrent fills of one
            # symbol queue on it instead of both adding to the same old quantity.
            self._insert_ignore(conn, schema.positions, [{
                "account": account, "symbol": order.symbol, "qty": 0.0, "avg_price": 0.0, "mark_price": None,
                "mark_ts": None, "updated_at": now}])
            held = conn.execute(select(p.qty, p.avg_price, p.mark_ts).where(p.account == account,
                                                                            p.symbol == order.symbol)
                                .with_for_update()).first()
            assert held is not None  # inserted above when missing, in this transaction
            new_qty, new_avg, cash_delta = rule(float(held.qty), float(held.avg_price), side=order.side,
                                                fill_qty=qty, price=price, commission=commission)
            values: dict[str, Any] = {"qty": float(new_qty), "avg_price": float(new_avg), "updated_at": now}
            if held.mark_ts is None or held.mark_ts < bar_ts:  # a later mark stands
                values.update(mark_price=price, mark_ts=bar_ts)
            conn.execute(update(schema.positions).where(p.account == account, p.symbol == order.symbol)
                         .values(**values))
            conn.execute(update(schema.accounts).where(a.account == account)
                         .values(cash=a.cash + float(cash_delta), updated_at=now))
            cash = conn.execute(select(a.cash).where(a.account == account)).scalar()
            if cash is None:  # raised inside the transaction: the fill is undone whole
                raise StoreError(f"store {self.store.url}: account {account!r} has no simulated book; open it first")
        return FillResult(client_order_id, order.symbol, order.side, qty, price, commission, float(cash))

    def fills(self, account: str) -> list[dict[str, Any]]:
        """All fills of ``account``, oldest first."""
        t = schema.fills.c
        with self._db.read(f"read the fills of {account}") as conn:
            rows = conn.execute(select(schema.fills).where(t.account == account)
                                .order_by(t.filled_at, t.client_order_id)).all()
        return [dict(r._mapping) for r in rows]

    # -- equity -------------------------------------------------------------------------------------
    def book(self, account: str, *, fills_from: datetime | None = None) -> Book:
        """The book of a simulated account, read in one transaction: cash, every position (flat ones included)
        and, with ``fills_from``, the fills of bars stamped at or after it.

        :raises StoreError: when the account does not exist or has no book.
        """
        a, p, f = schema.accounts.c, schema.positions.c, schema.fills.c
        with self._db.read(f"read the book of {account}") as conn:
            cash = conn.execute(select(a.cash).where(a.account == account)).scalar()
            if cash is None:
                raise StoreError(f"store {self.store.url}: account {account!r} has no simulated book; open it first")
            positions = {r.symbol: Position(r.symbol, float(r.qty), float(r.avg_price),
                                            None if r.mark_price is None else float(r.mark_price), r.mark_ts)
                         for r in conn.execute(select(schema.positions).where(p.account == account)).all()}
            fills = [] if fills_from is None else [
                BookFill(r.symbol, r.side, float(r.qty), float(r.price), float(r.commission))
                for r in conn.execute(select(f.symbol, f.side, f.qty, f.price, f.commission)
                                      .where(f.account == account, f.bar_ts >= _utc(fills_from))
                                      .order_by(f.filled_at, f.client_order_id)).all()]
        return Book(float(cash), positions, fills)

    def snapshot(self, account: str, ts: datetime, run_id: str, *, cash: float, equity: float,
                 positions_value: float | None = None) -> dict[str, float]:
        """Write the equity of ``account`` at ``ts`` (replacing an earlier snapshot at that instant).

        :param cash: the account's cash (a simulated book's, valued by the trading domain's accounting; a real
            broker's own).
        :param equity: its equity.
        :param positions_value: the positions' value (default ``equity - cash``).
        """
        ts = _utc(ts)
        if cash is None or equity is None:
            raise InvalidInputError("give equity with cash")
        value = float(equity) - float(cash) if positions_value is None else float(positions_value)
        money = {"cash": float(cash), "positions_value": value, "equity": float(equity)}
        row = {"account": account, "ts": ts, **money, "run_id": run_id, "created_at": _now()}
        with self._db.write(f"snapshot the equity of {account}") as conn:
            # one upsert, not delete + insert: mapped chunks of a run snapshot the same instant concurrently
            insert = self._insert(schema.equity_curve, [row])
            conn.execute(insert.on_conflict_do_update(
                index_elements=["account", "ts"],
                set_={k: insert.excluded[k] for k in ("cash", "positions_value", "equity", "run_id", "created_at")}))
        return money

    def equity_curve(self, account: str) -> list[dict[str, Any]]:
        """The equity snapshots of ``account``, oldest first."""
        e = schema.equity_curve.c
        with self._db.read(f"read the equity of {account}") as conn:
            rows = conn.execute(select(schema.equity_curve).where(e.account == account).order_by(e.ts)).all()
        return [dict(r._mapping) for r in rows]

    def last_equity_at(self, account: str, instant: datetime) -> float | None:
        """Equity of the latest snapshot at or before ``instant``, or ``None``."""
        e = schema.equity_curve.c
        with self._db.read(f"read the equity of {account}") as conn:
            value = conn.execute(select(e.equity).where(e.account == account, e.ts <= _utc(instant))
                                 .order_by(e.ts.desc()).limit(1)).scalar()
        return None if value is None else float(value)

    # -- decisions ----------------------------------------------------------------------------------
    def claim_decisions(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Insert decisions whose key is free and return, by symbol, the stored decisions of this run.

        A symbol whose key another run already holds is not returned (that run decided it: a bar-aware
        trader skips it). A key this same run holds (an Airflow retry) returns the STORED decision, not the
        new one, so a retry carries out exactly what the first try decided.

        :param rows: decision dicts (columns of ``trading_decisions`` but ``created_at``/``updated_at``),
            ``signals`` as a mapping; all with the same ``dag_id`` and ``run_id``.
        """
        if not rows:
            return {}
        now = _now()
        prepared = []
        for row in rows:
            item = dict(row)
            item["bar_ts"] = _utc(item["bar_ts"])
            item["signals"] = json.dumps(item["signals"], sort_keys=True, allow_nan=False, default=float)
            for name in ("score", "confidence", "price", "current_qty", "target_qty", "order_qty"):
                value = item.get(name)
                item[name] = None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value
            item.setdefault("approved", None)
            item.setdefault("risk_rule", None)
            item.setdefault("risk_reason", None)
            item.setdefault("client_order_id", None)
            item["created_at"] = item["updated_at"] = now
            prepared.append(item)
        run_ids = {r["run_id"] for r in prepared}
        if len(run_ids) != 1:
            raise InvalidInputError(f"decisions of one run only, got runs {sorted(run_ids)}")
        dag_ids = {r["dag_id"] for r in prepared}
        if len(dag_ids) != 1:
            raise InvalidInputError(f"decisions of one DAG only, got {sorted(dag_ids)}")
        t = schema.trading_decisions.c
        keys = {(r["symbol"], r["timeframe"], r["bar_ts"], r["run_key"]) for r in prepared}
        out: dict[str, dict[str, Any]] = {}
        with self._db.write(f"record {len(prepared)} decision(s)") as conn:
            self._check_ready(conn)
            self._insert_ignore(conn, schema.trading_decisions, prepared)
            # This run's rows (index ix_trading_decisions_run), kept where the key is one asked for: a key
            # another run holds is not among them, a key this run holds from an earlier try is. In symbol order on
            # every database: the cycle risk-checks and sends the orders in this order (orders per day, buying power
            # and open positions depend on it), and the backtest replays the same order.
            stored = conn.execute(select(schema.trading_decisions).where(
                t.dag_id == dag_ids.pop(), t.run_id == run_ids.pop()).order_by(t.symbol, t.timeframe, t.bar_ts)).all()
            for r in stored:
                if (r.symbol, r.timeframe, r.bar_ts, r.run_key) in keys:
                    item = dict(r._mapping)
                    item["signals"] = json.loads(item["signals"])
                    out[r.symbol] = item
        return out

    def decisions(self, dag_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        """Stored decisions (all, of a DAG, or of one run), ordered by bar and symbol."""
        t = schema.trading_decisions.c
        where = []
        if dag_id is not None:
            where.append(t.dag_id == dag_id)
        if run_id is not None:
            where.append(t.run_id == run_id)
        with self._db.read("read decisions") as conn:
            rows = conn.execute(select(schema.trading_decisions).where(*where).order_by(t.bar_ts, t.symbol)).all()
        out = []
        for r in rows:
            item = dict(r._mapping)
            item["signals"] = json.loads(item["signals"])
            out.append(item)
        return out

    def record_verdicts(self, dag_id: str, verdicts: Sequence[Mapping[str, Any]]) -> None:
        """Store each decision's risk verdict and order id: dicts with the decision key (``symbol``,
        ``timeframe``, ``bar_ts``, ``run_key``) and ``approved``, ``risk_rule``, ``risk_reason``,
        ``client_order_id``."""
        if not verdicts:
            return
        t = schema.trading_decisions.c
        now = _now()
        with self._db.write(f"record {len(verdicts)} risk verdict(s)") as conn:
            for v in verdicts:
                conn.execute(update(schema.trading_decisions).where(
                    t.dag_id == dag_id, t.symbol == v["symbol"], t.timeframe == v["timeframe"],
                    t.bar_ts == _utc(v["bar_ts"]), t.run_key == v["run_key"]).values(
                    approved=v["approved"], risk_rule=v.get("risk_rule"), risk_reason=v.get("risk_reason"),
                    client_order_id=v.get("client_order_id"), updated_at=now))
