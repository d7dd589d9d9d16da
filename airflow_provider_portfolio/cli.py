"""The provider's command line: ``python -m airflow_provider_portfolio <command>``.

One subcommand per job; each is a small function that turns arguments into one call. Commands:

- ``setup [--dry-run]``: create the provider's pools (:data:`~airflow_provider_portfolio.pools.POOLS`) and
  ``portfolio.*`` Variables (:data:`~airflow_provider_portfolio.variables.VARIABLES`) that are missing, and print
  each connection the provider can use that is missing with the ``airflow connections add`` command that adds it.
  It never changes a pool or a Variable that exists, so running it twice leaves the same state. It runs where
  the ``airflow`` CLI runs (the metadata database reachable).
- ``restore-store --store URL|PATH [--backup FILE] [--backup-dir DIR] [--force]``: restore a corrupt SQLite store
  from its last good backup (:func:`~airflow_provider_portfolio.store.maintenance.restore_store`), keeping the
  corrupt file as ``<store>.corrupt-<stamp>``; a sound store is only overwritten with ``--force``. Needs no Airflow.

Airflow is imported inside the commands: ``--help`` costs nothing.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from airflow_provider_portfolio.pools import POOLS
from airflow_provider_portfolio.variables import VARIABLES

PROG = "python -m airflow_provider_portfolio"


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
    parser = argparse.ArgumentParser(prog=PROG, description="Commands of the airflow-provider-portfolio provider.")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(commands)
    return parser


def _add_setup(commands: argparse._SubParsersAction) -> None:
    setup = commands.add_parser(
        "setup",
        help="create the missing pools and portfolio.* Variables; list the missing connections",
        description="Create the provider's pools and portfolio.* Variables that are missing (never changes one that "
                    "exists) and print each missing connection with the command that adds it. Idempotent.",
    )
    setup.add_argument("--dry-run", action="store_true", help="print what would be created; write nothing")
    setup.set_defaults(func=_setup)


def _restore_store(args: argparse.Namespace) -> int:
    from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
    from airflow_provider_portfolio.store import PortfolioStore
    from airflow_provider_portfolio.store.maintenance import restore_store

    try:
        store = PortfolioStore(args.store) if "://" in args.store else PortfolioStore.for_sqlite_file(args.store)
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
        "restore-store",
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


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_setup, _add_restore_store]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status.

    :param argv: the arguments after the program name (default ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    return args.func(args)
