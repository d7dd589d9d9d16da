"""``airflow-portfolio`` runs the desk from a shell: etl -> forecast -> trade -> discover -> rebalance -> report as
real subprocesses on ``sqlite:///<tmp>/desk.db`` with ``AIRFLOW_HOME`` an empty folder (no ``airflow db migrate``,
no scheduler), the store's rows checked after each; bad input exits non-zero with one clear line on stderr and
writes nothing; vendor connections come from ``AIRFLOW_CONN_*`` (in-process, HTTP mocked)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import airflow  # noqa: F401  (imported before the in-process commands, as in any Airflow process)
import pytest

from airflow_provider_portfolio import cli
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.variables import DEFAULT_TICKERS
from tests.store.helpers import make_bars
from tests.vendorkeys import ALPACA_KEY_ID, ALPACA_SECRET, FINNHUB_KEY

FIXTURES = Path(__file__).resolve().parent / "hooks" / "fixtures"
FH_CANDLE = "https://finnhub.io/api/v1/stock/candle"
#: A Tuesday, 11:00 New York (NYSE open): every step decides as it would have then, whatever the clock says.
AS_OF = "2025-03-04T16:00:00+00:00"
_script = Path(sys.executable).with_name("airflow-portfolio")
CLI = [str(_script)] if _script.exists() else [sys.executable, "-m", "airflow_provider_portfolio"]


def run(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a fresh process: AIRFLOW_HOME an empty folder, no AIRFLOW_* settings, connections or Variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(home)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def rows(db: Path, sql: str, *params: object) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def summary(done: subprocess.CompletedProcess) -> dict:
    """The ``--json`` summary: stdout is that one line and nothing else."""
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "airflow-home"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _root_logger_kept():
    """In-process commands route the root logger to stderr at WARNING: give it back as it was."""
    root = logging.getLogger()
    level, streams = root.level, {h: getattr(h, "stream", None) for h in root.handlers}
    yield
    root.setLevel(level)
    for handler, stream in streams.items():
        if stream is not None and isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)


def test_the_desk_runs_from_a_shell(tmp_path, home):
    db = tmp_path / "desk.db"
    store = ["--store", f"sqlite:///{db}"]

    # etl: the example DAG's universe and window (252 sessions up to the last one closed at --as-of).
    done = run("etl", *store, "--as-of", AS_OF, home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == ("etl: 1Day bars of 12 symbol(s), sessions 2024-02-29..2025-03-03 "
                                           "(incremental), from synthetic")
    assert "Traceback" not in done.stderr
    counts = dict(rows(db, "SELECT symbol, count(*) FROM bars WHERE timeframe = '1Day' GROUP BY symbol"))
    assert set(counts) == set(DEFAULT_TICKERS)
    assert {counts[s] for s in DEFAULT_TICKERS if s != "BTC/USD"} == {252}
    assert counts["BTC/USD"] == 369  # every day from 2024-02-29 to 2025-03-03
    assert f"{sum(counts.values())} row(s) written" in done.stdout
    assert list(home.glob("portfolio/*.db")) == []  # --store was used, not the embedded store

    # forecast: the example DAG's five models, then their ensemble, under one run id.
    done = run("forecast", *store, "--run-id", "cli-run", "--json", home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    models = summary(done)["models"]
    assert list(models) == list(cli.FORECAST_MODELS)
    stored = dict(rows(db, "SELECT model, count(DISTINCT symbol) FROM forecasts WHERE run_id = 'cli-run' "
                           "GROUP BY model"))
    assert {m: stored.get(m) for m in models if m != "ensemble"} == {m: 12 for m in models if m != "ensemble"}
    # the ensemble forecasts the symbols with a healthy member; every symbol gets its evaluation
    assert stored.get("ensemble") == models["ensemble"]["labels"]["healthy"] > 0
    assert rows(db, "SELECT count(*) FROM model_evaluations WHERE run_id = 'cli-run' AND model = 'ensemble'") == [
        (12,)]
    assert rows(db, "SELECT count(*) FROM forecasts WHERE run_id = 'cli-run' AND model = 'ssa'") == [(12 * 5,)]

    # trade: one cycle of the example auto trader on the simulated broker at --as-of.
    trade = ("trade", *store, "--as-of", AS_OF, "--json")
    done = run(*trade, home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cycle = summary(done)
    assert (cycle["account"], cycle["dag_id"], cycle["run_id"]) == (
        "simulated:default", "airflow-portfolio", f"manual__{AS_OF}")
    decisions = rows(db, "SELECT count(*) FROM trading_decisions WHERE dag_id = 'airflow-portfolio'")[0][0]
    orders = rows(db, "SELECT client_order_id FROM orders WHERE account = 'simulated:default'")
    assert decisions == cycle["decided"] == 12
    assert len(orders) == cycle["submitted"] == 2  # the synthetic market at AS_OF
    assert rows(db, "SELECT count(*) FROM equity_curve WHERE account = 'simulated:default'") == [(1,)]
    # The same command again is a retry of the same run (the run id comes from --as-of): it carries out what the
    # first try decided and finds its orders at the broker; nothing is sent twice.
    done = run(*trade, home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = summary(done)
    assert (again["decided"], again["submitted"], again["unknown"]) == (12, 2, {})
    assert rows(db, "SELECT client_order_id FROM orders WHERE account = 'simulated:default'") == orders
    assert rows(db, "SELECT count(*) FROM trading_decisions WHERE dag_id = 'airflow-portfolio'") == [(12,)]

    # discover: the store's universe ranked, the ranking stored.
    done = run("discover", *store, "--as-of", AS_OF, "--json", home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ranking = summary(done)
    ranked = rows(db, "SELECT rank, symbol FROM opportunities WHERE run_id = ? ORDER BY rank", ranking["run_id"])
    assert len(ranked) == ranking["stored"] == ranking["ranked"] == 12
    assert ranked[0] == (1, ranking["top"][0]["symbol"]) and [r for r, _ in ranked] == list(range(1, 13))

    # rebalance: the example DAG's inverse-volatility targets on a book of its own: the empty book buys.
    done = run("rebalance", *store, "--as-of", AS_OF, "--json", home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    plan = summary(done)
    assert plan["account"] == "simulated:rebalance" and plan["triggered"] is True
    assert abs(sum(plan["targets"].values()) - 0.98) < 1e-5  # 2% left in cash (weights rounded to 1e-6)
    sent = rows(db, "SELECT side FROM orders WHERE account = 'simulated:rebalance'")
    assert len(sent) == plan["submitted"] >= 10 and {s for (s,) in sent} == {"buy"}

    # report: one HTML file and its headline PNG where --out says.
    out = tmp_path / "reports" / "desk.html"
    done = run("report", *store, "--as-of", AS_OF, "--out", str(out), home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = out.read_text(encoding="utf-8")
    assert "<svg" in page and "simulated:default" in page
    png = out.with_name("desk-headline.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["desk-headline.png", "desk.html"]  # nothing else
    assert f"written: {out}" in done.stdout


def test_the_etl_window_is_the_one_the_operator_loads():
    """``load_window``, shared by the ETL operator and ``etl``: hand-checked on the NYSE calendar."""
    import pandas as pd

    from airflow_provider_portfolio.exceptions import InvalidInputError
    from airflow_provider_portfolio.market.calendar import MarketCalendar
    from airflow_provider_portfolio.market.etl import load_window

    nyse = MarketCalendar("XNYS")
    day = pd.Timestamp
    # 11:00 New York on Tuesday 2025-03-04: Monday's session is the last closed; 252 sessions back is 2024-02-29.
    assert load_window(nyse, day(AS_OF), history_sessions=252) == (day("2024-02-29"), day("2025-03-03"))
    # after Tuesday's 16:00 close, Tuesday is
    assert load_window(nyse, day("2025-03-04T21:00:00+00:00"), history_sessions=1) == (day("2025-03-04"),) * 2
    # given an end, no instant is needed: 5 sessions to 2024-07-05 skip Independence Day
    assert load_window(nyse, None, history_sessions=5, end="2024-07-05") == (day("2024-06-28"), day("2024-07-05"))
    assert load_window(nyse, day(AS_OF), history_sessions=5, start="2025-01-02") == (day("2025-01-02"),
                                                                                      day("2025-03-03"))
    with pytest.raises(InvalidInputError, match="history_sessions must be an integer >= 1, got 0"):
        load_window(nyse, day(AS_OF), history_sessions=0)
    with pytest.raises(InvalidInputError, match="needs the last session"):
        load_window(nyse, None, history_sessions=5)


def test_help_costs_nothing():
    """Building the parser (``--help``, argparse's errors) imports neither Airflow nor the jobs' libraries."""
    code = ("import sys; from airflow_provider_portfolio import cli; cli.build_parser().format_help(); "
            "print(sorted(m for m in ('airflow', 'pandas', 'numpy', 'sqlalchemy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]"


def test_unknown_commands_and_options_exit_2(tmp_path, home):
    done = run("sell-everything", home=home, cwd=tmp_path)
    assert done.returncode == 2 and "invalid choice: 'sell-everything'" in done.stderr
    done = run("etl", "--symbol", "AAPL", home=home, cwd=tmp_path)
    assert done.returncode == 2 and "unrecognized arguments: --symbol" in done.stderr
    done = run("trade", "--max-trades-per-day", "many", home=home, cwd=tmp_path)
    assert done.returncode == 2 and "invalid int value: 'many'" in done.stderr
    assert list(home.iterdir()) == []  # argparse refused before anything ran


def test_a_store_that_cannot_be_opened_fails_clearly(tmp_path, home):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run("etl", "--store", f"sqlite:///{blocker}/desk.db", "--symbols", "AAPL", home=home, cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("etl: ") and "Traceback" not in done.stderr
    assert str(blocker) in done.stderr


@pytest.mark.parametrize("url, message", [
    ("mysql://desk@127.0.0.1/portfolio", "mysql"),
    ("not a url://", "cannot parse the store URL"),
])
def test_a_store_url_of_another_kind_is_refused(tmp_path, capsys, url, message):
    assert cli.main(["forecast", "--store", url, "--symbols", "AAPL"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("forecast: ") and message in err


def test_forecast_and_trade_refuse_a_store_without_the_universes_bars(tmp_path, capsys):
    missing = tmp_path / "nothing-here.db"
    assert cli.main(["forecast", "--store", f"sqlite:///{missing}"]) == 1
    assert "there is no store at" in capsys.readouterr().err and not missing.exists()  # not created either

    db = tmp_path / "empty.db"
    empty = PortfolioStore.for_sqlite_file(db)
    empty.migrate()
    empty.upsert_bars(make_bars(["ZZZ"], 120))  # bars, but none of the universe's
    empty.dispose()
    for command in (["forecast"], ["trade", "--as-of", AS_OF]):
        assert cli.main([*command, "--store", f"sqlite:///{db}"]) == 1
        err = capsys.readouterr().err
        assert "holds no 1Day bars of AAPL, MSFT" in err and f"{command[0]} wrote nothing" in err, err
    for table in ("forecasts", "model_evaluations", "trading_decisions", "orders", "accounts", "equity_curve"):
        assert rows(db, f"SELECT count(*) FROM {table}") == [(0,)], table


def test_a_report_path_that_cannot_be_written_leaves_nothing(tmp_path, capsys):
    db = tmp_path / "desk.db"
    store = PortfolioStore.for_sqlite_file(db)
    store.migrate()
    store.dispose()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker / "desk.html", blocker / "reports"):
        assert cli.main(["report", "--store", f"sqlite:///{db}", "--out", str(out), "--as-of", AS_OF]) == 1
        captured = capsys.readouterr()
        assert captured.err.startswith("report: ") and str(blocker) in captured.err and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "desk.db"]
    # The same empty store reports "nothing yet" where the folder can be written.
    assert cli.main(["report", "--store", f"sqlite:///{db}", "--out", str(tmp_path / "ok"), "--as-of", AS_OF]) == 0
    assert "the store holds no book yet" in capsys.readouterr().out
    assert sorted(p.suffix for p in (tmp_path / "ok").iterdir()) == [".html", ".png"]


def test_rebalance_weights_that_do_not_sum_to_one_send_nothing(tmp_path, capsys):
    db = tmp_path / "desk.db"
    store = PortfolioStore.for_sqlite_file(db)
    store.migrate()
    store.upsert_bars(make_bars(["SPY", "QQQ"], 120, start="2024-10-01"))
    store.dispose()
    code = cli.main(["rebalance", "--store", f"sqlite:///{db}", "--method", "given", "--weights",
                     '{"SPY": 0.6, "QQQ": 0.3}', "--as-of", AS_OF])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("rebalance: ") and "sum" in err
    assert rows(db, "SELECT count(*) FROM orders") == [(0,)] and rows(db, "SELECT count(*) FROM accounts") == [(0,)]


def test_a_live_alpaca_account_needs_allow_live(tmp_path, capsys, add_connection, requests_mock):
    db = tmp_path / "desk.db"
    store = PortfolioStore.for_sqlite_file(db)
    store.migrate()
    store.upsert_bars(make_bars(["AAPL"], 120, start="2024-10-01"))
    store.dispose()
    add_connection("alpaca_live", "alpaca", login=ALPACA_KEY_ID, password=ALPACA_SECRET, paper=False)
    code = cli.main(["trade", "--store", f"sqlite:///{db}", "--symbols", "AAPL", "--broker-conn-id", "alpaca_live",
                     "--as-of", AS_OF])
    assert code == 1
    err = capsys.readouterr().err
    assert "LIVE" in err and "--allow-live" in err and ALPACA_SECRET not in err
    assert requests_mock.request_history == []  # nothing sent, nothing even asked
    assert rows(db, "SELECT count(*) FROM trading_decisions") == [(0,)]


@pytest.mark.parametrize("form", ["json", "uri"])
def test_vendor_connections_come_from_airflow_conn_variables(tmp_path, capsys, monkeypatch, requests_mock, form):
    """``--sources fh_cli`` is the connection ``AIRFLOW_CONN_FH_CLI`` (JSON or URI, as Airflow reads them), served
    through its hook; no metadata database."""
    value = (json.dumps({"conn_type": "finnhub", "password": FINNHUB_KEY}) if form == "json"
             else f"finnhub://:{FINNHUB_KEY}@")
    monkeypatch.setenv("AIRFLOW_CONN_FH_CLI", value)
    candles = requests_mock.get(FH_CANDLE, json=json.loads((FIXTURES / "finnhub" / "stock_candle_aapl_daily.json")
                                                           .read_text()))
    db = tmp_path / "desk.db"
    code = cli.main(["etl", "--store", f"sqlite:///{db}", "--symbols", "AAPL", "--sources", "fh_cli", "--start",
                     "2024-06-03", "--end", "2024-06-07", "--as-of", "2024-06-08T12:00:00+00:00", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["sources"] == ["fh_cli"] and result["symbols"]["AAPL"]["source"] == "fh_cli"
    assert result["rows_written"] == 5
    assert candles.call_count == 1 and candles.last_request.headers["X-Finnhub-Token"] == FINNHUB_KEY
    assert rows(db, "SELECT count(*), min(close), max(close) FROM bars WHERE symbol = 'AAPL'") == [
        (5, 194.03, 196.89)]
    assert FINNHUB_KEY not in captured.out + captured.err


def test_a_named_connection_that_does_not_exist_is_named(tmp_path, capsys):
    assert cli.main(["etl", "--store", f"sqlite:///{tmp_path / 'desk.db'}", "--symbols", "AAPL", "--sources",
                     "no_such_vendor"]) == 1
    err = capsys.readouterr().err
    assert err == "etl: source 'no_such_vendor' is neither 'synthetic' nor an existing connection id\n"
    assert not (tmp_path / "desk.db").exists()  # refused before the store was opened
