"""The provider's command line: ``airflow-portfolio <command>`` (or ``python -m airflow_provider_portfolio``).

One subcommand per job; each is a small function that turns arguments into one call. The desk's jobs run from a
shell or a container (the image's entry point, ``Dockerfile``) with no Airflow scheduler or metadata database:

- ``etl``, ``forecast``, ``trade``, ``discover``, ``rebalance``, ``report``: each runs the plain-Python entry point
  its operator runs (:func:`~airflow_provider_portfolio.market.etl.load_bars` over
  :func:`~airflow_provider_portfolio.market.etl.load_window`,
  :func:`~airflow_provider_portfolio.forecast.jobs.forecast_universe` and ``ensemble_universe``,
  :func:`~airflow_provider_portfolio.trading.session.trade_universe`,
  :func:`~airflow_provider_portfolio.desk.discovery.discover`,
  :func:`~airflow_provider_portfolio.trading.rebalance.rebalance`,
  :func:`~airflow_provider_portfolio.desk.report.build_report` and ``write_report``) with the example DAGs' settings
  unless told otherwise, prints a short summary (``--json``: the whole summary, one line on stdout; logs go to
  stderr) and exits 0; a provider error (bad input, a store that cannot be opened, a vendor...) is one line on
  stderr and exit 1, and a job that ran but failed its bar (symbols that failed, orders in doubt) prints its
  summary, then why, and exits 1. Unknown commands and options exit 2 (argparse; no abbreviations).
  ``--store URL`` (SQLAlchemy URL or SQLite file) or ``--store-conn-id``; neither: the operators' store
  (:func:`open_store`). Connections are Airflow's, read as Airflow reads them outside a task: ``AIRFLOW_CONN_<ID>``
  variables (JSON or URI) and any secrets backend configured; Variables (the universe, the kill switch) likewise
  from ``AIRFLOW_VAR_<NAME>``. The broker is the simulated one unless ``--broker-conn-id`` names an Alpaca
  connection (paper; a live account also needs ``--allow-live``).
- ``setup [--dry-run]``: create the provider's pools (:data:`~airflow_provider_portfolio.pools.POOLS`) and
  ``portfolio.*`` Variables (:data:`~airflow_provider_portfolio.variables.VARIABLES`) that are missing, and print
  each connection the provider can use that is missing with the ``airflow connections add`` command that adds it.
  It never changes a pool or a Variable that exists, so running it twice leaves the same state. It runs where
  the ``airflow`` CLI runs (the metadata database reachable).
- ``restore-store --store URL|PATH [--backup FILE] [--backup-dir DIR] [--force]``: restore a corrupt SQLite store
  from its last good backup (:func:`~airflow_provider_portfolio.store.maintenance.restore_store`), keeping the
  corrupt file as ``<store>.corrupt-<stamp>``; a sound store is only overwritten with ``--force``. Needs no Airflow.
- ``copy-store --from URL|PATH --to URL [--force] [--batch-rows N]``: copy a store into another database (a SQLite
  file into PostgreSQL) in one transaction (:func:`~airflow_provider_portfolio.store.maintenance.copy_store`); prints
  the rows per table and the total. Needs no Airflow.

Airflow and the jobs' libraries are imported inside the commands: ``--help`` costs nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from airflow_provider_portfolio.pools import POOLS
from airflow_provider_portfolio.variables import VARIABLES

if TYPE_CHECKING:
    from datetime import datetime

    from airflow_provider_portfolio.store import PortfolioStore

PROG = "airflow-portfolio"


@dataclass(frozen=True)
class ConnectionSpec:
    """A connection the provider can use: its id, what it is for, and the ``airflow connections add`` arguments
    (after the id) that add it, with placeholders for credentials."""

    conn_id: str
    purpose: str
    add_args: tuple[str, ...]

    @property
    def command(self) -> str:
        """The shell command that adds it (placeholders quoted)."""
        return shlex.join(("airflow", "connections", "add", self.conn_id, *self.add_args))


@dataclass
class SetupReport:
    """What ``setup`` did (or, dry, would do)."""

    dry_run: bool = False
    created_pools: list[str] = field(default_factory=list)
    kept_pools: list[str] = field(default_factory=list)
    created_variables: list[str] = field(default_factory=list)
    kept_variables: list[str] = field(default_factory=list)
    missing_connections: list[ConnectionSpec] = field(default_factory=list)
    present_connections: list[str] = field(default_factory=list)


#: ``[portfolio]`` options naming notification connections: option -> (purpose, add arguments). Used when the option
#: exists and is set.
NOTIFY_CONNECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "notify_smtp_conn_id": (
        "email notifications through Airflow's SMTP provider",
        ("--conn-type", "smtp", "--conn-host", "<smtp-host>", "--conn-port", "587", "--conn-login", "<user>",
         "--conn-password", "<password>"),
    ),
    "notify_slack_conn_id": (
        "Slack notifications through an incoming webhook (Airflow's Slack provider)",
        ("--conn-type", "slackwebhook", "--conn-password", "<webhook-url>"),
    ),
}


def provider_connections() -> list[ConnectionSpec]:
    """Every connection the provider can use, under the ids this deployment configures."""
    from airflow_provider_portfolio import config

    specs = [
        ConnectionSpec(
            "alpaca_default",
            "Alpaca broker and market data, paper trading unless the extra says paper=false; without it the "
            "simulated broker trades",
            ("--conn-type", "alpaca", "--conn-login", "<key-id>", "--conn-password", "<secret-key>",
             "--conn-extra", '{"paper": true}'),
        ),
        ConnectionSpec(
            "alphavantage_default",
            "Alpha Vantage market data (the free plan allows 25 calls a day)",
            ("--conn-type", "alphavantage", "--conn-password", "<api-key>"),
        ),
        ConnectionSpec(
            "finnhub_default",
            "Finnhub market data and news",
            ("--conn-type", "finnhub", "--conn-password", "<api-key>"),
        ),
        ConnectionSpec(
            config.get_option("store_conn_id"),
            "the portfolio store on PostgreSQL (or type sqlite with the file path as host); without it the store "
            "is a SQLite file under $AIRFLOW_HOME/portfolio/",
            ("--conn-type", "postgres", "--conn-host", "<host>", "--conn-port", "5432", "--conn-login", "<user>",
             "--conn-password", "<password>", "--conn-schema", "<database>"),
        ),
    ]
    for option, (purpose, add_args) in NOTIFY_CONNECTIONS.items():
        try:
            conn_id = config.get_option(option)
        except KeyError:  # an option this version of the provider does not declare
            continue
        if conn_id:
            specs.append(ConnectionSpec(conn_id, f"{purpose} ([portfolio] {option})", add_args))
    return specs


def _connection_exists(conn_id: str) -> bool:
    """Whether ``conn_id`` resolves anywhere Airflow looks (environment, secrets backends, metadata database)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models import Connection

    try:
        Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def run_setup(*, dry_run: bool = False) -> SetupReport:
    """Create the missing pools and Variables in one transaction (none when ``dry_run``) and list the connections.

    :param dry_run: only report what would be created.
    :raises sqlalchemy.exc.SQLAlchemyError: when the metadata database cannot be read or written.
    """
    from airflow.models import Pool, Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    report = SetupReport(dry_run=dry_run)
    with create_session(scoped=False) as session:
        existing_pools = set(session.scalars(select(Pool.pool)))
        for spec in POOLS.values():
            if spec.name in existing_pools:
                report.kept_pools.append(spec.name)
                continue
            report.created_pools.append(spec.name)
            if not dry_run:
                session.add(Pool(pool=spec.name, slots=spec.slots, description=spec.description,
                                 include_deferred=spec.include_deferred))
        in_database = set(session.scalars(select(Variable.key).where(Variable.key.in_(list(VARIABLES)))))
        for spec in VARIABLES.values():
            # One set outside the database (AIRFLOW_VAR_*, a secrets backend) wins over the database: keep it too.
            if spec.name in in_database or Variable.get_variable_from_secrets(key=spec.name) is not None:
                report.kept_variables.append(spec.name)
                continue
            report.created_variables.append(spec.name)
            if not dry_run:
                session.add(Variable(key=spec.name, val=spec.default, description=spec.description))
    for conn in provider_connections():
        if _connection_exists(conn.conn_id):
            report.present_connections.append(conn.conn_id)
        else:
            report.missing_connections.append(conn)
    return report


def print_setup_report(report: SetupReport, out: TextIO) -> None:
    """Write ``report`` for a person: one line per pool, Variable and connection, then a summary."""
    create = "would create" if report.dry_run else "created"
    print("Pools:", file=out)
    for name in report.created_pools:
        spec = POOLS[name]
        print(f"  {create}: {name} ({spec.slots} slot{'s' * (spec.slots != 1)}) - {spec.description}", file=out)
    for name in report.kept_pools:
        print(f"  exists, left alone: {name}", file=out)
    print("Variables:", file=out)
    for name in report.created_variables:
        print(f"  {create}: {name} = {VARIABLES[name].default}", file=out)
    for name in report.kept_variables:
        print(f"  exists, left alone: {name}", file=out)
    print("Connections:", file=out)
    for conn in report.missing_connections:
        print(f"  missing: {conn.conn_id} - {conn.purpose}", file=out)
        print(f"    {conn.command}", file=out)
    for conn_id in report.present_connections:
        print(f"  present: {conn_id}", file=out)
    print(
        f"{'Dry run: would create' if report.dry_run else 'Created'} {len(report.created_pools)} pool(s) and "
        f"{len(report.created_variables)} Variable(s); left {len(report.kept_pools)} pool(s) and "
        f"{len(report.kept_variables)} Variable(s) alone; {len(report.missing_connections)} connection(s) missing.",
        file=out,
    )


def _setup(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        report = run_setup(dry_run=args.dry_run)
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        print(f"setup: the Airflow metadata database cannot be used ({first}); run it where the `airflow` CLI "
              "runs, after `airflow db migrate`. Nothing was written.", file=sys.stderr)
        return 1
    print_setup_report(report, sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser: one subcommand per job (later commands add a ``_add_<name>`` function)."""
    parser = argparse.ArgumentParser(prog=PROG, description="Commands of the airflow-provider-portfolio provider.",
                                     allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(commands)
    return parser


def _add_setup(commands: argparse._SubParsersAction) -> None:
    setup = commands.add_parser(
        "setup", allow_abbrev=False,
        help="create the missing pools and portfolio.* Variables; list the missing connections",
        description="Create the provider's pools and portfolio.* Variables that are missing (never changes one that "
                    "exists) and print each missing connection with the command that adds it. Idempotent.",
    )
    setup.add_argument("--dry-run", action="store_true", help="print what would be created; write nothing")
    setup.set_defaults(func=_setup)


def store_at(text: str) -> PortfolioStore:
    """The store at ``text``: a SQLAlchemy URL, or else a SQLite file's path (not opened or migrated yet)."""
    from airflow_provider_portfolio.store import PortfolioStore

    return PortfolioStore(text) if "://" in text else PortfolioStore.for_sqlite_file(text)


def _restore_store(args: argparse.Namespace) -> int:
    from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
    from airflow_provider_portfolio.store.maintenance import restore_store

    try:
        store = store_at(args.store)
        try:
            result = restore_store(store, backup=args.backup, backup_dir=args.backup_dir, force=args.force)
        finally:
            store.dispose()
    except (InvalidInputError, StoreError) as err:
        print(f"restore-store: {err}", file=sys.stderr)
        return 1
    print(f"Restored {result.store} from {result.backup} ({result.reason}); the old file is kept as "
          f"{result.moved_aside or '(none: there was no file)'}")
    return 0


def _add_restore_store(commands: argparse._SubParsersAction) -> None:
    restore = commands.add_parser(
        "restore-store", allow_abbrev=False,
        help="restore a corrupt SQLite store from its last good backup",
        description="Restore a SQLite portfolio store from a backup of the housekeeping job: the newest one in the "
                    "backup folder that passes PRAGMA integrity_check, or --backup. The store's file is kept as "
                    "<store>.corrupt-<stamp> and the backup's copy renamed over it. Refuses a store that is sound "
                    "unless --force. Stop the DAGs writing to the store first.",
    )
    restore.add_argument("--store", required=True, help="the store: sqlite:///PATH or the database file's path")
    restore.add_argument("--backup", default=None, help="the backup file to restore (default: the last good one)")
    restore.add_argument("--backup-dir", default=None,
                         help="the backups' folder (default: <store file>.backups beside the store; a relative "
                              "path is taken from the store's folder)")
    restore.add_argument("--force", action="store_true", help="overwrite a store that is not corrupt")
    restore.set_defaults(func=_restore_store)


def _copy_store(args: argparse.Namespace) -> int:
    from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
    from airflow_provider_portfolio.store.maintenance import DEFAULT_COPY_BATCH_ROWS, copy_store

    try:
        source = store_at(args.source)
        target = store_at(args.target)
        try:
            batch_rows = DEFAULT_COPY_BATCH_ROWS if args.batch_rows is None else args.batch_rows
            result = copy_store(source, target, batch_rows=batch_rows, force=args.force)
        finally:
            source.dispose()
            target.dispose()
    except (InvalidInputError, StoreError) as err:
        print(f"copy-store: {err}", file=sys.stderr)
        return 1
    for name, rows in result.rows.items():
        print(f"{name}: {rows} row(s)")
    replaced = f" (replacing {sum(result.replaced.values())} row(s))" if result.replaced else ""
    print(f"Copied {result.total} row(s) in {len(result.rows)} table(s) from {result.source} into {result.target}"
          f"{replaced} in {result.elapsed_s:.1f} s")
    return 0


def _add_copy_store(commands: argparse._SubParsersAction) -> None:
    copy = commands.add_parser(
        "copy-store", allow_abbrev=False,
        help="copy a store into another database (SQLite to PostgreSQL), in one transaction",
        description="Copy every table of a portfolio store (at the latest schema version) into another database, "
                    "migrated first, in one transaction: all or nothing; row counts checked before the commit. A "
                    "target that holds rows is refused unless --force (its rows are then replaced). Stop the DAGs "
                    "writing to the source first, then point the store's connection at the target.",
    )
    copy.add_argument("--from", dest="source", required=True, metavar="URL|PATH",
                      help="the store copied from: sqlite:///PATH, the database file's path, or postgresql://...")
    copy.add_argument("--to", dest="target", required=True, metavar="URL",
                      help="the store copied into: postgresql://USER:PASSWORD@HOST:PORT/DB (or a SQLite URL or path)")
    copy.add_argument("--force", action="store_true", help="replace the rows the target already holds")
    copy.add_argument("--batch-rows", type=int, default=None, help="rows per statement (5000)")
    copy.set_defaults(func=_copy_store)


# -- the desk's jobs from a shell or a container -------------------------------------------------------------------

#: The name the CLI's trading cycles decide under when ``--dag-id`` is not given: part of every client order id and
#: of each bar's claim (a bar is decided once per name).
CLI_DAG_ID = "airflow-portfolio"
#: The example forecast DAG's models, in its order; ``ensemble`` combines the price-level models of the same run.
FORECAST_MODELS = ("ssa", "samossa", "mssa", "sarimax", "garch", "ensemble")
#: The example auto trader's bars, risk limits and order budget (``example_dags/portfolio_auto_trader.py``).
TRADER_TIMEFRAME = "30Min"
TRADER_RISK_LIMITS: dict[str, float] = {"max_order_notional": 10_000, "max_position_fraction": 0.10,
                                        "max_open_positions": 20, "daily_loss_limit": 0.03, "min_confidence": 0.25}
TRADER_MAX_TRADES_PER_DAY = 40
#: The example rebalance DAG's risk limits (``example_dags/portfolio_rebalance.py``).
REBALANCE_RISK_LIMITS: dict[str, float] = {"max_order_notional": 30_000, "max_position_fraction": 0.30,
                                           "max_open_positions": 20, "daily_loss_limit": 0.05}

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """What a job command prints: its summary (all of it with ``--json``), a few lines for a person, and why it
    failed when it ran but did not meet its bar (symbols that failed, orders in doubt): exit status 1."""

    summary: dict[str, Any]
    lines: list[str]
    failure: str | None = None


def _route_logs(verbose: bool) -> None:
    """Send every log record to stderr (stdout carries the summary alone), INFO with ``--verbose``, else WARNING.

    Importing Airflow configures the root logger (Airflow 3.3 writes to stdout): it is redirected afterwards. Airflow
    imported here for the first time logs its own start-up at WARNING unless ``verbose`` (only while importing).
    """
    quiet = "airflow" not in sys.modules and not verbose and "AIRFLOW__LOGGING__LOGGING_LEVEL" not in os.environ
    if quiet:
        os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    try:
        import airflow  # noqa: F401  (configures logging when first imported)
    finally:
        if quiet:
            os.environ.pop("AIRFLOW__LOGGING__LOGGING_LEVEL", None)

    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
    if not root.handlers:
        logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def _run_job(args: argparse.Namespace) -> int:
    """Run the command's job: its summary on stdout and exit 0; a provider error (bad input, a store that cannot be
    opened, a vendor...) as one line on stderr and exit 1, no traceback."""
    from airflow_provider_portfolio.exceptions import PortfolioError

    _route_logs(args.verbose)
    try:
        result = args.job(args)
    except PortfolioError as err:
        print(f"{args.command}: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.summary, default=str))
    else:
        print("\n".join(result.lines))
    if result.failure:
        sys.stdout.flush()  # the summary, then why the command failed
        print(f"{args.command}: {result.failure}", file=sys.stderr)
        return 1
    return 0


@contextmanager
def open_store(store: str | None = None, store_conn_id: str | None = None, *, create: bool = True
               ) -> Iterator[PortfolioStore]:
    """The store a job command works on, migrated, disposed of on exit.

    :param store: a SQLAlchemy URL or a SQLite file's path; blank: the store the operators use (below).
    :param store_conn_id: an Airflow connection of the store (``sqlite`` or ``postgres``); with neither, the
        connection ``[portfolio] store_conn_id`` when it exists, else the embedded SQLite file
        (:func:`~airflow_provider_portfolio.hooks.store.embedded_store_path`), as
        :class:`~airflow_provider_portfolio.hooks.store.PortfolioStoreHook` resolves it.
    :param create: create a SQLite file that does not exist (the ETL); a job that reads refuses it instead, and
        creates nothing.
    :raises InvalidInputError: for a URL that cannot be parsed or has another scheme.
    :raises StoreError: for a store that cannot be opened, a connection that does not exist, or no SQLite file
        when ``create`` is false.
    """
    from airflow_provider_portfolio.exceptions import StoreError
    from airflow_provider_portfolio.hooks.store import PortfolioStoreHook
    from airflow_provider_portfolio.operators.templated import blank
    from airflow_provider_portfolio.store import PortfolioStore

    if not blank(store):
        text = str(store).strip()
        opened = store_at(text)
    else:
        hook = PortfolioStoreHook(store_conn_id=None if blank(store_conn_id) else str(store_conn_id).strip())
        opened = PortfolioStore(hook.url, **hook.store_options)
    try:
        path = opened.database.sqlite_file
        if not create and path is not None and not path.is_file():
            raise StoreError(f"there is no store at {path}: load bars into it first (airflow-portfolio etl)")
        opened.migrate()
        yield opened
    finally:
        opened.dispose()


def _universe(symbols: str | None) -> list[str]:
    """``--symbols`` checked, else the example DAGs' universe (Variable ``portfolio.default_tickers``, else its
    default)."""
    from airflow_provider_portfolio.operators.monitoring import desk_symbols
    from airflow_provider_portfolio.operators.templated import maybe_json_list

    return desk_symbols(maybe_json_list(symbols))


def _instant(as_of: str | None) -> datetime:
    """``--as-of`` (ISO 8601 with a zone) as an aware UTC instant, else now."""
    from airflow_provider_portfolio.market.timeutil import utc_now
    from airflow_provider_portfolio.operators.trading import parse_as_of

    return parse_as_of(as_of) or utc_now()


def _fraction(value: float, name: str) -> float:
    from airflow_provider_portfolio.exceptions import InvalidInputError

    if not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"{name} must be within [0, 1], got {value!r}")
    return value


def _require_bars(store: PortfolioStore, symbols: Sequence[str], timeframe: str, command: str) -> list[str]:
    """The symbols of ``symbols`` with ``timeframe`` bars in the store (a warning names the others).

    :raises InvalidInputError: when none has any, before anything is written.
    """
    from airflow_provider_portfolio.exceptions import InvalidInputError

    latest = store.latest_bar_ts(list(symbols), timeframe)
    loaded = [s for s in symbols if latest.get(s) is not None]
    if not loaded:
        shown = ", ".join(symbols[:6]) + (f" and {len(symbols) - 6} more" if len(symbols) > 6 else "")
        raise InvalidInputError(f"the store {store.url} holds no {timeframe} bars of {shown}: load them first "
                                f"(airflow-portfolio etl --timeframe {timeframe}); {command} wrote nothing")
    if len(loaded) < len(symbols):
        log.warning("%s: no %s bars in the store for %s", command, timeframe,
                    ", ".join(s for s in symbols if s not in loaded))
    return loaded


def _broker(conn_id: str, store: PortfolioStore, args: argparse.Namespace, costs: Mapping[str, float]) -> Any:
    """The broker of ``--broker-conn-id`` (``simulated``: the simulated book ``--account``), as the operators resolve
    it; a live Alpaca account is refused without ``--allow-live`` before anything is sent.

    :raises InvalidInputError: for a live account without ``--allow-live``, or a connection that is no broker.
    """
    from airflow_provider_portfolio.exceptions import InvalidInputError
    from airflow_provider_portfolio.hooks.connections import resolve_broker_api
    from airflow_provider_portfolio.operators.trading import SIMULATED, resolve_broker
    from airflow_provider_portfolio.store.ledger import TradingLedger

    if conn_id != SIMULATED and not args.allow_live and resolve_broker_api(conn_id).is_live:
        raise InvalidInputError(f"connection {conn_id!r} is a LIVE Alpaca account: trading it needs --allow-live "
                                "(paper accounts need nothing); nothing was sent")
    return resolve_broker(conn_id, TradingLedger(store), allow_live=args.allow_live, log=log,
                          simulated={"name": args.account, "initial_cash": args.initial_cash, **costs})


def _limited(items: Mapping[str, Any] | Sequence[str], count: int = 5) -> str:
    """A few items of a mapping (``key: value``) or list, for one line."""
    parts = [f"{k}: {v}" for k, v in items.items()] if isinstance(items, Mapping) else [str(i) for i in items]
    return "; ".join(parts[:count]) + (f"; and {len(parts) - count} more" if len(parts) > count else "")


def run_etl(args: argparse.Namespace) -> JobResult:
    """``etl``: :func:`~airflow_provider_portfolio.market.etl.load_bars` over the window the ETL operator loads
    (:func:`~airflow_provider_portfolio.market.etl.load_window`)."""
    from airflow_provider_portfolio.exceptions import InvalidInputError
    from airflow_provider_portfolio.hooks.market_data import data_sources, default_sources, validate_source_names
    from airflow_provider_portfolio.market.calendar import MarketCalendar, parse_session_date
    from airflow_provider_portfolio.market.etl import load_bars, load_window
    from airflow_provider_portfolio.market.params import parse_instant
    from airflow_provider_portfolio.market.quality import QualityRules
    from airflow_provider_portfolio.operators.etl import MAX_HISTORY_SESSIONS
    from airflow_provider_portfolio.operators.monitoring import checked_exchange
    from airflow_provider_portfolio.operators.templated import blank, maybe_json_list

    # Bad input fails here, before the store is opened or anything fetched.
    symbols = _universe(args.symbols)
    fraction = _fraction(args.max_failed_fraction, "--max-failed-fraction")
    if not 1 <= args.history_sessions <= MAX_HISTORY_SESSIONS:
        raise InvalidInputError(f"--history-sessions must be an integer from 1 to {MAX_HISTORY_SESSIONS}, got "
                                f"{args.history_sessions}")
    bounds = {name: None if blank(value) else parse_session_date(parse_instant(value, f"--{name}"), f"--{name}")
              for name, value in (("start", args.start), ("end", args.end))}
    at = _instant(args.as_of)
    exchange = checked_exchange(args.exchange)
    start, end = load_window(MarketCalendar(exchange), at, history_sessions=args.history_sessions,
                             start=bounds["start"], end=bounds["end"])
    names = validate_source_names(maybe_json_list(args.sources)) if not blank(args.sources) else default_sources()
    rules = QualityRules(max_abs_return=args.max_abs_return)
    sources = data_sources(names, exchange=exchange)
    with open_store(args.store, args.store_conn_id) as store:
        report = load_bars(store, sources, symbols, start, end, timeframe=args.timeframe, mode=args.mode,
                           exchange=exchange, rules=rules, now=at)
    summary = {**report.to_dict(), "sources": names}
    lines = [f"etl: {report.timeframe} bars of {len(symbols)} symbol(s), sessions {report.start}..{report.end} "
             f"({report.mode}), from {', '.join(names)}",
             f"  store {report.store}: {report.rows_written} row(s) written; failed: {', '.join(report.failed) or 'none'}"]
    failure = None
    if report.failed and report.failed_fraction > fraction:
        failure = (f"{len(report.failed)} of {len(symbols)} symbol(s) failed (--max-failed-fraction {fraction}; the "
                   f"others were written): {_limited({s: summary['symbols'][s]['error'] for s in report.failed})}")
    return JobResult(summary, lines, failure)


def run_forecast(args: argparse.Namespace) -> JobResult:
    """``forecast``: :func:`~airflow_provider_portfolio.forecast.jobs.forecast_universe` for each model of the
    example forecast DAG (or ``--models``), then :func:`~airflow_provider_portfolio.forecast.jobs.ensemble_universe`
    over this run's price-level models, as its ``ensemble`` task does."""
    from airflow_provider_portfolio.config import get_option
    from airflow_provider_portfolio.exceptions import InvalidInputError, PortfolioError
    from airflow_provider_portfolio.forecast.jobs import ensemble_universe, forecast_universe, resolve
    from airflow_provider_portfolio.forecast.registry import get_model, target_of
    from airflow_provider_portfolio.market.bars import parse_timeframe
    from airflow_provider_portfolio.operators.monitoring import checked_exchange
    from airflow_provider_portfolio.operators.templated import maybe_json_list

    symbols = _universe(args.symbols)
    fraction = _fraction(args.max_failed_fraction, "--max-failed-fraction")
    timeframe = parse_timeframe(args.timeframe).name
    chosen = maybe_json_list(args.models)
    names = list(dict.fromkeys(m.strip() for m in (chosen.split(",") if isinstance(chosen, str) else chosen)
                               if str(m).strip()))
    if not names:
        raise InvalidInputError(f"--models must name at least one model, got {args.models!r}")
    models = {name: get_model(name) for name in names if name != "ensemble"}  # unknown names fail here
    members = [name for name in models if target_of(name) == "log_close"]
    if "ensemble" in names and not members:
        raise InvalidInputError(f"the ensemble combines this run's price-level models; --models {args.models!r} "
                                "names none")
    device = args.device or get_option("device")
    resolved = {name: resolve(model, device) for name, model in models.items()}  # an unusable device fails here
    exchange = checked_exchange(args.exchange)
    run_id = args.run_id or f"manual__{_instant(None).isoformat()}"

    reports: dict[str, Any] = {}
    lines = [f"forecast: {len(symbols)} symbol(s), {timeframe} bars, run {run_id}"]
    failures = []
    with open_store(args.store, args.store_conn_id, create=False) as store:
        _require_bars(store, symbols, timeframe, "forecast")
        lines.append(f"  store {store.url}")
        for name in names:
            try:
                if name == "ensemble":
                    report = ensemble_universe(store, symbols, members, run_id=run_id, timeframe=timeframe)
                else:
                    model, backend = resolved[name]
                    origins = args.origins if args.origins is not None else 3 if name == "sarimax" else 10
                    report = forecast_universe(
                        store, symbols, model, run_id=run_id, timeframe=timeframe, history=args.history,
                        horizon=args.horizon, level=args.level, origins=origins, min_origins=args.min_origins,
                        exchange=exchange, device=backend)
            except PortfolioError as err:  # one model failing leaves the others (the DAG's tasks are separate)
                reports[name] = {"error": str(err)}
                failures.append(f"{name}: {err}")
                lines.append(f"  {name}: failed: {err}")
                continue
            reports[name] = report.to_dict()
            labels = ", ".join(f"{label} {count}" for label, count in sorted(
                reports[name].get("labels", {}).items())) or "no labels"
            lines.append(f"  {name}: {len(report.forecast)} forecast ({labels}); {report.forecast_rows} forecast "
                         f"and {report.evaluation_rows} evaluation row(s)"
                         + (f"; not forecast: {_limited(report.failed, 3)}" if report.failed else ""))
            if not report.forecast or report.failed_fraction > fraction:
                failures.append(f"{name}: {len(report.failed)} of {len(symbols)} symbol(s) could not be forecast "
                                f"(--max-failed-fraction {fraction}): {_limited(report.failed, 3)}")
    summary = {"run_id": run_id, "store": store.url, "symbols": symbols, "models": reports}
    return JobResult(summary, lines, "; ".join(failures) or None)


def run_trade(args: argparse.Namespace) -> JobResult:
    """``trade``: one cycle of :func:`~airflow_provider_portfolio.trading.session.trade_universe` with the example
    auto trader's settings, on the simulated broker unless ``--broker-conn-id`` names an Alpaca connection."""
    from airflow_provider_portfolio.hooks.market_data import data_sources, validate_source_names
    from airflow_provider_portfolio.market.params import json_object
    from airflow_provider_portfolio.operators.templated import blank, maybe_json_list
    from airflow_provider_portfolio.operators.trading import (
        SIMULATED,
        cycle_settings,
        simulated_costs,
        with_live_settings,
    )
    from airflow_provider_portfolio.trading.decision import AUTO_TRADER_WEIGHTS
    from airflow_provider_portfolio.trading.session import trade_universe

    # Bad input fails here, before the store is opened or anything fetched.
    symbols = _universe(args.symbols)
    limits = {**TRADER_RISK_LIMITS, **json_object(args.risk_limits, "--risk-limits",
                                                  example='{"max_order_notional": 5000}', what="risk limits")}
    weights = json_object(args.weights, "--weights", example='{"technical": 1}', what="signal -> weight")
    settings = with_live_settings(cycle_settings(
        timeframe=args.timeframe, weights=weights or AUTO_TRADER_WEIGHTS, risk_limits=limits,
        max_trades_per_day=args.max_trades_per_day, exchange=args.exchange, log=log, bar_aware=True,
        min_score=args.min_score, sizing=args.sizing, fraction=args.fraction, max_stale_bars=args.max_stale_bars,
        lock_timeout_s=args.lock_timeout), log)
    now = _instant(args.as_of)
    names = validate_source_names(maybe_json_list(args.sources)) if not blank(args.sources) else None
    costs = simulated_costs(symbols, args.slippage_bps, args.commission_bps, log)
    conn_id = SIMULATED if blank(args.broker_conn_id) else str(args.broker_conn_id).strip()
    run_id = args.run_id or f"manual__{now.isoformat()}"
    forecast_model = None if blank(args.forecast_model) or args.forecast_model == "none" else args.forecast_model

    with open_store(args.store, args.store_conn_id, create=False) as store:
        _require_bars(store, symbols, "1Day", "trade")  # the desk's daily ETL has run for the universe
        broker = _broker(conn_id, store, args, costs)
        sources = data_sources(names, exchange=settings.exchange)
        report = trade_universe(symbols, store=store, sources=sources, broker=broker, now=now, dag_id=args.dag_id,
                                run_id=run_id, settings=settings, forecast_model=forecast_model,
                                forecast_timeframe=args.forecast_timeframe)
    summary = {**report.to_dict(), "account": broker.account, "as_of": now.isoformat(), "symbols": len(symbols),
               "dag_id": args.dag_id, "run_id": run_id, "store": store.url}
    equity = report.equity.get("equity") if isinstance(report.equity, Mapping) else None
    lines = [f"trade: cycle at {now.isoformat(timespec='seconds')} on {broker.account}, {len(symbols)} symbol(s), "
             f"{settings.timeframe} bars from {', '.join(s.name for s in sources)}",
             f"  decided {report.decided}, skipped {len(report.skipped)} (bar already decided), held {report.holds}, "
             f"risk-rejected {len(report.rejected)}, submitted {len(report.submitted)}, broker-rejected "
             f"{len(report.broker_rejected)}" + (f"; equity {equity:,.2f}" if isinstance(equity, int | float) else ""),
             f"  store {store.url}"]
    return JobResult(summary, lines, _unknown_orders(report.unknown))


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the job's full summary as one JSON object")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the job's progress to stderr")


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--store", metavar="URL", default=None,
                       help="the portfolio store: a SQLAlchemy URL (sqlite:///desk.db, "
                            "postgresql+psycopg://user@host:5432/db; give the password as PGPASSWORD rather than in "
                            "the URL) or a SQLite file's path. Default: the operators' store: the connection "
                            "[portfolio] store_conn_id when it exists (AIRFLOW_CONN_PORTFOLIO_STORE_DEFAULT), else "
                            "the SQLite file $AIRFLOW_HOME/portfolio/portfolio.db")
    where.add_argument("--store-conn-id", metavar="CONN_ID", default=None,
                       help="the store's Airflow connection (sqlite or postgres), e.g. from AIRFLOW_CONN_<CONN_ID>")


def _add_job(commands: argparse._SubParsersAction, name: str, job: Callable[[argparse.Namespace], JobResult], *,
             help: str, description: str, symbols: str = "") -> argparse.ArgumentParser:
    # No abbreviations: a script's --symbol must not be taken for --symbols.
    parser = commands.add_parser(name, help=help, description=description, allow_abbrev=False)
    _add_store_options(parser)
    parser.add_argument("--symbols", default=None,
                        help=symbols or "tickers, comma-separated or a JSON list (default: Variable "
                                        "portfolio.default_tickers, else the example DAGs' universe: "
                                        + ",".join(VARIABLES["portfolio.default_tickers"].default.split(",")) + ")")
    parser.add_argument("--exchange", default=None, help="calendar of equities (default [portfolio] default_exchange)")
    _add_output_options(parser)
    parser.set_defaults(func=_run_job, job=job)
    return parser


def _optional_float(text: str) -> float | None:
    return None if text.strip().lower() in ("none", "off", "") else float(text)


def _add_etl(commands: argparse._SubParsersAction) -> None:
    etl = _add_job(
        commands, "etl", run_etl,
        help="load clean bars of the universe into the store (the daily ETL)",
        description="Load bars for the universe through a failover chain of sources, gate them, upsert them: the "
                    "example daily ETL's job. Incremental: only the sessions the store lacks are fetched. Default "
                    "window: the 252 sessions up to the last one closed at --as-of (now).")
    etl.add_argument("--start", default=None, help="first session date (default: --history-sessions before --end)")
    etl.add_argument("--end", default=None, help="last session date (default: the last session closed at --as-of)")
    etl.add_argument("--history-sessions", type=int, default=252, help="sessions loaded without --start (252)")
    etl.add_argument("--timeframe", default="1Day", help="bar timeframe (1Day)")
    etl.add_argument("--sources", default=None,
                     help="sources in failover order, comma-separated: 'synthetic' or market-data connection ids "
                          "(AIRFLOW_CONN_<ID>). Default: alpaca_default, alphavantage_default, finnhub_default where "
                          "they exist, else the synthetic market")
    etl.add_argument("--mode", choices=("incremental", "full"), default="incremental")
    etl.add_argument("--max-failed-fraction", type=float, default=0.0,
                     help="the share of symbols that may fail before the command fails (0: any)")
    etl.add_argument("--max-abs-return", type=_optional_float, default=0.5,
                     help="the quality gate's implausible jump (0.5; 'none' turns it off)")
    etl.add_argument("--as-of", default=None, help="the instant deciding the last closed session (ISO 8601 with a "
                                                   "zone; default now)")


def _add_forecast(commands: argparse._SubParsersAction) -> None:
    forecast = _add_job(
        commands, "forecast", run_forecast,
        help="forecast the universe with the example DAG's models and their ensemble",
        description="Forecast each symbol from the store's bars with each model (the example forecast DAG's: "
                    + ", ".join(FORECAST_MODELS) + "), backtest, and write forecasts and evaluations; the "
                    "ensemble combines this run's healthy price-level models. Needs the symbols' bars in the store.")
    forecast.add_argument("--models", default=",".join(FORECAST_MODELS),
                          help="models, comma-separated, from the forecast registry; 'ensemble' runs last")
    forecast.add_argument("--timeframe", default="1Day", help="bar timeframe (1Day)")
    forecast.add_argument("--history", type=int, default=1000, help="the latest bars used per symbol (1000)")
    forecast.add_argument("--horizon", type=int, default=5, help="bars ahead (5)")
    forecast.add_argument("--level", type=float, default=0.9, help="coverage of the forecast band (0.9)")
    forecast.add_argument("--origins", type=int, default=None,
                          help="rolling origins of the backtest (10; sarimax 3, as its operator)")
    forecast.add_argument("--min-origins", type=int, default=3,
                          help="fewer origins label a symbol insufficient_data (3)")
    forecast.add_argument("--device", choices=("auto", "cuda", "cpu"), default=None,
                          help="array device of the SSA family and GARCH (default [portfolio] device)")
    forecast.add_argument("--run-id", default=None, help="the run the rows belong to; a rerun with the same id "
                                                         "replaces them (default manual__<now>)")
    forecast.add_argument("--max-failed-fraction", type=float, default=0.5,
                          help="the share of symbols a model may fail before the command fails (0.5)")


def _add_trade(commands: argparse._SubParsersAction) -> None:
    trade = _add_job(
        commands, "trade", run_trade,
        help="one trading cycle of the universe (the example auto trader's settings)",
        description="One trading cycle: signals (forecast, technical, sentiment), decisions, risk checks and "
                    "orders, each order sent at most once under a client order id derived from (--dag-id, "
                    "--run-id, symbol, bar, side). The simulated broker (its book in the store) unless "
                    "--broker-conn-id names an Alpaca connection (paper; a live account also needs --allow-live). "
                    "Kill switch, simulated costs and applied trading settings come from the portfolio.* "
                    "Variables where set (AIRFLOW_VAR_*). Needs the universe's daily bars in the store.")
    trade.add_argument("--timeframe", default=TRADER_TIMEFRAME, help=f"the bars decided on ({TRADER_TIMEFRAME})")
    trade.add_argument("--sources", default=None,
                       help="market-data sources, comma-separated: 'synthetic' or connection ids (default: the "
                            "default data connections that exist, else the synthetic market)")
    trade.add_argument("--broker-conn-id", default=None,
                       help="an Alpaca connection id (AIRFLOW_CONN_<ID>); default: the simulated broker")
    trade.add_argument("--allow-live", action="store_true",
                       help="let a LIVE Alpaca account trade (never the default; paper accounts need nothing)")
    trade.add_argument("--account", default="default", help="the simulated book's name (simulated:<name>)")
    trade.add_argument("--initial-cash", type=float, default=100_000.0, help="cash of a new simulated book")
    trade.add_argument("--slippage-bps", type=float, default=None,
                       help="the simulated broker's slippage (default: Variable portfolio.simulated_costs, else 5)")
    trade.add_argument("--commission-bps", type=float, default=None,
                       help="the simulated broker's commission (default: Variable portfolio.simulated_costs, else 0)")
    trade.add_argument("--risk-limits", default=None,
                       help="JSON object of risk limits laid over the example trader's: "
                            + json.dumps(TRADER_RISK_LIMITS))
    trade.add_argument("--max-trades-per-day", type=int, default=TRADER_MAX_TRADES_PER_DAY,
                       help=f"orders per trading day, all symbols ({TRADER_MAX_TRADES_PER_DAY})")
    trade.add_argument("--weights", default=None,
                       help='JSON object signal -> weight (default {"forecast": 0.6, "technical": 0.25, '
                            '"sentiment": 0.15})')
    trade.add_argument("--min-score", type=float, default=0.1, help="the smallest |combined score| traded (0.1)")
    trade.add_argument("--sizing", choices=("fixed_fraction", "volatility"), default="fixed_fraction")
    trade.add_argument("--fraction", type=float, default=0.05,
                       help="target position as a fraction of equity at full score (0.05)")
    trade.add_argument("--max-stale-bars", type=int, default=2,
                       help="how many bars a symbol's data may lag its calendar (2)")
    trade.add_argument("--forecast-model", default="ensemble",
                       help="the stored model feeding the forecast signal ('none': no forecast signal)")
    trade.add_argument("--forecast-timeframe", default="1Day", help="the timeframe of those forecasts (1Day)")
    trade.add_argument("--as-of", default=None, help="the cycle's instant (ISO 8601 with a zone; default now)")
    trade.add_argument("--dag-id", default=CLI_DAG_ID,
                       help=f"the deciding job's name, part of every client order id ({CLI_DAG_ID})")
    trade.add_argument("--run-id", default=None,
                       help="this run (a rerun with the same id never doubles an order; default manual__<as-of>)")
    trade.add_argument("--lock-timeout", type=float, default=120.0,
                       help="seconds to wait for the account's lock held by another cycle (120)")


def run_discover(args: argparse.Namespace) -> JobResult:
    """``discover``: :func:`~airflow_provider_portfolio.desk.discovery.discover` over the store's universe (or
    ``--symbols``), the ranking stored in ``opportunities``."""
    from airflow_provider_portfolio.desk.discovery import check_weights, discover
    from airflow_provider_portfolio.market.params import json_object, validate_symbols
    from airflow_provider_portfolio.operators.monitoring import checked_exchange
    from airflow_provider_portfolio.operators.templated import blank, maybe_json_list

    symbols = None if blank(args.symbols) else validate_symbols(maybe_json_list(args.symbols))
    weights = json_object(args.weights, "--weights", example='{"trend": 2, "volatility": -0.5}',
                          what="component -> weight") or None
    check_weights(weights)
    exchange = checked_exchange(args.exchange)
    now = _instant(args.as_of)
    with open_store(args.store, args.store_conn_id, create=False) as store:
        result = discover(store, symbols, now=now, timeframe=args.timeframe, lookback=args.lookback,
                          min_bars=args.min_bars, top_n=args.top_n, weights=weights, n_factors=args.factors,
                          n_states=args.states, exchange=exchange, max_stale_bars=args.max_stale_bars,
                          run_id=args.run_id or None, dag_id=args.dag_id)
    summary = {**result.to_dict(), "store": store.url}
    lines = [f"discover: ranked {len(result.ranking)} of {result.scored} scored symbol(s) on {result.params.get('timeframe')}"
             f" bars at {result.ts.isoformat(timespec='seconds')}; {result.stored} row(s) stored as run "
             f"{result.run_id}"]
    for row in summary["top"][:5]:
        lines.append(f"  {row['rank']}. {row['symbol']} score {row['score']:+.2f} ({row['regime']}): "
                     + "; ".join(row["reasons"][:2]))
    if result.skipped:
        lines.append(f"  left out {len(result.skipped)}: {_limited(result.skipped, 3)}")
    lines.append(f"  store {store.url}")
    return JobResult(summary, lines)


def run_rebalance(args: argparse.Namespace) -> JobResult:
    """``rebalance``: :func:`~airflow_provider_portfolio.trading.rebalance.rebalance` with the example rebalance DAG's
    settings, on the simulated broker (its own book) unless ``--broker-conn-id`` names an Alpaca connection."""
    import functools

    from airflow_provider_portfolio.market.params import json_object, validate_symbols
    from airflow_provider_portfolio.operators.monitoring import checked_exchange, desk_symbols
    from airflow_provider_portfolio.operators.templated import blank, maybe_json_list
    from airflow_provider_portfolio.operators.trading import SIMULATED, read_kill_switch, simulated_costs
    from airflow_provider_portfolio.trading.rebalance import check_given_weights, check_method, rebalance
    from airflow_provider_portfolio.trading.risk import RiskLimits

    # Bad input fails here, before the store is opened or anything sent.
    method = check_method(args.method)
    if not blank(args.symbols):
        symbols: list[str] | None = validate_symbols(maybe_json_list(args.symbols))
    else:
        symbols = desk_symbols(None) if method in ("equal", "inverse_volatility") else None
    weights = json_object(args.weights, "--weights", example='{"SPY": 0.6, "QQQ": 0.3, "CASH": 0.1}',
                          what="symbol -> weight") if not blank(args.weights) else None
    if method == "given":
        check_given_weights(weights)
    limits = RiskLimits.from_dict({**REBALANCE_RISK_LIMITS, **json_object(
        args.risk_limits, "--risk-limits", example='{"max_order_notional": 5000}', what="risk limits")})
    exchange = checked_exchange(args.exchange)
    now = _instant(args.as_of)
    costs = simulated_costs(symbols or list(weights or {}), args.slippage_bps, args.commission_bps, log)
    conn_id = SIMULATED if blank(args.broker_conn_id) else str(args.broker_conn_id).strip()
    run_id = args.run_id or f"manual__{now.isoformat()}"

    with open_store(args.store, args.store_conn_id, create=False) as store:
        broker = _broker(conn_id, store, args, costs)
        report = rebalance(
            store, broker, now=now, dag_id=args.dag_id, run_id=run_id, method=method, symbols=symbols,
            weights=weights, top_n=args.top_n, weighting=args.weighting, lookback=args.lookback, cash=args.cash,
            drift_threshold=args.drift_threshold, limits=limits, kill_switch=functools.partial(read_kill_switch, log),
            exchange=exchange, max_stale_bars=args.max_stale_bars, lock_timeout_s=args.lock_timeout)
    summary = {**report.to_dict(), "dag_id": args.dag_id, "run_id": run_id, "store": store.url}
    lines = [f"rebalance ({method}) of {report.account} at {now.isoformat(timespec='seconds')}: largest drift "
             f"{report.max_drift:.2%} (threshold {report.drift_threshold:.2%})"
             + ("" if report.triggered else ": within the threshold, nothing sent"),
             f"  proposed {len(report.orders)}, risk-rejected {len(report.rejected)}, submitted "
             f"{len(report.submitted)}, broker-rejected {len(report.broker_rejected)}"
             + (f"; not traded: {_limited(report.errors, 3)}" if report.errors else ""),
             f"  store {store.url}"]
    return JobResult(summary, lines, _unknown_orders(report.unknown))


def _unknown_orders(unknown: Mapping[str, Any]) -> str | None:
    """The failure of a job that left orders in an unknown state (``None`` when it left none)."""
    if not unknown:
        return None
    return (f"{len(unknown)} order(s) in an unknown state ({_limited(unknown)}); everything else is recorded. Run "
            "the same command with the same --dag-id and --run-id: it looks these orders up by client order id "
            "before sending anything")


def run_report(args: argparse.Namespace) -> JobResult:
    """``report``: :func:`~airflow_provider_portfolio.desk.report.build_report`, written by
    :func:`~airflow_provider_portfolio.desk.report.write_report` into ``--out`` (a folder or fsspec URL), or, for a
    path ending in ``.html``, to that file with the headline PNG beside it."""
    from airflow_provider_portfolio.desk.monitoring import THRESHOLDS_VARIABLE, HealthThresholds
    from airflow_provider_portfolio.desk.report import build_report, write_report
    from airflow_provider_portfolio.operators.monitoring import checked_exchange
    from airflow_provider_portfolio.operators.report import default_report_dir
    from airflow_provider_portfolio.operators.templated import blank
    from airflow_provider_portfolio.variables import get_variable

    # Bad input fails here, before the store is opened or anything written.
    symbols = _universe(args.symbols)
    exchange = checked_exchange(args.exchange)
    thresholds = HealthThresholds.from_mapping(get_variable(THRESHOLDS_VARIABLE))
    now = _instant(args.as_of)
    out = os.fspath(args.out).strip() if not blank(args.out) else default_report_dir()
    with open_store(args.store, args.store_conn_id, create=False) as store:
        report = build_report(store, now=now, period=args.period, account=args.account, symbols=symbols,
                              timeframe=args.timeframe, exchange=exchange, decisions_limit=args.decisions_limit,
                              history_days=args.history_days, thresholds=thresholds, title=args.title)
    written = _write_report_to(report, out, write_report)
    summary = {**report.summary, "written": written, "store": store.url}
    equity = report.summary.get("equity")
    lines = [f"report ({report.period}) of {report.account} at {report.now.isoformat(timespec='seconds')}: "
             + ("the store holds no book yet" if report.summary.get("empty") else
                f"equity {equity:,.2f}" if isinstance(equity, int | float) else "no equity yet")
             + f"; {report.summary.get('positions', 0)} position(s), {report.summary.get('decisions', 0)} decision(s)",
             f"  written: {written['html']}", f"           {written['headline_png']}"]
    return JobResult(summary, lines)


def _write_report_to(report: Any, out: str, write_report: Callable[..., dict[str, str]]) -> dict[str, str]:
    """``write_report(report, out)``; for a local ``out`` ending in ``.html``: written into a new folder beside it,
    then each file renamed into place (``out``, and ``<out stem>-headline.png``), the folder removed.

    :raises InvalidInputError: for a destination that cannot be written (nothing of this report is left there).
    """
    import shutil
    import tempfile
    from pathlib import Path

    from airflow_provider_portfolio.exceptions import InvalidInputError

    if not out.lower().endswith(".html"):
        return write_report(report, out)
    if "://" in out:
        raise InvalidInputError(f"--out {out!r}: a URL names a folder (the report's files get their own names); "
                                "a file name ending in .html is for a local path")
    target = Path(out).expanduser().resolve()
    png = target.with_name(f"{target.stem}-headline.png")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.stem}-", dir=target.parent))
    except OSError as err:
        raise InvalidInputError(f"--out {out!r} cannot be written: {err}") from None
    try:
        written = write_report(report, str(staging))
        os.replace(written["headline_png"], png)
        os.replace(written["html"], target)
    except OSError as err:
        png.unlink(missing_ok=True)
        raise InvalidInputError(f"--out {out!r} cannot be written: {err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"html": str(target), "headline_png": str(png)}


def _add_discover(commands: argparse._SubParsersAction) -> None:
    discover = _add_job(
        commands, "discover", run_discover,
        help="rank the universe's opportunities from the stored bars",
        description="Score every symbol of the universe from the store's closed bars (technical signal, trend, "
                    "momentum, volatility, PCA factor exposures, market-state regime), rank them and store the "
                    "ranking with its reasons in the store's opportunities.",
        symbols="tickers, comma-separated or a JSON list (default: every symbol with bars of --timeframe in the "
                "store)")
    discover.add_argument("--timeframe", default="1Day", help="the bars ranked on (1Day)")
    discover.add_argument("--lookback", type=int, default=252, help="calendar bars in the window (252)")
    discover.add_argument("--min-bars", type=int, default=63,
                          help="the fewest bars of its own a symbol needs in the window (63)")
    discover.add_argument("--top-n", type=int, default=None, help="store only the best N (default: all)")
    discover.add_argument("--weights", default=None, help="JSON object component -> weight over the defaults")
    discover.add_argument("--factors", type=int, default=3, help="PCA factors (3)")
    discover.add_argument("--states", type=int, choices=(2, 3), default=2, help="regime model states (2)")
    discover.add_argument("--max-stale-bars", type=int, default=5,
                          help="how many calendar bars a symbol's last bar may lag the universe's (5)")
    discover.add_argument("--as-of", default=None, help="rank on the bars closed by then (ISO 8601 with a zone; "
                                                        "default now)")
    discover.add_argument("--dag-id", default=CLI_DAG_ID, help=f"the job named with the ranking ({CLI_DAG_ID})")
    discover.add_argument("--run-id", default=None,
                          help="the run the ranking is stored under; a rerun replaces it (default discovery__<as-of>)")


def _add_rebalance(commands: argparse._SubParsersAction) -> None:
    rebalance = _add_job(
        commands, "rebalance", run_rebalance,
        help="bring the book back to its target weights (the example rebalance DAG's settings)",
        description="Target weights (inverse volatility by default; equal, the discovery ranking or given), and, "
                    "when a weight drifts past --drift-threshold, the orders back to them through the trader's "
                    "exactly-once order path and risk limits. The simulated broker (book simulated:rebalance) "
                    "unless --broker-conn-id names an Alpaca connection (paper; a live account also needs "
                    "--allow-live). Needs the universe's daily bars in the store.",
        symbols="tickers, comma-separated or a JSON list (default: for equal and inverse_volatility, Variable "
                "portfolio.default_tickers else the example DAGs' universe; for discovery the ranking; for given the "
                "weights' symbols)")
    rebalance.add_argument("--method", choices=("equal", "inverse_volatility", "discovery", "given"),
                           default="inverse_volatility")
    rebalance.add_argument("--weights", default=None,
                           help='given: JSON object symbol -> weight summing to 1, e.g. {"SPY": 0.6, "CASH": 0.4}')
    rebalance.add_argument("--top-n", type=int, default=None, help="discovery: how many of the best ranked (10)")
    rebalance.add_argument("--weighting", choices=("equal", "score"), default="equal",
                           help="discovery: equal weights or proportional to the scores")
    rebalance.add_argument("--lookback", type=int, default=60,
                           help="inverse_volatility: daily log returns looked at (60)")
    rebalance.add_argument("--cash", type=float, default=None,
                           help="the part of equity left in cash (0.02; not with given)")
    rebalance.add_argument("--drift-threshold", type=float, default=0.05,
                           help="the largest per-symbol drift left alone, weight points (0.05)")
    rebalance.add_argument("--risk-limits", default=None,
                           help="JSON object of risk limits laid over the example's: "
                                + json.dumps(REBALANCE_RISK_LIMITS))
    rebalance.add_argument("--broker-conn-id", default=None,
                           help="an Alpaca connection id (AIRFLOW_CONN_<ID>); default: the simulated broker")
    rebalance.add_argument("--allow-live", action="store_true",
                           help="let a LIVE Alpaca account trade (never the default; paper accounts need nothing)")
    rebalance.add_argument("--account", default="rebalance",
                           help="the simulated book's name (simulated:<name>; default rebalance, a book of its own)")
    rebalance.add_argument("--initial-cash", type=float, default=100_000.0, help="cash of a new simulated book")
    rebalance.add_argument("--slippage-bps", type=float, default=None,
                           help="the simulated broker's slippage (default: Variable portfolio.simulated_costs, else 5)")
    rebalance.add_argument("--commission-bps", type=float, default=None,
                           help="the simulated commission (default: Variable portfolio.simulated_costs, else 0)")
    rebalance.add_argument("--max-stale-bars", type=int, default=2,
                           help="how many daily bars a symbol's data may lag before it is not traded (2)")
    rebalance.add_argument("--as-of", default=None, help="the instant (ISO 8601 with a zone; default now)")
    rebalance.add_argument("--dag-id", default=CLI_DAG_ID,
                           help=f"the deciding job's name, part of every client order id ({CLI_DAG_ID})")
    rebalance.add_argument("--run-id", default=None,
                           help="this run (a rerun with the same id sends nothing twice; default manual__<as-of>)")
    rebalance.add_argument("--lock-timeout", type=float, default=120.0,
                           help="seconds to wait for the account's lock held by another cycle (120)")


def _add_report(commands: argparse._SubParsersAction) -> None:
    report = _add_job(
        commands, "report", run_report,
        help="write the desk's self-contained HTML report and its headline PNG",
        description="Build the desk's report from the store (equity and drawdown, positions and exposure, P&L by "
                    "symbol, forecast health, data freshness, recent decisions) and write the HTML page and the "
                    "headline chart's PNG.",
        symbols="the universe whose data freshness and forecast health are shown (default: Variable "
                "portfolio.default_tickers, else the example DAGs' universe)")
    report.add_argument("--out", default=None,
                        help="a folder or fsspec URL (files portfolio-report-<period>-<date>.html and "
                             "...-headline.png), or a file path ending in .html (the PNG beside it as "
                             "<name>-headline.png). Default: $AIRFLOW_HOME/portfolio/reports")
    report.add_argument("--period", choices=("daily", "weekly"), default="daily")
    report.add_argument("--account", default="simulated:default",
                        help="the ledger account reported (simulated:default: the trader's simulated book; "
                             "alpaca:<conn_id>)")
    report.add_argument("--timeframe", default="1Day", help="the bars and model evaluations judged (1Day)")
    report.add_argument("--history-days", type=int, default=90, help="days of equity charted (90)")
    report.add_argument("--decisions-limit", type=int, default=50, help="the most decisions listed (50)")
    report.add_argument("--title", default=None, help="the page's title")
    report.add_argument("--as-of", default=None, help="the report's instant (ISO 8601 with a zone; default now)")


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_setup, _add_restore_store, _add_copy_store,
                                                                 _add_etl, _add_forecast, _add_trade, _add_discover,
                                                                 _add_rebalance, _add_report]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status.

    :param argv: the arguments after the program name (default ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    return args.func(args)
