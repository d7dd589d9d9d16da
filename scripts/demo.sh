#!/usr/bin/env bash
# make demo: a local Airflow under .demo/, the example daily ETL run end to end with `airflow dags test`,
# the session DAG for one bar, the forecast DAG (every model and the ensemble), one auto-trader cycle,
# then a report of what landed in the store. Embedded defaults only: synthetic market, SQLite store.
set -euo pipefail
VENV="${1:-.venv}"
export AIRFLOW_HOME="${2:-$PWD/.demo/airflow}"
export PATH="$PWD/$VENV/bin:$PATH"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/example_dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__UNIT_TEST_MODE=False
mkdir -p "$AIRFLOW_HOME"
echo "== airflow db migrate (AIRFLOW_HOME=$AIRFLOW_HOME)"
airflow db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1 || { tail -50 "$AIRFLOW_HOME/migrate.log"; exit 1; }
echo "== airflow dags test portfolio_daily_etl"
airflow dags test portfolio_daily_etl >"$AIRFLOW_HOME/dags-test.log" 2>&1 || { tail -80 "$AIRFLOW_HOME/dags-test.log"; exit 1; }
grep -E "Wrote [0-9]+ row|No connection|synthetic market|rejected|failed:" "$AIRFLOW_HOME/dags-test.log" \
    | sed -E 's/^[^]]*\] +//; s/ +\[[A-Za-z0-9_.]+\] +loc=.*$//' | sort -u || true
echo "== what the store holds"
python scripts/store_report.py "$AIRFLOW_HOME/portfolio/portfolio.db"
echo "(full log: $AIRFLOW_HOME/dags-test.log)"
echo "== airflow dags test portfolio_market_session (one 15-minute bar, gated by market hours)"
airflow dags test portfolio_market_session >"$AIRFLOW_HOME/session-test.log" 2>&1 || { tail -80 "$AIRFLOW_HOME/session-test.log"; exit 1; }
# Open: the sensor logs the window; closed: the task is skipped with the next window as the reason.
grep -E "trading window open" "$AIRFLOW_HOME/session-test.log" \
    | sed -E 's/^[^]]*\] +//; s/ +\[[A-Za-z0-9_.]+\] +loc=.*$//' | sort -u || true
grep -oE "reason='[^']*'" "$AIRFLOW_HOME/session-test.log" | sed -E "s/^reason='(.*)'$/skipped: \1/" | sort -u || true
echo "(full log: $AIRFLOW_HOME/session-test.log)"
echo "== airflow dags test portfolio_forecast (every model, then the ensemble, on the bars above)"
airflow dags test portfolio_forecast >"$AIRFLOW_HOME/forecast-test.log" 2>&1 || { tail -80 "$AIRFLOW_HOME/forecast-test.log"; exit 1; }
grep -E "symbol\(s\) forecast|not forecast|Forecast device" "$AIRFLOW_HOME/forecast-test.log" \
    | sed -E 's/^[^]]*\] +//; s/ +\[[A-Za-z0-9_.]+\] +loc=.*$//' | sort -u || true
python scripts/forecast_report.py "$AIRFLOW_HOME/portfolio/portfolio.db"
echo "(full log: $AIRFLOW_HOME/forecast-test.log)"
echo "== airflow dags test portfolio_auto_trader (one cycle now, simulated broker; the sensor watches the 24/7 calendar)"
airflow dags test portfolio_auto_trader --conf '{"exchange": "24/7"}' >"$AIRFLOW_HOME/trader-test.log" 2>&1 \
    || { tail -80 "$AIRFLOW_HOME/trader-test.log"; exit 1; }
python scripts/trading_report.py "$AIRFLOW_HOME/portfolio/portfolio.db" portfolio_auto_trader
echo "(full log: $AIRFLOW_HOME/trader-test.log)"
