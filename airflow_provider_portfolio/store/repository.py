"""PortfolioStore: the bars, forecasts and model-evaluations store on SQLAlchemy Core, for SQLite and PostgreSQL.

A facade over the store's parts, each with one job:

- :mod:`~airflow_provider_portfolio.store.database`: engine, URL, connection settings and timeouts, the
  transactions (:meth:`Database.read` / :meth:`Database.write`), schema migrations, driver errors;
- :mod:`~airflow_provider_portfolio.store.codecs`: frames checked and encoded for the drivers, rows decoded;
- :mod:`~airflow_provider_portfolio.store.bars`: idempotent bar upserts on (symbol, timeframe, ts), bar reads;
- :mod:`~airflow_provider_portfolio.store.forecasts`: forecasts and model evaluations, replaced per run key;
- :mod:`~airflow_provider_portfolio.store.health`: the desk's health reports, and the check of the store itself;
- :mod:`~airflow_provider_portfolio.store.validations`: validated forecasts and trading signals;
- :mod:`~airflow_provider_portfolio.store.studies`: the desk's studies and their points, replaced per run;
- :mod:`~airflow_provider_portfolio.store.opportunities`: the discovery rankings, replaced per run;
- :mod:`~airflow_provider_portfolio.store.executions`: filled orders with their reference prices.

The trading ledger (:mod:`~airflow_provider_portfolio.store.ledger`) runs on :attr:`PortfolioStore.database`.
Every driver failure surfaces as :class:`StoreError` naming the store by its password-hidden URL.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL

from airflow_provider_portfolio.store.bars import BarTable
from airflow_provider_portfolio.store.database import (
    DEFAULT_BUSY_TIMEOUT_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_KEEPALIVES_IDLE_S,
    DEFAULT_LOCK_TIMEOUT_S,
    DEFAULT_STATEMENT_TIMEOUT_S,
    Database,
)
from airflow_provider_portfolio.store.executions import DEFAULT_EXECUTIONS_LIMIT, read_executions
from airflow_provider_portfolio.store.forecasts import ForecastTables
from airflow_provider_portfolio.store.health import DEFAULT_HISTORY_LIMIT, HealthTables, check_store
from airflow_provider_portfolio.store.opportunities import OpportunityTables
from airflow_provider_portfolio.store.studies import DEFAULT_POINTS_LIMIT, DEFAULT_STUDIES_LIMIT, StudyTables
from airflow_provider_portfolio.store.validations import DEFAULT_VALIDATIONS_LIMIT, ValidationTables

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import datetime

    import pandas as pd
    from sqlalchemy.engine import Engine

    from airflow_provider_portfolio.store.health import HealthRecord, StoreCheck
    from airflow_provider_portfolio.store.studies import StudyPoint, StudyRecord

__all__ = ["DEFAULT_CONNECT_TIMEOUT_S", "DEFAULT_KEEPALIVES_IDLE_S", "DEFAULT_LOCK_TIMEOUT_S",
           "DEFAULT_STATEMENT_TIMEOUT_S", "PortfolioStore"]


class PortfolioStore:
    """The portfolio store: bars, forecasts, model evaluations and the trading ledger's tables, in SQLite or
    PostgreSQL.

    Creating the object does no I/O; the engine is created on first use (and again in a forked child).

    :param url: SQLAlchemy URL: ``sqlite:///PATH``, ``postgresql://...`` or ``postgres://...`` (driven by
        psycopg 3), or ``postgresql+psycopg2://...`` when psycopg2 is installed.
    :param busy_timeout_s: SQLite: how long a write waits for another writer's lock before failing.
    :param lock_timeout_s: PostgreSQL: how long one statement waits for a row, table or advisory lock
        held by another session before it fails (server ``lock_timeout``); 0 waits without limit.
    :param statement_timeout_s: PostgreSQL: how long one statement may run, waits included, before the
        server cancels it (``statement_timeout``); 0 means no limit.
    :param connect_timeout_s: PostgreSQL: how long opening a connection may take (> 0).
    :param keepalives_idle_s: PostgreSQL: TCP keepalive probes start after this many idle seconds (then
        every 10 s, 5 unanswered probes drop the connection), so a dead server or network never leaves
        a read waiting forever; 0 turns keepalives off.
    :raises InvalidInputError: for a URL that cannot be parsed or has an unsupported scheme, or a timeout
        that is not a finite number of seconds >= 0.
    """

    def __init__(self, url: str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
                 lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                 statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 keepalives_idle_s: float = DEFAULT_KEEPALIVES_IDLE_S) -> None:
        #: The database: engine, transactions (``read``/``write``), schema version, errors.
        self.database = Database(url, busy_timeout_s=busy_timeout_s, lock_timeout_s=lock_timeout_s,
                                 statement_timeout_s=statement_timeout_s, connect_timeout_s=connect_timeout_s,
                                 keepalives_idle_s=keepalives_idle_s)
        self._bars = BarTable(self.database)
        self._forecasts = ForecastTables(self.database)
        self._health = HealthTables(self.database)
        self._studies = StudyTables(self.database)
        self._validations = ValidationTables(self.database)
        self._opportunities = OpportunityTables(self.database)
        #: The URL with the password hidden: safe to log.
        self.url: str = self.database.url
        #: ``"sqlite"`` or ``"postgresql"``.
        self.dialect: str = self.database.dialect

    @classmethod
    def for_sqlite_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> PortfolioStore:
        """A store on the SQLite file ``path`` (created with its directory on first use).

        :param path: the database file.
        :param kwargs: passed to :class:`PortfolioStore` (``busy_timeout_s``).
        """
        return cls(URL.create("sqlite", database=os.fspath(path)).render_as_string(), **kwargs)

    def __repr__(self) -> str:
        return f"PortfolioStore({self.url!r})"

    # -- settings and engine ------------------------------------------------------------------------
    @property
    def busy_timeout_s(self) -> float:
        return self.database.busy_timeout_s

    @property
    def lock_timeout_s(self) -> float:
        return self.database.lock_timeout_s

    @property
    def statement_timeout_s(self) -> float:
        return self.database.statement_timeout_s

    @property
    def connect_timeout_s(self) -> float:
        return self.database.connect_timeout_s

    @property
    def keepalives_idle_s(self) -> float:
        return self.database.keepalives_idle_s

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, created on first use and cached (per process)."""
        return self.database.engine

    def dispose(self) -> None:
        """Close the engine's pooled connections (the store can still be used: it reconnects)."""
        self.database.dispose()

    # -- schema -------------------------------------------------------------------------------------
    def schema_version(self) -> int:
        return self.database.schema_version()

    def migrate(self) -> int:
        return self.database.migrate()

    # -- bars ---------------------------------------------------------------------------------------
    def upsert_bars(self, bars: pd.DataFrame) -> int:
        return self._bars.upsert_bars(bars)

    def read_bars(self, symbols: list[str] | None = None, timeframe: str = "1Day", start: Any = None,
                  end: Any = None) -> pd.DataFrame:
        return self._bars.read_bars(symbols, timeframe, start, end)

    def read_bars_checked(self, symbols: list[str] | None = None, timeframe: str = "1Day", start: Any = None,
                          end: Any = None) -> tuple[pd.DataFrame, dict[str, str]]:
        return self._bars.read_bars_checked(symbols, timeframe, start, end)

    def bar_timestamps(self, symbol: str, timeframe: str, start: Any = None, end: Any = None) -> pd.DatetimeIndex:
        return self._bars.bar_timestamps(symbol, timeframe, start, end)

    def latest_bar_ts(self, symbols: list[str] | None, timeframe: str) -> dict[str, pd.Timestamp | None]:
        return self._bars.latest_bar_ts(symbols, timeframe)

    def count_bars(self, symbols: list[str] | None = None, timeframe: str | None = None) -> int:
        return self._bars.count_bars(symbols, timeframe)

    # -- forecasts and model evaluations ------------------------------------------------------------
    def write_forecasts(self, forecasts: pd.DataFrame | None,
                        evaluations: pd.DataFrame | None = None) -> tuple[int, int]:
        return self._forecasts.write_forecasts(forecasts, evaluations)

    def read_forecasts(self, symbols: list[str] | None = None, model: str | list[str] | None = None,
                       timeframe: str | None = "1Day", run_id: str | None = None, latest: bool = True) -> pd.DataFrame:
        return self._forecasts.read_forecasts(symbols, model, timeframe, run_id, latest)

    def read_evaluations(self, symbols: list[str] | None = None, model: str | list[str] | None = None,
                         timeframe: str | None = "1Day", run_id: str | None = None,
                         latest: bool = True) -> pd.DataFrame:
        return self._forecasts.read_evaluations(symbols, model, timeframe, run_id, latest)

    # -- health reports and the store's own check ---------------------------------------------------
    def append_health_report(self, report: Mapping[str, Any], *, dag_id: str | None = None,
                             run_id: str | None = None) -> None:
        return self._health.append(report, dag_id=dag_id, run_id=run_id)

    def latest_health_report(self, kind: str, *, since: datetime | None = None,
                             until: datetime | None = None) -> HealthRecord | None:
        return self._health.latest(kind, since=since, until=until)

    def health_history(self, kind: str, since: datetime | None = None, limit: int = DEFAULT_HISTORY_LIMIT, *,
                       until: datetime | None = None) -> list[HealthRecord]:
        return self._health.history(kind, since, limit, until=until)

    def check_store(self, *, full: bool = False) -> StoreCheck:
        """Reach the store, read its schema version and check its integrity; never raises for a store that cannot
        be reached (see :func:`~airflow_provider_portfolio.store.health.check_store`)."""
        return check_store(self.database, full=full)

    # -- studies --------------------------------------------------------------------------------------------
    def save_study(self, kind: str, study_id: str, *, ts: datetime, params: Mapping[str, Any],
                   summary: Mapping[str, Any], status: str = "ok", recommended: Mapping[str, Any] | None = None,
                   points: Iterable[StudyPoint | Mapping[str, Any]] | None = None, dag_id: str | None = None,
                   run_id: str | None = None) -> int:
        return self._studies.save(kind, study_id, ts=ts, params=params, summary=summary, status=status,
                                  recommended=recommended, points=points, dag_id=dag_id, run_id=run_id)

    def study(self, kind: str, study_id: str) -> StudyRecord | None:
        return self._studies.get(kind, study_id)

    def latest_study(self, kind: str, *, since: datetime | None = None, until: datetime | None = None,
                     status: str | None = None) -> StudyRecord | None:
        return self._studies.latest(kind, since=since, until=until, status=status)

    def studies(self, kind: str, limit: int = DEFAULT_STUDIES_LIMIT, *, since: datetime | None = None,
                until: datetime | None = None, status: str | None = None) -> list[StudyRecord]:
        return self._studies.history(kind, limit, since=since, until=until, status=status)

    def study_points(self, kind: str, study_id: str, limit: int = DEFAULT_POINTS_LIMIT) -> list[StudyPoint]:
        return self._studies.points(kind, study_id, limit)

    def mark_study_applied(self, kind: str, study_id: str, *, at: datetime | None = None) -> StudyRecord:
        return self._studies.mark_applied(kind, study_id, at=at)

    # -- validations ----------------------------------------------------------------------------------------
    def append_validations(self, rows: Sequence[Mapping[str, Any]], *, run_id: str) -> int:
        return self._validations.append(rows, run_id=run_id)

    def validations(self, kind: str | None = None, *, sources: str | Sequence[str] | None = None,
                    symbols: Sequence[str] | None = None, timeframe: str | None = "1Day",
                    since: datetime | None = None, until: datetime | None = None,
                    limit: int = DEFAULT_VALIDATIONS_LIMIT) -> pd.DataFrame:
        return self._validations.read(kind, sources=sources, symbols=symbols, timeframe=timeframe, since=since,
                                      until=until, limit=limit)

    def validation_summary(self, *, since: datetime | None = None, until: datetime | None = None,
                           timeframe: str | None = "1Day", kind: str | None = None,
                           sources: str | Sequence[str] | None = None, symbols: Sequence[str] | None = None,
                           by: Sequence[str] = ("kind", "source", "target")) -> list[dict[str, Any]]:
        return self._validations.summary(since=since, until=until, timeframe=timeframe, kind=kind, sources=sources,
                                         symbols=symbols, by=by)

    def validated_runs(self, kind: str | None = None, *, sources: str | Sequence[str] | None = None,
                       symbols: Sequence[str] | None = None, timeframe: str | None = "1Day",
                       since: datetime | None = None, until: datetime | None = None,
                       limit: int = DEFAULT_VALIDATIONS_LIMIT) -> list[dict[str, Any]]:
        return self._validations.validated_runs(kind, sources=sources, symbols=symbols, timeframe=timeframe,
                                                since=since, until=until, limit=limit)

    def pending_forecasts(self, symbols: Sequence[str] | None, timeframe: str, *, since: datetime,
                          until: datetime) -> pd.DataFrame:
        return self._validations.pending_forecasts(symbols, timeframe, since=since, until=until)

    def pending_decisions(self, symbols: Sequence[str] | None, timeframe: str, *, since: datetime,
                          until: datetime) -> pd.DataFrame:
        return self._validations.pending_decisions(symbols, timeframe, since=since, until=until)

    def signals_exist(self, timeframe: str | None, *, since: datetime, until: datetime) -> bool:
        return self._validations.signals_exist(timeframe, since=since, until=until)

    # -- discovery rankings ---------------------------------------------------------------------------------
    def save_opportunities(self, ranking: pd.DataFrame, *, run_id: str, ts: datetime,
                           dag_id: str | None = None) -> int:
        return self._opportunities.save(ranking, run_id=run_id, ts=ts, dag_id=dag_id)

    def latest_opportunities(self, *, limit: int | None = None, until: datetime | None = None,
                             run_id: str | None = None) -> pd.DataFrame:
        return self._opportunities.latest(limit=limit, until=until, run_id=run_id)

    # -- executions -----------------------------------------------------------------------------------------
    def executions(self, *, account: str | None = None, since: datetime | None = None, until: datetime | None = None,
                   limit: int = DEFAULT_EXECUTIONS_LIMIT) -> pd.DataFrame:
        return read_executions(self.database, account=account, since=since, until=until, limit=limit)


# The facade's methods carry the documentation of the parts that do the work.
for _name, _part in (("schema_version", Database), ("migrate", Database), ("upsert_bars", BarTable),
                     ("read_bars", BarTable), ("read_bars_checked", BarTable), ("bar_timestamps", BarTable),
                     ("latest_bar_ts", BarTable), ("count_bars", BarTable), ("write_forecasts", ForecastTables),
                     ("read_forecasts", ForecastTables), ("read_evaluations", ForecastTables)):
    getattr(PortfolioStore, _name).__doc__ = getattr(_part, _name).__doc__
for _name, _method in (("append_health_report", HealthTables.append), ("latest_health_report", HealthTables.latest),
                       ("health_history", HealthTables.history)):
    getattr(PortfolioStore, _name).__doc__ = _method.__doc__
_parts: tuple[tuple[str, Any], ...] = (
    ("save_study", StudyTables.save), ("study", StudyTables.get), ("latest_study", StudyTables.latest),
    ("studies", StudyTables.history), ("study_points", StudyTables.points),
    ("mark_study_applied", StudyTables.mark_applied), ("append_validations", ValidationTables.append),
    ("validations", ValidationTables.read), ("validation_summary", ValidationTables.summary),
    ("validated_runs", ValidationTables.validated_runs), ("pending_forecasts", ValidationTables.pending_forecasts),
    ("pending_decisions", ValidationTables.pending_decisions), ("signals_exist", ValidationTables.signals_exist),
    ("executions", read_executions), ("save_opportunities", OpportunityTables.save),
    ("latest_opportunities", OpportunityTables.latest))
for _name, _method in _parts:
    getattr(PortfolioStore, _name).__doc__ = _method.__doc__
for _name in ("busy_timeout_s", "lock_timeout_s", "statement_timeout_s", "connect_timeout_s", "keepalives_idle_s"):
    getattr(PortfolioStore, _name).__doc__ = f"``{_name}`` of the store's database (see :class:`PortfolioStore`)."
del _name, _part, _method, _parts
