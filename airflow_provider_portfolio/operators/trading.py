"""AutoTraderOperator: one trading cycle (signals, decisions, risk, orders) for a list of symbols."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.store import PortfolioStoreHook
from airflow_provider_portfolio.operators.templated import blank, maybe_json_list

if TYPE_CHECKING:
    from datetime import datetime

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from airflow_provider_portfolio.store.ledger import TradingLedger
    from airflow_provider_portfolio.trading.brokers import Broker

#: The Airflow Variable holding the kill switch: ``active``, ``reduce_only`` or ``halted``.
KILL_SWITCH_VARIABLE = "portfolio.kill_switch"
#: The broker connection used when none is given, if it exists.
DEFAULT_BROKER_CONNECTION = "alpaca_default"
#: ``broker_conn_id`` value that always means the simulated broker.
SIMULATED = "simulated"
#: The Airflow Variable holding the simulated broker's costs per asset class (``TransactionCostsOperator`` writes it
#: when asked): what ``AutoTraderOperator`` uses when its own ``commission_bps``/``slippage_bps`` are not given.
SIMULATED_COSTS_VARIABLE = "portfolio.simulated_costs"
#: The simulated broker's costs when neither the operator nor the Variable gives them, basis points.
DEFAULT_SLIPPAGE_BPS = 5.0
DEFAULT_COMMISSION_BPS = 0.0
#: The Airflow Variable holding the live trading settings a tuning study applied (``min_confidence``, ``min_score``,
#: ``weights``, some risk limits, ``source``): ``AutoTraderOperator`` lays them over its own arguments.
TRADING_SETTINGS_VARIABLE = "portfolio.trading_settings"


def trader_account(account: object = None) -> str:
    """The ledger account of the auto trader's book: ``account`` when given; else ``alpaca:alpaca_default`` when that
    connection exists, else ``simulated:default`` (what the audit, the report and monitoring judge by default)."""
    from airflow_provider_portfolio.hooks.market_data import connection_exists

    if not blank(account):
        return str(account).strip()
    if connection_exists(DEFAULT_BROKER_CONNECTION):
        return f"alpaca:{DEFAULT_BROKER_CONNECTION}"
    return "simulated:default"


def read_kill_switch(log: Any = None) -> str:
    """The kill switch state from Variable ``portfolio.kill_switch`` (unset: ``active``; unreadable: ``halted``)."""
    from airflow.sdk import Variable

    from airflow_provider_portfolio.trading.risk import normalise_kill_switch

    try:
        raw = Variable.get(KILL_SWITCH_VARIABLE, default=None)
    except Exception as err:  # an unreadable kill switch stops trading
        if log is not None:
            log.error("Could not read Variable %s (%s): trading as 'halted'", KILL_SWITCH_VARIABLE, err)
        return "halted"
    state = normalise_kill_switch(raw)
    if log is not None and state != "active":
        log.warning("Kill switch %s is %r: %s", KILL_SWITCH_VARIABLE, raw,
                    "no orders at all" if state == "halted" else "only orders that reduce a position")
    return state


def simulated_costs(symbols: Sequence[str], slippage_bps: float | None, commission_bps: float | None,
                    log: Any = None) -> dict[str, float]:
    """The simulated broker's ``slippage_bps`` and ``commission_bps``: each as given; when not given (``None``), the
    universe's value in Variable ``portfolio.simulated_costs`` (the highest of its asset classes', see
    :func:`~airflow_provider_portfolio.trading.costs.costs_for_universe`), else the default (5 and 0).

    :raises InvalidInputError: for a malformed Variable, naming it, the key and the value (read only when needed).
    """
    if slippage_bps is not None and commission_bps is not None:
        return {"slippage_bps": slippage_bps, "commission_bps": commission_bps}
    from airflow_provider_portfolio.trading.costs import costs_for_universe, parse_simulated_costs
    from airflow_provider_portfolio.variables import get_variable

    table = parse_simulated_costs(get_variable(SIMULATED_COSTS_VARIABLE), setting=SIMULATED_COSTS_VARIABLE)
    found = costs_for_universe(symbols, table, commission_bps=DEFAULT_COMMISSION_BPS, slippage_bps=DEFAULT_SLIPPAGE_BPS)
    costs = {"slippage_bps": found["slippage_bps"] if slippage_bps is None else slippage_bps,
             "commission_bps": found["commission_bps"] if commission_bps is None else commission_bps}
    if table and log is not None:
        log.info("Simulated costs from Variable %s where not given: slippage %g bps, commission %g bps",
                 SIMULATED_COSTS_VARIABLE, costs["slippage_bps"], costs["commission_bps"])
    return costs


def with_live_settings(settings: Any, log: Any = None) -> Any:
    """``settings`` with Variable ``portfolio.trading_settings`` (what a tuning study applied) laid over them; unchanged
    when it is unset or ``{}``.

    :raises InvalidInputError: for a malformed Variable, naming it, the key and the value.
    """
    from airflow_provider_portfolio.desk.tuning import parse_trading_settings, settings_with
    from airflow_provider_portfolio.variables import get_variable

    live = parse_trading_settings(get_variable(TRADING_SETTINGS_VARIABLE), setting=TRADING_SETTINGS_VARIABLE)
    source = live.pop("source", None)
    if not live:
        return settings
    if log is not None:
        log.warning("Live trading settings from Variable %s (%s) over the operator's: %s", TRADING_SETTINGS_VARIABLE,
                    source or "no source", live)
    return settings_with(settings, live)


def resolve_broker(broker_conn_id: str | None, ledger: TradingLedger, *, allow_live: bool,
                   simulated: Mapping[str, Any] | None = None, log: Any = None) -> Broker:
    """The broker for ``broker_conn_id``: ``"simulated"``, an Alpaca connection id, or ``None`` for
    ``alpaca_default`` when that connection exists and the simulated broker otherwise.

    :raises InvalidInputError: for a connection that is not Alpaca's, a live account without ``allow_live``,
        or no broker connection in ``[portfolio] execution_mode = live``.
    """
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    from airflow_provider_portfolio.config import execution_mode
    from airflow_provider_portfolio.exceptions import InvalidInputError

    conn_id = broker_conn_id
    if conn_id is None:
        try:
            BaseHook.get_connection(DEFAULT_BROKER_CONNECTION)
            conn_id = DEFAULT_BROKER_CONNECTION
        except AirflowNotFoundException:
            conn_id = SIMULATED
    if conn_id == SIMULATED:
        if execution_mode() == "live":
            raise InvalidInputError("the simulated broker is refused in [portfolio] execution_mode = live: "
                                    "give broker_conn_id an Alpaca connection")
        from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker

        broker = SimulatedBroker(ledger, **dict(simulated or {}))
        if log is not None:
            log.info("No broker connection: trading on the simulated broker %s (%s)", broker.account, ledger.store.url)
        return broker
    from airflow_provider_portfolio.hooks.connections import resolve_broker_api
    from airflow_provider_portfolio.trading.brokers.alpaca import AlpacaBroker

    hook = resolve_broker_api(conn_id, allow_live=allow_live)  # the connection type's hook, a BrokerAPI
    if hook.is_live:
        if not allow_live:
            raise InvalidInputError(
                f"connection {conn_id!r} is a LIVE Alpaca account: live trading needs allow_live=True on the "
                "operator (paper accounts need nothing)")
        if log is not None:
            log.warning("!" * 72)
            log.warning("LIVE TRADING: orders of this task go to the live Alpaca account of %r (allow_live=True)",
                        conn_id)
            log.warning("!" * 72)
    elif log is not None:
        log.info("Trading on the Alpaca paper account of %r", conn_id)
    return AlpacaBroker(hook, ledger)


def cycle_settings(*, timeframe: str, weights: Mapping[str, float], risk_limits: Any,
                   max_trades_per_day: int | None, exchange: str | None, log: Any = None, **options: Any) -> Any:
    """The checked ``CycleSettings`` of an operator or agent: limits from a ``RiskLimits`` or a dict, the
    day's order budget, the kill switch (its reader: the cycle reads it again right before sending), the
    exchange defaulting to ``[portfolio] default_exchange``.

    :param options: further ``CycleSettings`` fields (``bar_aware``, ``min_score``, ``sizing``...).
    :raises InvalidInputError: for bad values.
    """
    from airflow_provider_portfolio.config import get_option
    from airflow_provider_portfolio.trading.cycle import CycleSettings, with_max_trades_per_day
    from airflow_provider_portfolio.trading.risk import RiskLimits

    limits = risk_limits if isinstance(risk_limits, RiskLimits) else RiskLimits.from_dict(risk_limits)
    return CycleSettings(timeframe=str(timeframe).strip(), weights=dict(weights),
                         limits=with_max_trades_per_day(limits, max_trades_per_day),
                         kill_switch=functools.partial(read_kill_switch, log),
                         exchange=exchange or get_option("default_exchange"), **options)


def parse_as_of(as_of: Any) -> datetime | None:
    """A cycle's ``as_of`` (templated) as an aware UTC instant; ``None`` when not given (``None``, ``""`` or the
    text ``"None"`` a template renders for nothing).

    :raises InvalidInputError: for a date alone, a time without a zone, text that is not ISO 8601
        (``"yesterday"``), or an instant more than 7 days after now (year 2999).
    """
    from datetime import date, datetime

    from airflow_provider_portfolio.exceptions import InvalidInputError
    from airflow_provider_portfolio.market.params import parse_instant

    if blank(as_of):
        return None
    if isinstance(as_of, datetime):
        return parse_instant(as_of, "as_of", naive_is_utc=False)
    text = str(as_of).strip()
    try:
        date.fromisoformat(text)
    except ValueError:
        return parse_instant(text, "as_of", naive_is_utc=False)
    raise InvalidInputError(f"as_of must be an instant with a time and a zone, got the date {as_of!r}: write e.g. "
                            f"'{text}T15:00:00-04:00'")


def cycle_instant(context: Context, broker: Broker, as_of: Any = None) -> datetime:
    """The instant a cycle decides at: ``as_of`` (ISO 8601 with a zone) when given; else, with the simulated
    broker, the run's ``data_interval_end`` (or ``run_after``), so a replayed or back-filled run decides as it
    would have; with a real broker the wall clock (it fills at today's prices whatever the run's date).

    :raises InvalidInputError: for an ``as_of`` that is not an ISO 8601 instant with a zone (a date alone,
        ``"yesterday"``), rendered ``"None"``, or lies far in the future (year 2999).
    """
    from datetime import datetime, timezone

    import pandas as pd

    instant = parse_as_of(as_of)
    if instant is not None:
        return instant
    if broker.kind != "simulated":
        return datetime.now(timezone.utc)
    reference = context.get("data_interval_end") or context["dag_run"].run_after
    return pd.Timestamp(reference).to_pydatetime().astimezone(timezone.utc)


class AutoTraderOperator(BaseOperator):
    """Run one trading cycle for ``symbols``: signals, decisions, risk checks, orders, a performance snapshot.

    What it does is :func:`airflow_provider_portfolio.trading.session.trade_universe`: bars closed by the cycle's
    instant are fetched from ``sources``; technical, forecast (the stored ``ensemble`` forecast, used only
    when its model is healthy) and sentiment signals are combined with ``weights``; each decision is
    claimed in the store (``bar_aware``: a bar is decided once per DAG whatever runs overlap), checked
    against ``risk_limits`` and the kill switch (Variable ``portfolio.kill_switch``), and each approved order
    is recorded, then sent at most once under a client order id derived from (DAG, run, symbol, bar,
    side). Signals, decisions, verdicts, orders and the equity snapshot all land in the store.

    The cycle's instant is ``as_of`` when given; else, with the simulated broker, the run's
    ``data_interval_end`` (or ``run_after``), so a replayed or back-filled run decides exactly as it would
    have; with Alpaca always the wall clock (a real broker fills at today's prices whatever the run's date).

    The task fails (after recording everything) when an order's outcome is unknown (a timeout, a 5xx...):
    its retry looks the order up before sending anything, so a retry never doubles an order. Broker
    refusals and risk rejections are recorded with their reason and do not fail the task.

    Works under dynamic task mapping: ``AutoTraderOperator.partial(...).expand(symbols=chunks)``. A cycle
    holds its account's lock from reading the account to sending its orders, so chunks (and other DAGs) on
    one account take turns whatever the DAG's settings, and each sees the orders of those before it (daily
    order counts, buying power, positions). A cycle that waits longer than ``lock_timeout_s`` fails with
    ``AccountLockedError`` before deciding anything; ``max_active_tis_per_dagrun=1`` avoids the wait.

    :param symbols: tickers and crypto pairs (templated): a list, a JSON list or a comma-separated string. Required
        unless ``top_opportunities`` is given.
    :param top_opportunities: trade the top N of the latest discovery ranking (``portfolio_discovery``, the store's
        ``opportunities``) made at or before the cycle's run instant (``as_of``, else ``data_interval_end`` or
        ``run_after``). With ``symbols`` the ranking is intersected with them (the best N ranked symbols among
        ``symbols``; ``symbols`` is the allowed universe) and, when there is no ranking or none of its symbols is
        among them, the cycle falls back to ``symbols`` with a warning in the log. Without ``symbols``, no ranking
        fails the task (``InvalidInputError``) before anything is decided. ``None`` (default): trade ``symbols``.
    :param timeframe: the bars decided on (templated), e.g. ``1Day``, ``30Min``.
    :param sources: market-data sources (templated): ``"synthetic"`` or market-data connection ids. Default:
        the default data connections that exist, else the synthetic market.
    :param broker_conn_id: an Alpaca connection id, ``"simulated"``, or ``None`` (templated): ``alpaca_default``
        when it exists, else the simulated broker.
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded
        SQLite store.
    :param weights: signal name (``technical``, ``forecast``, ``sentiment``) -> weight; default forecast first.
    :param risk_limits: a ``RiskLimits`` or a dict of its fields (missing keys keep their defaults).
    :param max_trades_per_day: the most orders per trading day, all symbols (overrides
        ``risk_limits.max_orders_per_day``).
    :param bar_aware: skip symbols already decided for the current bar (default True).
    :param sizing: ``fixed_fraction`` (default) or ``volatility``.
    :param fraction: target position as a fraction of equity at full score (default 0.05).
    :param min_score: the smallest |combined score| traded (default 0.1).
    :param max_stale_bars: how many bars a symbol's data may lag its calendar before it is not traded.
    :param forecast_model: the stored model whose forecasts feed the forecast signal (``None``: none).
    :param forecast_timeframe: the timeframe of those forecasts (default ``1Day``).
    :param as_of: the cycle's instant (templated ISO 8601 with a zone); see above for the default.
    :param allow_live: allow a live Alpaca account (default False: paper only).
    :param simulated_account: the simulated book's name (ledger account ``simulated:<name>``).
    :param initial_cash: cash of a new simulated book.
    :param slippage_bps: simulated fills' slippage, basis points. Not given (``None``): the universe's value in
        Variable ``portfolio.simulated_costs`` when it holds one (the highest of its asset classes'), else 5.
    :param commission_bps: simulated commission, basis points of notional. Not given: from
        ``portfolio.simulated_costs`` likewise, else 0.
    :param exchange: calendar of equities; default ``[portfolio] default_exchange``.
    :param lock_timeout_s: how long the cycle waits for its account's lock (another cycle trading the
        account), seconds (default 120).
    """

    template_fields: Sequence[str] = ("symbols", "timeframe", "sources", "broker_conn_id", "store_conn_id", "as_of")
    ui_color = "#fce5cd"

    def __init__(
        self,
        *,
        symbols: list[str] | str | None = None,
        top_opportunities: int | None = None,
        timeframe: str = "1Day",
        sources: list[str] | str | None = None,
        broker_conn_id: str | None = None,
        store_conn_id: str | None = None,
        weights: Mapping[str, float] | None = None,
        risk_limits: Any = None,
        max_trades_per_day: int | None = None,
        bar_aware: bool = True,
        sizing: str = "fixed_fraction",
        fraction: float = 0.05,
        min_score: float = 0.1,
        max_stale_bars: int = 2,
        forecast_model: str | None = "ensemble",
        forecast_timeframe: str = "1Day",
        as_of: str | None = None,
        allow_live: bool = False,
        simulated_account: str = "default",
        initial_cash: float = 100_000.0,
        slippage_bps: float | None = None,
        commission_bps: float | None = None,
        exchange: str | None = None,
        lock_timeout_s: float = 120.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.symbols = symbols
        self.top_opportunities = top_opportunities
        self.timeframe = timeframe
        self.sources = sources
        self.broker_conn_id = broker_conn_id
        self.store_conn_id = store_conn_id
        self.weights = weights
        self.risk_limits = risk_limits
        self.max_trades_per_day = max_trades_per_day
        self.bar_aware = bar_aware
        self.sizing = sizing
        self.fraction = fraction
        self.min_score = min_score
        self.max_stale_bars = max_stale_bars
        self.forecast_model = forecast_model
        self.forecast_timeframe = forecast_timeframe
        self.as_of = as_of
        self.allow_live = allow_live
        self.simulated_account = simulated_account
        self.initial_cash = initial_cash
        self.slippage_bps = slippage_bps
        self.commission_bps = commission_bps
        self.exchange = exchange
        self.lock_timeout_s = lock_timeout_s

    @cached_property
    def store_hook(self) -> PortfolioStoreHook:
        return PortfolioStoreHook(store_conn_id=self.store_conn_id or None)

    def settings(self) -> Any:
        """The cycle settings from the operator's arguments, with Variable ``portfolio.trading_settings`` (a tuning
        study's applied setting) laid over them when set (checked: bad ones raise ``InvalidInputError``)."""
        from airflow_provider_portfolio.trading.decision import AUTO_TRADER_WEIGHTS

        return with_live_settings(cycle_settings(
            timeframe=self.timeframe, weights=self.weights or AUTO_TRADER_WEIGHTS, risk_limits=self.risk_limits,
            max_trades_per_day=self.max_trades_per_day, exchange=self.exchange, log=self.log,
            bar_aware=bool(self.bar_aware), min_score=self.min_score, sizing=self.sizing, fraction=self.fraction,
            max_stale_bars=self.max_stale_bars, lock_timeout_s=self.lock_timeout_s,
        ), self.log)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.exceptions import PortfolioError
        from airflow_provider_portfolio.hooks.market_data import data_sources, validate_source_names
        from airflow_provider_portfolio.lineage import source_vendors
        from airflow_provider_portfolio.market.params import validate_symbols
        from airflow_provider_portfolio.metrics import emit_cycle
        from airflow_provider_portfolio.store.ledger import TradingLedger
        from airflow_provider_portfolio.trading.session import trade_universe

        # Bad input fails here, before the store is opened or anything fetched.
        given = None if self.top_opportunities is not None and blank(self.symbols) else validate_symbols(
            maybe_json_list(self.symbols))
        settings = self.settings()
        as_of = parse_as_of(self.as_of)
        names = validate_source_names(maybe_json_list(self.sources)) if self.sources else None
        symbols = given if self.top_opportunities is None else self.ranked_universe(given, context, as_of)
        costs = simulated_costs(symbols, self.slippage_bps, self.commission_bps, self.log)

        store = self.store_hook.get_conn()
        broker = resolve_broker(
            None if blank(self.broker_conn_id) else str(self.broker_conn_id).strip(), TradingLedger(store),
            allow_live=self.allow_live, log=self.log,
            simulated={"name": self.simulated_account, "initial_cash": self.initial_cash, **costs})
        sources = data_sources(names, exchange=settings.exchange)
        self._lineage_vendors = source_vendors(sources)
        now = cycle_instant(context, broker, as_of)
        dag_run = context["dag_run"]
        self.log.info("Trading cycle at %s: %d symbol(s), %s bars from %s, broker %s, kill switch %s",
                      now.isoformat(), len(symbols), settings.timeframe, [s.name for s in sources], broker.account,
                      settings.kill_switch_now())
        report = trade_universe(symbols, store=store, sources=sources, broker=broker, now=now,
                                dag_id=dag_run.dag_id, run_id=dag_run.run_id, settings=settings,
                                forecast_model=self.forecast_model, forecast_timeframe=self.forecast_timeframe)
        self.log.info("Decided %d, skipped %d (decided by another run), held %d, risk-rejected %d, submitted %d, "
                      "broker-rejected %d; equity %s", report.decided, len(report.skipped), report.holds,
                      len(report.rejected), len(report.submitted), len(report.broker_rejected), report.equity)
        for symbol, why in report.rejected.items():
            self.log.info("risk rejected %s: %s", symbol, why)
        result = {**report.to_dict(), "account": broker.account, "as_of": now.isoformat(), "symbols": len(symbols)}
        emit_cycle(result)
        if report.unknown:
            raise PortfolioError(
                f"{len(report.unknown)} order(s) in an unknown state ({'; '.join(f'{s}: {w}' for s, w in report.unknown.items())}). "
                "Everything else is recorded; the retry looks these orders up by client_order_id before sending anything")
        return result

    def ranked_universe(self, symbols: list[str] | None, context: Context, as_of: datetime | None) -> list[str]:
        """The symbols to trade with ``top_opportunities``: the best N of the latest discovery ranking made at or
        before the run's instant, among ``symbols`` when given (see the class docstring).

        :raises InvalidInputError: for a ``top_opportunities`` that is not a whole number >= 1, or no ranking to take
            the universe from and no ``symbols`` to fall back to.
        """
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.operators.gating import run_instant

        top = self.top_opportunities
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise InvalidInputError(f"top_opportunities must be a whole number >= 1 or None, got {top!r}")
        until = as_of if as_of is not None else run_instant(context)
        ranking = self.store_hook.get_conn().latest_opportunities(until=until)
        ranked = [str(s) for s in ranking["symbol"]]
        wanted = None if symbols is None else set(symbols)
        allowed = [s for s in ranked if wanted is None or s in wanted]
        if allowed:
            chosen = allowed[:top]
            self.log.info("Trading the top %d of the discovery ranking %s (made %s)%s: %s", len(chosen),
                          ranking["run_id"].iloc[0], ranking["ts"].iloc[0].isoformat(),
                          "" if symbols is None else f" among {len(symbols)} allowed symbol(s)", ", ".join(chosen))
            return chosen
        why = (f"no discovery ranking made at or before {until.isoformat()} in the store" if not ranked else
               f"none of the {len(ranked)} symbol(s) of the ranking {ranking['run_id'].iloc[0]} is among symbols")
        if symbols is None:
            raise InvalidInputError(f"top_opportunities={top}: {why}; run portfolio_discovery first, or give symbols "
                                    "to fall back to")
        self.log.warning("top_opportunities=%d: %s; trading symbols instead (%d)", top, why, len(symbols))
        return symbols

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """OpenLineage: the vendors' bars and the stored forecasts -> decisions, orders, fills and equity."""
        from airflow_provider_portfolio.lineage import trader_lineage

        return trader_lineage(self.store_hook.url, getattr(self, "_lineage_vendors", ()), str(self.timeframe),
                              forecasts=not blank(self.forecast_model))
