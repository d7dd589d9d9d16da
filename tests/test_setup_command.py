"""``python -m airflow_provider_portfolio setup``: pools and Variables created once, never overwritten; connections
listed with the command that adds them."""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
import sys

import pytest

from airflow_provider_portfolio import cli, config
from airflow_provider_portfolio.pools import DEFAULT_POOL, GPU_POOL, POOLS
from airflow_provider_portfolio.variables import VARIABLES
from tests.airflow.realairflow import BIN, REPO, airflow_env, run_airflow


def test_parser_dispatches_to_setup_and_requires_a_command(capsys):
    args = cli.build_parser().parse_args(["setup", "--dry-run"])
    assert args.func is cli._setup and args.dry_run is True
    assert cli.build_parser().parse_args(["setup"]).dry_run is False
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    assert exit_.value.code == 2
    assert "setup" in capsys.readouterr().err


def test_importing_the_cli_imports_no_airflow():
    code = "import sys, airflow_provider_portfolio.cli, airflow_provider_portfolio.__main__; " \
           "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_connections_are_the_providers_with_commands_that_parse():
    from airflow_provider_portfolio.get_provider_info import CONNECTION_TYPES
    from airflow_provider_portfolio.hooks.alpaca import AlpacaHook
    from airflow_provider_portfolio.hooks.alphavantage import AlphaVantageHook
    from airflow_provider_portfolio.hooks.finnhub import FinnhubHook
    from airflow_provider_portfolio.hooks.store import PortfolioStoreHook

    specs = {spec.conn_id: spec for spec in cli.provider_connections()}
    hooks = (AlpacaHook, AlphaVantageHook, FinnhubHook)
    assert list(specs) == [*(h.default_conn_name for h in hooks), PortfolioStoreHook.default_conn_name]
    types = {entry["connection-type"] for entry in CONNECTION_TYPES}
    for hook in hooks:
        argv = shlex.split(specs[hook.default_conn_name].command)
        assert argv[:4] == ["airflow", "connections", "add", hook.default_conn_name]
        assert argv[argv.index("--conn-type") + 1] == hook.conn_type and hook.conn_type in types
        assert argv[argv.index("--conn-password") + 1].startswith("<")  # a placeholder, never a value
    alpaca = shlex.split(specs["alpaca_default"].command)
    assert json.loads(alpaca[alpaca.index("--conn-extra") + 1]) == {"paper": True}
    store = shlex.split(specs["portfolio_store_default"].command)
    assert store[store.index("--conn-type") + 1] == "postgres"


def test_store_and_notification_connections_follow_the_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__STORE_CONN_ID", "desk_store")
    for option in cli.NOTIFY_CONNECTIONS:
        monkeypatch.delitem(config.OPTIONS, option, raising=False)
    assert [s.conn_id for s in cli.provider_connections()][-1] == "desk_store"  # options not declared: skipped

    monkeypatch.setitem(config.OPTIONS, "notify_smtp_conn_id", ("", "SMTP connection"))
    monkeypatch.setitem(config.OPTIONS, "notify_slack_conn_id", ("", "Slack connection"))
    monkeypatch.setenv("AIRFLOW__PORTFOLIO__NOTIFY_SMTP_CONN_ID", "desk_smtp")
    specs = cli.provider_connections()
    assert [s.conn_id for s in specs][-2:] == ["desk_store", "desk_smtp"]  # slack declared but unset: skipped
    assert "--conn-type smtp" in specs[-1].command and "notify_smtp_conn_id" in specs[-1].purpose


# ---- a real Airflow ---------------------------------------------------------------------------------------------


def setup_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airflow_provider_portfolio", "setup", *args], env=env,
                          cwd=env["AIRFLOW_HOME"], capture_output=True, text=True, timeout=300)


def airflow_together(env: dict[str, str], *commands: tuple[str, ...]) -> list[str]:
    """Run ``airflow`` commands side by side (each writes at most one short transaction); their stdout, in order."""
    procs = [subprocess.Popen([str(BIN / "airflow"), *args], env=env, cwd=env["AIRFLOW_HOME"], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in commands]
    outs = []
    for args, proc in zip(commands, procs):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"airflow {' '.join(args)}: {err[-3000:]}"
        outs.append(out)
    return outs


def json_line(out: str) -> list[dict]:
    """The JSON an ``airflow ... -o json`` command prints (Airflow 3.3 logs to stdout too: the JSON is one line)."""
    return json.loads([line for line in out.splitlines() if line.startswith("[")][-1])


def state(env: dict[str, str], *more: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """``airflow pools list -o json`` and ``airflow variables list -o json``, parsed (and ``more`` commands run)."""
    pools, variables, *_ = airflow_together(env, ("pools", "list", "-o", "json"), ("variables", "list", "-o", "json"),
                                            *more)
    return json_line(pools), json_line(variables)


def dagbag_pools() -> dict[str, str]:
    """``dag_id.task_id`` -> pool of every task of the example DAGs and the test DAGs."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag
    pools: dict[str, str] = {}
    for folder in (REPO / "example_dags", REPO / "tests" / "dags"):
        bag = DagBag(dag_folder=str(folder))
        assert bag.import_errors == {}
        pools.update({f"{d.dag_id}.{t.task_id}": t.pool for d in bag.dags.values() for t in d.tasks})
    return pools


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_setup_twice_in_a_fresh_airflow_creates_once_and_keeps_what_a_user_set(tmp_path):
    home = tmp_path / "home"
    env = airflow_env(home, AIRFLOW_CONN_FINNHUB_DEFAULT=json.dumps({"conn_type": "finnhub", "password": "k" * 16}))
    run_airflow(env, "db", "migrate")
    # What a user set before: a pool's slots and one Variable.
    airflow_together(env, ("pools", "set", GPU_POOL, "3", "three GPUs"),
                     ("variables", "set", "portfolio.kill_switch", "halted"))

    dry = setup_command(env, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    first = setup_command(env)
    assert first.returncode == 0, first.stderr[-3000:]
    after_first = state(env)
    second = setup_command(env)
    assert second.returncode == 0, second.stderr[-3000:]
    exported = home / "variables.json"
    assert state(env, ("variables", "export", str(exported))) == after_first

    others = [name for name in POOLS if name != GPU_POOL]
    new_variables = [name for name in VARIABLES if name != "portfolio.kill_switch"]
    for name in [*others, *new_variables]:
        assert f"would create: {name} " in dry.stdout and f"  created: {name} " in first.stdout  # dry wrote nothing
        assert f"exists, left alone: {name}\n" in second.stdout
    for out in (dry.stdout, first.stdout, second.stdout):
        assert f"exists, left alone: {GPU_POOL}\n" in out and "exists, left alone: portfolio.kill_switch\n" in out
    assert "Created 0 pool(s) and 0 Variable(s)" in second.stdout and "created:" not in second.stdout

    pools = {p["pool"]: p for p in after_first[0]}
    assert set(pools) == {DEFAULT_POOL, *POOLS}
    assert (pools[GPU_POOL]["slots"], pools[GPU_POOL]["description"]) == ("3", "three GPUs")
    for name in others:
        assert int(pools[name]["slots"]) == POOLS[name].slots
        assert pools[name]["description"] == POOLS[name].description
    assert {v["key"] for v in after_first[1]} == set(VARIABLES)
    values = {k: v["value"] if isinstance(v, dict) else v for k, v in json.loads(exported.read_text()).items()}
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}  # export decodes JSON
    assert values == {**{k: s.default for k, s in VARIABLES.items()}, "portfolio.kill_switch": "halted"}

    # Connections: each missing one with its command; finnhub_default (set in the environment) is present.
    for conn_id in ("alpaca_default", "alphavantage_default", "portfolio_store_default"):
        assert f"missing: {conn_id} - " in second.stdout
        assert f"    airflow connections add {conn_id} --conn-type " in second.stdout
    assert "missing: finnhub_default" not in second.stdout and "present: finnhub_default" in second.stdout
    assert "k" * 16 not in first.stdout + first.stderr

    # Every task of the example and test DAGs asks for a pool that now exists.
    unknown = {task: pool for task, pool in dagbag_pools().items() if pool not in pools}
    assert unknown == {}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_setup_without_a_migrated_database_says_so_and_writes_nothing(tmp_path):
    home = tmp_path / "home"
    result = setup_command(airflow_env(home))
    assert result.returncode == 1
    assert "airflow db migrate" in result.stderr and "Nothing was written" in result.stderr
    with sqlite3.connect(home / "airflow.db") as con:
        assert con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []
