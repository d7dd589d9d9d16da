# Two commands on a fresh clone: `make demo` and `make test`. Each bootstraps .venv.
PYTHON ?= python3
VENV ?= .venv
# Empty: the newest Airflow 3 the declared range allows. CI also runs the lowest supported one.
AIRFLOW_VERSION ?=
AIRFLOW_LOWEST ?= 3.1.8
LOWEST_VENV ?= .venv-lowest
DEMO_HOME ?= $(CURDIR)/.demo/airflow

# pytest workers (pytest-xdist) of `make test`, `test-airflow` and `test-month`; a test file stays on one worker
# (--dist loadfile), so its module fixtures (a PostgreSQL server, the desk's day in one Airflow home) are made once.
# 0: no workers. `test-lowest` runs in one process: its long standalone runs gained nothing from two workers here.
PYTEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

AIRFLOW_SPEC = $(if $(AIRFLOW_VERSION),apache-airflow==$(AIRFLOW_VERSION),apache-airflow>=3.1.8,<4)
UV = $(VENV)/bin/uv

.PHONY: venv demo test test-airflow test-month test-fast test-lowest bench system-deps clean

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check uv
	$(UV) pip install --python $(VENV)/bin/python "$(AIRFLOW_SPEC)" -e ".[test,postgres]"
	touch $@

venv: $(VENV)/.installed

# Debian packages the test suite needs (PostgreSQL server for the store tests).
system-deps:
	bash scripts/install-system-deps.sh

demo: venv
	bash scripts/demo.sh $(VENV) "$(DEMO_HOME)"

# The whole suite but the runs of a real Airflow (marker 'slow', about 20 minutes: `make test-airflow`) and the
# simulated months (marker 'month': `make test-month`); about 6 minutes on 2 cores. CI runs all three.
test: venv system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest $(XDIST) -m "not month and not slow"

# A real Airflow: db migrate, `airflow dags test`, `airflow standalone` with the example DAGs, the Connections UI
# in headless chromium.
test-airflow: venv system-deps
	$(VENV)/bin/python -m pytest $(XDIST) -m "slow and not month"

# The simulated month of the agent DAGs (60 runs through dag.test(), the book reconciled) and the six-month
# replay of 30-minute cycles.
test-month: venv system-deps
	$(VENV)/bin/python -m pytest $(XDIST) -m month

# The same as `make test` (kept for habit): no real Airflow, no simulated month.
test-fast: venv system-deps
	$(VENV)/bin/python -m pytest -m "not slow and not month"

# The lowest supported Airflow, in its own venv: provider discovery, DAG integrity, connection forms, hooks, operators, the trading cycle, the ETL, forecast and trading DAGs in a real Airflow.
# Of the trading suites, those through the Alpaca hook (an Airflow hook); the others import no Airflow at all and run
# once, in `make test` (the trading cycle through Airflow is in tests/operators and tests/airflow). The desk's
# `dags test` days (environment check, monitoring, master, metrics and lineage) run once, in `make test-airflow`: their
# operators' Airflow-facing parts run here in tests/operators, tests/notifications and the setup and policy tests.
test-lowest: system-deps
	test -x $(LOWEST_VENV)/bin/python || $(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install -q --disable-pip-version-check uv
	$(LOWEST_VENV)/bin/uv pip install --python $(LOWEST_VENV)/bin/python "apache-airflow==$(AIRFLOW_LOWEST)" -e ".[test,postgres]"
	$(LOWEST_VENV)/bin/python -m pytest $(XDIST) -m "not month" tests/airflow tests/etl tests/hooks tests/operators tests/sensors tests/timetables tests/ui \
		tests/notifications tests/test_setup_command.py tests/test_pool_policy.py tests/test_metrics.py tests/test_lineage.py \
		tests/test_dag_factory.py tests/test_cli_restore.py tests/test_cli_jobs.py tests/test_dockerfile.py \
		--ignore=tests/airflow/test_desk_real.py --ignore=tests/airflow/test_env_sanity_real.py \
		--ignore=tests/airflow/test_metrics_lineage_real.py \
		tests/trading/test_alpaca_broker.py tests/trading/test_fault_matrix.py

bench: venv system-deps
	$(UV) pip install --python $(VENV)/bin/python -q -e ".[bench]"
	$(VENV)/bin/python bench/bench_store.py
	$(VENV)/bin/python bench/bench_import.py
	$(VENV)/bin/python bench/bench_synthetic.py
	$(VENV)/bin/python bench/bench_quality.py
	$(VENV)/bin/python bench/bench_market_hours.py
	$(VENV)/bin/python bench/bench_trading.py
	$(VENV)/bin/python bench/bench_backtest.py
	$(VENV)/bin/python bench/bench_discovery.py
	$(VENV)/bin/python bench/forecast.py

clean:
	rm -rf $(VENV) $(LOWEST_VENV) .demo .pytest_cache
