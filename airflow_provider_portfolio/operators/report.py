"""PortfolioReportOperator: the desk's HTML report and headline PNG, written where the DAG says."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_portfolio.hooks.store import StoreHookMixin
from airflow_provider_portfolio.operators.templated import blank

if TYPE_CHECKING:
    from airflow.sdk import Context


def default_report_dir() -> str:
    """Where reports go when ``out`` is not given: ``$AIRFLOW_HOME/portfolio/reports``, beside the embedded store."""
    from airflow_provider_portfolio.hooks.store import embedded_store_path

    return str(embedded_store_path().parent / "reports")


class PortfolioReportOperator(StoreHookMixin, BaseOperator):
    """Build the report of the book from the store and write ``portfolio-report-<period>-<stamp>.html`` and its
    ``-headline.png`` into ``out``.

    What the report holds is :func:`airflow_provider_portfolio.desk.report.build_report` (equity and drawdown,
    positions and exposure, P&L by symbol, forecast health, data freshness, recent decisions with their risk
    verdicts, the period against the one before); how it is written is
    :func:`~airflow_provider_portfolio.desk.report.write_report` (a local folder atomically, any fsspec filesystem in
    one put per file, checked). The report is made at the run's instant (``data_interval_end``, or ``run_after``),
    so a re-run of a day rewrites that day's files. The XCom is ``{"paths": {"html": ..., "headline_png": ...},
    "summary": {...}}``: where the files are, and the report's figures.

    :param period: ``daily`` (the session to the run's instant, against the session before) or ``weekly`` (the 7
        days to it, against the 7 days before) (templated).
    :param out: the folder or URL the files go to (templated): a path, ``file://...``, any fsspec URL
        (``s3://bucket/reports``, ``gs://...``, ``memory://...``), or an Airflow ``ObjectStoragePath``. With
        ``out_conn_id`` (or a URL naming a connection, ``s3://aws_default@bucket/reports``) it is opened as an
        ``ObjectStoragePath``, with that connection's credentials; otherwise by fsspec, with the environment's.
        Default ``$AIRFLOW_HOME/portfolio/reports``.
    :param out_conn_id: the Airflow connection of ``out``'s object storage (templated), e.g. ``aws_default``.
    :param stamp: names the files (templated; letters, digits, ``.``, ``_``, ``-``); default the date of the run's
        instant in the exchange's time zone.
    :param account: the ledger account reported (templated); default the auto trader's: ``alpaca:alpaca_default``
        when that connection exists, else ``simulated:default``.
    :param symbols: the universe whose data freshness and forecast health are shown (templated); default Variable
        ``portfolio.default_tickers``.
    :param timeframe: the bars and model evaluations judged (templated), default ``1Day``.
    :param exchange: calendar of equities (templated); default ``[portfolio] default_exchange``.
    :param store_conn_id: store connection (templated); default ``[portfolio] store_conn_id`` or the embedded store.
    :param decisions_limit: the most decisions listed (default 50).
    :param history_days: days of equity charted and measured for drawdown, Sharpe and Sortino (default 90).
    """

    template_fields: Sequence[str] = ("period", "out", "out_conn_id", "stamp", "account", "symbols", "timeframe",
                                      "exchange", "store_conn_id")
    ui_color = "#dde8f6"

    def __init__(
        self,
        *,
        period: str = "daily",
        out: Any = None,
        out_conn_id: str | None = None,
        stamp: str | None = None,
        account: str | None = None,
        symbols: list[str] | str | None = None,
        timeframe: str = "1Day",
        exchange: str | None = None,
        store_conn_id: str | None = None,
        decisions_limit: int = 50,
        history_days: int = 90,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.period = period
        self.out = out
        self.out_conn_id = out_conn_id
        self.stamp = stamp
        self.account = account
        self.symbols = symbols
        self.timeframe = timeframe
        self.exchange = exchange
        self.store_conn_id = store_conn_id
        self.decisions_limit = decisions_limit
        self.history_days = history_days

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_portfolio.desk.monitoring import THRESHOLDS_VARIABLE, HealthThresholds
        from airflow_provider_portfolio.desk.report import PERIODS, build_report, report_file_names, write_report
        from airflow_provider_portfolio.exceptions import InvalidInputError
        from airflow_provider_portfolio.market.bars import parse_timeframe
        from airflow_provider_portfolio.operators.gating import run_instant
        from airflow_provider_portfolio.operators.monitoring import checked_exchange, desk_symbols
        from airflow_provider_portfolio.variables import get_variable

        # Bad input fails here, naming the setting, before the store is opened or anything written.
        period = str(self.period).strip()
        if period not in PERIODS:
            raise InvalidInputError(f"period must be one of {list(PERIODS)}, got {self.period!r}")
        stamp = None if blank(self.stamp) else str(self.stamp).strip()
        if stamp is not None:
            report_file_names(period, stamp)
        symbols = desk_symbols(self.symbols)
        exchange = checked_exchange(self.exchange)
        timeframe = parse_timeframe(self.timeframe).name
        thresholds = HealthThresholds.from_mapping(get_variable(THRESHOLDS_VARIABLE))
        account = self._account()
        target, filesystem = self._destination()

        store = self.store_hook.get_conn()
        try:
            report = build_report(store, now=run_instant(context), period=period, account=account, symbols=symbols,
                                  timeframe=timeframe, exchange=exchange, decisions_limit=self.decisions_limit,
                                  history_days=self.history_days, thresholds=thresholds)
        finally:
            store.dispose()
        paths = write_report(report, target, stamp=stamp, filesystem=filesystem)
        s = report.summary
        self.log.info("Portfolio report (%s, %s) written: %s; equity %s, return %s, max drawdown %s, %d decision(s), "
                      "%d stale symbol(s)", period, account, paths["html"], s["equity"], s["period_return"],
                      s["max_drawdown"], s["decisions"], s["stale_symbols"])
        return {"paths": paths, "summary": s}

    def _account(self) -> str:
        """The ledger account reported: the argument, else the auto trader's."""
        from airflow_provider_portfolio.operators.trading import trader_account

        return trader_account(self.account)

    def _destination(self) -> tuple[str, Any]:
        """(where to write, the fsspec filesystem to write with or ``None`` for the one ``out`` names)."""
        from urllib.parse import urlsplit

        from airflow.sdk import ObjectStoragePath

        from airflow_provider_portfolio.exceptions import InvalidInputError

        out, conn_id = self.out, None if blank(self.out_conn_id) else str(self.out_conn_id).strip()
        if isinstance(out, ObjectStoragePath):
            return str(out.path), out.fs
        if blank(out):
            if conn_id:
                raise InvalidInputError(f"out_conn_id={conn_id!r} needs out, the URL of a folder in that storage")
            return default_report_dir(), None
        text = str(out).strip()
        parts = urlsplit(text)
        if not conn_id and "@" not in parts.netloc:
            return text, None
        if not parts.scheme:
            raise InvalidInputError(f"out={text!r} is a local path; out_conn_id={conn_id!r} needs a URL such as "
                                    "s3://bucket/reports")
        try:
            path = ObjectStoragePath(text, conn_id=conn_id)
            return str(path.path), path.fs
        except Exception as err:  # an unknown scheme, a missing provider or connection: say which, with the setting
            raise InvalidInputError(f"out={text!r} (out_conn_id={conn_id!r}) cannot be opened as Airflow object "
                                    f"storage: {type(err).__name__}: {err}") from None
