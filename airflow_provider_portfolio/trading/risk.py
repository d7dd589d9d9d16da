"""Hard risk limits checked for every proposed order, before anything reaches a broker.

Plain Python: never imports Airflow. The kill switch state is passed in as a string (the operator reads the
Airflow Variable ``portfolio.kill_switch`` and hands its value over); :func:`normalise_kill_switch` turns
whatever was stored into one of :data:`KILL_SWITCH_STATES`, failing safe to ``"halted"``.

Money is at stake, so the checks are conservative: missing or malformed information (no price, unknown
tradability, unknown market state, a non-finite number) rejects the order with a reason; it never lets it through.

Definitions:

- *position*: ``account.positions.get(symbol, 0)`` (signed quantity; a missing symbol is flat).
- *reducing order*: a sell of a long or a buy of a short whose quantity is at most ``|position|`` (exact
  comparison, no tolerance). It moves the position towards zero and never through it: an order that flips
  a long into a short (or back) is *not* reducing. A reducing order is never rejected by the loss,
  short-selling, notional, position, open-position or buying-power rules; it is still rejected by the kill
  switch ``halted``, an invalid order or account state, an untradable asset, a closed (or unknown) market,
  low confidence and the order-count limits.
- *notional*: ``qty * price`` (the order's reference price), in account currency.

Rules, checked in this order; the first failing rule rejects the order and names itself in
:attr:`RiskVerdict.rule`:

1. ``kill_switch``: state ``halted`` rejects every order; ``reduce_only`` rejects every order that is not
   reducing (one that opens a position, increases ``|position|`` or flips its sign); ``active`` passes.
2. ``invalid_order``: empty symbol; side not ``"buy"`` / ``"sell"``; quantity not a finite number > 0;
   price not a finite number > 0; confidence not a finite number in [0, 1]; a fractional quantity when
   the order is not ``fractionable``.
3. ``account_state``: any of equity, cash, buying power or start-of-day equity not a finite number; the
   symbol's position not a finite number; an ``orders_today`` count that is not an integer >= 0 (all
   orders); equity or start-of-day equity <= 0 (orders that are not reducing).
4. ``tradable``: the asset is not marked tradable (``tradable[symbol] is True``); a missing entry is
   unknown and rejects.
5. ``market_open``: the symbol's market is not marked open now (``market_open[symbol] is True``); a
   missing entry is unknown and rejects.
6. ``min_confidence``: ``confidence < min_confidence``.
7. ``daily_loss_limit``: ``equity <= start_of_day_equity * (1 - daily_loss_limit)`` (at or beyond the
   limit): only reducing orders pass.
8. ``short_selling``: a sell that leaves the position negative when ``allow_short`` is False or the
   symbol is not marked shortable (``shortable[symbol] is True``; missing = not shortable).
9. ``max_order_notional``: ``notional > max_order_notional``.
10. ``max_position_fraction``: ``|position after the order| * price / equity > max_position_fraction``
    (the whole position valued at the order's reference price).
11. ``max_open_positions``: the order opens a position in a flat symbol while the number of open
    (non-zero) positions is already ``>= max_open_positions``.
12. ``max_orders_per_symbol_per_day``: ``orders_today[symbol] >= max_orders_per_symbol_per_day``.
13. ``max_orders_per_day``: ``sum(orders_today.values()) >= max_orders_per_day``.
14. ``buying_power``: a buy (not reducing) whose notional is ``> buying_power``.

:func:`check_orders` checks a batch in sequence against a working copy of the account: every *approved*
order updates the position (and with it the open-position count), adds one to ``orders_today[symbol]``
and, for buys (reducing or not), takes its notional off ``cash`` and ``buying_power``. Sells credit
nothing (they are not filled yet). So a batch cannot together exceed a limit that each order alone would pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from airflow_provider_portfolio.exceptions import InvalidInputError

KILL_SWITCH_STATES = ("active", "reduce_only", "halted")

SIDES = ("buy", "sell")

APPROVED = "approved"


def _is_number(value: object) -> bool:
    """Whether ``value`` is an int or float (never a bool) and finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _qty(value: float) -> str:
    return f"{value:,.6g}" if isinstance(value, float) and not value.is_integer() else f"{value:,.0f}"


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def normalise_kill_switch(value: object) -> str:
    """Turn a stored kill switch value into one of :data:`KILL_SWITCH_STATES`.

    Case-insensitive; surrounding whitespace is ignored and inner spaces or hyphens read as underscores
    (``" Reduce-Only "`` -> ``"reduce_only"``). ``None``, ``""`` and whitespace mean ``"active"`` (the
    Variable is not set). Anything else that is not a known state (a typo, a number, a bool, a non-string)
    is ``"halted"``: an unreadable kill switch fails safe and stops trading.

    :param value: the raw value, usually the Variable ``portfolio.kill_switch``.
    :return: ``"active"``, ``"reduce_only"`` or ``"halted"``.
    """
    if value is None:
        return "active"
    if not isinstance(value, str):
        return "halted"
    text = "_".join(value.strip().lower().replace("-", " ").split())
    if text == "":
        return "active"
    return text if text in KILL_SWITCH_STATES else "halted"


@dataclass(frozen=True)
class RiskLimits:
    """Hard limits applied to every proposed order.

    :param max_order_notional: the most one order may be worth (``qty * price``), account currency; > 0.
    :param max_position_fraction: the most ``|position value after the order| / equity`` may be; in (0, 1].
    :param max_open_positions: the most open positions; an order opening one more is rejected; int >= 0.
    :param max_orders_per_symbol_per_day: orders the risk layer accepts per symbol per day; int >= 0.
    :param max_orders_per_day: orders the risk layer accepts per day, all symbols; int >= 0.
    :param daily_loss_limit: fraction of start-of-day equity; at or beyond this loss only reducing orders
        pass; in (0, 1].
    :param min_confidence: the lowest signal confidence traded; in [0, 1].
    :param allow_short: whether a sell may leave a position negative (the asset must be shortable too).
    :raises InvalidInputError: a value of the wrong type or out of range.
    """

    max_order_notional: float = 10_000.0
    max_position_fraction: float = 0.10
    max_open_positions: int = 20
    max_orders_per_symbol_per_day: int = 4
    max_orders_per_day: int = 100
    daily_loss_limit: float = 0.03
    min_confidence: float = 0.55
    allow_short: bool = False

    def __post_init__(self) -> None:
        errors = []
        if not _is_number(self.max_order_notional) or self.max_order_notional <= 0:
            errors.append(f"max_order_notional must be a finite number > 0, got {self.max_order_notional!r}")
        for name in ("max_position_fraction", "daily_loss_limit"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value <= 1:
                errors.append(f"{name} must be a number in (0, 1], got {value!r}")
        if not _is_number(self.min_confidence) or not 0 <= self.min_confidence <= 1:
            errors.append(f"min_confidence must be a number in [0, 1], got {self.min_confidence!r}")
        for name in ("max_open_positions", "max_orders_per_symbol_per_day", "max_orders_per_day"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                errors.append(f"{name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.allow_short, bool):
            errors.append(f"allow_short must be a bool, got {self.allow_short!r}")
        if errors:
            raise InvalidInputError("invalid risk limits: " + "; ".join(errors))

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> RiskLimits:
        """Build limits from a mapping (for example a JSON Variable); missing keys keep their defaults.

        :param data: field name -> value; ``None`` gives the defaults.
        :raises InvalidInputError: ``data`` is not a mapping, has unknown keys (all named), or a value is invalid.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"risk limits must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise InvalidInputError(
                f"unknown risk limit key(s): {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = dict(data)
        return cls(**values)


@dataclass(frozen=True)
class ProposedOrder:
    """An order a strategy would like to place. Not validated here: :func:`check_order` rejects bad ones.

    :param symbol: the symbol, matched exactly (case-sensitive) against the account's mappings.
    :param side: ``"buy"`` or ``"sell"``.
    :param qty: quantity, > 0.
    :param price: reference price (last trade or quote) used for notional and position value, > 0.
    :param confidence: the signal's confidence, in [0, 1].
    :param fractionable: whether the asset trades in fractional quantities.
    """

    symbol: str
    side: str
    qty: float
    price: float
    confidence: float
    fractionable: bool = True

    @property
    def notional(self) -> float:
        """``qty * price``."""
        return self.qty * self.price

    @property
    def signed_qty(self) -> float:
        """``+qty`` for a buy, ``-qty`` for a sell (0 for an unknown side)."""
        return self.qty if self.side == "buy" else -self.qty if self.side == "sell" else 0.0


@dataclass(frozen=True, kw_only=True)
class AccountState:
    """The account as the risk layer sees it. Keyword-only; mappings are copied and made read-only.

    :param equity: current equity, account currency.
    :param cash: cash.
    :param buying_power: buying power.
    :param start_of_day_equity: equity at the start of the trading day (for the daily loss limit).
    :param positions: symbol -> signed quantity (missing = flat).
    :param orders_today: symbol -> orders the risk layer already accepted today (missing = 0).
    :param tradable: symbol -> whether the asset is tradable; missing = unknown, which rejects.
    :param shortable: symbol -> whether the asset can be shorted; missing = not shortable.
    :param market_open: symbol -> whether its market is open now per its calendar; missing = unknown, which rejects.
    """

    equity: float
    cash: float
    buying_power: float
    start_of_day_equity: float
    positions: Mapping[str, float]
    orders_today: Mapping[str, int]
    tradable: Mapping[str, bool]
    shortable: Mapping[str, bool] = field(default_factory=dict)
    market_open: Mapping[str, bool]

    def __post_init__(self) -> None:
        for name in ("positions", "orders_today", "tradable", "shortable", "market_open"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise InvalidInputError(f"AccountState.{name} must be a mapping, got {type(value).__name__}")
            object.__setattr__(self, name, MappingProxyType(dict(value)))

    @property
    def open_positions(self) -> int:
        """How many symbols hold a non-zero position."""
        return sum(1 for qty in self.positions.values() if qty != 0)


@dataclass(frozen=True)
class RiskVerdict:
    """The outcome of checking one order.

    :param order: the order checked.
    :param approved: whether it passed every rule.
    :param reason: ``"approved"`` or why the first failing rule rejected it, with the numbers.
    :param rule: the machine name of the failing rule (for example ``"max_order_notional"``); ``None`` when approved.
    """

    order: ProposedOrder
    approved: bool
    reason: str
    rule: str | None = None


def _is_reducing(order: ProposedOrder, position: float) -> bool:
    """Whether the order moves a non-zero position towards zero without crossing it."""
    if order.side not in SIDES or not _is_number(order.qty) or order.qty <= 0:
        return False
    if not _is_number(position) or position == 0:
        return False
    opposite = (order.side == "sell" and position > 0) or (order.side == "buy" and position < 0)
    return opposite and order.qty <= abs(position)


def _invalid_order(order: ProposedOrder) -> str | None:
    if not isinstance(order.symbol, str) or not order.symbol.strip():
        return f"invalid order: symbol must be a non-empty string, got {order.symbol!r}"
    if order.side not in SIDES:
        return f"invalid order: side must be 'buy' or 'sell', got {order.side!r}"
    if not _is_number(order.qty) or order.qty <= 0:
        return f"invalid order: qty must be a finite number > 0, got {order.qty!r}"
    if not _is_number(order.price) or order.price <= 0:
        return f"invalid order: price must be a finite number > 0, got {order.price!r}"
    if not _is_number(order.confidence) or not 0 <= order.confidence <= 1:
        return f"invalid order: confidence must be a finite number in [0, 1], got {order.confidence!r}"
    if order.fractionable is not True and float(order.qty) != math.floor(order.qty):
        return f"invalid order: fractional qty {order.qty!r} but {order.symbol} is not fractionable"
    return None


def _invalid_account(account: AccountState, symbol: str, reducing: bool) -> str | None:
    for name in ("equity", "cash", "buying_power", "start_of_day_equity"):
        value = getattr(account, name)
        if not _is_number(value):
            return f"account state: {name} must be a finite number, got {value!r}"
    position = account.positions.get(symbol, 0)
    if not _is_number(position):
        return f"account state: position of {symbol} must be a finite number, got {position!r}"
    for key, count in account.orders_today.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            return f"account state: orders_today[{key!r}] must be an integer >= 0, got {count!r}"
    if not reducing:
        if account.equity <= 0:
            return f"account state: equity {_money(account.equity)} <= 0, only reducing orders pass"
        if account.start_of_day_equity <= 0:
            return (
                f"account state: start_of_day_equity {_money(account.start_of_day_equity)} <= 0, "
                "only reducing orders pass"
            )
    return None


def _reject(order: ProposedOrder, rule: str, reason: str) -> RiskVerdict:
    return RiskVerdict(order=order, approved=False, reason=reason, rule=rule)


def check_order(
    order: ProposedOrder, account: AccountState, limits: RiskLimits, kill_switch: object = "active"
) -> RiskVerdict:
    """Check one order against every rule, in the order the module docstring lists; the first failure wins.

    :param order: the proposed order.
    :param account: the account now (including orders already accepted today).
    :param limits: the limits.
    :param kill_switch: the kill switch state, raw; read through :func:`normalise_kill_switch` (unknown = halted).
    :return: the verdict, with the failing rule's name and a reason naming the numbers.
    """
    state = normalise_kill_switch(kill_switch)
    symbol = order.symbol
    raw_position = account.positions.get(symbol, 0) if isinstance(symbol, str) else 0
    reducing = _is_reducing(order, raw_position)

    # 1. kill switch
    if state == "halted":
        return _reject(order, "kill_switch", "kill switch is 'halted': no orders pass")
    if state == "reduce_only" and not reducing:
        return _reject(
            order,
            "kill_switch",
            f"kill switch is 'reduce_only': {order.side} {order.qty!r} {symbol} with position {raw_position!r} "
            "would open, increase or flip a position",
        )

    # 2. invalid order
    problem = _invalid_order(order)
    if problem:
        return _reject(order, "invalid_order", problem)

    # 3. account state
    problem = _invalid_account(account, symbol, reducing)
    if problem:
        return _reject(order, "account_state", problem)

    position = float(raw_position)
    after = position + order.signed_qty
    notional = order.notional

    # 4. tradable
    if account.tradable.get(symbol) is not True:
        if symbol in account.tradable:
            reason = f"{symbol} is not tradable (tradable={account.tradable[symbol]!r})"
        else:
            reason = f"tradability of {symbol} unknown (no entry): rejected"
        return _reject(order, "tradable", reason)

    # 5. market open
    if account.market_open.get(symbol) is not True:
        if symbol in account.market_open:
            reason = f"market for {symbol} is closed (market_open={account.market_open[symbol]!r})"
        else:
            reason = f"market state of {symbol} unknown (no entry): rejected"
        return _reject(order, "market_open", reason)

    # 6. confidence
    if order.confidence < limits.min_confidence:
        return _reject(
            order,
            "min_confidence",
            f"confidence {order.confidence:.4f} < min_confidence {limits.min_confidence:.4f}",
        )

    if not reducing:
        # 7. daily loss limit
        floor = account.start_of_day_equity * (1 - limits.daily_loss_limit)
        if account.equity <= floor:
            loss = 1 - account.equity / account.start_of_day_equity
            return _reject(
                order,
                "daily_loss_limit",
                f"equity {_money(account.equity)} <= {_money(floor)} (loss {_pct(loss)} of start_of_day_equity "
                f"{_money(account.start_of_day_equity)}, daily_loss_limit {_pct(limits.daily_loss_limit)}): "
                "only reducing orders pass",
            )

        # 8. short selling
        if order.side == "sell" and after < 0:
            if not limits.allow_short:
                return _reject(
                    order,
                    "short_selling",
                    f"sell {_qty(order.qty)} {symbol} takes position {_qty(position)} to {_qty(after)}: "
                    "short selling is not allowed (allow_short False)",
                )
            if account.shortable.get(symbol) is not True:
                return _reject(
                    order,
                    "short_selling",
                    f"sell {_qty(order.qty)} {symbol} takes position {_qty(position)} to {_qty(after)}: "
                    f"{symbol} is not marked shortable",
                )

        # 9. order notional
        if notional > limits.max_order_notional:
            return _reject(
                order,
                "max_order_notional",
                f"notional {_money(notional)} > max_order_notional {_money(limits.max_order_notional)}",
            )

        # 10. position fraction
        fraction = abs(after) * order.price / account.equity
        if fraction > limits.max_position_fraction:
            return _reject(
                order,
                "max_position_fraction",
                f"position after order {_qty(after)} {symbol} = {_money(abs(after) * order.price)} is "
                f"{_pct(fraction)} of equity {_money(account.equity)} > max_position_fraction "
                f"{_pct(limits.max_position_fraction)}",
            )

        # 11. open positions
        open_now = account.open_positions
        if position == 0 and after != 0 and open_now >= limits.max_open_positions:
            return _reject(
                order,
                "max_open_positions",
                f"opening {symbol} with {open_now} open positions >= max_open_positions {limits.max_open_positions}",
            )

    # 12. / 13. order counts
    symbol_count = account.orders_today.get(symbol, 0)
    if symbol_count >= limits.max_orders_per_symbol_per_day:
        return _reject(
            order,
            "max_orders_per_symbol_per_day",
            f"{symbol_count} orders in {symbol} today >= max_orders_per_symbol_per_day "
            f"{limits.max_orders_per_symbol_per_day}",
        )
    total = sum(account.orders_today.values())
    if total >= limits.max_orders_per_day:
        return _reject(
            order,
            "max_orders_per_day",
            f"{total} orders today >= max_orders_per_day {limits.max_orders_per_day}",
        )

    # 14. buying power
    if not reducing and order.side == "buy" and notional > account.buying_power:
        return _reject(
            order,
            "buying_power",
            f"buy notional {_money(notional)} > buying_power {_money(account.buying_power)}",
        )

    return RiskVerdict(order=order, approved=True, reason=APPROVED, rule=None)


def _apply(account: AccountState, order: ProposedOrder) -> AccountState:
    """The account after an approved order is accepted (not yet filled)."""
    positions = dict(account.positions)
    after = float(positions.get(order.symbol, 0)) + order.signed_qty
    if after == 0:
        positions.pop(order.symbol, None)
    else:
        positions[order.symbol] = after
    orders_today = dict(account.orders_today)
    orders_today[order.symbol] = orders_today.get(order.symbol, 0) + 1
    cash, buying_power = account.cash, account.buying_power
    if order.side == "buy":
        cash -= order.notional
        buying_power -= order.notional
    return replace(account, positions=positions, orders_today=orders_today, cash=cash, buying_power=buying_power)


def check_orders(
    orders: Sequence[ProposedOrder], account: AccountState, limits: RiskLimits, kill_switch: object = "active"
) -> list[RiskVerdict]:
    """Check a batch in sequence; each approved order updates a working copy of the account.

    Positions (and so the open-position count), ``orders_today`` and, for buys, cash and buying power are
    updated after every approved order, so later orders are checked against what earlier ones used up.
    ``account`` itself is not changed.

    :param orders: the proposed orders, in the order they would be placed.
    :param account: the account before the batch.
    :param limits: the limits.
    :param kill_switch: the raw kill switch state (see :func:`normalise_kill_switch`).
    :return: one verdict per order, in the same order.
    """
    working = account
    verdicts = []
    for order in orders:
        verdict = check_order(order, working, limits, kill_switch)
        if verdict.approved:
            working = _apply(working, order)
        verdicts.append(verdict)
    return verdicts
