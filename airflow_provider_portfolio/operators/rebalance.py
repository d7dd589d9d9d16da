"""RebalanceOperator: bring a book back to its target weights through the trader's exactly-once order path."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.store import StoreHookMixin
from airflow_provider_portfolio.operators.templated import blank, maybe_json_list
from airflow_provider_portfolio.pools import TRADING_POOL

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The simulated book a rebalance trades when no broker connection is given: its own, apart from the auto trader's.
DEFAULT_SIMULATED_ACCOUNT = "rebalance"


class RebalanceOperator(StoreHookMixin, BaseOperator):
    """Rebalance a book to target weights: what it does is
    :func:`airflow_provider_portfolio.trading.rebalance.rebalance`.

    Targets by ``method``: ``equal``, ``inverse_volatility`` (realised volatility of the stored daily closes),
    ``discovery`` (the top ``top_n`` of the latest ranking of ``portfolio_discovery``) or ``given`` (``weights``, with
    an optional ``CASH`` entry, summing to 1). When a symbol's weight drifts more than ``drift_threshold`` (absolute,
    e.g. 0.05 = 5% of equity) from its target, every symbol of the universe is brought back to its target within one
    share; otherwise nothing is sent. Orders are the trader's: each decision recorded in the store, checked against
    ``risk_limits`` and the kill switch (Variable ``portfolio.kill_switch``, read again right before sending), recorded
    and sent at most once under a client order id derived from (DAG, run, symbol, bar, side). A retry of the run sends
    nothing twice; the task fails (after recording everything) when an order's outcome is unknown, and its retry looks
    the order up before sending anything. Risk rejections and broker refusals are recorded and do not fail the task.

    The instant is ``as_of`` when given; else, with the simulated broker, the run's ``data_interval_end`` (or
    ``run_after``); with Alpaca the wall clock. Prices are the last closed daily bars in the store (run the daily ETL
    first). Equities are rejected by the ``market_open`` limit outside their session; crypto pairs trade around the
    clock.

    :param symbols: the universe (templated): a list, JSON list or comma-separated string. Default: Variable
        ``portfolio.default_tickers`` for ``equal`` and ``inverse_volatility``; for ``discovery`` the whole ranking;
        for ``given`` the weights' symbols.
    :param method: ``equal``, ``inverse_volatility``, ``discovery`` or ``given`` (templated).
    :param weights: ``given``: symbol -> weight (a mapping or its JSON text, templated).
    :param top_n: ``discovery``: how many of the best ranked (templated; default 10).
    :param weighting: ``discovery``: ``equal`` (default) or ``score``.
    :param lookback: ``inverse_volatility``: daily log returns looked at (default 60).
    :param cash: the part of equity the computed methods leave in cash (default 0.02); not with ``given``.
    :param drift_threshold: the largest per-symbol drift left alone, weight points (templated; default 0.05).
    :param risk_limits: a ``RiskLimits`` or a dict of its fields (missing keys keep the trader's defaults).
    :param broker_conn_id: an Alpaca connection id, ``"simulated"``, or ``None`` (templated): ``alpaca_default``
        when it exists, else the simulated broker.
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded store.
    :param as_of: the instant (templated ISO 8601 with a zone); see above for the default.
    :param allow_live: allow a live Alpaca account (default False: paper only).
    :param simulated_account: the simulated book's name (ledger account ``simulated:<name>``; default
        ``rebalance``, a book of its own).
    :param initial_cash: cash of a new simulated book.
    :param slippage_bps: simulated fills' slippage; not given: Variable ``portfolio.simulated_costs``, else 5.
    :param commission_bps: simulated commission; not given: Variable ``portfolio.simulated_costs``, else 0.
    :param exchange: calendar of equities; default ``[portfolio] default_exchange``.
    :param max_stale_bars: how many daily bars a symbol's data may lag before it is not traded (default 2).
    :param lock_timeout_s: how long to wait for the account's lock (a trading cycle on it), seconds.
    :param pool: default ``trading_pool`` (one cycle per account at a time).
    """

    template_fields: Sequence[str] = ("symbols", "method", "weights", "top_n", "drift_threshold", "broker_conn_id",
                                      "store_conn_id", "as_of")
    ui_color = "#d9ead3"

    def __init__(
        self,
        *,
        symbols: list[str] | str | None = None,
        method: str = "inverse_volatility",
        weights: Mapping[str, float] | str | None = None,
        top_n: int | str | None = None,
        weighting: str = "equal",
        lookback: int = 60,
        cash: float | None = None,
        drift_threshold: float | str = 0.05,
        risk_limits: Any = None,
        broker_conn_id: str | None = None,
        store_conn_id: str | None = None,
        as_of: str | None = None,
        allow_live: bool = False,
        simulated_account: str = DEFAULT_SIMULATED_ACCOUNT,
        initial_cash: float = 100_000.0,
        slippage_bps: float | None = None,
        commission_bps: float | None = None,
        exchange: str | None = None,
        max_stale_bars: int = 2,
        lock_timeout_s: float = 120.0,
        pool: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(pool=pool or TRADING_POOL, **kwargs)
        self.symbols = symbols
        self.method = method
        self.weights = weights
        self.top_n = top_n
        self.weighting = weighting
        self.lookback = lookback
        self.cash = cash
        self.drift_threshold = drift_threshold
        self.risk_limits = risk_limits
        self.broker_conn_id = broker_conn_id
        self.store_conn_id = store_conn_id
        self.as_of = as_of
        self.allow_live = allow_live
        self.simulated_account = simulated_account
        self.initial_cash = initial_cash
        self.slippage_bps = slippage_bps
        self.commission_bps = commission_bps
        self.exchange = exchange
        self.max_stale_bars = max_stale_bars
        self.lock_timeout_s = lock_timeout_s

    def arguments(self) -> dict[str, Any]:
        """The rendered arguments checked, before the store is opened: method, universe, weights, top N, threshold,
        limits.

        :raises InvalidInputError: naming the argument and its value.
        """
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.market.params import validate_symbols
        from airflow_provider_portfolio.operators.monitoring import desk_symbols
        from airflow_provider_portfolio.trading.rebalance import check_given_weights, check_method
        from airflow_provider_portfolio.trading.risk import RiskLimits

        method = check_method(str(self.method).strip())
        if not blank(self.symbols):
            symbols: list[str] | None = validate_symbols(maybe_json_list(self.symbols))
        else:
            symbols = desk_symbols(None) if method in ("equal", "inverse_volatility") else None
        weights = self.weights
        if isinstance(weights, str) and not blank(weights):
            try:
                weights = json.loads(weights)
            except json.JSONDecodeError:
                raise InvalidInputError(f"weights must be a mapping or its JSON text, got {weights!r}") from None
        weights = None if blank(weights) else weights
        if method == "given":
            check_given_weights(weights)
            if self.cash is not None:
                raise InvalidInputError("the cash of 'given' weights is their CASH entry: do not pass cash as well")
        elif weights is not None:
            raise InvalidInputError(f"weights are for method 'given', not {method!r}")
        top_n = None if blank(self.top_n) else _whole(self.top_n, "top_n")
        try:
            threshold = float(self.drift_threshold)
        except (TypeError, ValueError):
            threshold = math.nan
        if not 0 <= threshold < 1:
            raise InvalidInputError(f"drift_threshold must be a number in [0, 1), got {self.drift_threshold!r}")
        limits = self.risk_limits if isinstance(self.risk_limits, RiskLimits) else RiskLimits.from_dict(self.risk_limits)
        return {"method": method, "symbols": symbols, "weights": weights, "top_n": top_n, "drift_threshold": threshold,
                "limits": limits}

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.config import get_option
        from airflow_provider_portfolio.exceptions import PortfolioError
        from airflow_provider_portfolio.operators.trading import (
            cycle_instant,
            parse_as_of,
            read_kill_switch,
            resolve_broker,
            simulated_costs,
        )
        from airflow_provider_portfolio.store.ledger import TradingLedger
        from airflow_provider_portfolio.trading.rebalance import rebalance

        # Bad input fails here, before the store is opened or anything sent.
        args = self.arguments()
        as_of = parse_as_of(self.as_of)
        exchange = get_option("default_exchange") if blank(self.exchange) else str(self.exchange).strip()
        universe = args["symbols"] or [s for s in args["weights"] or {} if str(s).strip().upper() != "CASH"]
        costs = simulated_costs(universe, self.slippage_bps, self.commission_bps, self.log)

        store = self.store_hook.get_conn()
        broker = resolve_broker(
            None if blank(self.broker_conn_id) else str(self.broker_conn_id).strip(), TradingLedger(store),
            allow_live=self.allow_live, log=self.log,
            simulated={"name": self.simulated_account, "initial_cash": self.initial_cash, **costs})
        now = cycle_instant(context, broker, as_of)
        dag_run = context["dag_run"]
        self.log.info("Rebalance (%s) at %s of %s, drift threshold %.2f%%, kill switch %s", args["method"],
                      now.isoformat(), broker.account, 100 * args["drift_threshold"], read_kill_switch(self.log))
        report = rebalance(
            store, broker, now=now, dag_id=dag_run.dag_id, run_id=dag_run.run_id, method=args["method"],
            symbols=args["symbols"], weights=args["weights"], top_n=args["top_n"], weighting=self.weighting,
            lookback=self.lookback, cash=self.cash, drift_threshold=args["drift_threshold"], limits=args["limits"],
            kill_switch=functools.partial(read_kill_switch, self.log), exchange=exchange,
            max_stale_bars=self.max_stale_bars, lock_timeout_s=self.lock_timeout_s)
        self.log.info("Largest drift %.2f%% (threshold %.2f%%): %d order(s) proposed, %d risk-rejected, %d at the "
                      "broker, %d broker-rejected", 100 * report.max_drift, 100 * report.drift_threshold,
                      len(report.orders), len(report.rejected), len(report.submitted), len(report.broker_rejected))
        for symbol, why in {**report.rejected, **report.errors}.items():
            self.log.info("%s: %s", symbol, why)
        result = report.to_dict()
        if report.unknown:
            raise PortfolioError(
                f"{len(report.unknown)} order(s) in an unknown state "
                f"({'; '.join(f'{s}: {w}' for s, w in report.unknown.items())}). Everything else is recorded; the "
                "retry looks these orders up by client_order_id before sending anything")
        return result


def _whole(value: Any, name: str) -> int:
    """A templated whole number (``"10"`` renders as text)."""
    from airflow_provider_portfolio.exceptions import InvalidInputError

    try:
        number = int(str(value).strip())
    except ValueError:
        raise InvalidInputError(f"{name} must be a whole number >= 1, got {value!r}") from None
    if number < 1:
        raise InvalidInputError(f"{name} must be a whole number >= 1, got {value!r}")
    return number
