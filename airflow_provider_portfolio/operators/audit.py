"""RiskAuditOperator: the book against its limits, once a day after the close."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.store import StoreHookMixin
from airflow_provider_portfolio.operators.templated import blank
from airflow_provider_portfolio.operators.trading import trader_account

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_portfolio.store.repository import PortfolioStore
    from airflow_provider_portfolio.trading.brokers import AccountSnapshot
    from airflow_provider_portfolio.trading.risk import RiskLimits


def trader_limits(risk_limits: object, *, live_settings: bool = True, log: Any = None) -> RiskLimits:
    """The trader's risk limits: ``risk_limits`` as ``AutoTraderOperator`` takes it (a ``RiskLimits``, a dict of its
    fields, or that dict as JSON text; ``None``: the defaults), with the limits of Variable
    ``portfolio.trading_settings`` (what a tuning study applied) laid over them, as the trader lays them.

    :raises InvalidInputError: for JSON that is not an object, an unknown key or a bad value (the Variable's named).
    """
    from dataclasses import replace

    from airflow_provider_portfolio.desk.tuning import LIMIT_KEYS, parse_trading_settings
    from airflow_provider_portfolio.market.params import json_object
    from airflow_provider_portfolio.operators.trading import TRADING_SETTINGS_VARIABLE
    from airflow_provider_portfolio.trading.risk import RiskLimits
    from airflow_provider_portfolio.variables import get_variable

    if isinstance(risk_limits, RiskLimits):
        limits = risk_limits
    else:
        given = risk_limits if isinstance(risk_limits, Mapping) else json_object(
            None if blank(risk_limits) else risk_limits, "risk_limits", example='{"max_position_fraction": 0.1}',
            what="RiskLimits fields")
        limits = RiskLimits.from_dict(given)
    if not live_settings:
        return limits
    live = parse_trading_settings(get_variable(TRADING_SETTINGS_VARIABLE), setting=TRADING_SETTINGS_VARIABLE)
    over = {k: v for k, v in live.items() if k in LIMIT_KEYS}
    if over and log is not None:
        log.info("Risk limits from Variable %s (%s) over the operator's, as the trader takes them: %s",
                 TRADING_SETTINGS_VARIABLE, live.get("source") or "no source", over)
    return replace(limits, **over) if over else limits


class RiskAuditOperator(StoreHookMixin, BaseOperator):
    """Audit the book against its limits and append the report (kind ``risk_audit``) to the store's
    ``health_reports``.

    What it measures is :func:`airflow_provider_portfolio.desk.audit.audit_risk`: each position's share of equity
    against the trader's ``max_position_fraction``, each asset class's share against ``asset_class_limits``, gross
    and net exposure and leverage, open positions against ``max_open_positions``, the drawdown from the equity
    curve's peak, today's loss from the previous session's close against ``daily_loss_limit``, and the orders risk
    rejected, by rule. Positions are valued at the close of their last stored bar closed by the run's instant
    (``data_interval_end``, or ``run_after``).

    The limits are the trader's: ``risk_limits`` as ``AutoTraderOperator`` takes it (give both the same), with
    Variable ``portfolio.trading_settings``'s limits over them. A simulated account's book is the ledger's; an
    ``alpaca:<conn_id>`` account's positions are read from Alpaca (two GET requests; nothing is sent).

    A ``RED`` report (a limit breached, or a check that could not be made) notifies through the provider's channels
    (:func:`~airflow_provider_portfolio.notifications.notify_health`); otherwise the summary is logged. The task
    succeeds either way (the report is the finding); bad input and a store that cannot be read fail it. Returns a
    small summary (level, failed and warning checks, equity, exposure), never the whole report.

    :param account: the ledger account audited (templated), e.g. ``simulated:default`` or ``alpaca:alpaca_default``;
        default the auto trader's: ``alpaca:alpaca_default`` when that connection exists, else ``simulated:default``.
        An account the ledger does not know is a YELLOW "no book yet" (the trader has not run yet), except a named
        one while the ledger knows others: a typo, the task fails listing them.
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded store.
    :param risk_limits: the trader's limits (templated): a ``RiskLimits``, a dict of its fields or its JSON text;
        default ``RiskLimits()`` (the trader's defaults).
    :param use_trading_settings: lay Variable ``portfolio.trading_settings``'s limits over ``risk_limits``, as the
        trader does (default True).
    :param asset_class_limits: class (``equity``, ``crypto``) -> most gross value as a fraction of equity (templated;
        a dict or JSON); default equity 1.0, crypto 0.25.
    :param thresholds: the audit's own limits (templated; a dict or JSON), see
        :class:`~airflow_provider_portfolio.desk.audit.AuditThresholds`.
    :param timeframe: the stored bars positions are valued at (templated), default ``1Day``.
    :param exchange: calendar of equities (templated); default ``[portfolio] default_exchange``.
    :param window_hours: how far back rejected orders are counted; default since the last closed session.
    :param notify_on_red: on RED, notify through the provider's channels (default True).
    """

    template_fields: Sequence[str] = ("account", "store_conn_id", "risk_limits", "asset_class_limits", "thresholds",
                                      "timeframe", "exchange")
    ui_color = "#f4cccc"

    def __init__(
        self,
        *,
        account: str | None = None,
        store_conn_id: str | None = None,
        risk_limits: Any = None,
        use_trading_settings: bool = True,
        asset_class_limits: dict[str, float] | str | None = None,
        thresholds: dict[str, Any] | str | None = None,
        timeframe: str = "1Day",
        exchange: str | None = None,
        window_hours: float | None = None,
        notify_on_red: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.account = account
        self.store_conn_id = store_conn_id
        self.risk_limits = risk_limits
        self.use_trading_settings = use_trading_settings
        self.asset_class_limits = asset_class_limits
        self.thresholds = thresholds
        self.timeframe = timeframe
        self.exchange = exchange
        self.window_hours = window_hours
        self.notify_on_red = notify_on_red

    def execute(self, context: Context) -> dict[str, Any]:
        from datetime import timedelta

        from airflow_provider_portfolio.desk.audit import AuditThresholds, asset_class_limits_from, audit_risk
        from airflow_provider_portfolio.desk.health import Level
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.market.bars import parse_timeframe
        from airflow_provider_portfolio.metrics import emit_health
        from airflow_provider_portfolio.operators.gating import run_instant
        from airflow_provider_portfolio.operators.monitoring import checked_exchange

        # Bad input fails here, naming the setting, before the store is opened or the broker asked.
        limits = trader_limits(self.risk_limits, live_settings=self.use_trading_settings, log=self.log)
        classes = asset_class_limits_from(self.asset_class_limits)
        thresholds = AuditThresholds.from_mapping(self.thresholds, setting="thresholds")
        timeframe = parse_timeframe(self.timeframe).name
        exchange = checked_exchange(self.exchange)
        hours = self.window_hours
        if hours is not None and (isinstance(hours, bool) or not isinstance(hours, int | float)
                                  or not 0 < hours <= 24 * 366):
            raise InvalidInputError(f"window_hours must be a number of hours > 0 (at most a year), got {hours!r}")
        account = trader_account(self.account)

        dag_run = context["dag_run"]
        store = self.store_hook.get_conn()
        try:
            book = self._broker_book(account, store)
            report = audit_risk(store, now=run_instant(context), account=account, limits=limits,
                                asset_class_limits=classes, thresholds=thresholds,
                                window=None if hours is None else timedelta(hours=hours), timeframe=timeframe,
                                exchange=exchange, book=book, strict_account=not blank(self.account),
                                dag_id=dag_run.dag_id, run_id=dag_run.run_id)
        finally:
            store.dispose()
        full = report.to_dict()
        emit_health(full)
        summary = self._summary(full, account)
        if report.level is Level.RED:
            for check in report.failed:
                self.log.error("RED %s: %s", check.label, check.message)
            if self.notify_on_red:
                from airflow_provider_portfolio.notifications import notify_health

                summary["notified"] = notify_health(full, dag_id=dag_run.dag_id, run_id=dag_run.run_id,
                                                    task_id=self.task_id)
        else:
            self.log.info("%s", report.summary())
        return summary

    def _broker_book(self, account: str, store: PortfolioStore) -> AccountSnapshot | None:
        """A real broker's account now (``alpaca:<conn_id>``: asked of Alpaca); ``None`` for a simulated book."""
        if not account.startswith("alpaca:"):
            return None
        from airflow_provider_portfolio.hooks.connections import resolve_broker_api
        from airflow_provider_portfolio.store.ledger import TradingLedger
        from airflow_provider_portfolio.trading.brokers.alpaca import AlpacaBroker

        api = resolve_broker_api(account.split(":", 1)[1], allow_live=False)  # reads only: never allowed to send
        return AlpacaBroker(api, TradingLedger(store)).account_state()

    @staticmethod
    def _summary(report: dict[str, Any], account: str) -> dict[str, Any]:
        """The XCom: level, failed and warning checks, and the book's headline figures."""
        values = {c["name"]: c.get("value") for c in report["checks"] if c.get("subject") == account}
        return {"kind": report["kind"], "ts": report["ts"], "level": report["level"], "account": account,
                "failed": report["failed"],
                "warnings": [c["name"] + (f"[{c['subject']}]" if c.get("subject") else "")
                             for c in report["checks"] if c["level"] == "YELLOW"],
                "equity": values.get("book"), "open_positions": values.get("open_positions"),
                "gross_exposure": values.get("gross_exposure"), "net_exposure": values.get("net_exposure"),
                "leverage": values.get("leverage"), "drawdown": values.get("drawdown"),
                "daily_loss": values.get("daily_loss"), "checks": len(report["checks"])}
