"""MonitoringOperator (the hourly health report) and DeskGateOperator (trade only on a desk that is sound)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.store import StoreHookMixin
from airflow_provider_portfolio.operators.gating import SkipMixin, run_instant, skip_downstream
from airflow_provider_portfolio.operators.templated import blank, maybe_json_list

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Connection types whose cheapest authenticated call spends a scarce quota (Alpha Vantage: 25 calls a day).
SCARCE_QUOTA_TYPES = frozenset({"alphavantage"})


def desk_symbols(symbols: object) -> list[str]:
    """The checked universe: ``symbols`` (a list, JSON list or comma-separated) or, when not given, Variable
    ``portfolio.default_tickers``."""
    from airflow_provider_portfolio.market.params import validate_symbols
    from airflow_provider_portfolio.variables import get_variable

    value = get_variable("portfolio.default_tickers") if blank(symbols) else symbols
    return validate_symbols(maybe_json_list(value))


def checked_exchange(exchange: object) -> str:
    """The calendar name ``exchange`` (default ``[portfolio] default_exchange``), checked before the store is opened.

    :raises InvalidInputError: naming an unknown calendar.
    """
    from airflow_provider_portfolio.config import get_option
    from airflow_provider_portfolio.market.calendar import MarketCalendar

    name = get_option("default_exchange") if blank(exchange) else str(exchange).strip()
    MarketCalendar(name)
    return name


class MonitoringOperator(StoreHookMixin, BaseOperator):
    """Grade the desk GREEN / YELLOW / RED and append the report to the store's ``health_reports``.

    What it measures is :func:`airflow_provider_portfolio.desk.monitoring.monitor_desk`: data freshness per symbol
    against the calendar, store integrity and schema, each vendor's cheapest authenticated call (Alpha Vantage's,
    which spends one of 25 daily calls, only with ``probe_scarce``), the share of healthy forecast models per
    symbol, and the book of ``account`` (risk rejections, drawdown, win rate, profit factor, Sharpe, Sortino).
    Thresholds are the documented defaults overridden by ``thresholds`` or Variable ``portfolio.health_thresholds``.

    The report is the task's XCom, and its level and per-symbol freshness go to Airflow's metrics. A ``RED`` report
    notifies (:func:`~airflow_provider_portfolio.notifications.notify_health`) and, with ``reduce_only_on_red``,
    sets Variable ``portfolio.kill_switch`` from ``active`` to ``reduce_only`` (never loosens it). The task itself
    succeeds on a RED desk: the report is the finding; a check that could not be made is RED, never green.

    :param symbols: the universe (templated); default Variable ``portfolio.default_tickers``.
    :param timeframe: the bars and forecasts judged (templated), default ``1Day``.
    :param exchange: calendar of equities (templated); default ``[portfolio] default_exchange``.
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded store.
    :param account: the ledger account whose book is judged (templated), e.g. ``simulated:default`` or
        ``alpaca:alpaca_default``; default the auto trader's: ``alpaca:alpaca_default`` when that connection
        exists, else ``simulated:default``. ``""``: no trading checks.
    :param vendor_conn_ids: connections to probe (templated); default the provider's default data and broker
        connections that exist. ``[]``: no vendor checks.
    :param probe_scarce: also probe vendors whose cheapest call spends a scarce quota (Alpha Vantage).
    :param thresholds: overrides of the thresholds (a dict or its JSON); default Variable
        ``portfolio.health_thresholds``.
    :param reduce_only_on_red: on RED, set the kill switch to ``reduce_only`` when it is ``active``.
    :param notify_on_red: on RED, notify through the provider's channels (default True).
    """

    template_fields: Sequence[str] = ("symbols", "timeframe", "exchange", "store_conn_id", "account",
                                      "vendor_conn_ids")
    ui_color = "#e2f0d9"

    def __init__(
        self,
        *,
        symbols: list[str] | str | None = None,
        timeframe: str = "1Day",
        exchange: str | None = None,
        store_conn_id: str | None = None,
        account: str | None = None,
        vendor_conn_ids: list[str] | str | None = None,
        probe_scarce: bool = False,
        thresholds: dict[str, Any] | str | None = None,
        reduce_only_on_red: bool = False,
        notify_on_red: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.symbols = symbols
        self.timeframe = timeframe
        self.exchange = exchange
        self.store_conn_id = store_conn_id
        self.account = account
        self.vendor_conn_ids = vendor_conn_ids
        self.probe_scarce = probe_scarce
        self.thresholds = thresholds
        self.reduce_only_on_red = reduce_only_on_red
        self.notify_on_red = notify_on_red

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.desk.health import Level
        from airflow_provider_portfolio.desk.monitoring import HealthThresholds, monitor_desk
        from airflow_provider_portfolio.market.bars import parse_timeframe
        from airflow_provider_portfolio.metrics import emit_health
        from airflow_provider_portfolio.variables import get_variable

        # Bad input fails here, naming the setting, before the store is opened or a vendor called.
        symbols = desk_symbols(self.symbols)
        source = "thresholds" if self.thresholds is not None else "portfolio.health_thresholds"
        raw = self.thresholds if self.thresholds is not None else get_variable("portfolio.health_thresholds")
        thresholds = HealthThresholds.from_mapping(raw, setting=source)
        exchange = checked_exchange(self.exchange)
        timeframe = parse_timeframe(self.timeframe).name
        account = self._account()
        probes = self._probes()

        dag_run = context["dag_run"]
        store = self.store_hook.get_conn()
        try:
            report = monitor_desk(store, symbols, now=run_instant(context), timeframe=timeframe,
                                  exchange=exchange, account=account, thresholds=thresholds, probes=probes,
                                  dag_id=dag_run.dag_id, run_id=dag_run.run_id)
        finally:
            store.dispose()
        result = report.to_dict()
        self.log.info("%s", report.summary())
        emit_health(result, freshness={c.subject: c.value for c in report.checks
                                       if c.name == "freshness" and c.subject and c.value is not None})
        if report.level is Level.RED:
            self._on_red(report, result, context)
        return result

    def _account(self) -> str | None:
        """The account whose book is judged (``None``: no trading checks)."""
        from airflow_provider_portfolio.operators.trading import trader_account

        if self.account is None:
            return trader_account()
        return None if blank(self.account) else str(self.account).strip()

    def _probes(self) -> dict[str, Any]:
        """Connection id -> probe: the hook's ``test_connection()``; ``None`` (skipped) for a scarce quota."""
        from airflow.sdk import BaseHook

        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.hooks.market_data import DEFAULT_DATA_CONNECTIONS, connection_exists
        from airflow_provider_portfolio.operators.trading import DEFAULT_BROKER_CONNECTION

        ids = maybe_json_list(self.vendor_conn_ids)
        if ids is None:
            ids = [c for c in (DEFAULT_BROKER_CONNECTION, *DEFAULT_DATA_CONNECTIONS) if connection_exists(c)]
        elif isinstance(ids, str):
            ids = [part.strip() for part in ids.split(",") if part.strip()]
        if not isinstance(ids, list | tuple) or not all(isinstance(i, str) and i.strip() for i in ids):
            raise InvalidInputError(f"vendor_conn_ids must be a list of connection ids, got {self.vendor_conn_ids!r}")

        def probe(conn_id: str) -> Any:
            def call() -> tuple[bool, str] | None:
                conn = BaseHook.get_connection(conn_id)
                if conn.conn_type in SCARCE_QUOTA_TYPES and not self.probe_scarce:
                    return None
                return conn.get_hook().test_connection()
            return call

        return {conn_id: probe(conn_id) for conn_id in ids}

    def _on_red(self, report: Any, result: dict[str, Any], context: Context) -> None:
        """Notify, and with ``reduce_only_on_red`` tighten the kill switch."""
        from airflow.sdk import Variable

        from airflow_provider_portfolio.desk.monitoring import kill_switch_after
        from airflow_provider_portfolio.operators.trading import KILL_SWITCH_VARIABLE

        dag_run = context["dag_run"]
        for check in report.failed:
            self.log.error("RED %s: %s", check.label, check.message)
        if self.reduce_only_on_red:
            from airflow_provider_portfolio.trading.risk import normalise_kill_switch

            current = Variable.get(KILL_SWITCH_VARIABLE, default="active")
            state = kill_switch_after(report, current, reduce_on_red=True)
            # Written only to tighten: a value that already reads as reduce_only or halted (however spelled, a
            # typo included) stays the user's.
            if state != normalise_kill_switch(current):
                Variable.set(KILL_SWITCH_VARIABLE, state)
                self.log.warning("Health RED: Variable %s set from %r to %r", KILL_SWITCH_VARIABLE, current, state)
                result["kill_switch"] = state
        if self.notify_on_red:
            from airflow_provider_portfolio.notifications import notify_health

            result["notified"] = notify_health(result, dag_id=dag_run.dag_id, run_id=dag_run.run_id,
                                               task_id=self.task_id)


class DeskGateOperator(StoreHookMixin, BaseOperator, SkipMixin):
    """Let the trader run only on a sound desk: skip every task downstream when today's environment check failed,
    the latest health report is RED, or the universe's daily bars are stale.

    What it judges is :func:`airflow_provider_portfolio.desk.gate.trading_gate`, from the store at the run's instant
    (``data_interval_end`` or ``run_after``). A report or bars that do not exist at all close the gate when they are
    in ``require`` (default: all three; never trade in doubt) and only log otherwise. A store that cannot be read
    closes the gate. The verdict (a ``gate`` report: every check, and ``failed``) is the task's XCom either way;
    the reason of a skip is in the log.

    :param symbols: the universe about to be traded (templated); default Variable ``portfolio.default_tickers``.
    :param exchange: calendar of equities, whose day "today" is (templated); default ``[portfolio] default_exchange``.
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded store.
    :param require: which of ``environment``, ``health``, ``bars`` must exist (templated list; a JSON list or
        comma-separated text); ``[]``: none. Not given (``None``, or rendered empty): all three.
    :param max_health_age_minutes: how old the latest health report may be (default 120).
    """

    template_fields: Sequence[str] = ("symbols", "exchange", "store_conn_id", "require")
    ui_color = "#fff2cc"
    inherits_from_skipmixin = True

    def __init__(
        self,
        *,
        symbols: list[str] | str | None = None,
        exchange: str | None = None,
        store_conn_id: str | None = None,
        require: Sequence[str] | str = ("environment", "health", "bars"),
        max_health_age_minutes: float = 120,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.symbols = symbols
        self.exchange = exchange
        self.store_conn_id = store_conn_id
        self.require = require
        self.max_health_age_minutes = max_health_age_minutes

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.desk.gate import GATE, REQUIREMENTS, check_require, trading_gate
        from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
        from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError

        symbols = desk_symbols(self.symbols)
        # Not given (None, or a template that rendered empty): the default, never trade in doubt.
        require = list(REQUIREMENTS) if blank(self.require) else maybe_json_list(self.require)
        if isinstance(require, str):
            require = [part.strip() for part in require.split(",") if part.strip()]
        require = check_require(require)
        minutes = self.max_health_age_minutes
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not 0 < minutes < 7 * 24 * 60:
            raise InvalidInputError(f"max_health_age_minutes must be a number of minutes > 0 (under a week), "
                                    f"got {minutes!r}")
        exchange = checked_exchange(self.exchange)
        now = run_instant(context)
        try:
            store = self.store_hook.get_conn()
            try:
                report = trading_gate(store, symbols, now=now, exchange=exchange, require=require,
                                      max_health_age=timedelta(minutes=minutes))
            finally:
                store.dispose()
        except StoreError as err:  # a store that cannot be read is doubt: the gate stays closed
            report = HealthReport(GATE, now, (Check("store", Level.RED, None, None, f"cannot read the store: {err}"),))
        result = report.to_dict()
        if report.ok:
            self.log.info("Desk gate open: %s", report.summary())
            return result
        for check in report.failed:
            self.log.error("RED %s: %s", check.label, check.message)
        skip_downstream(self, context, result, f"Desk gate closed ({', '.join(result['failed'])})")
        return result
